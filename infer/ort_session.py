"""ONNX Runtime predictors (ort-cpu, ort-cuda). numpy and onnxruntime only: never torch."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ptx.contract import Contract, TensorSpec
from ptx.contract.metadata import from_props
from ptx.contract.transforms import expected_output_shape
from ptx.errors import ArtifactError, BackendUnavailableError, InputError, PtxError, first_line

from .predictor import Predictor, artifact_info

ORT_QUIET = 4  # FATAL only: ORT's multi-line provider errors become our one-line error instead
ORT_DEFAULT = 2
ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"  # ORT session config key (kOrtSessionOptionsDisableCPUEPFallback)
CPU_FALLBACK_REFUSED = "fallback to CPU EP has been explicitly disabled"  # ORT's refusal, when it is set


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
    spinning = os.environ.get("PTX_ORT_SPINNING", "").strip()
    if spinning:
        if spinning not in ("0", "1"):
            raise PtxError(f"PTX_ORT_SPINNING={spinning!r}: give 1 (threads spin between runs) or 0 (they sleep)")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
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
        if device == "cuda":
            # ORT places any node without a CUDA kernel on the CPU, silently, and drops the whole
            # CUDA provider when its libraries are missing. Refusing that fallback makes either
            # one an error at load; cuda_placement_error then says which it was.
            options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
            with_cpu = self._cuda_providers(ort)
            providers = with_cpu[:1]  # naming the CPU provider too is a conflict then
        else:
            providers = ["CPUExecutionProvider"]
        ort.set_default_logger_severity(ORT_QUIET)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            if device == "cuda" and CPU_FALLBACK_REFUSED in str(exc):
                raise BackendUnavailableError(cuda_placement_error(ort, path, with_cpu, self._missing_libraries)) from None
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first_line(exc)}); "
                                "re-export with `ptx export`") from None
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT)
        info = artifact_info(path, from_props(self.session.get_modelmeta().custom_metadata_map))
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
        if self.device == "cuda" and getattr(x, "is_cuda", False):
            return self.predict_on_device(x).cpu().numpy()  # run_with_binding checks the input
        self.check_input(x)
        if hasattr(x, "detach"):  # a torch tensor (torch is loaded already: the caller made it)
            x = x.detach().cpu()
        return self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, dtype=self._dtype)})[0]

    def predict_on_device(self, x):
        """A torch tensor on the GPU in, a torch tensor on the same GPU out (ort-cuda only): IO
        binding hands ONNX Runtime both pointers, so nothing crosses to the host."""
        if self.device != "cuda":
            raise InputError(f"predict_on_device is ort-cuda's; this predictor is {self.backend}: use predict_array")
        if not getattr(x, "is_cuda", False):
            raise InputError(f"predict_on_device takes a torch tensor on a CUDA device, not {_describe_tensor(x)}; "
                             "use predict_array for host data")
        return run_with_binding(self, x, "cuda")


def _describe_tensor(x) -> str:
    device = getattr(x, "device", None)
    return f"{type(x).__name__}" + (f" on {device}" if device is not None else "")


def run_with_binding(predictor: OrtPredictor, x, device_type: str):
    """Run ``predictor``'s session on torch tensor ``x`` through IO binding: ``x`` and a torch
    output tensor on the same device are bound by pointer. Only ort-cuda serves predictions this
    way; ``device_type`` is a parameter so that the binding is also checked on CPU machines.

    torch is imported here only because ``x`` is a torch tensor: it is loaded already."""
    import torch

    predictor.check_input(x)
    contract = predictor.contract
    want = contract.input.dtype.value
    if x.dtype != getattr(torch, want):
        # Bound by pointer, ORT would read the bytes as the graph's dtype: refuse instead.
        raise InputError(f"input dtype {x.dtype} does not fit {contract.model}'s {want} input: "
                         f"convert it with x.to(torch.{want})")
    x = x.detach().contiguous()
    out_dtype = contract.output.dtype.value
    out = torch.empty(expected_output_shape(contract, x), dtype=getattr(torch, out_dtype), device=x.device)
    device_id = x.device.index or 0
    binding = predictor.session.io_binding()
    binding.bind_input(name=predictor.input_name, device_type=device_type, device_id=device_id,
                       element_type=np.dtype(want).type, shape=tuple(x.shape), buffer_ptr=x.data_ptr())
    binding.bind_output(name=predictor.output_names[0], device_type=device_type, device_id=device_id,
                        element_type=np.dtype(out_dtype).type, shape=tuple(out.shape), buffer_ptr=out.data_ptr())
    if device_type == "cuda":
        # ORT runs on its own CUDA stream: the kernels that wrote x on torch's stream must have
        # finished before it reads (onnxruntime issues #26609, #10299). ORT synchronises its own
        # stream when the run ends, so torch may read ``out`` afterwards.
        torch.cuda.current_stream(x.device).synchronize()
    predictor.session.run_with_iobinding(binding)
    return out


def node_placement(ort, path: Path, providers: list) -> dict[str, list[str]]:
    """Execution provider -> the nodes it ran ("name (OpType)"), read from ORT's profile of one
    run on a batch of zeros; ORT has no API that reports placement without a run."""
    with tempfile.TemporaryDirectory(prefix="ptx-placement-") as tmp:
        options = session_options(ort)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=providers)
        node = session.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in node.shape]
        dtype = next((np.dtype(k) for k, v in ORT_TYPES.items() if v == node.type), np.float32)
        session.run(None, {node.name: np.zeros(shape, dtype=dtype)})
        events = json.loads(Path(session.end_profiling()).read_text())
    placed: dict[str, list[str]] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args and event.get("name", "").endswith("_kernel_time"):
            entry = f"{event['name'][:-len('_kernel_time')]} ({args.get('op_name', '?')})"
            if entry not in placed.setdefault(args["provider"], []):
                placed[args["provider"]].append(entry)
    return placed


def cuda_placement_error(ort, path: Path, providers: list, missing_libraries: list[str]) -> str:
    """Why ORT refused an ort-cuda session that may not fall back to the CPU, in one line: CUDA
    is not active at all, or these nodes have no CUDA kernel."""
    try:
        placed = node_placement(ort, path, providers)
    except Exception as exc:  # the placement run failed: say what we know
        return f"ort-cuda: {path} has nodes without a CUDA kernel ({first_line(exc)}); use --backend ort-cpu"
    on_cpu = placed.get("CPUExecutionProvider", [])
    if "CUDAExecutionProvider" not in placed:
        return f"ort-cuda: CUDA is not active: {why_no_cuda(missing_libraries)}; use --backend ort-cpu"
    shown = ", ".join(on_cpu[:6]) + (f" and {len(on_cpu) - 6} more" if len(on_cpu) > 6 else "")
    return (f"ort-cuda: {len(on_cpu)} node(s) of {path.name} have no CUDA kernel in onnxruntime "
            f"{ort.__version__} and would run on the CPU: {shown}; use --backend ort-cpu")


def bare_session_runner(predictor: OrtPredictor, x: np.ndarray):
    session, feed = predictor.session, {predictor.input_name: x}
    return "bare InferenceSession.run", lambda: session.run(None, feed)
