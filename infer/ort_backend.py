"""ONNX Runtime backends (ort-cpu, ort-cuda). numpy and onnxruntime only: never torch."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from ptx.errors import ArtifactError, BackendUnavailableError
from ptx.export.metadata import from_onnx_props

from .predictor import Predictor

ORT_QUIET = 4  # FATAL only: ORT's multi-line provider errors become our one-line error instead
ORT_DEFAULT = 2


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime-gpu (or onnxruntime)") from None
    return onnxruntime


def _why_no_cuda(missing_libraries: list[str]) -> str:
    if not Path("/proc/driver/nvidia/version").exists():
        return "no NVIDIA GPU or driver found on this machine"
    found = f" ({', '.join(missing_libraries[:4])} missing)" if missing_libraries else ""
    return (f"the CUDA 13 / cuDNN 9 libraries were not found{found}: install them, or the pip packages "
            "nvidia-cudnn-cu13 and nvidia-cublas (torch with CUDA brings them)")


class OrtPredictor(Predictor):
    def __init__(self, path: str | Path, device: str = "cpu"):
        ort = _import_ort()
        self.backend = "ort-cuda" if device == "cuda" else "ort-cpu"
        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = ORT_QUIET
        self._missing_libraries: list[str] = []
        if device == "cuda":
            providers = self._cuda_providers(ort)
        else:
            providers = ["CPUExecutionProvider"]
        ort.set_default_logger_severity(ORT_QUIET)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:160]}); "
                                "re-export with `ptx export`") from None
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT)
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            # ORT falls back to the CPU silently; a user who asked for CUDA must hear about it.
            raise BackendUnavailableError(f"ort-cuda: CUDA is not active: {_why_no_cuda(self._missing_libraries)}; "
                                          "use --backend ort-cpu")
        meta = from_onnx_props(self.session.get_modelmeta().custom_metadata_map)
        if "model" not in meta:
            raise ArtifactError(f"{self.path}: not a ptx export (no ptx.* metadata); export it with `ptx export NAME`")
        super().__init__(meta)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _cuda_providers(self, ort):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError("ort-cuda: this onnxruntime has no CUDA provider; "
                                          "pip install onnxruntime-gpu, or use --backend ort-cpu")
        if hasattr(ort, "preload_dlls"):
            # Loads CUDA/cuDNN from pip's nvidia packages or torch, where present. It prints a line
            # per missing library; we keep those names for our one-line error instead.
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    ort.preload_dlls()
            except Exception:
                pass  # the provider check below names what is missing
            self._missing_libraries = re.findall(r"Failed to load (\S+?):", captured.getvalue())
        # HEURISTIC: EXHAUSTIVE benchmarks every conv algorithm on the first run of each shape.
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]

    def predict_array(self, x) -> np.ndarray:
        if getattr(x, "is_cuda", False):
            return self._predict_device_tensor(x)
        return self.session.run(self.output_names[:1], {self.input_name: np.ascontiguousarray(x, dtype=self.meta["dtype"])})[0]

    def _predict_device_tensor(self, x) -> np.ndarray:
        """A torch CUDA tensor stays on the GPU: IO binding hands ORT its pointer, no host copy."""
        binding = self.session.io_binding()
        x = x.contiguous()
        binding.bind_input(name=self.input_name, device_type="cuda", device_id=x.device.index or 0,
                           element_type=np.dtype(self.meta["dtype"]).type, shape=tuple(x.shape),
                           buffer_ptr=x.data_ptr())
        binding.bind_output(self.output_names[0], "cuda", x.device.index or 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
