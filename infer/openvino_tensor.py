"""A user's ONNX file through OpenVINO's CPU plugin (the openvino backend's ``open_file``): numpy,
onnx and openvino only, never torch.

Each set of input shapes gets its own copy of the model reshaped to those static shapes and compiled
once (a small cache), for the reason openvino_predictor.py gives: OpenVINO's CPU plugin ignored a
GRU's ``sequence_lens`` with a dynamic sequence or batch axis and answered wrongly until the shape
was static. The signature is read from the ONNX graph (onnx_graph.py), not from OpenVINO, whose
reader drops the names of symbolic dimensions: every backend then names a file's tensors alike.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.names import FULL_PRECISION
from ptx.contract.tensors import TensorSig
from ptx.errors import ArtifactError, BackendUnavailableError, ModelRunError, PtxError

from .model_files import check_weights, read_model_file
from .onnx_graph import graph_signature, read_graph
from .openvino_predictor import RUNTIME_PRECISION, SHAPE_CACHE, has_bf16, import_openvino
from .ort_tensor import file_signature
from .tensor_model import TensorModel, describe_feeds

PRECISIONS = (FULL_PRECISION, "bf16")  # int8 is a file of its own (a tutorial model's model.int8.onnx)


def openvino_complaint(exc: BaseException) -> str:
    """What OpenVINO says went wrong, in one line: its messages open with the C++ check that failed
    ("Check 'TRShape::broadcast_merge_into(...)' failed at src/...") and say why on the lines after."""
    lines = [" ".join(ln.split()) for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Check '"):
        lines = lines[1:]
    return " ".join(lines)[:400] or type(exc).__name__


class OpenVinoTensorModel(TensorModel):
    """An OpenVINO model read from a user's ONNX file, compiled per set of input shapes. One call at
    a time per compiled shape (an infer request serves one), guarded by a lock."""

    backend = "openvino"

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION, *,
                 batch_axes: Mapping[str, int | None] | None = None, ignore_metadata: bool = False,
                 inputs: Sequence[TensorSig] = ()):
        ov = import_openvino()
        path = Path(path)
        if device != "cpu":
            raise PtxError(f"openvino runs on the CPU here, not {device}")
        if precision not in PRECISIONS:
            raise PtxError(f"openvino runs your own ONNX file at {' or '.join(PRECISIONS)}, not {precision}")
        if precision == "bf16" and not has_bf16():
            raise BackendUnavailableError("openvino-bf16: this CPU has no bf16 instructions (OpenVINO would run f32)")
        found = read_model_file(path)
        metadata = {} if ignore_metadata else found.metadata
        check_weights(path, metadata, found.digest)
        signature = file_signature(path, graph_signature(read_graph(path), path, batch_axes), metadata, batch_axes,
                                   inputs)
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # the ONNX frontend's refusal names the operator it cannot convert
            raise ArtifactError(f"{path}: OpenVINO cannot read it ({openvino_complaint(exc)})") from None
        super().__init__(signature, path, found.name if not ignore_metadata else None, metadata)
        self.device, self.precision = "cpu", precision
        self.config = {"INFERENCE_PRECISION_HINT": RUNTIME_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        self._requests: OrderedDict[tuple, tuple[object, list[int]]] = OrderedDict()
        self._lock = threading.Lock()

    def compiled_for(self, shapes: Mapping[str, tuple[int, ...]]):
        """(infer request, output index per signature output) of the model compiled for these static
        input shapes; compiled once, a few kept. A compile failure is one ModelRunError."""
        key = tuple((name, tuple(shape)) for name, shape in shapes.items())
        entry = self._requests.get(key)
        if entry is not None:
            self._requests.move_to_end(key)
            return entry
        model = self.model.clone()
        try:
            model.reshape({name: list(shape) for name, shape in shapes.items()})
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:
            shown = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
            raise ModelRunError(f"openvino cannot compile {self.name} for inputs {shown}: {openvino_complaint(exc)}") \
                from None
        ports = [set(port.get_names()) for port in compiled.outputs]
        # ONNX outputs keep their names in OpenVINO; the graph's order stands in where one was renamed
        order = [next((i for i, names in enumerate(ports) if name in names), k)
                 for k, name in enumerate(self.signature.output_names)]
        entry = (compiled.create_infer_request(), order)
        self._requests[key] = entry
        while len(self._requests) > SHAPE_CACHE:
            self._requests.popitem(last=False)
        return entry

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            request, order = self.compiled_for({n: a.shape for n, a in feeds.items()})
            try:
                # copies (share_outputs is off): the request reuses its buffers on the next call
                result = request.infer(feeds, share_inputs=True)
            except Exception as exc:
                raise ModelRunError(f"openvino failed running {self.name} on inputs {describe_feeds(feeds)}: "
                                    f"{openvino_complaint(exc)}") from None
        return {name: np.asarray(result[i]) for name, i in zip(self.signature.output_names, order)}

    def bare(self, feeds: dict[str, np.ndarray]):
        request, _ = self.compiled_for({n: a.shape for n, a in feeds.items()})
        return "bare OpenVINO infer request", lambda: request.infer(feeds, share_inputs=True)
