"""onnx-int8: an ONNX graph quantized to int8 by onnxruntime.quantization (model.int8.onnx, or a user's
FILE.int8.onnx).

Static QDQ (weights and activations int8, per-channel weights), calibrated on the inputs the caller
gives: a tutorial model's real training samples its checkpoint keeps, a user's --calibration file or
inputs generated from the file's signature. Dynamic quantization (int8 weights, activations
quantized per call) where static calibration cannot work: recurrent graphs (ORT's shape inference
fails on the LSTM's graph, and its QDQ kernels do not cover LSTM/GRU/RNN), integer inputs, and a
user's module, which comes without samples (generated ones would calibrate its activations to
noise). A graph where neither quantizes anything is refused in one line; so is a tutorial model
whose task has no labels to judge int8 by (``unsupported``).

Weights use 7 of their 8 bits (onnxruntime's ``reduce_range``). On x86 CPUs without VNNI (AVX2, and
AVX-512 before Cascade Lake) an 8-bit dot product adds two uint8 x int8 products into a 16-bit
intermediate, which saturates for full-range weights (255 x 127 x 2 > 32,767): measured on an AVX2-only
AMD EPYC, convnet's int8 labels agreed with eager on 98.5% through ONNX Runtime against 99.8% through
OpenVINO on the same file. With 7-bit weights the pair sum (255 x 64 x 2 = 32,640) fits, so every x86
CPU computes the same sums (99.6% and 99.6% there): one file, one verdict, whatever CPU judges it.

The file carries the same metadata as the f32 graph (a tutorial model's contract, a user's
``ptx.signature``) plus ``ptx.precision`` = ``int8``, how it was quantized and the nodes kept in
f32; it is judged by labels (a tutorial model) or by its tensors against the f32 graph (a user's
model), never by the f32 atol.
"""
from __future__ import annotations

import functools
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ptx.contract import DEFAULT_OPSET, Task
from ptx.contract.metadata import from_props
from ptx.errors import PtxError, first_line

from . import ExportFormat, Written, description, register
from .onnx import DEFAULT_EXPORTER, check_opset, save_with_metadata
from .onnx import write as write_onnx

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
# Ops that only a quantized graph holds: one of them must be there, or nothing was quantized.
QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM",
                 "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul"}
CALIBRATION_BATCH = 64
TIMED_RUNS_NOTE = "medians of 20 runs each, alternating, ONNX Runtime on the CPU"
# How the weights are stored, as the artifact's ptx.quantization names it (module docstring: why 7 bits).
WEIGHTS = "7-bit int8 weights (reduce_range: no 16-bit saturation on CPUs without VNNI)"


def unsupported(spec) -> str | None:
    """Why ``spec`` cannot have an int8 artifact (so ``ptx models`` and export say so up front)."""
    if spec.task is Task.REGRESSION:
        return (f"onnx-int8: {spec.name} is a regression model; int8 is judged by label agreement and accuracy, "
                "which a regression has none of: serve model.onnx (f32)")
    return None


def quantized_statically(graph, signature) -> bool:
    """Whether ``graph`` is quantized statically (given inputs to calibrate on): not where it holds a
    recurrent op (ORT's shape inference fails on the LSTM's graph, and its QDQ kernels do not cover
    LSTM/GRU/RNN) or takes an integer input (a token id has no range to calibrate)."""
    return not RECURRENT_OPS & {n.op_type for n in graph.graph.node} and all(
        t.dtype == "float32" for t in signature.inputs)


def batches(signature, cases, size: int = CALIBRATION_BATCH) -> list[dict[str, np.ndarray]]:
    """Each case of inputs by name cut into batches of at most ``size`` rows (a case without a batch
    stays whole)."""
    out = []
    for case in cases:
        n = rows(signature, case)
        out += [case] if n is None else [take(signature, case, s, min(s + size, n)) for s in range(0, n, size)]
    return out


def take(signature, case, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of a case of inputs along each input's batch axis (an input without one whole)."""
    return {t.name: case[t.name] if t.batch_axis is None else
            np.ascontiguousarray(np.take(case[t.name], range(start, stop), axis=t.batch_axis)) for t in signature.inputs}


def rows(signature, case) -> int | None:
    """The batch of a case of inputs: its first batched input's size on its batch axis (None: none is)."""
    return next((case[t.name].shape[t.batch_axis] for t in signature.inputs if t.batch_axis is not None), None)


def _reader(cases: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        get_next = functools.partial(next, iter(cases), None)  # a partial is not bound: called without self

    return Reader()


def prepare(f32: Path) -> Path:
    """ORT's recommended first step (symbolic shape inference, then graph optimisation), so that
    fused ops are what gets quantized: the graph whose node names ``nodes_to_exclude`` takes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = f32.with_name("prepared.onnx")
    try:
        quant_pre_process(str(f32), str(prepared))
    except Exception:  # optional: quantizing the plain graph still works, only less fused
        return f32
    return prepared


def _quantize_static(prepared: Path, out: Path, calibration: list[dict[str, np.ndarray]], samples: int,
                     exclude: list[str] = ()) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    # U8S8 (uint8 activations, int8 weights): the pairing ORT's x86 kernels are built for; 7-bit
    # weights so that CPUs without VNNI do not saturate (module docstring).
    quantize_static(str(prepared), str(out), _reader(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True, nodes_to_exclude=list(exclude))
    return f"static QDQ, per-channel {WEIGHTS}, uint8 activations, {samples} calibration samples"


@contextmanager
def quiet_quantizer():
    """The quantizer logs advice through the root logger ("consider pre-processing ..."):
    addressed to us, not to a ptx user."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_dynamic_weights(f32: Path, out: Path, exclude: list[str] = ()) -> str:
    """int8 weights, activations quantized per call: needs no calibration data. Returns how."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(f32), str(out), weight_type=QuantType.QInt8, reduce_range=True,
                     nodes_to_exclude=list(exclude))
    return f"dynamic ({WEIGHTS}, activations quantized per call)"


def write(model, example, path: Path, signature, strings: dict[str, str], *, opset: int = DEFAULT_OPSET,
          exporter=None, mode: str = "trace", calibration=None, keep_f32=None, rank=None, judge=None,
          log=print) -> Written:
    """Quantize ``model`` into ``path`` and record how: an nn.Module is exported to f32 ONNX in a
    scratch folder first (the onnx format's writer, with ``opset``, ``exporter``, ``mode``); a path is
    an f32 ONNX file (a user's own), quantized as it is.

    ``calibration``: cases of inputs by name that static quantization calibrates on (None:
    dynamic). ``keep_f32``: node names onnxruntime's quantizer leaves in f32 (``nodes_to_exclude``),
    or ``auto`` (export/keep_f32.py) with ``rank`` and ``judge`` handed in by the caller."""
    import onnx

    from ..keep_f32 import AUTO, keep_auto, resolve, seconds_per_run

    name = strings["model"]
    with tempfile.TemporaryDirectory(prefix="ptx-int8-") as scratch:
        f32 = Path(scratch) / "model.onnx"
        made = None if isinstance(model, (str, Path)) else write_onnx(
            model, example, f32, signature, strings, opset=opset, exporter=exporter, mode=mode)
        proto = onnx.load(str(f32 if made else model))
        served = "model.onnx" if made else Path(model).name  # the f32 file a refusal sends the user back to
        # What the module's f32 export recorded (its opset, its exporter) travels on; a user's file's
        # own metadata is the caller's to vouch for (in ``strings``).
        base = {**from_props({p.key: p.value for p in proto.metadata_props}), **strings} if made else dict(strings)
        # The dynamo exporter's intermediate shape annotations can contradict the quantizer's own
        # shape inference (lstm: "Inferred shape and existing shape differ"); it re-infers them.
        del proto.graph.value_info[:]
        onnx.save(proto, str(f32))
        static = calibration is not None and quantized_statically(proto, signature)
        calibrated = batches(signature, calibration or [])
        samples = sum(rows(signature, c) or 1 for c in calibration or [])
        source = prepare(f32) if static else f32  # the graph the quantizer reads: its node names

        made_here: dict[Path, tuple[str, list[str]]] = {}  # file -> (how it was quantized, the nodes kept in f32)
        graph_read = onnx.load(str(source))

        def quantize(exclude, out=path) -> Path:
            exclude = resolve(exclude, graph_read, proto, name) if exclude else []
            try:
                with quiet_quantizer():
                    how = (_quantize_static(source, out, calibrated, samples, exclude) if static
                           else quantize_dynamic_weights(source, out, exclude))
            except Exception as exc:  # the quantizer raises many types; its first line says what failed
                raise PtxError(f"onnx-int8: onnxruntime's {'static' if static else 'dynamic'} quantizer failed for "
                               f"{name}: {first_line(exc)}; serve {served} (f32)") from None
            if exclude:
                how += f", {len(exclude)} node{'s' * (len(exclude) != 1)} kept in f32"
            save_with_metadata(quantized_graph(out, name, served), out,
                               {**base, "precision": "int8", "quantization": how,
                                **({"keep_f32": ",".join(exclude)} if exclude else {})}, description(base))
            made_here[out] = how, exclude
            return out

        feeds = calibrated[0] if calibrated else None  # what the ranking and the timing run on
        if keep_f32 == AUTO:
            if feeds is None:
                raise PtxError("--keep-f32 auto ranks nodes on calibration inputs, and there are none here")
            done = keep_auto(quantize, f32, feeds, rank, judge, name, log, quantizable(graph_read, static))
            if not done.nodes:
                log(f"onnx-int8   --keep-f32 auto: nothing needed keeping in f32 ({done.rounds[0]})")
        else:
            quantize(keep_f32 or [])
        method, kept = made_here[path]
        if kept and feeds is not None:  # what keeping them costs: the int8 file with none kept, timed against this one
            everything = quantize([], Path(scratch) / "all-int8.onnx")
            before, after = seconds_per_run([everything, path], feeds)
            batch = rows(signature, feeds)
            log(f"onnx-int8   kept {len(kept)} node{'s' * (len(kept) != 1)} in f32 ({', '.join(kept)}): "
                f"{f'a batch of {batch}' if batch else 'a call'} takes {after * 1e3:.2f} ms where all-int8 takes "
                f"{before * 1e3:.2f} ms ({after / before:.2f}x, {TIMED_RUNS_NOTE})")
    return Written(method + (f", from the {made.method}" if made else ""), made and made.note, made and made.hint)


def quantizable(graph, static: bool) -> list[str]:
    """The nodes of ``graph`` (the one the quantizer reads) that its registry quantizes, in graph
    order: the ones ``nodes_to_exclude`` can keep in f32."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    ops = QDQRegistry if static else IntegerOpsRegistry
    return [n.name for n in graph.graph.node if n.op_type in ops and n.name]


def quantized_graph(path: Path, model: str, served: str = "model.onnx"):
    """The quantized ONNX at ``path``, refused in one line when the quantizer left nothing in int8."""
    import onnx

    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    if not ops & QUANTIZED_OPS:
        kinds = ", ".join(sorted(RECURRENT_OPS & ops)) or "its"
        raise PtxError(f"onnx-int8: onnxruntime's quantizer leaves nothing of {model} in int8 ({kinds} ops "
                       f"have no int8 kernels): serve {served} (f32)")
    return proto


register(ExportFormat(name="onnx-int8", description="ONNX quantized to int8 (ort-cpu and openvino --precision int8)",
                      serving_backend="ort-cpu", write=write, precision="int8", calibrated=True, in_all=False,
                      unsupported=unsupported,
                      check_options=lambda opset, exporter, **_: check_opset(opset, exporter or DEFAULT_EXPORTER)))
