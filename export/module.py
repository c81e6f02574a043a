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

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ptx.atomic import atomic_folder, writable_dir_for
from ptx.contract import ARTIFACT_FILES, DEFAULT_OPSET, Tolerance
from ptx.contract.comparison import OutputAgreement, check_tolerance, compare_output, default_tolerance
from ptx.contract.reference import Reference, ReferenceCase, reference_path, save_reference
from ptx.contract.tensor_inputs import VERIFY_BATCHES, InputPlan, make_feeds, plan_inputs
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError, ValidationError, first_line
from ptx.files import file_sha256

from .formats import get as get_format
from .formats.onnx import Exporter, check_opset, export_graph, finish
from .formats.onnx_int8 import quantize_dynamic_weights, quantized_graph, quiet_quantizer
from .formats.pt2 import DEVICES as PT2_DEVICES
from .formats.pt2 import MAX_DIM, check_device, compile_package, probe_load
from .formats.torchscript import quiet_jit, save_with_metadata as save_torchscript
from .examples import describe as _describe, example_signature, named_outputs as _named_outputs
from .factory import load_state_dict_file
from .metadata import module_strings
from .refusal import CONTROL_FLOW, DATA_DEPENDENT, describe_refusal, is_user_file as _is_user_file
from .refusal import user_files as _user_files

MODULE_FORMATS = ("onnx", "torchscript", "pt2", "onnx-int8")
DEFAULT_MODULE_FORMATS = ("onnx", "torchscript")  # pt2 compiles for ~40 s; int8 trades accuracy: on request
TORCHSCRIPT_MODES = ("trace", "script")
MADE_BY = {"trace": "traced", "script": "scripted"}
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
