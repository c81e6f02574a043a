"""ort-cpu: model.onnx through ONNX Runtime's CPU provider (numpy + onnxruntime, never torch)."""
import importlib.util

from . import Backend, lazy, register


def _unavailable(device):
    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


register(Backend(name="ort-cpu", artifact="onnx", devices=("cpu",), load=lazy("ort_session", "OrtPredictor"),
                 unavailable=_unavailable, bare=lazy("ort_session", "bare_session_runner"),
                 needs_torch=False, description="ONNX Runtime, CPU provider",
                 precisions=(("f32", None), ("int8", "onnx-int8")),
                 open_file=lazy("ort_tensor", "OrtTensorModel")))
