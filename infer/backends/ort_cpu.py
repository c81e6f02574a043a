"""ort-cpu: model.onnx through ONNX Runtime's CPU provider (numpy + onnxruntime, never torch)."""
from . import Backend, register


def _load(path, device):
    from ..ort_session import OrtPredictor

    return OrtPredictor(path, device="cpu")


def _unavailable(device):
    import importlib.util

    return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"


def _bare(predictor, x):
    from ..ort_session import bare_session_runner

    return bare_session_runner(predictor, x)


register(Backend(name="ort-cpu", artifact="onnx", devices=("cpu",), load=_load, unavailable=_unavailable, bare=_bare,
                 needs_torch=False, description="ONNX Runtime, CPU provider"))
