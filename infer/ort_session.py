"""ONNX Runtime predictors (ort-cpu, ort-cuda). numpy and onnxruntime only: never torch."""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np

from ptx.contract import Contract, ContractError, TensorSpec
from ptx.contract.metadata import from_props, from_strings
from ptx.errors import ArtifactError, BackendUnavailableError, PtxError

from .predictor import Predictor

ORT_QUIET = 4  # FATAL only: ORT's multi-line provider errors become our one-line error instead
ORT_DEFAULT = 2
ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime-gpu (or onnxruntime)") from None
    return onnxruntime


def why_no_cuda(missing_libraries: list[str]) -> str:
    if not Path("/proc/driver/nvidia/version").exists():
        return "no NVIDIA GPU or driver found on this machine"
    found = f" ({', '.join(missing_libraries[:4])} missing)" if missing_libraries else ""
    return (f"the CUDA 13 / cuDNN 9 libraries were not found{found}: install them, or the pip packages "
            "nvidia-cudnn-cu13 and nvidia-cublas (torch with CUDA brings them)")


def cuda_unavailable(device: str = "cuda") -> str | None:
    """Why ort-cuda cannot run here, or None."""
    try:
        ort = import_ort()
    except BackendUnavailableError as exc:
        return str(exc)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    return None if Path("/proc/driver/nvidia/version").exists() else why_no_cuda([])


def _check_graph_tensor(node, spec: TensorSpec, field: str, path: Path) -> None:
    """The graph's own input/output must be what the metadata claims: a lying shape, dtype or batch
    axis is refused here rather than fed wrong data."""
    def refuse(problem: str):
        raise ArtifactError(f"{path}: contract field {field}.{problem}; re-export with `ptx export`")

    if node.name != spec.name:
        refuse(f"name is {spec.name!r}, but the graph's tensor is {node.name!r}")
    if node.type != ORT_TYPES[spec.dtype.value]:
        refuse(f"dtype is {spec.dtype.value}, but the graph's tensor is {node.type}")
    dims = list(node.shape)
    if len(dims) != len(spec.shape):
        refuse(f"shape {list(spec.shape)} has {len(spec.shape)} axes, the graph's {dims} has {len(dims)}")
    for i, (claimed, actual) in enumerate(zip(spec.shape, dims)):
        if isinstance(claimed, str) and isinstance(actual, int):
            refuse(f"shape[{i}] is {claimed!r}, but the graph fixes that axis to {actual}")
        if isinstance(claimed, int) and isinstance(actual, int) and claimed != actual:
            refuse(f"shape[{i}] is {claimed}, but the graph's is {actual}")
        if isinstance(claimed, int) and isinstance(actual, str):
            refuse(f"shape[{i}] is {claimed}, but the graph's axis is the dynamic {actual!r}")


# Session options measured on the 2-core Xeon (docs/benchmarks.md): ORT's default intra-op pool
# (one thread per core) and full graph optimisation were the fastest; PTX_ORT_THREADS and
# PTX_ORT_OPT_LEVEL (disable, basic, extended, all) override them for other machines.
ORT_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                  "all": "ORT_ENABLE_ALL"}


def session_options(ort):
    """ORT's SessionOptions with ptx's defaults, or PTX_ORT_THREADS / PTX_ORT_OPT_LEVEL's values."""
    options = ort.SessionOptions()
    options.log_severity_level = ORT_QUIET
    threads = os.environ.get("PTX_ORT_THREADS", "").strip()
    level = os.environ.get("PTX_ORT_OPT_LEVEL", "all").strip()
    if threads:
        if not threads.isdigit():
            raise PtxError(f"PTX_ORT_THREADS={threads!r}: give a whole number of threads (0: one per core)")
        options.intra_op_num_threads = int(threads)
    if level not in ORT_OPT_LEVELS:
        raise PtxError(f"PTX_ORT_OPT_LEVEL={level!r}: choose one of {', '.join(ORT_OPT_LEVELS)}")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[level])
    return options


class OrtPredictor(Predictor):
    """An InferenceSession created once; tensors addressed by the contract's names."""

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32"):
        ort = import_ort()
        self.backend = "ort-cuda" if device == "cuda" else "ort-cpu"
        self.device = device
        path = Path(path)
        options = session_options(ort)
        self._missing_libraries: list[str] = []
        providers = self._cuda_providers(ort) if device == "cuda" else ["CPUExecutionProvider"]
        ort.set_default_logger_severity(ORT_QUIET)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first.strip()}); "
                                "re-export with `ptx export`") from None
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT)
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            # ORT falls back to the CPU silently; a user who asked for CUDA must hear about it.
            raise BackendUnavailableError(f"ort-cuda: CUDA is not active: {why_no_cuda(self._missing_libraries)}; "
                                          "use --backend ort-cpu")
        strings = from_props(self.session.get_modelmeta().custom_metadata_map)
        if not strings:
            raise ArtifactError(f"{path}: not a ptx export (no ptx.* metadata); export it with `ptx export NAME`")
        try:
            info = from_strings(strings)
        except ContractError as exc:
            raise ArtifactError(f"{path}: {exc}; re-export with `ptx export {strings.get('model', 'NAME')}`") from None
        contract: Contract = info.contract
        stored = info.get("precision", "f32")
        if stored != precision:  # model.onnx given with --precision int8, or the other way round
            raise ArtifactError(f"{path} holds a {stored} model, not {precision}: "
                                f"{'ptx export --format onnx-int8 writes model.int8.onnx' if precision == 'int8' else 'use its own --precision'}")
        self.precision = precision
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{path}: the graph has {len(inputs)} inputs and {len(outputs)} outputs; "
                                "a ptx export has one of each")
        _check_graph_tensor(inputs[0], contract.input, "input", path)
        _check_graph_tensor(outputs[0], contract.output, "output", path)
        super().__init__(info, path)
        self.input_name = contract.input.name
        self.output_names = [contract.output.name]
        self._dtype = np.dtype(contract.input.dtype.value)

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
        self.check_input(x)
        if getattr(x, "is_cuda", False) and self.device == "cuda":
            return self._predict_device_tensor(x)
        return self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, dtype=self._dtype)})[0]

    def _predict_device_tensor(self, x) -> np.ndarray:
        """A torch CUDA tensor stays on the GPU: IO binding hands ORT its pointer, no host copy in."""
        binding = self.session.io_binding()
        x = x.contiguous()
        binding.bind_input(name=self.input_name, device_type="cuda", device_id=x.device.index or 0,
                           element_type=self._dtype.type, shape=tuple(x.shape), buffer_ptr=x.data_ptr())
        binding.bind_output(self.output_names[0], "cuda", x.device.index or 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def bare_session_runner(predictor: OrtPredictor, x: np.ndarray):
    session, feed = predictor.session, {predictor.input_name: x}
    return "bare InferenceSession.run", lambda: session.run(None, feed)
