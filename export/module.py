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
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ptx.atomic import atomic_folder, writable_dir_for
from ptx.contract import ARTIFACT_FILES, DEFAULT_OPSET, Tolerance
from ptx.contract.comparison import check_tolerance, default_tolerance
from ptx.contract.batch_rows import describe_left_out, not_per_row, probe_rows
from ptx.contract.cases import Case
from ptx.contract.reference import Reference, reference_path, save_reference
from ptx.contract.shape_certificate import probes as certificate_probes
from ptx.contract.tensor_inputs import (VERIFY_BATCHES, InputPlan, describe_inputs, load_input_file, make_feeds,
                                        plan_inputs, symbol_steps)
from ptx.contract.structure import STRUCTURE_KEY, OutputStructure
from ptx.contract.tensors import Signature, TensorSig
from ptx.contract.validated import tolerance_strings
from ptx.errors import PtxError
from ptx.files import file_sha256
from ptx.machine import available_memory
from ptx.infer.model.target import load

from .as_it_comes import keyword_inputs, output_structure, tensor_outputs
from .certificate import attributes_restorer, eager_bounds
from .detections import FlatDetections, with_detections
from .examples import describe, example_signature, generated_examples, named_outputs, probe
from .factory import load_state_dict_file
from .formats import get as get_format
from .formats.onnx import Exporter
from .formats.torchscript import MODES as TORCHSCRIPT_MODES
from .generating import export_with_cache, refuse_shaping
from .generation import TASKS, generates
from .metadata import module_strings
from .pipeline import Plan, Shapes, check_options, export_files, guard
from .sizes import recorded_signature, search_sizes
from .validate import ExportResult, tensor_evidence

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


def export_module(module: torch.nn.Module, example_inputs=None, out_dir: str | Path = "export", *,
                  inputs: Sequence[TensorSig | str] | None = None,
                  input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                  dynamic: bool = True, formats: Sequence[str] = DEFAULT_MODULE_FORMATS, name: str | None = None,
                  checkpoint: str | Path | None = None, opset: int = DEFAULT_OPSET, exporter: str | None = None,
                  torchscript_mode: str = "trace", device: str = "cpu", atol: float | None = None,
                  force: bool = False, rtol: float | None = None, provenance: Mapping[str, str] | None = None,
                  reference: bool = True, weights: Mapping | None = None,
                  input_files: Sequence[str | Path] = (), plan: Mapping | None = None, seed: int = 0,
                  max_sizes: Mapping[str, int] | None = None, min_sizes: Mapping[str, int] | None = None,
                  example_label: str = "the example",
                  use_example: bool = True, task: str = "auto",
                  log: Callable[[str], None] = print) -> ModuleExportResult:
    """Export your own ``nn.Module`` to validated model files in ``out_dir``, each carrying its
    contract, with reference tensors beside them.

    ``ptx export --module FILE.py:FACTORY`` calls this; from Python::

        from ptx.export import export_module
        from ptx.infer import load

        result = export_module(model, (torch.rand(2, 3, 224, 224),), "exports/mynet", input_names=["image"],
                               output_names=["logits"])
        load("exports/mynet/model.onnx").run({"image": batch})  # torch-free from here on

    What goes in:

    - ``example_inputs``: a tensor, a tuple or list of tensors in forward()'s order, or a dict of
      them by forward()'s parameter names; may be None when ``inputs`` declares every input (ptx
      then makes seeded ones). Sizes that stay dynamic are raised to 2 where they are 0 or 1,
      because torch.export specializes those.
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
    - ``checkpoint``: a state_dict file loaded into ``module`` first (strictly). ``name``: the
      model's name in the files (default: the module's class name). ``atol``, ``rtol``: the absolute
      and relative tolerance of float outputs (default: per dtype), recorded in the files
      (``ptx.tolerance``), where verify judges by them by default. ``force``: replace an
      ``out_dir`` that holds other files. ``provenance``: extra strings recorded in each file. ``reference``: False
      leaves model.reference.npz out (a deployment folder keeps the one file it serves). ``weights``: a decoder's
      weight-only formats' options (block_size, symmetric, accuracy_level, ratio)
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

    What comes out, in ``out_dir`` (written whole or not at all, replacing an earlier export):
    model.onnx, model.torchscript.pt, model.pt2, model.int8.onnx as asked, and
    model.reference.npz. Each file is loaded through ``ptx.infer.load`` and run
    against the eager module at batches 3 and 5 (or twice at the declared shapes without a batch
    axis), with seeded inputs; an output beyond its dtype's tolerance is a ValidationError (exit 1)
    naming the format, the batch, the output and its error, and nothing is kept. int8 is quantized
    dynamically (the module comes without samples to calibrate on) and checked to run with finite
    outputs of the right shapes, and given the one verdict (ptx.contract.verdict) by the generated
    cases alone, said so and recorded in it; its accuracy is yours to judge on real data (or quantize
    the exported model.onnx with `ptx export model.onnx --format onnx-int8 --calibration SAMPLES.npz`).
    An exporter's refusal is a PtxError naming the operator or the line of your code. The module
    is put in eval mode. Returns a ModuleExportResult.
    """
    if task not in TASKS:
        raise PtxError(f"--task {task!r}: choose {', '.join(TASKS)}")
    if task == "text-generation" or (task == "auto" and isinstance(module, torch.nn.Module) and generates(module)):
        if not isinstance(module, torch.nn.Module):
            raise PtxError(f"export_module takes an nn.Module, not {type(module).__name__}")
        refuse_shaping(input_files=input_files, output_names=output_names, plan=plan, max_sizes=max_sizes,
                       min_sizes=min_sizes)
        name = _check_name(name or type(module).__name__)
        out_dir = Path(out_dir)
        _check_out_dir(out_dir, force)
        signature = export_with_cache(module, out_dir, formats=formats, name=name, checkpoint=checkpoint, opset=opset,
                                      exporter=exporter, device=device, provenance=provenance, log=log,
                                      asked=task == "text-generation", inputs=inputs, weights=weights,
                                      tolerance=lambda sig, on: _tolerance(sig, on, atol, rtol),
                                      tolerance_given=tolerance_strings(atol, rtol))
        return ModuleExportResult(out_dir, name, signature)
    chosen = [get_format(f) for f in _check_formats(formats)]
    if torchscript_mode not in TORCHSCRIPT_MODES:
        raise PtxError(f"torchscript mode {torchscript_mode!r}: choose {' or '.join(TORCHSCRIPT_MODES)}")
    onnx_options = dict(opset=opset, exporter=Exporter(exporter) if exporter else None, mode=torchscript_mode)
    options = {"onnx": onnx_options, "onnx-int8": dict(onnx_options, log=log),
               "torchscript": dict(mode=torchscript_mode), "pt2": dict(device=device)}
    check_options(chosen, options, device=device)  # the opset, pt2's device
    if not isinstance(module, torch.nn.Module):
        raise PtxError(f"export_module takes an nn.Module, not {type(module).__name__}")
    name = _check_name(name or type(module).__name__)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    loaded = load_state_dict_file(module, checkpoint, name) if checkpoint is not None else None
    module.eval()
    # A transformers model as it comes: inputs by forward()'s keyword, a ModelOutput's tensors out.
    given = module
    module, example_inputs = keyword_inputs(module, example_inputs, inputs, log)
    # Every eager run below may change the module on its way (transformers' Swin shrinks a window to a
    # small image, and keeps it): its attributes are put back after each, and before the exporters trace it.
    restore = attributes_restorer(module)
    sigs, args = example_signature(module, example_inputs, inputs, input_names, dynamic, log,
                                   plan_of=lambda declared: _input_plan(declared, plan, min_sizes))
    out, limits = probe(module, sigs, args, named=given)
    probed = args  # the inputs ``out`` answers
    restore()
    base = _input_plan(sigs, plan, min_sizes)
    base.limits = {n: v for n, v in limits.items() if n not in base.ranges and n not in base.values}
    if limits:  # a fact of the model, recorded in its signature: every generator (verify's too) keeps to it
        sigs = tuple(replace(t, value_range=(0, limits[t.name][0] - 1)) if t.name in limits and t.value_range is None
                     else t for t in sigs)
        if example_inputs is None:  # made from the declarations: again, with ids the embedding takes
            args = generated_examples(sigs, base)  # the same plan: each input's recorded range now bounds its ids
            if out is None:  # generated ids past a small vocabulary's rows: its answer, on ids it takes
                out, _ = probe(module, sigs, args, named=given)
                probed = args
                restore()
    # A size ptx chose that the model refuses (Wav2Vec2's 10-sample kernel): the first larger one it takes, for
    # the generated examples, or beside the factory's own (the eager reference and the cases are generated too).
    if example_inputs is None and out is None and search_sizes(module, sigs, base, log, type(given).__name__):
        args = generated_examples(sigs, base)
        out, _ = probe(module, sigs, args, named=given)
        probed = args
        restore()
    elif example_inputs is not None and base.chosen and out is not None:
        search_sizes(module, sigs, base, log, type(given).__name__, example=args)
    answered_as_is = module
    module = tensor_outputs(module, sigs, out, log)
    # recorded in the files, so that load() can give it back (Model.nest); detections record their own
    structure = None if isinstance(module, FlatDetections) else output_structure(out)
    probes = certificate_probes(Signature(sigs, ()), base, max_sizes=max_sizes, seed=seed, min_sizes=min_sizes)
    sizes_of_example = Signature(sigs, ()).symbol_sizes({t.name: a for t, a in zip(sigs, args)})
    # The eager reference, as ptx.infer.load(module) gives it: its outputs learned by two runs, made as the
    # validation cases are, whose answers it keeps for them: each run meets the module as the user made it.
    putting_back = _after_each_call(module, restore)
    try:
        eager = load(module, inputs=list(sigs), plan=base)
    except PtxError:  # said as the axis the module fixes where that is why (eager_bounds raises it), else as it came
        putting_back()
        restore()
        eager_bounds(module, Signature(sigs, ()), probes, args, restore)
        raise
    finally:
        putting_back()
        restore()
    eager.run = _restoring(eager.run, restore)  # every run below, the validation cases' too, puts it back
    if out is not None and args is probed and module is answered_as_is:  # the run that found the limits answers
        eager.runner.remember({t.name: a.numpy() for t, a in zip(sigs, args)}, out)  # its inputs: the example's,
        # or the generated ones (the certificate's batch-2 probe, made as they are)
    answers = [_answer(eager, p) for p in probes]
    bounds = {}
    if any(isinstance(a, PtxError) for a in answers):  # the model's own bound, or an axis forward fixes (raised)
        bounds = eager_bounds(module, Signature(sigs, ()), probes, args, restore)
        if not bounds:
            first = next(a for a in answers if isinstance(a, PtxError))
            if bounds is None:  # it refuses every size tried and the example's too: the sizes are not ones it takes
                at = ", ".join(f"{s}={n}" for s, n in sizes_of_example.items())
                raise PtxError(f"{type(given).__name__} refuses every size tried, and the example's ({at}) too "
                               f"({first}): give sizes it takes with --shape SYMBOL=SIZE (the image size or length it "
                               "was configured for), --min-shape where it takes only larger ones, or return example "
                               "inputs from FACTORY")
            raise first
    probes = [p for p, a in zip(probes, answers) if not isinstance(a, PtxError)]  # eager's refusals are not probed
    signature = with_detections(Signature(sigs, named_outputs(eager.signature.outputs, output_names)), module)
    structure = _renamed(structure, eager.signature, signature)
    # eager's answers by --output's names
    wants = [dict(zip(signature.output_names, a.values())) for a in answers if not isinstance(a, PtxError)]
    params = sum(p.numel() for p in module.parameters())
    kind = "" if name == type(given).__name__ else f"{type(given).__name__}, "
    log(f"module: {name} ({kind}{params:,} parameters); inputs {describe(signature.inputs)}; "
        f"outputs {describe(signature.outputs)}")
    if loaded:
        log(f"checkpoint: {loaded}")
    given = example_inputs is not None and not input_files and use_example
    cases = (_file_cases(input_files, signature, eager) if input_files else
             _validation_cases(signature, eager, base, seed))
    rows = _rows(signature, eager, cases, tolerance_of=lambda o: _tolerance(signature.output(o), "cpu", atol, rtol),
                 log=log)
    signature = recorded_signature(_outputs_per_row(signature, rows), base)  # what the files keep of both
    example = {s.name: t.numpy() for s, t in zip(signature.inputs, args)}
    unreported = [_case_of(signature, eager, example, example_label)] if given else []
    log("validation inputs: " + (f"from {', '.join(Path(p).name for p in input_files)} ({len(cases)} cases)"
                                 if input_files else f"generated: {describe_inputs(signature, base)}"
                                 + (f"; and {example_label}" if given else "")))
    strings = module_strings(name, signature, {
        "torch_version": str(torch.__version__),
        STRUCTURE_KEY: structure.to_json() if structure is not None else None,
        **({"checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint)} if loaded else {}),
        **tolerance_strings(atol, rtol), **dict(provenance or {})})

    def tolerance(sig: TensorSig, on: str) -> Tolerance:
        return _tolerance(sig, on, atol, rtol)

    def evidence(fmt, path: Path, backend: str, answers, opened=None) -> list:  # the serving runtime's answers stand in
        # a reduced file against eager's answers on the validation cases (generated: a module comes without samples)
        return [tensor_evidence(fmt, path, signature, cases, f"{len(cases)} generated cases", answers,
                                backend, against="eager")]

    plan = Plan(name, module, args, signature, strings, lambda fmt: cases, tolerance, lambda fmt: options[fmt.name],
                evidence, _describe, "(serve model.onnx)", shapes=Shapes(probes, wants, sizes_of_example, bounds, rows),
                unreported=unreported, overlap=_room_to_overlap(module))  # every check compares with the answers above
    result = ModuleExportResult(out_dir, name, signature)
    with writable_dir_for(out_dir.parent), atomic_folder(out_dir) as staging:
        result.files = export_files(plan, chosen, lambda fmt: nullcontext(
            (staging / fmt.file_name, out_dir / fmt.file_name)), log)
        if not reference:
            return result
        produced_by = f"eager PyTorch (torch {torch.__version__})"
        save_reference(reference_path(staging / "model.onnx"), Reference(cases, produced_by, signature,
                                                                          inputs="inputs" if input_files else "generated"))
        result.reference = reference_path(out_dir / "model.onnx")
        batches = [c.batch for c in cases if c.batch is not None]
        at = f"batches {' and '.join(map(str, batches))}" if batches else "the declared shapes"
        log(f"{'reference':<11} {result.reference}  {len(cases)} cases ({at}): the inputs and {produced_by}'s outputs")
    return result


# A file checked while the next is written holds the checking runtime beside the writer's work: about
# 2.5 times the weights more (ort-cpu's peak while it opens a file, infer/runtime/memory_plan.py). That
# overlap is taken only where it is at most an eighth of the memory available (room for 20 copies of the
# weights): a ViT-B/16 (347 MB) overlaps on a 24 GB machine, a 0.5B-parameter LM (1.98 GB) is exported
# and checked in turn, near a bare exporter's memory.
OVERLAP_ROOM = 20


def _room_to_overlap(module: torch.nn.Module) -> bool:
    """Whether memory has room for one file to be checked while the next is written (OVERLAP_ROOM)."""
    weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    room = available_memory()
    return room is not None and room > OVERLAP_ROOM * weights


def _renamed(structure: OutputStructure | None, eager: Signature, signature: Signature) -> OutputStructure | None:
    """The structure of the module's answer with the file's output names (--output renames them in
    order), or None where its leaves are not the outputs eager was seen to return."""
    if structure is None or structure.names() != eager.output_names:
        return None
    return structure.renamed(dict(zip(eager.output_names, signature.output_names)))


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


def _input_plan(sigs: Sequence[TensorSig], plan: Mapping | None, min_sizes: Mapping[str, int] | None):
    """How every input export makes is shaped: the user's --shape, --value and --range (``plan``), and
    a symbol ptx sizes itself at its --min-shape at least (a model that takes no shorter input)."""
    base = plan_inputs(Signature(tuple(sigs), ()), **dict(plan or {}))
    for symbol, size in (min_sizes or {}).items():
        if symbol in base.chosen:
            base.chosen[symbol] = max(base.chosen[symbol], size)
    return base


def _restoring(run, restore):
    """``run`` (eager's) with the module's attributes put back after every call, an answer or a refusal
    (``restore``: certificate.attributes_restorer): each case and probe, and the exporters' trace after
    them, meet the module as the user made it (a module that counts its calls answered the second
    validation case from the first's count, and the exported file was refused for the difference)."""
    def run_then_restore(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            restore()
    return run_then_restore


def _after_each_call(module, restore):
    """``restore`` called after each call of ``module`` until the function returned is called. A scripted
    module (torch.jit.script) takes no forward hook, and its attributes live in TorchScript, out of
    restore's reach: it is run as it is (export took it so before the hook)."""
    try:
        handle = module.register_forward_hook(lambda *_: restore())
    except RuntimeError:  # "register_forward_hook is not supported on ScriptModules"
        return lambda: None
    return handle.remove


def _answer(eager, probe) -> dict | PtxError:
    """Eager's outputs on one of the certificate's probes, or its refusal of the size."""
    try:
        return eager.run(dict(probe.feeds))
    except PtxError as exc:
        return exc


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


# Its files and the reduced twins of its model.onnx (a decoder's int4): another file means the folder is not ours.
OWN_FILES = {*ARTIFACT_FILES.values(), reference_path("model.onnx").name} - {ARTIFACT_FILES["checkpoint"]}


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PtxError(f"--out {out_dir}: a file, not a folder")

    def foreign(folder: Path) -> str | None:
        other = sorted(p.name for p in folder.iterdir() if p.name not in OWN_FILES)
        return (f"--out {out_dir} holds other files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); an "
                "export replaces the whole folder, so that its files always come from one module: give a new or empty "
                "folder") if other else None
    guard(out_dir, force, foreign)


def _file_cases(paths, signature: Signature, eager) -> list[Case]:
    """The user's own inputs (--inputs), each case checked against the signature, with eager's answers."""
    cases = []
    for path in paths:
        loaded = load_input_file(path, signature)
        for k, feeds in enumerate(loaded):
            cases.append(_case_of(signature, eager, feeds, Path(path).name + (f" #{k}" if len(loaded) > 1 else "")))
    return cases


def _case_of(signature: Signature, eager, feeds, label: str) -> Case:
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    sizes = {s: n for s, n in signature.symbol_sizes(feeds).items() if s not in batch_symbols}
    batch = next((int(feeds[t.name].shape[t.batch_axis]) for t in signature.inputs if t.batch_axis is not None), None)
    return Case(label, feeds, batch, dict(zip(signature.output_names, eager.run(dict(feeds)).values())), sizes)


def _validation_cases(signature: Signature, eager, first: InputPlan, seed: int) -> list[Case]:
    """Two seeded cases at VERIFY_BATCHES (or twice at the declared shapes without a batch axis),
    the second with every other symbol ptx sized larger by its own even step (symbol_steps: 2, 4,
    ...; twice as large for a model that takes no such size, a UNet of stride 16; the first's sizes
    for one that takes neither), so that a size an exporter fixed is caught. Seeded and
    sized as the eager runner's two runs that learned its outputs (torch_runner.probe_outputs), which
    answers them from those runs rather than running the module again. A scalar integer or boolean
    input (a flag that picks a branch) is 0/False in the first case and 1/True in the second, so that
    a traced branch is caught too. ``first``: the plan of the first case (the user's --shape, --value,
    --range; the embeddings' limits)."""
    inputs_only = Signature(signature.inputs, ())
    steps = symbol_steps(inputs_only)
    seconds = [replace(first, bound={**first.bound, **{s: v * grow + steps[s] * step for s, v in first.chosen.items()}})
               for grow, step in ((1, 1), (2, 0))] if first.chosen else []
    batched = any(t.batch_axis is not None for t in signature.inputs)
    cases = []
    for k, batch in enumerate(VERIFY_BATCHES if batched else (None, None)):
        for plan in ([first] if k == 0 else [*seconds, first]):
            feeds = make_feeds(inputs_only, plan, batch, seed=seed + k)
            for sig in signature.inputs:
                if sig.shape == () and (sig.dtype == "bool" or sig.dtype_info.is_integer) and sig.name not in plan.values:
                    low = int(sig.value_range[0]) if sig.value_range else 0
                    feeds[sig.name] = np.array(bool(k) if sig.dtype == "bool" else low + k, dtype=sig.dtype)
            try:
                produced = list(eager.run(feeds).values())
                break
            except PtxError:
                if plan is first:
                    raise
        cases.append(Case(f"batch {batch}" if batch is not None else ("the first case", "the second case")[k], feeds,
                          batch, dict(zip(signature.output_names, produced)),
                          {s: plan.bound.get(s) or plan.chosen[s] for s in {**first.chosen, **plan.bound}}))
    return cases


def _describe(done: ExportResult, tolerance: Tolerance) -> str:
    worst = done.worst
    if not done.judged:
        return (f"runs {done.checked()}, |diff| vs eager up to {worst.max_abs:.2e} ({worst.name}; {done.method}; int8 "
                "is not judged by the f32 tolerance: check it on your own data)")
    return (f"worst |diff| vs eager {worst.max_abs:.2e} ({worst.name}, atol {tolerance.atol:g}, rtol "
            f"{tolerance.rtol:g}; {done.checked()}; {done.method}){done.ties()}")
