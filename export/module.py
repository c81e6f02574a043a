"""A user's own ``nn.Module`` -> validated model files: ``ptx export --module FILE.py:FACTORY`` and
``ptx.export.export_module``.

The module is written by the format registry's own writers (export/formats/: ONNX through the
torch.export-based exporter with the TorchScript-based one as the stated fallback, TorchScript
traced or scripted, and on request a pt2 package and an int8 ONNX), the ones a tutorial model's
export uses, through the one export driver (export/pipeline.py). Every file is then loaded by the
code that will serve it (``ptx.infer.load``, the runtime floor export sits on) and run against the
eager module at two batch sizes, neither 0 nor 1, with seeded inputs made from the signature
(export/validate.py's one check); an output beyond its dtype's tolerance refuses the file (exit 1).
That is how a batch an exporter silently specialised (pytorch#148886) is caught at export, not by the first user with another batch.

Each file carries its contract: ``ptx.signature`` (the named tensors), ``ptx.weights_sha256`` (what
binds that contract to these weights), ``ptx.model`` and provenance; ``model.reference.npz`` beside
them keeps two seeded cases of the module's own inputs and outputs, so that the files can be
checked against eager PyTorch on a machine without PyTorch. The folder is written whole or not at
all (ptx.atomic.atomic_folder).

The module as the exporters trace it and its eager reference are export/traced.py's; a causal LM kept
with its key/value cache is written as export/decoder.py's source, through the same driver.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from ptx.atomic import atomic_folder, scratch_folder, writable_dir_for
from ptx.contract import ARTIFACT_FILES, DEFAULT_OPSET, Tolerance
from ptx.contract.comparison import check_tolerance, default_tolerance
from ptx.contract.batch_rows import describe_left_out, not_per_row, probe_rows
from ptx.contract.cases import Case
from ptx.contract.generation import encoder_file_name
from ptx.contract.reference import Reference, reference_path, save_reference
from ptx.contract.tensor_inputs import describe_inputs
from ptx.contract.structure import STRUCTURE_KEY
from ptx.contract.tensors import Signature, TensorSig
from ptx.contract.validated import tolerance_strings
from ptx.errors import PtxError
from ptx.files import file_sha256
from ptx.infer.model.text import TEXT_FILES
from ptx.infer.runtime.memory_plan import room_to_overlap

from .examples import describe
from .factory import load_state_dict_file
from .formats import get as get_format
from .formats.onnx import Exporter
from .formats.torchscript import MODES as TORCHSCRIPT_MODES
from .decoder import (SEQ2SEQ, DecoderSource, decoder_formats, decoder_source, refuse_beside_ort, refuse_bounds,
                      refuse_shaping, refuse_text)
from .seq2seq import Seq2SeqSource, chosen_task, eager_attention
from .metadata import module_strings
from .module_cases import case_of, file_cases, validation_cases
from .pipeline import ExportSource, check_options, export_files, guard
from .sizes import recorded_signature
from .traced import certified, eager_reference, trace
from .validate import ExportResult, tensor_evidence
from .weight_only import export_weight_only_decoder, split_weight_only

MODULE_FORMATS = ("onnx", "torchscript", "pt2", "onnx-int8")
DEFAULT_MODULE_FORMATS = ("onnx", "torchscript")  # pt2 compiles for ~40 s; int8 trades accuracy: on request


@dataclass
class ModuleExportResult:
    """What ``export_module`` wrote into ``out_dir``: the files, their shared signature and the
    reference tensors."""

    out_dir: Path
    name: str
    signature: Signature
    files: list[ExportResult] = field(default_factory=list)
    reference: Path | None = None


@dataclass(frozen=True)
class ModuleOptions:
    """What ``export_module`` takes beside the module, its example and the folder (by keyword):

    - ``inputs``: declarations in forward()'s order, ``"name=shape[:dtype]"`` strings (``--input``'s
      syntax: ``"x=batchx3xHxW"``, ``"h0=1xbatchx12"``, ``"mode=:int64"``) or TensorSigs: names,
      dtypes, which sizes are fixed and which are symbols (a dim named batch or N is the batch
      axis; other names are dynamic sizes). Without them, ``input_names`` (default: forward()'s
      parameter names) name the examples, and ``dynamic=True`` makes axis 0 of every input that
      has axes the batch (False: every size fixed as the example's, no batch axis).
    - ``output_names``: in the order forward() returns them (default: ``output`` for one tensor,
      ``output_0``... for a tuple, a dict's own keys; tuples, lists and dicts nested by each tensor's
      path, ``output_1_0``..., the structure recorded in the files for ``Model.nest``).
    - ``formats``: any of onnx, torchscript, pt2, onnx-int8 (default onnx and torchscript).
      ``exporter``: None tries the torch.export-based ONNX exporter and falls back to the
      TorchScript-based one where it refuses, saying so; "dynamo" or "legacy" uses that one only.
      ``torchscript_mode``: "trace" (default) or "script" (torch.jit.script; also what the
      TorchScript-based ONNX exporter is given, so Python control flow becomes an ONNX If).
      ``device``: the device a pt2 package is compiled for. ``opset``: the ONNX opset.
    - ``checkpoint``: a state_dict file loaded into the module first (strictly). ``name``: the
      model's name in the files (default: the module's class name). ``atol``, ``rtol``: the absolute
      and relative tolerance of float outputs (default: per dtype), recorded in the files
      (``ptx.tolerance``), where verify judges by them by default. ``text``: a generating model's tokenizer
      files by name (export/pretrained.py's text_files), kept beside it. ``force``: replace an
      ``out_dir`` that holds other files. ``provenance``: extra strings recorded in each file. ``reference``:
      False leaves model.reference.npz out (a deployment folder keeps the one file it serves). ``weights``: a
      decoder's weight-only formats' options (block_size, symmetric, accuracy_level, ratio, data_aware).
    - What the files are validated on: ``input_files`` (.npz/.npy/.json by input name, as verify's
      --inputs reads them) alone where given; else seeded inputs made from the signature
      (``plan``: plan_inputs' shapes, values, ranges, default_range, as verify's --shape, --value
      and --range give them; ``seed``), shaped as a tokenizer makes them (a mask ones then
      padding, ids below the rows of the embedding the module feeds them to), and the example
      inputs too (``example_label`` names them: the factory's example; ``use_example`` False leaves
      them out, as where you shaped the generated ones). The log says which.
    - ``max_sizes``: {symbol: size}, the largest size a dynamic axis is checked at by the shape
      certificate (beside 1, 2 and 7; ptx.contract.shape_certificate), and ``min_sizes`` the smallest
      the model takes (32 pixels for a network that downsamples 32 times: tried at 32, 33 and 37
      instead): an axis the export fixed, or whose answers change with it, refuses the file naming
      the node that fixed it; a size eager itself refuses is said as the model's bound, and not held
      against the file; the certificate of a file that holds is recorded in it (ptx.shape_certificate).
    - ``task``: "auto" (a transformers causal LM that generates is exported with its key/value cache,
      export/decoder.py's chosen_task), "text-generation" (with the cache, asked) or "forward" (one
      forward pass). ``bounds``: what a reduced precision's decoding of a model exported with its cache must
      hold, recorded in its files: {"min_agreement" | "max_kl" | "max_kl_p99": {precision or None: value}}
      (ptx.contract.generation_judge.Bounds; None for a precision: every one). ``all_logits``: a causal LM's
      decoder computes every new position's logits and takes no logits_to_keep (the inputs onnxruntime-genai,
      Optimum and openvino-genai feed; by default a transformers LM's file takes it). ``folder``: the transformers
      folder (export/folder_weights.FolderWeights) whose tensors a causal LM's parameters are: its graph is traced
      without them and each is read from the folder as a file is written; its weight-only formats are made from that
      graph, without model.onnx (export/pretrained.py).
      ``log``: where each line goes (print).
    """

    inputs: Sequence[TensorSig | str] | None = None
    input_names: Sequence[str] | None = None
    output_names: Sequence[str] | None = None
    dynamic: bool = True
    formats: Sequence[str] = DEFAULT_MODULE_FORMATS
    name: str | None = None
    checkpoint: str | Path | None = None
    opset: int = DEFAULT_OPSET
    exporter: str | None = None
    torchscript_mode: str = "trace"
    device: str = "cpu"
    atol: float | None = None
    rtol: float | None = None
    force: bool = False
    provenance: Mapping[str, str] | None = None
    reference: bool = True
    input_files: Sequence[str | Path] = ()
    plan: Mapping | None = None
    seed: int = 0
    max_sizes: Mapping[str, int] | None = None
    min_sizes: Mapping[str, int] | None = None
    example_label: str = "the example"
    use_example: bool = True
    task: str = "auto"
    text: Mapping[str, bytes] | None = None
    bounds: Mapping[str, Mapping] | None = None
    weights: Mapping | None = None
    all_logits: bool = False
    ort_attention: bool = False
    static_cache: bool = False
    folder: object | None = None
    log: Callable[[str], None] = print

    def tolerance(self, sig: TensorSig, on: str) -> Tolerance:
        """What output ``sig`` is held to on ``on``: its dtype's, an --atol or --rtol for float outputs."""
        return _tolerance(sig, on, self.atol, self.rtol)

    def writer_options(self) -> dict[str, dict]:
        """Each format's writer's options, by format name."""
        onnx = dict(opset=self.opset, exporter=Exporter(self.exporter) if self.exporter else None,
                    mode=self.torchscript_mode)
        return {"onnx": onnx, "onnx-int8": dict(onnx, log=self.log), "torchscript": dict(mode=self.torchscript_mode),
                "pt2": dict(device=self.device)}


def export_module(module: torch.nn.Module, example_inputs=None, out_dir: str | Path = "export",
                  **options) -> ModuleExportResult:
    """Export your own ``nn.Module`` to validated model files in ``out_dir``, each carrying its
    contract, with reference tensors beside them. ``ptx export --module FILE.py:FACTORY`` calls this;
    from Python::

        from ptx.export import export_module
        from ptx.infer import load

        result = export_module(model, (torch.rand(2, 3, 224, 224),), "exports/mynet", input_names=["image"],
                               output_names=["logits"])
        load("exports/mynet/model.onnx").run({"image": batch})  # torch-free from here on

    ``example_inputs``: a tensor, a tuple or list of tensors in forward()'s order, or a dict of them by
    forward()'s parameter names; may be None when ``inputs`` declares every input (ptx then makes
    seeded ones). Sizes that stay dynamic are raised to 2 where they are 0 or 1, because torch.export
    specializes those. ``options``: ModuleOptions' fields (inputs, output_names, formats, atol, ...).

    What comes out, in ``out_dir`` (written whole or not at all, replacing an earlier export):
    model.onnx, model.torchscript.pt, model.pt2, model.int8.onnx as asked, and model.reference.npz,
    each file written and checked by the one export driver (export/pipeline.py): loaded through
    ``ptx.infer.load`` and run against the eager module at batches 3 and 5 (or twice at the declared
    shapes without a batch axis), with seeded inputs; an output beyond its dtype's tolerance is a
    ValidationError (exit 1) naming the format, the batch, the output and its error, and nothing is
    kept. int8 is quantized dynamically (the module comes without samples to calibrate on) and checked
    to run with finite outputs of the right shapes, and given the one verdict (ptx.contract.verdict) by
    the generated cases alone, said so and recorded in it; its accuracy is yours to judge on real data
    (or quantize the exported model.onnx with `ptx export model.onnx --format onnx-int8 --calibration
    SAMPLES.npz`). An exporter's refusal is a PtxError naming the operator or the line of your code.
    The module is put in eval mode. Returns a ModuleExportResult.
    """
    given = ModuleOptions(**options)
    task = chosen_task(module, given.task, given.log)
    cached = task != "forward"
    reduced: list[str] = []  # a decoder's weight-only formats, made from its model.onnx once the folder is written
    if cached:
        refuse_shaping(input_files=given.input_files, output_names=given.output_names, plan=given.plan,
                       max_sizes=given.max_sizes, min_sizes=given.min_sizes)
        if given.ort_attention and tuple(given.formats) == DEFAULT_MODULE_FORMATS:
            given.log("formats: onnx (--ort-attention's file runs on ONNX Runtime alone: no TorchScript file)")
            given = replace(given, formats=("onnx",))
        written, reduced = split_weight_only(given.formats, given.log, f32_first=given.folder is None)
        if reduced and task == SEQ2SEQ:
            raise PtxError(f"--format {','.join(reduced)}: the weight-only formats are made from a causal LM's "
                           "decoder file; export an encoder-decoder to onnx, torchscript or pt2")
        if given.ort_attention:
            refuse_beside_ort(task == SEQ2SEQ, [*written, *reduced])
        if given.static_cache and task == SEQ2SEQ:
            raise PtxError("--static-cache is for a causal LM's decoder: export an encoder-decoder without it")
        for fmt in map(get_format, reduced):  # refused now, not after minutes of the f32 export they are made from
            fmt.check_options(**dict(given.weights or {}, opset=given.opset))
    # a folder's model asked for weight-only formats alone writes them from its folder, and no f32 file
    chosen = [get_format(f) for f in (([] if reduced and not written else decoder_formats(written)) if cached
                                      else _check_formats(given.formats))]
    if not cached:
        refuse_text(given.text)
        refuse_bounds(given.bounds)
        for flag, on in (("--all-logits", given.all_logits), ("--ort-attention", given.ort_attention),
                         ("--static-cache", given.static_cache)):
            if on:
                raise PtxError(f"{flag} is for a causal LM exported with its cache: leave it out, or give --task "
                               "text-generation")
        if given.torchscript_mode not in TORCHSCRIPT_MODES:
            raise PtxError(f"torchscript mode {given.torchscript_mode!r}: choose {' or '.join(TORCHSCRIPT_MODES)}")
        check_options(chosen, given.writer_options(), device=given.device)  # the opset, pt2's device
    if not isinstance(module, torch.nn.Module):
        raise PtxError(f"export_module takes an nn.Module, not {type(module).__name__}")
    name = _check_name(given.name or type(module).__name__)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, given.force, name)
    with eager_attention(module) if task == SEQ2SEQ else nullcontext():
        return _exported(module, example_inputs, out_dir, name, given, task, chosen, reduced)


def _exported(module, example_inputs, out_dir: Path, name: str, given: ModuleOptions, task: str,
              chosen: list, reduced: Sequence[str]) -> ModuleExportResult:
    """export_module's work once its options are checked: the source, then its files in ``out_dir`` (and
    ``reduced``: a decoder's weight-only formats, made from its model.onnx once the folder is written)."""
    cached = task != "forward"
    source = _decoder_source(module, name, given, task) if cached else ModuleSource(module, example_inputs, name, given)
    result = ModuleExportResult(out_dir, name, source.signature)  # as every file records it
    failed = None
    with writable_dir_for(out_dir.parent), atomic_folder(out_dir) as staging:
        result.files = export_files(source, chosen, lambda fmt: nullcontext(
            (staging / fmt.file_name, out_dir / fmt.file_name)), given.log, more_to_come=bool(reduced))
        if given.reference and isinstance(source, ModuleSource):
            result.reference = source.save_reference(staging, out_dir)
        if cached:
            source.keep_text(staging, given.log)
        try:  # in the same folder: Ctrl-C (or a crash) while they are made keeps an older export whole
            _reduced(source, reduced, staging, given, result)
        except PtxError as exc:  # a reduced format refused: the files checked before it are kept, then it is said
            failed = exc
    for made in result.files:
        made.path = out_dir / made.path.name  # where the folder's files are now
    if failed is not None:
        raise failed
    return result


def _reduced(source, reduced: Sequence[str], staging: Path, given: ModuleOptions, result: ModuleExportResult) -> None:
    """A decoder's weight-only formats ``reduced``, each written whole or not at all in ``staging`` (the folder being
    built) from the f32 file checked before them, added to ``result``; where one is NOT USABLE on its own runtime,
    where its file parts from the module, said."""
    if not reduced:
        return
    with _reduced_from(source, staging, given) as (f32, folder):
        for fmt in reduced:
            made = export_weight_only_decoder(
                f32, get_format(fmt), out=staging, force=True, options=dict(opset=given.opset, **(given.weights or {})),
                log=given.log, folder=folder)
            result.files.append(made)
            if made.verdicts and made.verdicts[0].reasons:
                where = source.departure(made.path)
                if where:
                    given.log(f"{'':<11} {where}")


@contextmanager
def _reduced_from(source, staging: Path, given: ModuleOptions):
    """(the f32 decoder file a weight-only format is made from, the folder it reads its weights from or None):
    model.onnx as export wrote it (in ``staging``); or, for a folder's model (``given.folder``), its graph traced
    without its weights in a scratch folder, read from the folder's shards one tensor at a time (no f32 file
    first)."""
    if given.folder is None:
        yield staging / "model.onnx", None
        return
    with scratch_folder("ptx-weightless-") as scratch:
        traced = "model.onnx's, traced without its weights" if source.has_weightless_graph else \
            "traced without its weights"
        given.log(f"graph: {traced} ({given.folder.folder.name}'s tensors read as each file is written)")
        path = source.lazy_graph(Path(scratch))
        if source.traced_how:
            given.log(f"graph: {source.traced_how}")
        yield path, given.folder


def _decoder_source(module: torch.nn.Module, name: str, given: ModuleOptions, task: str):
    """The source of a model kept with its key/value cache (export/decoder.py; an encoder-decoder's,
    export/seq2seq.py)."""
    return decoder_source(module, name=name, checkpoint=given.checkpoint, opset=given.opset, exporter=given.exporter,
                          device=given.device, provenance=given.provenance, log=given.log,
                          asked=given.task == task, inputs=given.inputs, tolerance=given.tolerance,
                          tolerance_given=tolerance_strings(given.atol, given.rtol), text=given.text,
                          bounds=given.bounds, made=Seq2SeqSource if task == SEQ2SEQ else DecoderSource,
                          all_logits=given.all_logits, ort_attention=given.ort_attention,
                          static_cache=given.static_cache, folder=given.folder)


class ModuleSource(ExportSource):
    """A user's nn.Module as the one driver writes it: traced as it comes (keyword inputs, a ModelOutput's
    tensors out: _traced), checked against eager (ptx.infer.load of the module) on validation cases and
    the shape certificate's probes, a reduced file judged by its tensors against eager's answers."""

    formats = MODULE_FORMATS

    def __init__(self, module: torch.nn.Module, example_inputs, name: str, given: ModuleOptions):
        loaded = load_state_dict_file(module, given.checkpoint, name) if given.checkpoint is not None else None
        module.eval()
        traced = trace(module, example_inputs, given)
        eager = eager_reference(traced, given)
        shapes, signature, structure = certified(traced, eager, given)
        log = given.log
        params = sum(p.numel() for p in traced.module.parameters())
        kind = "" if name == type(traced.given).__name__ else f"{type(traced.given).__name__}, "
        log(f"module: {name} ({kind}{params:,} parameters); inputs {describe(signature.inputs)}; "
            f"outputs {describe(signature.outputs)}")
        if loaded:
            log(f"checkpoint: {loaded}")
        self.given, self.from_files = given, bool(given.input_files)
        with_example = example_inputs is not None and not given.input_files and given.use_example
        self._cases = (file_cases(given.input_files, signature, eager) if given.input_files else
                       validation_cases(signature, eager, traced.base, given.seed))
        shapes.rows = _rows(signature, eager, self._cases, lambda o: given.tolerance(signature.output(o), "cpu"), log)
        signature = recorded_signature(_outputs_per_row(signature, shapes.rows), traced.base)  # what files keep
        example = {s.name: t.numpy() for s, t in zip(signature.inputs, traced.args)}
        log("validation inputs: " + (f"from {', '.join(Path(p).name for p in given.input_files)} "
                                     f"({len(self._cases)} cases)" if given.input_files else
                                     f"generated: {describe_inputs(signature, traced.base)}"
                                     + (f"; and {given.example_label}" if with_example else "")))
        strings = module_strings(name, signature, {
            "torch_version": str(torch.__version__),
            STRUCTURE_KEY: structure.to_json() if structure is not None else None,
            **({"checkpoint": Path(given.checkpoint).name, "checkpoint_sha256": file_sha256(given.checkpoint)}
               if loaded else {}),
            **tolerance_strings(given.atol, given.rtol), **dict(given.provenance or {})})
        super().__init__(name, traced.module, traced.args, signature, strings)
        self.shapes = shapes
        self.unreported = [case_of(signature, eager, example, given.example_label)] if with_example else []
        self.overlap = _room_to_overlap(traced.module)  # every check compares with the answers taken above
        self._options = given.writer_options()

    def cases(self, fmt) -> list[Case]:
        return self._cases

    def tolerance(self, sig: TensorSig, on: str) -> Tolerance:
        return self.given.tolerance(sig, on)

    def options(self, fmt) -> dict:
        return self._options[fmt.name]

    def evidence(self, fmt, path: Path, backend: str, answers, opened=None) -> list:
        # the serving runtime's answers stand in; a reduced file against eager's answers on the validation cases
        # (generated: a module comes without samples)
        return [tensor_evidence(fmt, path, self.signature, self._cases, f"{len(self._cases)} generated cases", answers,
                                backend, against="eager")]

    def describe(self, result: ExportResult, tolerance: Tolerance) -> str:
        worst = result.worst
        if not result.judged:
            return (f"runs {result.checked()}, |diff| vs eager up to {worst.max_abs:.2e} ({worst.name}; "
                    f"{result.method}; int8 is not judged by the f32 tolerance: check it on your own data)")
        return (f"worst |diff| vs eager {worst.max_abs:.2e} ({worst.name}, atol {tolerance.atol:g}, rtol "
                f"{tolerance.rtol:g}; {result.checked()}; {result.method}){result.ties()}")

    def save_reference(self, staging: Path, out_dir: Path) -> Path:
        """model.reference.npz beside the files: the cases' inputs and eager's outputs on them."""
        produced_by = f"eager PyTorch (torch {torch.__version__})"
        save_reference(reference_path(staging / "model.onnx"), Reference(
            self._cases, produced_by, self.signature, inputs="inputs" if self.from_files else "generated"))
        batches = [c.batch for c in self._cases if c.batch is not None]
        at = f"batches {' and '.join(map(str, batches))}" if batches else "the declared shapes"
        path = reference_path(out_dir / "model.onnx")
        self.given.log(f"{'reference':<11} {path}  {len(self._cases)} cases ({at}): the inputs and {produced_by}'s "
                       "outputs")
        return path


def _room_to_overlap(module: torch.nn.Module) -> bool:
    """Whether memory has room for one file to be checked while the next is written (the memory plan's)."""
    return room_to_overlap(sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())))


def _tolerance(sig: TensorSig, on: str, atol: float | None, rtol: float | None = None) -> Tolerance:
    own = default_tolerance(sig.dtype, on)  # an --atol or --rtol applies to float outputs; ints stay exact
    if (atol is None and rtol is None) or not sig.dtype_info.is_float:
        return own
    return check_tolerance(Tolerance(own.atol if atol is None else atol, own.rtol if rtol is None else rtol))


def _rows(signature: Signature, eager, cases: Sequence[Case], tolerance_of, log) -> dict[str, str]:
    """Which outputs eager answers per row (ptx.contract.batch_rows), learned on the largest batch of the
    validation cases; the ones that are not are said in one line."""
    batched = [c for c in cases if (c.batch or 0) >= 3]
    if not batched:
        return {}
    case = max(batched, key=lambda c: c.batch)

    def named(feeds):  # eager's answers by --output's names, as the cases keep them
        return dict(zip(signature.output_names, eager.run(feeds).values()))

    rows = probe_rows(named, signature, case.feeds, case.outputs, tolerance_of)
    left = describe_left_out(rows)
    if left:
        log(f"batch: not every output is per row: {left}; the files keep no batch axis for them, so verify's batch "
            "composition and a server's batching (which would join requests and split them) leave them out")
    return rows


def _outputs_per_row(signature: Signature, rows: Mapping[str, str]) -> Signature:
    """The signature whose outputs that are not per row keep no batch axis (their sizes stay as learned)."""
    if not not_per_row(rows):
        return signature
    return replace(signature, outputs=tuple(replace(t, batch_axis=None) if t.name in not_per_row(rows) else t
                                            for t in signature.outputs))


def _check_formats(formats: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in MODULE_FORMATS]
    if "openvino-int8" in unknown:  # NNCF calibrates on samples, and a module comes without them
        raise PtxError("openvino-int8 calibrates on real inputs, and a module comes without them: export it to onnx, "
                       "then `ptx export OUT/model.onnx --format openvino-int8 --calibration SAMPLES.npz`")
    if unknown or not chosen:
        raise PtxError(f"format {unknown[0] if unknown else '(none)'!r}: a module exports to "
                       f"{', '.join(MODULE_FORMATS)} (or all: {', '.join(DEFAULT_MODULE_FORMATS)})")
    return chosen


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r/\\"):
        raise PtxError(f"--name {name!r}: give a one-line name without slashes")
    return name.strip()


# Its files (an encoder-decoder's encoder files beside its decoder files), a generating model's tokenizer files
# and the reduced twins of its model.onnx (a decoder's int4): another file there means the folder is someone else's.
OWN_FILES = ({*ARTIFACT_FILES.values(), *(encoder_file_name(ARTIFACT_FILES[f]) for f in MODULE_FORMATS),
              reference_path("model.onnx").name, *TEXT_FILES} - {ARTIFACT_FILES["checkpoint"]})


def _check_out_dir(out_dir: Path, force: bool, name: str) -> None:
    """``out_dir`` refused (unless ``force``) where the export would replace what is not this model's: files ptx
    did not name, or the files of another model (whose name the ptx files there record: replacing the folder would
    delete them, as a new export of ``name`` writes other formats than they were)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PtxError(f"--out {out_dir}: a file, not a folder")

    def foreign(folder: Path) -> str | None:
        other = sorted(p.name for p in folder.iterdir() if p.name not in OWN_FILES)
        if other:
            return (f"--out {out_dir} holds other files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); "
                    "an export replaces the whole folder, so that its files always come from one module: give a new "
                    "or empty folder")
        others = sorted({made for made in map(_made_for, folder.iterdir()) if made not in (None, name)})
        return (f"--out {out_dir} holds {', '.join(others)}'s export, not {name}'s; an export replaces the whole "
                "folder: give another --out") if others else None
    guard(out_dir, force, foreign)


def _made_for(path: Path) -> str | None:
    """The model name a ptx file records (its metadata read alone, no runtime), None where it is no model file
    ptx can read."""
    from ptx.infer.formats.model_files import read_model_file

    if not path.is_file() or path.suffix not in (".onnx", ".pt", ".pt2"):  # a model's files, not its data beside them
        return None
    try:
        return read_model_file(path, digest=False).metadata.get("model")
    except Exception:  # noqa: BLE001 - a file that is no readable model file is no other model's export
        return None
