"""OpenVINO predictor: model.onnx (or model.int8.onnx) through OpenVINO's CPU plugin.

numpy, onnx (to read the metadata) and openvino only: never torch. Each input shape gets its own
model reshaped to that static shape and compiled once (a small cache): OpenVINO's CPU plugin
ignores a GRU's ``sequence_lens`` when the sequence or batch axis is dynamic, and gave
gru-classifier wrong answers (462 of 1,128 labels agreed) until the shape was static.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ptx.contract.metadata import from_props
from ptx.contract.names import FULL_PRECISION
from ptx.errors import ArtifactError, BackendUnavailableError, PtxError, first_line

from .ort_session import _check_graph_tensor
from .predictor import Predictor, artifact_info

# OpenVINO's own names for the precisions it runs the f32 graph at. Without the hint it picks bf16
# on CPUs with AMX or avx512_bf16, and its answers then differ from eager beyond the f32 atol.
RUNTIME_PRECISION = {"f32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the QDQ file's own ops; the rest f32
SHAPE_CACHE = 8  # compiled shapes kept per predictor (verify uses a handful, a server one or two)
OV_TYPES = {"f32": "tensor(float)", "i64": "tensor(int64)"}


def import_openvino():
    from ptx.extras import missing

    why = missing("openvino")
    if why:
        raise BackendUnavailableError(why)
    import openvino

    return openvino


def unavailable(device: str = "cpu") -> str | None:
    try:
        import_openvino()
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (OpenVINO would silently run f32 otherwise)."""
    ov = import_openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _graph_tensor(port) -> SimpleNamespace:
    """An OpenVINO port described as ORT describes a graph tensor, for the shared graph check."""
    shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
    return SimpleNamespace(name=port.get_any_name(), type=OV_TYPES.get(port.get_element_type().get_type_name(), "?"),
                           shape=shape)


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export with `ptx export`") from None
    return from_props({p.key: p.value for p in proto.metadata_props})


class OpenVinoPredictor(Predictor):
    backend = "openvino"

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION):
        ov = import_openvino()
        path = Path(path)
        if precision not in RUNTIME_PRECISION:
            raise PtxError(f"openvino runs {', '.join(RUNTIME_PRECISION)}, not {precision!r}")
        if precision == "bf16" and not has_bf16():
            raise BackendUnavailableError("openvino-bf16: this CPU has no bf16 instructions (OpenVINO would run f32)")
        info = artifact_info(path, _metadata(path))
        stored = info.get("precision", FULL_PRECISION)
        if (stored == "int8") != (precision == "int8"):
            raise ArtifactError(f"{path} holds a {stored} model; openvino {precision} reads "
                                f"{'model.int8.onnx' if precision == 'int8' else 'model.onnx'}")
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:
            raise ArtifactError(f"{path}: OpenVINO cannot read it ({first_line(exc)}); re-export with `ptx export`") from None
        if len(self.model.inputs) != 1 or len(self.model.outputs) != 1:
            raise ArtifactError(f"{path}: the graph has {len(self.model.inputs)} inputs and {len(self.model.outputs)} "
                                "outputs; a ptx export has one of each")
        _check_graph_tensor(_graph_tensor(self.model.inputs[0]), info.contract.input, "input", path)
        _check_graph_tensor(_graph_tensor(self.model.outputs[0]), info.contract.output, "output", path)
        super().__init__(info, path)
        self.device = "cpu"
        self.precision = precision
        self.config = {"INFERENCE_PRECISION_HINT": RUNTIME_PRECISION[precision],
                       # One stream using every core: a synchronous call gets all of them.
                       "PERFORMANCE_HINT": "LATENCY"}
        self._dtype = np.dtype(info.contract.input.dtype.value)
        self._requests: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def request_for(self, shape: tuple[int, ...]):
        """The infer request of the model compiled for this static input shape (compiled once)."""
        request = self._requests.get(shape)
        if request is None:
            model = self.model.clone()
            model.reshape({0: list(shape)})
            compiled = self.core.compile_model(model, "CPU", self.config)
            request = compiled.create_infer_request()
            self._requests[shape] = request
            while len(self._requests) > SHAPE_CACHE:
                self._requests.popitem(last=False)
        else:
            self._requests.move_to_end(shape)
        return request

    def predict_array(self, x) -> np.ndarray:
        self.check_input(x)
        x = np.ascontiguousarray(x, dtype=self._dtype)
        with self._lock:  # an infer request serves one call at a time
            request = self.request_for(x.shape)
            # The result's arrays are copies (share_outputs is off): the request reuses its buffers.
            return request.infer({0: x}, share_inputs=True)[0]


def bare_compiled_runner(predictor: OpenVinoPredictor, x: np.ndarray):
    """The compiled model's infer request called directly, as an OpenVINO user would."""
    x = np.ascontiguousarray(x, dtype=predictor._dtype)
    request = predictor.request_for(x.shape)
    return "bare OpenVINO infer request", lambda: request.infer({0: x}, share_inputs=True)
