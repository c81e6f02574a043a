"""ort-cuda: model.onnx through ONNX Runtime's CUDA provider; never silently on the CPU."""
from . import Backend, register


def _load(path, device):
    from ..ort_session import OrtPredictor

    return OrtPredictor(path, device="cuda")


def _unavailable(device):
    from ptx.errors import BackendUnavailableError

    from ..ort_session import import_ort, why_no_cuda

    try:
        ort = import_ort()
    except BackendUnavailableError as exc:
        return str(exc)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    from pathlib import Path

    return None if Path("/proc/driver/nvidia/version").exists() else why_no_cuda([])


def _bare(predictor, x):
    from ..ort_session import bare_session_runner

    return bare_session_runner(predictor, x)


register(Backend(name="ort-cuda", artifact="onnx", devices=("cuda",), load=_load, unavailable=_unavailable,
                 bare=_bare, needs_torch=False,
                 description="ONNX Runtime, CUDA provider (onnxruntime-gpu, CUDA 13, cuDNN 9)"))
