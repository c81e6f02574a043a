"""ort-cpu: an ONNX file through ONNX Runtime's CPU provider (numpy + onnxruntime, never torch)."""
import importlib.util

from . import ORT_HOLDS, ORT_HOLDS_DEQUANTIZED, ORT_HOLDS_EXTERNAL, Backend, lazy, register


def _unavailable(device):
    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


register(Backend(name="ort-cpu", artifact="onnx", devices=("cpu",), open=lazy("runtime.ort_runner", "OrtRunner.open"),
                 unavailable=_unavailable, needs_torch=False, precisions=(("f32", None), ("int8", "onnx-int8"), ("int4", "onnx-int4")),
                 holds=ORT_HOLDS, holds_external=ORT_HOLDS_EXTERNAL,  # measured: backends/__init__.py
                 holds_dequantized=ORT_HOLDS_DEQUANTIZED,
                 runs_ort_attention=True))
