"""What a command's model argument names, decided once: a tutorial model's run (by its name, or its
run folder) or a model file (a tutorial export or your own). A run is the model files of one model
(checkpoint.pt, model.onnx, model.int8.onnx, ...); a file is itself and its int8 twins beside it
(``net.onnx``, ``net.int8.onnx`` and ``net.openvino-int8.onnx``, as ``ptx export net.onnx --format
onnx-int8|openvino-int8`` writes them); an int8 file given by its path runs on every backend with an
int8 precision (each format is a Q/DQ graph both runtimes read). Target.of is the one rule, called
where an argument enters: the CLI's commands and load(), the library's entry (here, which opens
through the Target). Every command asks a Target which variants (backend, device, precision) can run
it, where each one's file is, and opens them alike; nothing after this asks which kind of model it
was given.

Importing this imports neither torch nor a runtime: each backend imports its own when opened.
"""
from __future__ import annotations

import json
import os
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.contract.catalog import names
from ptx.contract.names import FILE_PRECISIONS, FULL_PRECISION, INT4, MODEL_FILE_SUFFIXES
from ptx.child import ChildCrashError
from ptx.errors import BackendUnavailableError, MissingArtifactError, PtxError, StaleArtifactWarning
from ptx.files import is_dir, is_file

from ..formats.model_files import ModelFile, read_model_file
from ..runtime import backends as registry
from ..runtime.memory_plan import OutOfMemoryPlan, opening_shortfall, size_text, weights_bytes
from .model import Model
from .opening import (DEFAULT_BACKEND, DEFAULT_FILE_BACKEND, KIND_NAMES, MODULE, artifact_path, check_device,
                      is_module, model_file, model_of_run, open_path, precision_file, probe_args, probe_in_child,
                      require_run, require_run_folder, stale_reason, warned)

NO_GPU = "no GPU on this machine"
RUN = "run"  # a Target's kind for a tutorial model's run folder; a file's is its own (onnx, ...)
REFERENCE = "eager"  # what a run's variants are held to


@dataclass(frozen=True)
class Variant:
    """One (backend, device, precision) a model can be run on."""

    backend: object  # infer.runtime.backends.Backend
    device: str
    precision: str = FULL_PRECISION

    @property
    def label(self) -> str:
        return self.backend.label(self.device, self.precision)

    def asked_by(self, names) -> bool:
        """Whether a user's --backends ``names`` name this variant: by its label (ort-cpu-int8), or at
        f32 by its backend's name or device label (ort-cpu, eager-cuda). A backend's name does not ask
        for its reduced precisions, which come along where they were exported."""
        names = set(names or ())
        return self.label in names or (self.precision == FULL_PRECISION and bool(
            {self.backend.name, self.backend.label(self.device)} & names))

    def unavailable(self) -> str | None:
        """Why this machine cannot run it, or None. Every CUDA variant says the same "no GPU" where
        the machine has none, so that a command can say it once for all of them."""
        from ptx.machine import visible_gpus

        if self.device.startswith("cuda") and visible_gpus() == 0:
            return NO_GPU
        return self.backend.unavailable(self.device)


@dataclass(frozen=True)
class Skip:
    """A row a walk over backends did not open, and why (``error``, one line): ``unavailable`` where this
    machine cannot open it now (no runtime or GPU, not memory enough: OutOfMemoryPlan), ``missing`` where
    its file was never exported (an int8 twin), else the file does not open on it."""

    variant: Variant
    error: PtxError

    @property
    def why(self) -> str:
        return str(self.error)

    @property
    def unavailable(self) -> bool:
        return isinstance(self.error, BackendUnavailableError)

    @property
    def missing(self) -> bool:
        return isinstance(self.error, MissingArtifactError)


def _unsaid(skip: Skip) -> None:
    """A walk's default for its skips: nothing said."""


@dataclass
class Target:
    """A tutorial model's run, or a model file, and how to open it through any variant."""

    kind: str  # RUN, or the file's kind: onnx, torchscript, pt2
    name: str  # the registered model of a run, or the file's path as given
    path: Path | None = None  # the file
    root: Path = Path(DEFAULT_RUNS_ROOT)
    run: Path | None = None  # --run (or the run folder given as the argument); a run found by name has none
    found: ModelFile | None = None
    options: dict = field(default_factory=dict)  # load()'s options for a file: inputs, batch_axes, ...
    notes: list[str] = field(default_factory=list)  # what a command says of the target before its table
    # verifying: why the file's metadata is not believed (its weights changed since export), so that
    # what the user chose (options) and what verifying chose stay apart; None where nothing changed
    changed: str | None = None

    @classmethod
    def of(cls, argument: str | Path | None, *, root: str | Path = DEFAULT_RUNS_ROOT, run: str | Path | None = None,
           options: Mapping | None = None, verifying: bool = False, option: str = "NAME") -> "Target":
        """What ``argument`` names, decided here for every command and load(): a model file where it is
        one, or where it reads as a path (a model file's suffix, a /: then one line saying what is there
        instead, a folder included: a command takes a run folder by --run, load() by its argument);
        else a tutorial model's name (a name stays one where a folder of that name is here: `ptx train
        convnet --out convnet` makes one), or None for the model the ``run`` folder holds, a name it
        contradicts refused (``option``: how the name was given). A run is looked for when first opened
        (run_dir), so that a wrong backend or device is said before a missing run. ``verifying``: a file
        changed since it was exported is judged as the user's own model by its outputs, with a note
        (predict and serve refuse it), so that the reference tensors kept at export, or --against, say
        what changed."""
        if not isinstance(argument, (str, os.PathLike)) and (argument is not None or run is None):
            raise PtxError(f"load() takes a model name, a run folder, a model file's path or an nn.Module, not "
                           f"{type(argument).__name__}")
        given = None if argument is None else str(argument)
        if given is not None and (is_file(given) or Path(given).suffix.lower() in MODEL_FILE_SUFFIXES or "/" in given):
            return cls._file(given, dict(options or {}), verifying)
        if run is not None and Path(run).is_dir():
            given = model_of_run(Path(run), given, option)
        elif given is None:
            raise PtxError(f"no run folder {run}: give --run the folder `ptx train NAME --out DIR` wrote "
                           "(`ptx runs` lists them)")
        return cls(RUN, given, root=Path(root), run=Path(run) if run is not None else None)

    @classmethod
    def _file(cls, given: str, options: dict, verifying: bool) -> "Target":
        path = Path(given)
        # no such file, a folder: one line; the file's digest computed once, for its note and its check
        read = read_model_file(path) if verifying and not options.get("ignore_metadata") else None
        changed = changed_since_export(read) if read is not None else None
        if changed:
            options = {**options, "ignore_metadata": True}
        found = model_file(path, bool(options.get("ignore_metadata")), read)
        return cls(found.kind, given, path=path, found=found, options=options,
                   notes=[changed] if changed else [], changed=changed)

    def beside(self, path: str | Path) -> "Target":
        """Another file of the same model (an int8 file's f32 source), opened with this target's options:
        a file decided by its path, as Target.of decides one."""
        return self._file(str(path), dict(self.options), False)

    def verifying(self) -> "Target":
        """This target as verify judges it (``Target.of(..., verifying=True)``), the argument not decided
        again: a file changed since export read as the user's own model, with a note; a run as it is."""
        return self if self.is_run or self.options.get("ignore_metadata") else self._file(self.name, self.options, True)

    def as_recorded(self) -> ModelFile:
        """This target's file with the ptx metadata it records, also where the target reads it without (a file
        changed since export, --ignore-metadata), and the weights digest computed when the target was read:
        hashed once (seconds for a 2 GB decoder)."""
        return replace(read_model_file(self.path, digest=False), digest=self.found.weights if self.found else None)

    @cached_property
    def generation(self):
        """The generation contract (ptx.contract.generation.Generation) of a decoder file, before any runtime
        opens it: the one it records, else the one an ONNX file's tensor names say (Optimum's layout: a file
        without ptx's record, or read as your own); None for a run, or a file that does not generate."""
        from ptx.contract.generation import GENERATION_KEY, KEEP, of_layout, of_metadata

        if self.is_run or self.found is None:
            return None
        if GENERATION_KEY in self.found.metadata:
            return of_metadata(self.found.metadata, f"{self.path.name}: ptx.{GENERATION_KEY}")
        if self.kind != "onnx":
            return None
        from ..formats.onnx_files import load_structure

        from onnx.helper import tensor_dtype_to_np_dtype

        graph = load_structure(self.path).graph
        initializers = {t.name for t in graph.initializer}
        keep = next(((str(tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)), len(i.type.tensor_type.shape.dim))
                     for i in graph.input if i.name == KEEP), None)
        return of_layout([i.name for i in graph.input if i.name not in initializers], [o.name for o in graph.output],
                         keep)

    @cached_property
    def run_dir(self) -> Path | None:
        """A run's folder, or one error saying where ptx looked (the registry's "did you mean" for a
        name no model has): looked for when first asked."""
        return require_run(self.name, self.root, self.run) if self.is_run else None

    @property
    def is_run(self) -> bool:
        return self.kind == RUN

    @property
    def precision(self) -> str:
        """The precision the target is read at by default: a file's own (int8 for a ptx int8 file or a
        user's own quantized graph), else f32."""
        return self.found.precision if self.found is not None else FULL_PRECISION

    @property
    def reference(self) -> str:
        """The backend every variant is held to: eager for a run; a file's own runtime."""
        return REFERENCE if self.is_run else DEFAULT_FILE_BACKEND[self.kind]

    def refuses(self, variant: Variant) -> str | None:
        """Why ``variant`` does not run this file on any machine, or None: a decoder whose attention is ONNX
        Runtime's GroupQueryAttention (Generation.in_place) runs on ONNX Runtime alone."""
        return registry.refuses_generation(variant.backend, self.generation)

    def variants(self, names: Sequence[str] | None = None) -> list[Variant]:
        """Every variant ``names`` pick (a backend name picks all its precisions; a label such as
        ort-cpu-int8 or eager-cuda picks one) that can run this target; all of them if None. A run
        can be opened by every backend (each reads its own export); a file by those that read its
        kind (and, at int8, its int8 twin)."""
        every = [Variant(b, d, p) for b, d, p in registry.variants()
                 if self.is_run or (self.kind in b.kinds and self._format_of(b, p) in self.formats)]
        # An f32 file's int4 rows come along where their file is there (a language model's weights, made on
        # request), or where they are asked for: not a "no FILE.int4.onnx beside it" line for every other file.
        every = [v for v in every if v.precision != INT4 or self.precision == INT4 or self.is_run
                 or v.asked_by(names) or self._twin_there(v)]
        if not names:
            return every
        known = {v.backend.name for v in every} | {v.backend.label(v.device) for v in every} | {v.label for v in every}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise PtxError(f"backend {unknown[0]} choose from {', '.join(sorted(known))}" if self.is_run else
                           f"backend {unknown[0]} does not run {KIND_NAMES[self.kind]}; these do: "
                           f"{', '.join(dict.fromkeys(v.label for v in every))}")
        return [v for v in every if {v.backend.name, v.backend.label(v.device), v.label} & set(names)]

    @property
    def formats(self) -> tuple[str, ...]:
        """The artifact formats a file target is read as: itself, and an f32 ONNX file's int8 and int4
        twins (an int8 or int4 file is that precision only, whichever quantizer made it)."""
        if self.kind != "onnx":
            return (self.kind,)
        if self.precision in FILE_PRECISIONS:
            return FILE_PRECISIONS[self.precision]
        return ("onnx", *(fmt for formats in FILE_PRECISIONS.values() for fmt in formats))

    def _format_of(self, backend, precision: str) -> str:
        """What a backend reads of this file at ``precision``: the file itself (its kind) at the
        precisions it runs the file at, or an artifact of its own (an int8 twin)."""
        fmt = backend.artifact_for(precision)
        return self.kind if fmt == backend.artifact else fmt

    def file_for(self, variant: Variant) -> Path:
        """The file ``variant`` reads: a run's export for its backend and precision, or what opening
        reads of the file at that precision (precision_file: the file itself, or an f32 ONNX file's
        int8 twin at int8); MissingArtifactError naming what makes it."""
        if self.is_run:
            return artifact_path(self.name, variant.backend.name, self.root, variant.precision, self.run)
        return precision_file(self.found, variant.backend, variant.device, variant.precision,
                              bool(self.options.get("ignore_metadata")))[0].path

    def open(self, variant: Variant, probe: bool = False) -> Model:
        """The Model of ``variant`` (a file ptx did not write is opened in a child first with ``probe``)."""
        return self.load(variant.backend.name, variant.device, variant.precision, probe)

    def load(self, backend: str | None = None, device: str | None = None, precision: str | None = None,
             probe: bool = True) -> Model:
        """load()'s Model of this target: a file through open_path (its precision's file, the backend its
        kind defaults to); a run's export for ``backend`` (default ort-cpu) at ``precision`` (default f32),
        with a StaleArtifactWarning where it was exported from another checkpoint than the run's."""
        if not self.is_run:
            return warned(open_path(self.found, backend, device, precision, probe=probe, **self.options))
        backend, precision = backend or DEFAULT_BACKEND, precision or FULL_PRECISION
        check_device(backend, device)  # an unknown backend or device is one clear error before any file is looked for
        path = artifact_path(self.name, backend, self.root, precision, self.run)
        model = open_path(model_file(path), backend, device, precision, tutorial=self.name)
        model.stale = stale_reason(model, self.run_dir)
        if model.stale:
            warnings.warn(model.stale, StaleArtifactWarning, stacklevel=3)
        return warned(model)

    def each_opened(self, variants: Sequence[Variant], probe: bool = True,
                    skipped: Callable[[Skip], None] = _unsaid) -> Iterator[tuple[Variant, Model]]:
        """(variant, its Model) for each of ``variants`` that opens, in turn, each held for the loop's body and
        closed before the next is opened, so that a command walking rows holds one runtime at a time (the
        memory plan: a row that cannot fit is not opened); each that does not open is a Skip handed to
        ``skipped``, in its turn. With ``probe``, a file ptx did not write is first opened by every variant in
        one child process (a runtime that crashes on a malformed graph crashes there, and says so in one line)."""
        for variant, model in self._opened(variants, probe, skipped):
            with model:
                yield variant, model

    @contextmanager
    def opened_together(self, variants: Sequence[Variant], probe: bool = True,
                        skipped: Callable[[Skip], None] = _unsaid) -> Iterator[list[tuple[Variant, Model]]]:
        """[(variant, its Model)] for every one of ``variants`` that opens, all open at once for the block
        (where a command needs them together: bench's group, --against's file, inspect's reference) and all
        closed where it ends; each that does not open is a Skip handed to ``skipped``, as each_opened does."""
        with ExitStack() as held:
            yield [(variant, held.enter_context(model)) for variant, model in self._opened(variants, probe, skipped)]

    def _opened(self, variants: Sequence[Variant], probe: bool, skipped: Callable[[Skip], None]
                ) -> Iterator[tuple[Variant, Model]]:
        """The walks' one opening: each of ``variants`` opened in turn as it is asked for, not held; one that
        crashed the probe's child, cannot fit in the memory available now (memory_plan) or does not open is
        a Skip handed to ``skipped``."""
        crashed = self._probe(variants) if probe else {}
        for variant in variants:
            try:
                if variant.label in crashed:
                    raise crashed[variant.label]
                why = self.room_for(variant)
                if why:
                    raise OutOfMemoryPlan(why)
                model = self.open(variant)
            except PtxError as exc:
                skipped(Skip(variant, exc))
                continue
            yield variant, model

    def room_for(self, variant: Variant) -> str | None:
        """Why ``variant`` cannot open this target's file in the memory available now (or, for a
        backend that holds far more than a runtime, at all: onnx.reference), else None."""
        path = self.file_for(variant)
        limit = variant.backend.model_bytes
        if limit is not None and (weights := weights_bytes(path)) > limit:
            return (f"{path.name} holds {size_text(weights)} of weights, past the {size_text(limit)} {variant.label} "
                    "evaluates (every node in numpy)")
        return opening_shortfall(variant.backend, variant.label, path, variant.precision, self._beside(path))

    def _beside(self, path: Path) -> list[Path]:
        """The files that open with the file at ``path``: an encoder-decoder's encoder, as its contract names it."""
        from ptx.contract.generation import GENERATION_KEY

        if self.is_run or self.found is None or GENERATION_KEY not in self.found.metadata:
            return []  # only a recorded contract names an encoder: no graph is read for it
        try:
            encoder = self.generation.encoder
        except PtxError:
            return []  # the file's opening says why
        return [path.parent / encoder.file] if encoder is not None and encoder.file else []

    def _probe(self, variants: Sequence[Variant]) -> dict[str, PtxError]:
        """{label: ChildCrashError} for each variant whose runtime crashed opening a foreign file: all
        in one child first (one interpreter start, ~0.7 s here), one by one after a crash."""
        from ptx.contract.tensors import as_declarations

        if self.is_run or not variants or self.found.metadata:
            return {}
        declared = as_declarations(self.options.get("inputs"))
        present = [v for v in variants if self._has_file(v)]  # paired with their args: a missing file has none
        args = [probe_args(self.file_for(v), v.backend.label(v.device), v.device, declared,
                           self.options.get("batch_axes"), bool(self.options.get("ignore_metadata")))
                for v in present]
        try:
            probe_in_child(args, what=f"opening {self.path.name}")
            return {}
        except ChildCrashError:
            crashed: dict[str, PtxError] = {}
            for variant, one in zip(present, args):
                try:
                    probe_in_child([one], what=f"{variant.label} opening {self.path.name}")
                except ChildCrashError as exc:
                    crashed[variant.label] = exc
            return crashed

    def _twin_there(self, variant: Variant) -> bool:
        """Whether ``variant``'s reduced file is beside this file (one that is there but wrong says so in its row)."""
        try:
            self.file_for(variant)
        except MissingArtifactError:
            return False
        except PtxError:
            return True
        return True

    def _has_file(self, variant: Variant) -> bool:
        try:
            self.file_for(variant)
            return True
        except MissingArtifactError:
            return False


def load(target, backend: str | None = None, device: str | None = None, precision: str | None = None, *,
         root: str | Path = DEFAULT_RUNS_ROOT, run: str | Path | None = None, inputs=None,
         batch_axes: dict | None = None, ignore_metadata: bool = False, probe: bool = True, plan=None) -> Model:
    """A Model for a registered model's artifacts in its run folder (``root``/NAME, or ``run``: the
    folder ``ptx train --out`` wrote, which may also be given as ``target`` itself), or for a model
    file alone: a tutorial model's export, or your own model (an ONNX file, a TorchScript file, a
    pt2 package, or a live ``nn.Module``). Which of these it is is decided once, by Target.of
    here or where a command's argument entered (``target`` that Target): every Model
    answers ``run({input name: array}) -> {output name: array}``, and one whose file carries a
    tutorial contract also answers ``predict(...)`` through its head.

    Your own model's tensors: an ONNX file describes them itself; a TorchScript or pt2 file does not,
    so ``inputs`` declares them in forward()'s order (``["x=batchx3x224x224:float32", ...]`` or
    TensorSigs), as does an ``nn.Module``'s, whose outputs ptx learns by running it twice on inputs
    made by ``plan`` (ptx.contract.tensor_inputs.plan_inputs' InputPlan: sizes and value ranges the
    module takes), else its own. ``batch_axes`` ({input name: axis or None}) overrides
    where ptx reads each input's batch. ``ignore_metadata`` runs a file as your own model even where
    it carries ptx metadata (refused when those were written for other weights). ``probe`` opens a
    file ptx did not write in a child process first, so that a runtime crash on it is one error.

    An artifact exported from another checkpoint than its run's is served, with a
    ``StaleArtifactWarning`` and the reason in ``model.stale``.

    ``backend`` is a name from ``ptx.infer.backends`` (default: ort-cpu for a model name, the file's
    own kind for a path). ``device`` (cpu/cuda; default: the backend's own, cpu where it runs on
    several) must be one the backend runs on: ``device="cuda"`` with ort-cpu is an error naming the
    backends that take it. ``precision`` (f32, bf16, int8, tf32) is one the backend runs: int8
    reads the int8 file the backend's runtime is quantized for (ort-cpu: model.int8.onnx from ``ptx
    export NAME --format onnx-int8``; openvino: model.openvino-int8.onnx from ``--format
    openvino-int8``); default f32, or the file's own for a path.
    """
    if is_module(target):
        return open_path(MODULE, backend, device, precision, module=target, inputs=inputs, batch_axes=batch_axes,
                         probe=probe, plan=plan)
    if not isinstance(target, Target):
        if isinstance(target, (str, os.PathLike)) and run is None and is_dir(target) and str(target) not in names():
            # load("runs/convnet") as run="runs/convnet": the library's folder argument (a command has --run)
            target, run = None, require_run_folder(Path(target), ", a run folder or a model's name")
        target = Target.of(target, root=root, run=run, option="the name",  # said in load()'s words
                           options=dict(inputs=inputs, batch_axes=batch_axes, ignore_metadata=ignore_metadata))
    return target.load(backend, device, precision, probe)


open_artifact = load  # the name export's validation and older apps call it by


def load_file(path, backend: str, device: str = "cpu", precision: str = FULL_PRECISION) -> Model:
    """The model ``backend`` makes of the file ptx wrote at ``path`` on ``device``, at ``precision``, the
    file format's: an f32 file as verify opens it (at the file's own precision), a reduced one at its
    precision. Export opens each file it validates here, by the code that serves it."""
    return load(path, backend, device, None if precision == FULL_PRECISION else precision)


def probe_child(argv: str) -> None:
    """PROBE's work in the child process: each file of ``argv`` (JSON, a list of probe_args) opened as
    the parent would open it."""
    for args in json.loads(argv):
        try:
            load(args["path"], args["backend"], device=args["device"], inputs=args["inputs"],
                 batch_axes=args["batch_axes"], ignore_metadata=args["ignore_metadata"], probe=False)
        except PtxError:
            pass  # refused in one line: the parent opens it again and says so


def require_targets(command: str, *given, verifying: bool = False) -> None:
    """A library caller's model argument that is not a Target, refused in one line saying how to make
    one (verify and bench take the argument decided where it entered, never a bare string)."""
    wrong = next((g for g in given if g is not None and not isinstance(g, Target)), None)
    if wrong is not None:
        raise PtxError(f"{command}() takes a Target, not {type(wrong).__name__} {str(wrong)[:60]!r}: give Target.of("
                       f"argument, root=..., run=..., options=...{', verifying=True' * verifying}) "
                       "(from ptx.infer.model.target import Target)")


def group_reasons(reasons: Mapping[str, str]) -> list[str]:
    """``{label: why}`` -> one line per reason: "ort-cuda, torchscript-cuda: no GPU"."""
    return [f"{', '.join(label for label, said in reasons.items() if said == why)}: {why}"
            for why in dict.fromkeys(reasons.values())]


def changed_since_export(found: ModelFile) -> str | None:
    """Why a file's ptx metadata does not describe it: its weights are not the ones it was exported
    with (changed after export), in a note; None where they are, or it records none."""
    from ptx.contract.weights import WEIGHTS_KEY

    if not found.foreign:
        return None
    path = found.path
    return (f"note: {path.name}'s weights are not the ones it was exported with (sha256 {found.weights[:12]}... where "
            f"its ptx.{WEIGHTS_KEY} records {found.metadata[WEIGHTS_KEY][:12]}...): checked as your own model, by its "
            "outputs")
