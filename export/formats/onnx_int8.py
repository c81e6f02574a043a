"""onnx-int8: the ONNX export quantized to int8 by onnxruntime.quantization (model.int8.onnx).

Static QDQ (weights and activations int8, per-channel weights), calibrated on the real training
samples the checkpoint keeps; dynamic quantization (int8 weights, activations quantized per call)
for recurrent graphs, where static calibration cannot work (ORT's shape inference fails on the
LSTM's graph, and its QDQ kernels do not cover LSTM/GRU/RNN). A model where neither quantizes
anything, or whose task has no labels to judge int8 by, is refused in one line.

Weights use 7 of their 8 bits (onnxruntime's ``reduce_range``). On x86 CPUs without VNNI (AVX2, and
AVX-512 before Cascade Lake) an 8-bit dot product adds two uint8 x int8 products into a 16-bit
intermediate, which saturates for full-range weights (255 x 127 x 2 > 32,767): measured on an AVX2-only
AMD EPYC, convnet's int8 labels agreed with eager on 98.5% through ONNX Runtime against 99.8% through
OpenVINO on the same file. With 7-bit weights the pair sum (255 x 64 x 2 = 32,640) fits, so every x86
CPU computes the same sums (99.6% and 99.6% there): one file, one verdict, whatever CPU judges it.

The file carries the same contract as model.onnx plus ``ptx.precision`` = ``int8`` and how it was
quantized; ``ptx verify`` judges it by labels and test accuracy, never by the f32 atol.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ptx.contract import Contract, Task
from ptx.errors import PtxError, first_line

from . import ExportFormat, register
from .onnx import check_opset, save_with_metadata
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


def refuse_task(contract: Contract) -> None:
    if contract.task is Task.REGRESSION:
        raise PtxError(f"onnx-int8: {contract.model} is a regression model; int8 is judged by label agreement and "
                       "accuracy, which a regression has none of: serve model.onnx (f32)")


def _reader(contract: Contract, calibration: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    axis = contract.input.batch_axis

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = calibration.shape[axis]
            self.batches = iter([np.take(calibration, range(s, min(s + CALIBRATION_BATCH, n)), axis=axis)
                                 for s in range(0, n, CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {contract.input.name: np.ascontiguousarray(batch)}

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


def _quantize_static(prepared: Path, out: Path, contract: Contract, calibration: np.ndarray,
                     exclude: list[str] = ()) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    axis = contract.input.batch_axis
    # U8S8 (uint8 activations, int8 weights): the pairing ORT's x86 kernels are built for; 7-bit
    # weights so that CPUs without VNNI do not saturate (module docstring).
    quantize_static(str(prepared), str(out), _reader(contract, calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True, nodes_to_exclude=list(exclude))
    return (f"static QDQ, per-channel {WEIGHTS}, uint8 activations, {calibration.shape[axis]} calibration "
            "samples")


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


def write(model, example, path: Path, contract: Contract, strings: dict[str, str], *, opset: int, exporter,
          calibration: np.ndarray, keep_f32=None, rank=None, judge=None, log=print) -> dict[str, str]:
    """Export f32 ONNX to a scratch folder, quantize it into ``path``, and record how.

    ``keep_f32``: node names onnxruntime's quantizer leaves in f32 (``nodes_to_exclude``), or
    ``auto`` (export/keep_f32.py) with ``rank`` and ``judge`` handed in by the caller."""
    import onnx

    from ..keep_f32 import AUTO, keep_auto, resolve, seconds_per_run

    refuse_task(contract)
    with tempfile.TemporaryDirectory(prefix="ptx-int8-") as scratch:
        f32 = Path(scratch) / "model.onnx"
        extra = write_onnx(model, example, f32, contract, strings, opset=opset, exporter=exporter)
        proto = onnx.load(str(f32))
        # The dynamo exporter's intermediate shape annotations can contradict the quantizer's own
        # shape inference (lstm: "Inferred shape and existing shape differ"); it re-infers them.
        del proto.graph.value_info[:]
        onnx.save(proto, str(f32))
        recurrent = bool(RECURRENT_OPS & {n.op_type for n in proto.graph.node})
        # An integer (token) input cannot be calibrated; such models are the recurrent ones here.
        static = not recurrent and contract.input.dtype == "float32"
        source = prepare(f32) if static else f32  # the graph the quantizer reads: its node names

        made: dict[Path, tuple[str, list[str]]] = {}  # file -> (how it was quantized, the nodes kept in f32)
        graph_read = onnx.load(str(source))

        def quantize(exclude, out=path) -> Path:
            exclude = resolve(exclude, graph_read, proto, contract.model) if exclude else []
            try:
                with quiet_quantizer():
                    how = (_quantize_static(source, out, contract, calibration, exclude) if static
                           else quantize_dynamic_weights(source, out, exclude))
            except Exception as exc:  # the quantizer raises many types; its first line says what failed
                raise PtxError(f"onnx-int8: onnxruntime's {'static' if static else 'dynamic'} quantizer failed for "
                               f"{contract.model}: {first_line(exc)}; serve model.onnx (f32)") from None
            if exclude:
                how += f", {len(exclude)} node{'s' * (len(exclude) != 1)} kept in f32"
            save_with_metadata(quantized_graph(out, contract.model), out,
                               {**strings, **extra, "precision": "int8", "quantization": how,
                                **({"keep_f32": ",".join(exclude)} if exclude else {})}, contract.description)
            made[out] = how, exclude
            return out

        kept: list[str] = []
        feeds = {contract.input.name: np.ascontiguousarray(
            np.take(calibration, range(min(CALIBRATION_BATCH, calibration.shape[contract.input.batch_axis])),
                    axis=contract.input.batch_axis))}
        if keep_f32 == AUTO:
            done = keep_auto(quantize, f32, feeds, rank, judge, contract.model, log, quantizable(graph_read, static))
            if not done.nodes:
                log(f"onnx-int8   --keep-f32 auto: nothing needed keeping in f32 ({done.rounds[0]})")
        else:
            quantize(keep_f32 or [])
        method, kept = made[path]
        if kept:  # what keeping them costs: the int8 file with none kept, timed against this one
            everything = quantize([], Path(scratch) / "all-int8.onnx")
            before, after = seconds_per_run([everything, path], feeds)
            log(f"onnx-int8   kept {len(kept)} node{'s' * (len(kept) != 1)} in f32 ({', '.join(kept)}): a batch of "
                f"{next(iter(feeds.values())).shape[contract.input.batch_axis]} takes {after * 1e3:.2f} ms where "
                f"all-int8 takes {before * 1e3:.2f} ms ({after / before:.2f}x, {TIMED_RUNS_NOTE})")
    extra = {**extra, "precision": "int8", "quantization": method, **({"keep_f32": ",".join(kept)} if kept else {})}
    return extra


def quantizable(graph, static: bool) -> list[str]:
    """The nodes of ``graph`` (the one the quantizer reads) that its registry quantizes, in graph
    order: the ones ``nodes_to_exclude`` can keep in f32."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    ops = QDQRegistry if static else IntegerOpsRegistry
    return [n.name for n in graph.graph.node if n.op_type in ops and n.name]


def quantized_graph(path: Path, model: str):
    """The quantized ONNX at ``path``, refused in one line when the quantizer left nothing in int8."""
    import onnx

    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node}
    if not ops & QUANTIZED_OPS:
        kinds = ", ".join(sorted(RECURRENT_OPS & ops)) or "its"
        raise PtxError(f"onnx-int8: onnxruntime's quantizer leaves nothing of {model} in int8 ({kinds} ops "
                       "have no int8 kernels): serve model.onnx (f32)")
    return proto


register(ExportFormat(name="onnx-int8", description="ONNX quantized to int8 (ort-cpu and openvino --precision int8)",
                      serving_backend="ort-cpu", write=write, precision="int8", calibrated=True, in_all=False,
                      unsupported=unsupported,
                      check_options=lambda opset, exporter: check_opset(opset, exporter)))
