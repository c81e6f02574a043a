"""What a command's model argument names, decided once: a tutorial model's run (by its name, or its
run folder) or a model file (a tutorial export or your own). A run is the model files of one model
(checkpoint.pt, model.onnx, model.int8.onnx, ...); a file is itself and its int8 twins beside it
(``net.onnx``, ``net.int8.onnx`` and ``net.openvino-int8.onnx``, as ``ptx export net.onnx --format
onnx-int8|openvino-int8`` writes them); an int8 file given by its path runs on every backend with an
int8 precision (each format is a Q/DQ graph both runtimes read). Every
command asks a Target which variants (backend, device, precision) can run it, where each one's
file is, and opens them alike; nothing after this asks which kind of model it was given.

Importing this imports neither torch nor a runtime: each backend imports its own when opened.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FORMAT, DEFAULT_RUNS_ROOT
from ptx.contract.names import FULL_PRECISION, INT8_FORMATS
from ptx.child import ChildCrashError, run_child
from ptx.errors import ArtifactError, MissingArtifactError, PtxError
from ptx.files import is_file

from ..formats.model_files import ModelFile
from ..runtime import backends as registry
from .opening import (DEFAULT_FILE_BACKEND, KIND_NAMES, PROBE, artifact_path, load, model_file, precision_file,
                      probe_args, require_run)

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


@dataclass
class Target:
    """A tutorial model's run, or a model file, and how to open it through any variant."""

    kind: str  # RUN, or the file's kind: onnx, torchscript, pt2
    name: str  # the registered model of a run, or the file's path as given
    path: Path | None = None  # the file
    run_dir: Path | None = None
    root: Path = Path(DEFAULT_RUNS_ROOT)
    run: Path | None = None  # --run as given (a run found by name has none)
    found: ModelFile | None = None
    options: dict = field(default_factory=dict)  # load()'s options for a file: inputs, batch_axes, ...
    notes: list[str] = field(default_factory=list)  # what a command says of the target before its table
    # verifying: why the file's metadata is not believed (its weights changed since export), so that
    # what the user chose (options) and what verifying chose stay apart; None where nothing changed
    changed: str | None = None

    @classmethod
    def of(cls, argument: str | Path | None, *, root: str | Path = DEFAULT_RUNS_ROOT, run: str | Path | None = None,
           options: Mapping | None = None, verifying: bool = False) -> "Target":
        """The target ``argument`` names: a model file where it is one, else a tutorial model's run
        (``argument`` a registered name, or ``run`` its folder). ``verifying``: a file changed since
        it was exported is judged as the user's own model by its outputs, with a note (predict and
        serve refuse it), so that the reference tensors kept at export, or --against, say what changed."""
        options = dict(options or {})
        if argument is not None and is_file(str(argument)):
            path = Path(str(argument))
            changed = changed_since_export(path) if verifying and not options.get("ignore_metadata") else None
            if changed:
                options["ignore_metadata"] = True
            found = model_file(path, bool(options.get("ignore_metadata")))
            return cls(found.kind, str(argument), path=path, found=found, options=options,
                       notes=[changed] if changed else [], changed=changed)
        name = str(argument)
        run_dir = require_run(name, root, run)
        return cls(RUN, name, run_dir=run_dir, root=Path(root), run=Path(run) if run is not None else None)

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

    def variants(self, names: Sequence[str] | None = None) -> list[Variant]:
        """Every variant ``names`` pick (a backend name picks all its precisions; a label such as
        ort-cpu-int8 or eager-cuda picks one) that can run this target; all of them if None. A run
        can be opened by every backend (each reads its own export); a file by those that read its
        kind (and, at int8, its int8 twin)."""
        every = [Variant(b, d, p) for b, d, p in registry.variants()
                 if self.is_run or (self.kind in b.kinds and self._format_of(b, p) in self.formats)]
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
        """The artifact formats a file target is read as: itself, and an f32 ONNX file's int8 twins
        (an int8 file is int8 only, whichever quantizer made it)."""
        if self.kind != "onnx":
            return (self.kind,)
        return INT8_FORMATS if self.precision == "int8" else ("onnx", *INT8_FORMATS)

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

    def open(self, variant: Variant, probe: bool = False):
        """The Model of ``variant`` (a file ptx did not write is opened in a child first with ``probe``)."""
        if self.is_run:
            return load(self.name, variant.backend.name, variant.device, variant.precision, root=self.root,
                        run=self.run)
        return load(self.file_for(variant), variant.backend.name, variant.device, variant.precision,
                    probe=probe, **self.options)

    def open_all(self, variants: Sequence[Variant], probe: bool = True) -> dict[str, object]:
        """{label: the Model, or the PtxError that says why it did not open}: with ``probe``, a file
        ptx did not write is first opened by every variant in turn in one child process (a runtime
        that crashes on a malformed graph crashes there, and says so in one line)."""
        opened: dict[str, object] = dict(self._probe(variants)) if probe else {}
        for variant in variants:
            if variant.label not in opened:
                try:
                    opened[variant.label] = self.open(variant)
                except PtxError as exc:
                    opened[variant.label] = exc
        return opened

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
            run_child(PROBE, json.dumps(args), what=f"opening {self.path.name}")
            return {}
        except ChildCrashError:
            crashed: dict[str, PtxError] = {}
            for variant, one in zip(present, args):
                try:
                    run_child(PROBE, json.dumps([one]), what=f"{variant.label} opening {self.path.name}")
                except ChildCrashError as exc:
                    crashed[variant.label] = exc
            return crashed

    def _has_file(self, variant: Variant) -> bool:
        try:
            self.file_for(variant)
            return True
        except MissingArtifactError:
            return False


def require_targets(command: str, *given, verifying: bool = False) -> None:
    """A library caller's model argument that is not a Target, refused in one line saying how to make
    one (verify and bench take the argument decided where it entered, never a bare string)."""
    wrong = next((g for g in given if g is not None and not isinstance(g, Target)), None)
    if wrong is not None:
        raise PtxError(f"{command}() takes a Target, not {type(wrong).__name__} {str(wrong)[:60]!r}: give Target.of("
                       f"argument, root=..., run=..., options=...{', verifying=True' * verifying}) "
                       "(from ptx.infer.model.target import Target)")


def export_targets(folder: Path) -> list[tuple[Path, "Target | ArtifactError"]]:
    """Each export file in a run folder (the checkpoint aside), as the file Target it is read as when
    given by its path (verifying: a file changed since export is the user's own model, with a note),
    or the one-line reason it cannot be read: a folder argument's files are decided here, as an
    argument is (``ptx inspect RUN_FOLDER``)."""
    found = []
    for fmt, name in ARTIFACT_FILES.items():
        path = Path(folder) / name
        if fmt != CHECKPOINT_FORMAT and path.is_file():
            try:
                found.append((path, Target.of(path, verifying=True)))
            except ArtifactError as exc:
                found.append((path, exc))
    return found


def group_reasons(reasons: Mapping[str, str]) -> list[str]:
    """``{label: why}`` -> one line per reason: "ort-cuda, torchscript-cuda: no GPU"."""
    by_reason: dict[str, list[str]] = {}
    for label, why in reasons.items():
        by_reason.setdefault(why, []).append(label)
    return [f"{', '.join(labels)}: {why}" for why, labels in by_reason.items()]


def changed_since_export(path: Path) -> str | None:
    """Why a file's ptx metadata does not describe it: its weights are not the ones it was exported
    with (changed after export), in a note; None where they are, or it records none."""
    from ptx.contract.weights import WEIGHTS_KEY

    from ..formats.model_files import read_model_file

    found = read_model_file(path, digest=False)
    if not found.foreign:
        return None
    return (f"note: {path.name}'s weights are not the ones it was exported with (sha256 {found.weights[:12]}... where "
            f"its ptx.{WEIGHTS_KEY} records {found.metadata[WEIGHTS_KEY][:12]}...): checked as your own model, by its "
            "outputs")
