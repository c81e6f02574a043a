"""A user's own ``nn.Module`` -> validated model files: ``ptx export --module FILE.py:FACTORY`` and
``ptx.export.export_module``.

The module is exported to ONNX (the torch.export-based exporter, with the TorchScript-based one as
the stated fallback), TorchScript (traced, or scripted on request) and, on request, a pt2 package
and an int8 ONNX, through the same writers as the tutorial models' formats. Every file is then
loaded by the code that will serve it (``ptx.infer.load``, handed in as ``open_model``: export
comes before infer in ptx's flow) and run against the eager module at two batch sizes, neither 0
nor 1, with seeded inputs made from the signature; an output beyond its dtype's tolerance refuses
the file (exit 1). That is how a batch an exporter silently specialised (pytorch#148886) is
caught at export, not by the first user with another batch.

Each file carries its contract: ``ptx.signature`` (the named tensors), ``ptx.weights_sha256`` (what
binds that contract to these weights), ``ptx.model`` and provenance; ``model.reference.npz`` beside
them keeps two seeded cases of the module's own inputs and outputs, so that the files can be
checked against eager PyTorch on a machine without PyTorch. The folder is written whole or not at
all (ptx.atomic.atomic_folder).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import re
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ptx.atomic import atomic_folder, writable_dir_for
from ptx.contract import ARTIFACT_FILES, DEFAULT_OPSET, Tolerance
from ptx.contract.comparison import OutputAgreement, check_tolerance, compare_output, default_tolerance
from ptx.contract.reference import Reference, ReferenceCase, reference_path, save_reference
from ptx.contract.tensor_inputs import VERIFY_BATCHES, InputPlan, check_feeds, make_feeds, plan_inputs
from ptx.contract.tensors import Signature, TensorSig, as_declarations, dtype_info
from ptx.errors import InputError, PtxError, ValidationError, first_line
from ptx.files import file_sha256

from .formats import get as get_format
from .formats.onnx import Exporter, check_opset, export_graph, finish
from .formats.onnx_int8 import quantize_dynamic_weights, quantized_graph, quiet_quantizer
from .formats.pt2 import DEVICES as PT2_DEVICES
from .formats.pt2 import MAX_DIM, check_device, compile_package, probe_load
from .formats.torchscript import quiet_jit, save_with_metadata as save_torchscript
from .metadata import module_strings

MODULE_FORMATS = ("onnx", "torchscript", "pt2", "onnx-int8")
DEFAULT_MODULE_FORMATS = ("onnx", "torchscript")  # pt2 compiles for ~40 s; int8 trades accuracy: on request
TORCHSCRIPT_MODES = ("trace", "script")
MADE_BY = {"trace": "traced", "script": "scripted"}
EXAMPLE_MIN = 2  # torch.export specializes a dynamic size of 0 or 1: examples are at least this
EXPORTERS = {Exporter.DYNAMO: "torch.export-based", Exporter.LEGACY: "TorchScript-based"}
OpenModel = Callable[..., object]  # ptx.infer.load: (path or module, **options) -> a TensorModel


@dataclass
class ModuleExport:
    """One written, validated file."""

    format: str
    path: Path
    size_bytes: int
    method: str  # how it was made: "torch.export-based exporter, opset 18", "traced", ...
    batches: tuple[int, ...]  # the batch sizes it was checked at (none without a batch axis)
    agreements: dict[str, OutputAgreement]  # per output, the worst case
    judged: bool = True  # False: int8, checked to run and give finite outputs, not judged by the f32 tolerance
    note: str | None = None  # the exporter fallback, said in one line
    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the other symbols' sizes checked: seq 8, 10

    @property
    def worst(self) -> OutputAgreement:
        return max(self.agreements.values(), key=lambda a: a.max_abs)


@dataclass
class ModuleExportResult:
    """What ``export_module`` wrote into ``out_dir``: the files, their shared signature and the
    reference tensors."""

    out_dir: Path
    name: str
    signature: Signature
    files: list[ModuleExport] = field(default_factory=list)
    reference: Path | None = None


@dataclass
class _Case:
    batch: int | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]  # eager's, by the signature's output names
    sizes: dict[str, int] = field(default_factory=dict)  # the other symbols' sizes in this case

    @property
    def where(self) -> str:
        return f"batch {self.batch}" if self.batch is not None else "the second case"


def export_module(module: torch.nn.Module, example_inputs=None, out_dir: str | Path = "export", *,
                  open_model: OpenModel, inputs: Sequence[TensorSig | str] | None = None,
                  input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                  dynamic: bool = True, formats: Sequence[str] = DEFAULT_MODULE_FORMATS, name: str | None = None,
                  checkpoint: str | Path | None = None, opset: int = DEFAULT_OPSET, exporter: str | None = None,
                  torchscript_mode: str = "trace", device: str = "cpu", atol: float | None = None,
                  force: bool = False, provenance: Mapping[str, str] | None = None,
                  log: Callable[[str], None] = print) -> ModuleExportResult:
    """Export your own ``nn.Module`` to validated model files in ``out_dir``, each carrying its
    contract, with reference tensors beside them.

    ``ptx export --module FILE.py:FACTORY`` calls this; from Python::

        from ptx.export import export_module
        from ptx.infer import load

        result = export_module(model, (torch.rand(2, 3, 224, 224),), "exports/mynet", open_model=load,
                               input_names=["image"], output_names=["logits"])
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
      ``output_0``... for a tuple, a dict's own keys).
    - ``formats``: any of onnx, torchscript, pt2, onnx-int8 (default onnx and torchscript).
      ``exporter``: None tries the torch.export-based ONNX exporter and falls back to the
      TorchScript-based one where it refuses, saying so; "dynamo" or "legacy" uses that one only.
      ``torchscript_mode``: "trace" (default) or "script" (torch.jit.script; also what the
      TorchScript-based ONNX exporter is given, so Python control flow becomes an ONNX If).
      ``device``: the device a pt2 package is compiled for. ``opset``: the ONNX opset.
    - ``checkpoint``: a state_dict file loaded into ``module`` first (strictly). ``name``: the
      model's name in the files (default: the module's class name). ``atol``: the absolute
      tolerance of float outputs (default: per dtype). ``force``: replace an ``out_dir`` that holds
      other files. ``provenance``: extra strings recorded in each file.

    What comes out, in ``out_dir`` (written whole or not at all, replacing an earlier export):
    model.onnx, model.torchscript.pt, model.pt2, model.int8.onnx as asked, and
    model.reference.npz. Each file is loaded through ``open_model`` (``ptx.infer.load``) and run
    against the eager module at batches 3 and 5 (or twice at the declared shapes without a batch
    axis), with seeded inputs; an output beyond its dtype's tolerance is a ValidationError (exit 1)
    naming the format, the batch, the output and its error, and nothing is kept. int8 is checked to
    run with finite outputs of the right shapes; its accuracy is yours to judge on real data.
    An exporter's refusal is a PtxError naming the operator or the line of your code. The module
    is put in eval mode. Returns a ModuleExportResult.
    """
    formats = _check_formats(formats, device)
    if torchscript_mode not in TORCHSCRIPT_MODES:
        raise PtxError(f"torchscript mode {torchscript_mode!r}: choose {' or '.join(TORCHSCRIPT_MODES)}")
    chosen_exporter = Exporter(exporter) if exporter else None
    if "onnx" in formats or "onnx-int8" in formats:
        check_opset(opset, chosen_exporter or Exporter.DYNAMO)
    if not isinstance(module, torch.nn.Module):
        raise PtxError(f"export_module takes an nn.Module, not {type(module).__name__}")
    name = _check_name(name or type(module).__name__)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    loaded = load_state_dict_file(module, checkpoint, name) if checkpoint is not None else None
    module.eval()
    sigs, args = example_signature(module, example_inputs, inputs, input_names, dynamic, log)
    # The eager reference, as ptx.infer.load(module) gives it: its outputs learned by two runs.
    reference = open_model(module, inputs=list(sigs))
    signature = Signature(sigs, _named_outputs(reference.signature.outputs, output_names))
    params = sum(p.numel() for p in module.parameters())
    kind = "" if name == type(module).__name__ else f"{type(module).__name__}, "
    log(f"module: {name} ({kind}{params:,} parameters); inputs {_describe(signature.inputs)}; "
        f"outputs {_describe(signature.outputs)}")
    if loaded:
        log(f"checkpoint: {loaded}")
    cases = _validation_cases(signature, reference)
    strings = module_strings(name, signature, {
        **({"checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint)} if loaded else {}),
        **dict(provenance or {})})

    def tolerance(sig: TensorSig, on: str) -> Tolerance:
        own = default_tolerance(sig.dtype, on)  # an --atol applies to float outputs; ints stay exact
        return own if atol is None or not sig.dtype_info.is_float else check_tolerance(Tolerance(atol, own.rtol))

    result = ModuleExportResult(out_dir, name, signature)
    user_files = _user_files(module)
    with writable_dir_for(out_dir.parent), atomic_folder(out_dir) as staging:
        for fmt in formats:
            path = staging / ARTIFACT_FILES[fmt]
            on = device if fmt == "pt2" else "cpu"
            progress = get_format(fmt).progress
            if progress:
                log(f"{fmt:<11} {progress.format(device=device)} ...")
            made = _WRITERS[fmt](module=module, args=args, signature=signature, path=path, strings=strings,
                                 staging=staging, opset=opset, exporter=chosen_exporter, mode=torchscript_mode,
                                 device=device, name=name, user_files=user_files)
            if made.note:
                log(f"{fmt:<11} {made.note}")
            agreements = _validate(fmt, path, open_model, signature, cases, lambda s: tolerance(s, on), on,
                                   judged=fmt != "onnx-int8", hint=made.hint)
            final = out_dir / path.name
            done = ModuleExport(fmt, final, path.stat().st_size, made.method, _batches(cases), agreements,
                                judged=fmt != "onnx-int8", note=made.note,
                                sizes={s: tuple(c.sizes[s] for c in cases) for s in cases[0].sizes})
            result.files.append(done)
            log(_describe_export(done, tolerance(signature.output(done.worst.name), on)))
        produced_by = f"eager PyTorch (torch {torch.__version__})"
        save_reference(reference_path(staging / "model.onnx"), Reference(
            [ReferenceCase(c.inputs, c.outputs) for c in cases], produced_by, signature))
        result.reference = reference_path(out_dir / "model.onnx")
        at = f"batches {' and '.join(map(str, _batches(cases)))}" if _batches(cases) else "the declared shapes"
        log(f"{'reference':<11} {result.reference}  {len(cases)} cases ({at}): the inputs and {produced_by}'s outputs")
    return result


# -- what goes in ---------------------------------------------------------------------------------


def _check_formats(formats: Sequence[str], device: str) -> list[str]:
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in MODULE_FORMATS]
    if unknown or not chosen:
        raise PtxError(f"format {unknown[0] if unknown else '(none)'!r}: a module exports to "
                       f"{', '.join(MODULE_FORMATS)} (or all: {', '.join(DEFAULT_MODULE_FORMATS)})")
    if device not in PT2_DEVICES:
        raise PtxError(f"--device {device!r}: pt2 compiles for {' or '.join(PT2_DEVICES)}")
    if device != "cpu":
        if "pt2" not in chosen:  # refused, not ignored: the portable formats have no device
            raise PtxError(f"--device {device} is the device pt2 compiles for; {', '.join(chosen)} "
                           f"{'is' if len(chosen) == 1 else 'are'} portable: add --format pt2 or drop --device")
        check_device(device)
    return chosen


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\n\r/\\"):
        raise PtxError(f"--name {name!r}: give a one-line name without slashes")
    return name.strip()


# What export_module writes into its folder: another file there means the folder is someone else's.
OWN_FILES = {*(ARTIFACT_FILES[f] for f in MODULE_FORMATS), reference_path("model.onnx").name}


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise PtxError(f"--out {out_dir}: a file, not a folder")
    if force or not out_dir.is_dir():
        return
    other = sorted(p.name for p in out_dir.iterdir() if p.name not in OWN_FILES)
    if other:
        raise PtxError(f"--out {out_dir} holds other files ({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); "
                       "an export replaces the whole folder, so that its files always come from one module: give a new "
                       "or empty folder, or --force to replace it")


def _forward_parameters(module: torch.nn.Module) -> list[str] | None:
    """forward()'s positional parameter names, or None where it takes *args."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _as_examples(module: torch.nn.Module, example_inputs) -> tuple[list[str] | None, tuple[torch.Tensor, ...]]:
    """(names from a dict's keys or None, the tensors in forward()'s order)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        names = [str(k) for k in example_inputs]
        params = _forward_parameters(module)
        if params is not None:
            unknown = [n for n in names if n not in params]
            if unknown:
                raise PtxError(f"example input {unknown[0]!r} is no parameter of {type(module).__name__}.forward"
                               f"({', '.join(params)})")
            if sorted(names, key=params.index) != params[:len(names)]:
                raise PtxError(f"example inputs {names} leave out a parameter before the last one of "
                               f"{type(module).__name__}.forward({', '.join(params)}): give the leading ones")
            names = params[:len(names)]  # passed positionally, in forward()'s order
        values = [example_inputs[n] for n in names]
    elif isinstance(example_inputs, (tuple, list)):
        names, values = None, list(example_inputs)
    else:
        raise PtxError(f"example inputs are a tensor, a tuple or list of tensors or a dict of them, not "
                       f"{type(example_inputs).__name__}")
    bad = [i for i, v in enumerate(values) if not isinstance(v, torch.Tensor)]
    if bad:
        raise PtxError(f"example input {bad[0]} is {type(values[bad[0]]).__name__}, not a tensor: ptx exports modules "
                       "whose inputs are tensors (a Python number that picks a branch can be a 0-d tensor)")
    if not values:
        raise PtxError("no example inputs: give at least one tensor, or declare the inputs")
    return names, tuple(v.detach().cpu().contiguous() for v in values)


def _dtype_name(tensor: torch.Tensor, where: str) -> str:
    try:
        return dtype_info(str(tensor.dtype), where).name
    except PtxError as exc:
        raise PtxError(str(exc)) from None


def example_signature(module: torch.nn.Module, example_inputs, inputs, input_names, dynamic: bool,
                      log: Callable[[str], None] = print) -> tuple[tuple[TensorSig, ...], tuple[torch.Tensor, ...]]:
    """The inputs' signature and the example tensors the exporters are called with (see
    export_module: declarations, examples, or both)."""
    declared = _in_forward_order(module, as_declarations(inputs), log)
    if example_inputs is None:
        if not declared:
            raise PtxError("the module comes without example inputs: declare each input in forward()'s order with "
                           "--input NAME=SHAPE[:DTYPE] (library: inputs=[...]), or return (module, example inputs) "
                           "from FACTORY")
        if input_names and list(input_names) != [t.name for t in declared]:
            raise PtxError(f"input names {list(input_names)} and --input's {[t.name for t in declared]} disagree")
        return declared, _generated_examples(declared)
    dict_names, tensors = _as_examples(module, example_inputs)
    if declared:
        if len(declared) != len(tensors):
            raise PtxError(f"--input declares {len(declared)} inputs ({', '.join(t.name for t in declared)}) and the "
                           f"example has {len(tensors)}: declare one per example tensor, in forward()'s order")
        _check_declared(declared, tensors)
        sigs = declared
    else:
        names = list(input_names or dict_names or [])
        if not names:
            params = _forward_parameters(module) or []
            names = params[:len(tensors)] if len(params) >= len(tensors) else []
        names = names or [f"input_{i}" for i in range(len(tensors))]
        if len(names) != len(tensors):
            raise PtxError(f"input names {names} name {len(names)} inputs; the example has {len(tensors)}")
        sigs = tuple(TensorSig(n, _dtype_name(t, f"example input {n!r}"),
                               tuple(("batch" if dynamic and axis == 0 else d) for axis, d in enumerate(t.shape)),
                               0 if dynamic and t.dim() else None)
                     for n, t in zip(names, tensors))
    return sigs, _at_least_two(sigs, tensors, log)


def _in_forward_order(module: torch.nn.Module, declared: tuple[TensorSig, ...],
                      log: Callable[[str], None]) -> tuple[TensorSig, ...]:
    """The declarations matched to forward()'s parameters by name and put in its order, since the
    exporters call forward() by position: ``--input attention_mask=... --input input_ids=...``
    would otherwise export a module that takes the mask as its ids, and pass every check. A name
    that is no parameter is refused naming forward()'s; a forward(*args) can only be matched by
    position, so there --input's order is kept, and said. A forward() of one parameter takes one
    input of any name (``--input image=...`` for ``forward(self, x)``): the name is the file's."""
    if not declared:
        return declared
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return declared
    where = f"{type(module).__name__}.forward"
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        log(f"inputs: {where} takes *args, so --input's order is forward()'s: "
            f"{', '.join(t.name for t in declared)} go in by position")
        return declared
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) == 1 and len(declared) == 1:
        return declared  # one input into forward(x): its name is the file's, nothing to match
    takes = f"{where}({', '.join(positional)})"
    twice = next((t.name for i, t in enumerate(declared) if t.name in [d.name for d in declared[:i]]), None)
    if twice is not None:  # else the position check below says "add --input for " and names nothing
        raise PtxError(f"--input {twice} is given twice: declare each of {takes}'s inputs once")
    for sig in declared:
        if sig.name not in positional:
            raise PtxError(f"--input {sig.name}: {takes} has no parameter {sig.name!r}: name each --input as one of "
                           f"forward()'s parameters ({', '.join(positional) or 'it takes none by position'})")
    ordered = tuple(sorted(declared, key=lambda t: positional.index(t.name)))
    names = [t.name for t in ordered]
    if names != positional[:len(names)]:
        skipped = [n for n in positional[:positional.index(names[-1])] if n not in names]
        raise PtxError(f"--input {', '.join(names)}: {takes} takes its inputs by position, so the parameters before "
                       f"{names[-1]} need declaring too: add --input for {', '.join(skipped)}")
    if ordered != declared:
        log(f"inputs: in {where}'s order: {', '.join(names)}")
    return ordered


def _check_declared(declared: Sequence[TensorSig], tensors: Sequence[torch.Tensor]) -> None:
    """The example tensors fit the declarations: dtypes exactly (the example's dtype becomes the
    graph's), then ranks, fixed sizes and one size per symbol, as run() checks a caller's inputs."""
    for sig, tensor in zip(declared, tensors):
        dtype = _dtype_name(tensor, f"the example for --input {sig.name}")
        if dtype != sig.dtype:
            raise PtxError(f"--input {sig.name} declares {sig.dtype}; the example tensor is {dtype}")
    try:
        check_feeds(Signature(tuple(declared), ()), {s.name: t.numpy() for s, t in zip(declared, tensors)},
                    "the example")
    except InputError as exc:
        raise PtxError(f"--input and the example inputs disagree: {exc}") from None


def _generated_examples(sigs: Sequence[TensorSig]) -> tuple[torch.Tensor, ...]:
    """Seeded examples from declarations: the batch 2, other symbols as verify chooses them."""
    only = Signature(tuple(sigs), ())
    feeds = make_feeds(only, plan_inputs(only), EXAMPLE_MIN, seed=0)
    return tuple(torch.from_numpy(feeds[t.name]) for t in sigs)


def _at_least_two(sigs: Sequence[TensorSig], tensors: Sequence[torch.Tensor], log) -> tuple[torch.Tensor, ...]:
    """The examples with every dynamic size of 0 or 1 raised to 2 by repeating the example (rows
    are independent of one another in a batch; torch.export specializes sizes 0 and 1), after
    checking that each symbol has one size across the inputs."""
    sizes: dict[str, tuple[int, str]] = {}
    for sig, tensor in zip(sigs, tensors):
        for axis, d in enumerate(sig.shape):
            if isinstance(d, str):
                seen = sizes.setdefault(d, (tensor.shape[axis], sig.name))
                if seen[0] != tensor.shape[axis]:
                    raise PtxError(f"example inputs {seen[1]!r} and {sig.name!r} disagree on {d}: "
                                   f"{seen[0]} and {tensor.shape[axis]}")
    small = {d: n for d, (n, _) in sizes.items() if n < EXAMPLE_MIN}
    if any(n == 0 for n in small.values()):
        raise PtxError(f"the example inputs are empty along {', '.join(d for d, n in small.items() if n == 0)}: give "
                       "examples with real rows")
    if not small:
        return tuple(tensors)
    out = []
    for sig, tensor in zip(sigs, tensors):
        for axis, d in enumerate(sig.shape):
            if d in small:
                tensor = torch.cat([tensor] * EXAMPLE_MIN, dim=axis)
        out.append(tensor)
    log(f"examples: {', '.join(f'{d} of 1' for d in small)} repeated to {EXAMPLE_MIN} (torch.export fixes a dynamic "
        "size of 0 or 1 to that size)")
    return tuple(out)


def _named_outputs(probed: Sequence[TensorSig], names: Sequence[str] | None) -> tuple[TensorSig, ...]:
    if names is None:
        return tuple(probed)
    names = list(names)
    if len(names) != len(probed):
        raise PtxError(f"output names {names} name {len(names)} outputs; the module returns {len(probed)} "
                       f"({', '.join(t.name for t in probed)})")
    return tuple(replace(t, name=n) for t, n in zip(probed, names))


def _describe(tensors: Sequence[TensorSig]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in tensors)


# -- validation -----------------------------------------------------------------------------------


def _validation_cases(signature: Signature, reference) -> list[_Case]:
    """Two seeded cases at VERIFY_BATCHES (or twice at the declared shapes without a batch axis),
    the second with every other symbol 2 larger, so that a size an exporter fixed is caught. A
    scalar integer or boolean input (a flag that picks a branch) is 0/False in the first case and
    1/True in the second, so that a traced branch is caught too."""
    inputs_only = Signature(signature.inputs, ())
    first = plan_inputs(inputs_only)
    plans = (first, InputPlan(bound={s: v + 2 for s, v in first.chosen.items()}))
    batched = any(t.batch_axis is not None for t in signature.inputs)
    cases = []
    for k, (batch, plan) in enumerate(zip(VERIFY_BATCHES if batched else (None, None), plans)):
        feeds = make_feeds(inputs_only, plan, batch, seed=k)
        for sig in signature.inputs:
            if sig.shape == () and (sig.dtype == "bool" or sig.dtype_info.is_integer) and sig.name not in plan.values:
                low = int(sig.value_range[0]) if sig.value_range else 0
                feeds[sig.name] = np.array(bool(k) if sig.dtype == "bool" else low + k, dtype=sig.dtype)
        produced = list(reference.run(feeds).values())
        cases.append(_Case(batch, feeds, dict(zip(signature.output_names, produced)),
                           {s: plan.bound.get(s) or plan.chosen[s] for s in {**first.chosen, **plan.bound}}))
    return cases


def _batches(cases: Sequence[_Case]) -> tuple[int, ...]:
    return tuple(c.batch for c in cases if c.batch is not None)


def _validate(fmt: str, path: Path, open_model: OpenModel, signature: Signature, cases: Sequence[_Case],
              tolerance: Callable[[TensorSig], Tolerance], device: str, *, judged: bool = True,
              hint: Callable[[], str] | None = None) -> dict[str, OutputAgreement]:
    """Load the file at ``path`` as ptx will serve it and compare it with eager on every case;
    ValidationError in one line (format, case, output, error) on the first disagreement."""
    def why() -> str:
        extra = hint() if hint else ""
        return f" ({extra})" if extra else ""

    try:
        model = open_model(path, device=device, probe=False)
    except PtxError as exc:
        raise ValidationError(f"{fmt}: the file ptx wrote does not load: {exc}") from None
    if model.signature.output_names != signature.output_names:
        raise ValidationError(f"{fmt}: the file's outputs are {model.signature.output_names}, the module's "
                              f"{signature.output_names}")
    worst: dict[str, OutputAgreement] = {}
    try:
        for case in cases:
            try:
                got = model.run(case.inputs)
            except PtxError as exc:  # ModelRunError: e.g. a batch the exporter fixed
                raise ValidationError(f"{fmt}: {case.where} does not run: {exc}{why()}") from None
            for sig in signature.outputs:
                agreement = compare_output(sig.name, got[sig.name], case.outputs[sig.name], tolerance(sig),
                                           sig.batch_axis)
                if agreement.problem or (judged and not agreement.ok):
                    raise ValidationError(f"{fmt}: {case.where}: {agreement.summary()}{why()}")
                if sig.name not in worst or agreement.max_abs > worst[sig.name].max_abs:
                    worst[sig.name] = agreement
    finally:
        model.close()
    return worst


def _describe_export(done: ModuleExport, tolerance: Tolerance) -> str:
    worst = done.worst
    size = f"{done.size_bytes / 1024:,.1f} KiB"
    checked = f"batches {', '.join(map(str, done.batches))}" if done.batches else "2 cases at the declared shapes"
    checked += "".join(f"; {symbol} {', '.join(map(str, sizes))}" for symbol, sizes in done.sizes.items())
    if not done.judged:
        return (f"{done.format:<11} {done.path}  {size}  runs {checked}, |diff| vs eager up to {worst.max_abs:.2e} "
                f"({worst.name}; {done.method}; int8 is not judged by the f32 tolerance: check it on your own data)")
    return (f"{done.format:<11} {done.path}  {size}  worst |diff| vs eager {worst.max_abs:.2e} ({worst.name}, atol "
            f"{tolerance.atol:g}, rtol {tolerance.rtol:g}; {checked}; {done.method})")


# -- the writers ----------------------------------------------------------------------------------


@dataclass
class _Made:
    method: str
    note: str | None = None  # said before the file's line: the exporter fallback
    hint: Callable[[], str] | None = None  # what to add to a validation failure: why it may have failed


def _dims(signature: Signature) -> tuple[dict | None, ...]:
    """torch.export's dynamic_shapes: one Dim per symbol, shared by every input that has it."""
    dims = {s: torch.export.Dim(s, min=1, max=MAX_DIM) for s in signature.symbols()}
    return tuple({axis: dims[d] for axis, d in enumerate(t.shape) if isinstance(d, str)} or None
                 for t in signature.inputs)


def _axes(signature: Signature) -> dict[str, dict[int, str]]:
    """torch.onnx's dynamic_axes (the TorchScript-based exporter): {tensor name: {axis: symbol}}."""
    return {t.name: {axis: d for axis, d in enumerate(t.shape) if isinstance(d, str)}
            for t in (*signature.inputs, *signature.outputs) if t.symbols}


def _write_onnx(*, module, args, signature, path, strings, opset, exporter, mode, name, user_files, **_) -> _Made:
    tries = [exporter] if exporter else [Exporter.DYNAMO, Exporter.LEGACY]
    refusals: list[str] = []
    for which in tries:
        target = module
        try:
            if which is Exporter.LEGACY and mode == "script":
                with quiet_jit():
                    target = torch.jit.script(module)
            export_graph(target, args, path, exporter=which, opset=opset, input_names=signature.input_names,
                         output_names=signature.output_names, dynamic_shapes=_dims(signature),
                         dynamic_axes=_axes(signature))
            break
        except Exception as exc:  # noqa: BLE001 - the exporters raise many types; described in one line
            refusals.append(f"the {EXPORTERS[which]} exporter refused ({describe_refusal(exc, user_files)})")
    else:
        raise PtxError(f"onnx: {name} cannot be exported to ONNX: {'; '.join(refusals)}"
                       + (f"; {CONTROL_FLOW}" if any(DATA_DEPENDENT in r for r in refusals) and mode != "script" else ""))
    note = f"{refusals[0]}: used the {EXPORTERS[which]} one" if refusals else None
    traced = which is Exporter.LEGACY and mode == "trace"
    _check_graph_inputs(path, signature, which, [*refusals, *([CONTROL_FLOW] if traced else [])])
    extra = finish(path, strings, f"{name}, exported by ptx from a PyTorch module",
                   {"opset": str(opset), "exporter": which.value,
                    **({"torchscript_method": mode} if which is Exporter.LEGACY else {})})

    def hint() -> str:
        return "; ".join(filter(None, [_fixed_symbols(path, signature), note and f"{refusals[0]}: the "
                                       f"{EXPORTERS[which]} one {MADE_BY[mode]} the module"]))

    return _Made(f"{EXPORTERS[which]} exporter, opset {extra['opset']}"
                 + (f", {MADE_BY[mode]}" if which is Exporter.LEGACY else ""), note, hint)


DATA_DEPENDENT = "data-dependent"  # torch.export's words for a Python branch on a tensor's value
CONTROL_FLOW = ("Python control flow needs --torchscript-mode script (library: torchscript_mode='script'; it becomes "
                "an ONNX If) or torch.cond")


def _check_graph_inputs(path: Path, signature: Signature, which: Exporter, why: Sequence[str]) -> None:
    """Refuse a graph that lost inputs: tracing turns an input the module only branches on (or
    reads as a Python number) into a constant, and the exporter drops it."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    kept = [i.name for i in graph.input]
    lost = [n for n in signature.input_names if n not in kept]
    if lost:
        raise ValidationError(f"onnx: the {EXPORTERS[which]} exporter left input {', '.join(map(repr, lost))} out of "
                              f"the graph: it became a constant (the module branches on it, or reads it as a Python "
                              f"number){''.join(f'; {w}' for w in why)}")


def _fixed_symbols(path: Path, signature: Signature) -> str:
    """Which dynamic input sizes the ONNX graph at ``path`` holds fixed (an exporter specialised
    them to the example's), or ''."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    fixed = []
    for value, sig in zip(graph.input, signature.inputs):
        dims = value.type.tensor_type.shape.dim
        for axis, d in enumerate(sig.shape):
            if isinstance(d, str) and axis < len(dims) and dims[axis].HasField("dim_value"):
                fixed.append(f"{sig.name}'s axis {axis} ({d}) to {dims[axis].dim_value}")
    return ("the exporter fixed " + ", ".join(fixed) + ": the module's code turns that size into a constant "
            "(int(x.size(0)), a shape read as a Python number)") if fixed else ""


def _write_torchscript(*, module, args, path, strings, mode, name, user_files, **_) -> _Made:
    with quiet_jit(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            compiled = torch.jit.script(module) if mode == "script" else torch.jit.trace(
                module, args, check_trace=False, strict=False)
        except Exception as exc:  # noqa: BLE001 - torch.jit raises many types; described in one line
            how = "torch.jit.script refused" if mode == "script" else "torch.jit.trace failed on"
            raise PtxError(f"torchscript: {how} {name} ({describe_refusal(exc, user_files)})"
                           + ("; try --torchscript-mode trace" if mode == "script" else "")) from None
    warned = [f"{Path(w.filename).name}:{w.lineno}: {str(w.message).split('.')[0]}" for w in caught
              if issubclass(w.category, torch.jit.TracerWarning) and _is_user_file(w.filename, user_files)]
    try:
        save_torchscript(compiled, path, {**strings, "torchscript_method": mode})
    except RuntimeError as exc:
        # A scripted forward(self, x, bias=None) compiles, and then torch.jit.save fails with
        # "strides() called on an undefined Tensor" (the None default of a Tensor): a traceback before.
        raise PtxError(f"torchscript: torch.jit.save could not save the {MADE_BY[mode]} {name} ({first_line(exc)})"
                       + ("; annotate a forward() parameter that defaults to None as Optional[torch.Tensor], "
                          "or try --torchscript-mode trace" if mode == "script" else "")) from None

    def hint() -> str:
        return ("tracing warned at " + "; ".join(dict.fromkeys(warned)) + ": give --torchscript-mode script"
                if warned else "")

    return _Made(MADE_BY[mode], None, hint)


def _write_pt2(*, module, args, signature, path, strings, device, name, user_files, **_) -> _Made:
    try:
        compile_package(module, args, _dims(signature), path, {**strings, "aoti_device": device}, device)
    except PtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export and Inductor raise many types
        raise PtxError(f"pt2: {name} cannot be exported as pt2 ({describe_refusal(exc, user_files)}); --format onnx "
                       "or torchscript may still work") from None
    probe_load(path, device, name)
    return _Made(f"torch.export + AOTInductor for {device}")


def _write_int8(*, module, args, signature, path, strings, staging, opset, exporter, mode, name, user_files,
                **_) -> _Made:
    """Dynamic quantization (int8 weights, activations quantized per call): a user's module comes
    without the real samples static calibration needs, and generated ones would calibrate the
    activations to noise."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="ptx-int8-") as scratch:
        f32 = Path(scratch) / "model.onnx"
        made = _write_onnx(module=module, args=args, signature=signature, path=f32, strings=strings, opset=opset,
                           exporter=exporter, mode=mode, name=name, user_files=user_files)
        proto = onnx.load(str(f32))
        # The dynamo exporter's shape annotations can contradict the quantizer's own shape inference.
        del proto.graph.value_info[:]
        onnx.save(proto, str(f32))
        try:
            with quiet_quantizer():
                method = quantize_dynamic_weights(f32, path)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many types
            raise PtxError(f"onnx-int8: onnxruntime's dynamic quantizer failed for {name}: {first_line(exc)}; serve "
                           "model.onnx (f32)") from None
    proto = quantized_graph(path, name)
    from .formats.onnx import save_with_metadata

    save_with_metadata(proto, path, {**strings, "precision": "int8", "quantization": method},
                       f"{name}, exported by ptx from a PyTorch module, int8")
    return _Made(f"weights int8, activations quantized per call, from the {made.method}", made.note)


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript, "pt2": _write_pt2, "onnx-int8": _write_int8}


# -- saying what an exporter refused --------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
# How each exporter names the operator it has no translation for.
_OPERATOR = [
    (re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'"), lambda m: m.replace(".", "::", 1)),
    (re.compile(r"unrecognized namespace ([\w:]+(?:\.\w+)*)"), None),
    (re.compile(r"Exporting the operator '?([\w:.]+)'? to ONNX opset version \d+ is not supported"), None),
    (re.compile(r"Unsupported: ONNX export of operator ([\w:.]+)"), None),
    (re.compile(r"Unsupported FX nodes: \{'call_function': \['([^']+)'"), None),
]
# torch.export's exceptions that say more in plain words than in their message.
PLAIN = {"GuardOnDataDependentSymNode": "data-dependent control flow (a Python branch or size on a tensor's value)"}
_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


def _is_user_file(filename: str, user_files: Sequence[str] = ()) -> bool:
    if user_files:
        return str(Path(filename).resolve()) in user_files
    return not (filename.startswith("<") or "site-packages" in filename or "dist-packages" in filename
                or str(Path(filename).resolve()).startswith(_TORCH_DIR))


def _user_files(module: torch.nn.Module) -> tuple[str, ...]:
    """The source files of the module's classes that are not torch's: where a refusal's line is."""
    files = set()
    for sub in module.modules():
        try:
            source = inspect.getsourcefile(type(sub))
        except TypeError:
            continue
        if source and _is_user_file(source):
            files.add(str(Path(source).resolve()))
    return tuple(sorted(files))


def describe_refusal(exc: BaseException, user_files: Sequence[str] = ()) -> str:
    """An exporter's exception in one line: the operator it has no translation for, or what it
    could not do and the line of the user's code it was at (torch.export's errors carry that frame:
    ``File "net.py", line 12``), as ``net.py:12 `if x.sum() > 0:```."""
    text = str(exc)
    op = None
    for pattern, fix in _OPERATOR:
        match = pattern.search(text)
        if match:
            op = fix(match[1]) if fix else match[1]
            break
    what = f"operator {op} has no ONNX translation" if op else _summary(exc, text)
    where = _user_line(exc, text, user_files)
    return f"{what}{f', at {where}' if where else ''}"[:400]


def _summary(exc: BaseException, text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()]
    if "## Exception summary" in lines:  # torch.onnx's report: the cause is the next line
        cause = next((ln for ln in lines[lines.index("## Exception summary") + 1:] if ln), "")
        match = re.match(r"<class '(?:[\w.]+\.)?(\w+)'>: (.*)", cause)
        if match:
            return PLAIN.get(match[1]) or f"{match[1]}: {_sentence(match[2])}"
    return f"{type(exc).__name__}: {_sentence(first_line(exc))}"


def _sentence(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    text = re.sub(r"\s*\(unhinted: [^)]*\)", "", text)  # torch.export repeats the expression
    cut = re.search(r"(?<=[a-z0-9)\]])\.\s", text)
    return (text[:cut.start()] if cut else text)[:200]


def _user_line(exc: BaseException, text: str, user_files: Sequence[str]) -> str | None:
    """``file.py:LINE `code``` of the innermost frame in the user's code: from the message (torch.export
    and torch.jit.script print it), else from the traceback."""
    lines = text.splitlines()
    found = None
    for i, line in enumerate(lines):
        match = _FRAME.search(line)
        if match and _is_user_file(match[1], user_files):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            found = (match[1], match[2], code if code and not _FRAME.search(code) else "")
    if found is None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename, user_files)]
        if frames:
            found = (frames[-1].filename, str(frames[-1].lineno), (frames[-1].line or "").strip())
    if found is None:
        return None
    file, line, code = found
    return f"{Path(file).name}:{line}" + (f" `{code[:80]}`" if code else "")


# -- FILE.py:FACTORY and --checkpoint -------------------------------------------------------------


@dataclass
class Factory:
    """What ``--module FILE.py:FACTORY`` gave: the module, its example inputs (or None) and where
    it came from."""

    module: torch.nn.Module
    example_inputs: object
    source: Path
    factory: str

    @property
    def provenance(self) -> dict[str, str]:
        return {"source": f"{self.source.name}:{self.factory}",
                "source_sha256": hashlib.sha256(self.source.read_bytes()).hexdigest()}


def load_factory(spec: str) -> Factory:
    """Import FILE.py (it runs, as ``python FILE.py`` would run it, with its folder on sys.path)
    and call FACTORY(), which returns an nn.Module or (module, example inputs). Every failure is
    one PtxError naming the file and, where there is one, the line."""
    text, sep, factory = str(spec).rpartition(":")
    if not sep or not text or not factory:
        raise PtxError(f"--module {spec}: write FILE.py:FACTORY, FACTORY the function (or class) in FILE.py that "
                       "returns your nn.Module, e.g. --module net.py:build")
    path = Path(text)
    if not path.is_file():
        raise PtxError(f"--module {spec}: no such file {path}")
    if not factory.isidentifier():
        raise PtxError(f"--module {spec}: {factory!r} is not a Python name")
    module_name = f"ptx_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise PtxError(f"--module {spec}: {path} is not a Python file")
    namespace = importlib.util.module_from_spec(loader)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its sibling modules import as they do under `python FILE.py`
    # torch.jit.script and inspect read the classes' source through the module: it must be registered.
    sys.modules[module_name] = namespace
    try:
        loader.loader.exec_module(namespace)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PtxError(f"--module {spec}: {Path(exc.filename or path).name}:{exc.lineno}: syntax error: "
                       f"{exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(module_name, None)
        raise PtxError(f"--module {spec}: importing {path.name} raised {type(exc).__name__}: {_sentence(first_line(exc))}"
                       f"{_traceback_line(exc, path)}") from None
    target = getattr(namespace, factory, None)
    if target is None:
        defined = [k for k, v in vars(namespace).items() if callable(v) and not k.startswith("_")
                   and getattr(v, "__module__", None) == module_name]
        # Functions first (a factory is one), and the count of the rest: the first 8 names alone, in
        # file order, read as the whole list and hid the factory the user meant.
        defined.sort(key=lambda k: isinstance(vars(namespace)[k], type))
        close = difflib.get_close_matches(factory, defined, 1)
        raise PtxError(f"--module {spec}: {path.name} defines no {factory}"
                       + (f" (did you mean {close[0]}?)" if close else "")
                       + (f"; it defines {', '.join(defined[:8])}" if defined else "")
                       + (f" and {len(defined) - 8} more" if len(defined) > 8 else ""))
    if not callable(target):
        raise PtxError(f"--module {spec}: {factory} is a {type(target).__name__}, not a function or class")
    try:
        made = target()
    except Exception as exc:  # noqa: BLE001
        raise PtxError(f"--module {spec}: {factory}() raised {type(exc).__name__}: {_sentence(first_line(exc))}"
                       f"{_traceback_line(exc, path)}") from None
    example = None
    if isinstance(made, (tuple, list)) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise PtxError(f"--module {spec}: {factory}() returned {type(made).__name__}; return an nn.Module, or "
                       "(module, example inputs)")
    return Factory(made, example, path, factory)


def _traceback_line(exc: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f" (at {path.name}:{frames[-1].lineno})" if frames else ""


STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")  # where common checkpoints nest theirs


def load_state_dict_file(module: torch.nn.Module, path: str | Path, name: str) -> str:
    """Load the state_dict saved at ``path`` into ``module``, strictly; one PtxError naming the first
    missing or unexpected key (or the first size mismatch) otherwise. Returns what was loaded."""
    path = Path(path)
    if not path.is_file():
        raise PtxError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors of many types
        raise PtxError(f"--checkpoint {path}: not a state_dict torch loads safely ({_sentence(first_line(exc))}); "
                       "save one with torch.save(model.state_dict(), PATH)") from None
    nested = ""
    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in STATE_DICT_KEYS if isinstance(state.get(k), Mapping)), None)
        if key is None:
            raise PtxError(f"--checkpoint {path}: holds a dict whose values are not all tensors and no "
                           f"{'/'.join(STATE_DICT_KEYS)} entry: save torch.save(model.state_dict(), PATH)")
        state, nested = state[key], f"[{key!r}]"
    if not isinstance(state, Mapping):
        raise PtxError(f"--checkpoint {path}: holds a {type(state).__name__}, not a state_dict")
    expected = set(module.state_dict())
    # A Lightning checkpoint names its weights model.l.weight, a DistributedDataParallel one
    # module.l.weight, a torch.compile'd one _orig_mod.l.weight: a prefix on every key, and without
    # it exactly the module's keys, is taken off (and said) rather than refused as not fitting.
    bare, stripped = state, ""
    while bare and set(bare) != expected:
        prefix = next(iter(bare)).split(".", 1)[0] + "."
        if not all(k.startswith(prefix) for k in bare):
            break
        bare, stripped = {k[len(prefix):]: v for k, v in bare.items()}, stripped + prefix
    if stripped and set(bare) == expected:
        state = bare
    else:
        stripped = ""  # no fit either way: the keys are named as saved
    missing = [k for k in module.state_dict() if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [f"{kind} key {keys[0]!r}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
                 for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise PtxError(f"--checkpoint {path}{nested} does not fit {name}: {'; '.join(parts)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        mismatch = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), first_line(exc))
        raise PtxError(f"--checkpoint {path}{nested} does not fit {name}: {mismatch}") from None
    return f"{path}{nested} ({len(state)} tensors, loaded strictly" + \
        (f", without the prefix {stripped!r} on every key)" if stripped else ")")
