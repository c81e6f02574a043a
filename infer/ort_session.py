"""ONNX Runtime predictors (ort-cpu, ort-cuda). numpy and onnxruntime only: never torch."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from pathlib import Path

import numpy as np

from ptx.contract import Contract, TensorSpec
from ptx.contract.metadata import from_props
from ptx.contract.transforms import expected_output_shape
from ptx.errors import ArtifactError, BackendUnavailableError, InputError, PtxError, first_line

from .host_memory import HostBuffers, cuda_runtime_pinner
from .predictor import Predictor, artifact_info

ORT_QUIET = 4  # FATAL only: ORT's multi-line provider errors become our one-line error instead
ORT_DEFAULT = 2
ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)", "uint8": "tensor(uint8)"}
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"  # ORT session config key (kOrtSessionOptionsDisableCPUEPFallback)
CPU_FALLBACK_REFUSED = "fallback to CPU EP has been explicitly disabled"  # ORT's refusal, when it is set
# ORT's refusal of enable_cuda_graph for a graph it cannot capture (a node off the GPU, control flow)
CUDA_GRAPH_REFUSED = "CUDA Graph feature"


def import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime-gpu (or onnxruntime)") from None
    return onnxruntime


def has_nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia/version").exists()


def why_no_cuda(missing_libraries: list[str], device_id: int = 0) -> str:
    if not has_nvidia_driver():
        return "no NVIDIA GPU or driver found on this machine"
    if missing_libraries:
        return (f"the CUDA 13 / cuDNN 9 libraries were not found ({', '.join(missing_libraries[:4])} missing): install "
                "them, or the pip packages nvidia-cudnn-cu13 and nvidia-cublas (torch with CUDA brings them)")
    return (f"ONNX Runtime's CUDA provider did not start on GPU {device_id} (no such GPU, or a CUDA 13 / cuDNN 9 "
            "library or driver it needs is missing: `python -c \"import onnxruntime; onnxruntime.preload_dlls()\"` "
            "names what fails to load)")


def cuda_device_id(device: str) -> int:
    """``cuda`` -> 0, ``cuda:N`` -> N: the GPU a session and its IO bindings use."""
    base, _, index = device.partition(":")
    if base != "cuda" or (index and not index.isdigit()):
        raise PtxError(f"device {device!r}: give cuda or cuda:N (N: the GPU's number)")
    return int(index or 0)


def preload_cuda_libraries(ort) -> list[str]:
    """Load CUDA/cuDNN from pip's nvidia packages or torch, where present; the libraries that
    failed to load. ORT prints a line per missing library: kept for our one-line error instead."""
    if not hasattr(ort, "preload_dlls"):
        return []
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            ort.preload_dlls()
    except Exception:
        pass  # the session that follows says whether CUDA runs
    return re.findall(r"Failed to load (\S+?):", captured.getvalue())


def cuda_provider(device_id: int, tf32: bool = False, cuda_graph: bool = False) -> tuple[str, dict]:
    # HEURISTIC: EXHAUSTIVE benchmarks every conv algorithm on the first run of each shape.
    # use_tf32: ORT's CUDA provider uses TF32 by default; f32 means f32 (issue 26), tf32 asks for it.
    # enable_cuda_graph: ort-cuda-graph's runs are captured and replayed (ort_graph.py).
    options = {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "1" if tf32 else "0"}
    if cuda_graph:
        options["enable_cuda_graph"] = "1"
    return "CUDAExecutionProvider", options


def _one_node_model() -> bytes:
    """The smallest graph a CUDA session can be tried on: Y = X + X, float."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"])], "probe", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


@functools.lru_cache(maxsize=None)
def cuda_unavailable(device: str = "cuda") -> str | None:
    """Why ort-cuda cannot run on ``device`` (cuda or cuda:N) here, or None: a CUDA session is
    created on a one-node model, so a missing CUDA/cuDNN library or GPU is found before a test or
    a user's model needs it."""
    try:
        ort = import_ort()
        device_id = cuda_device_id(device)
    except PtxError as exc:
        return str(exc)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)"
    if not has_nvidia_driver():
        return why_no_cuda([])  # no driver: the CUDA provider cannot start, and trying it only logs noise
    missing = preload_cuda_libraries(ort)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_QUIET
    ort.set_default_logger_severity(ORT_QUIET)
    try:
        session = ort.InferenceSession(_one_node_model(), options,
                                       providers=[cuda_provider(device_id), "CPUExecutionProvider"])
        if session.get_providers()[0] == "CUDAExecutionProvider":
            return None
    except Exception:
        pass
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT)
    return why_no_cuda(missing, device_id)


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


def open_session(path: Path, device: str, precision: str = "f32", cuda_graph: bool = False,
                 remedy: str = "re-export with `ptx export`"):
    """An InferenceSession for the ONNX file at ``path`` on ``device`` (cpu, cuda, cuda:N), each
    refusal one line: on CUDA no node may fall back to the CPU, and TF32 runs only at tf32."""
    ort = import_ort()
    on_cuda = device.startswith("cuda")
    device_id = cuda_device_id(device) if on_cuda else 0
    options = session_options(ort)
    missing: list[str] = []
    if on_cuda:
        # ORT places any node without a CUDA kernel, and any its shape heuristic prefers on the
        # CPU, on the CPU, silently, and drops the whole CUDA provider when its libraries are
        # missing. Refusing that fallback makes each an error at load; cuda_placement_error
        # then says which it was.
        options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError("ort-cuda: this onnxruntime has no CUDA provider; "
                                          "pip install onnxruntime-gpu, or use --backend ort-cpu")
        missing = preload_cuda_libraries(ort)
        # naming the CPU provider too is a conflict then
        providers = [cuda_provider(device_id, tf32=precision == "tf32", cuda_graph=cuda_graph)]
    else:
        providers = ["CPUExecutionProvider"]
    ort.set_default_logger_severity(ORT_QUIET)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        if on_cuda and CPU_FALLBACK_REFUSED in str(exc):
            # explained by a session like ort-cuda's (a CUDA-graph session refuses before placing)
            plain = [cuda_provider(device_id, tf32=precision == "tf32"), "CPUExecutionProvider"]
            raise BackendUnavailableError(cuda_placement_error(ort, path, plain, missing, device_id)) from None
        if on_cuda and CUDA_GRAPH_REFUSED in str(exc):
            raise BackendUnavailableError(
                f"ort-cuda-graph: ONNX Runtime {ort.__version__} cannot run {path.name} as a CUDA graph "
                f"({first_line(exc)}); use --backend ort-cuda") from None
        raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({first_line(exc)}); {remedy}") from None
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT)


class OrtPredictor(Predictor):
    """An InferenceSession created once; tensors addressed by the contract's names. On CUDA every
    run goes through IO binding: the input is bound where it lies in host memory (page-locked when
    the caller wrote it into a buffer of ``host``), the output lands in a reused, page-locked buffer."""

    cuda_graph = False  # ort-cuda-graph's subclass asks the provider for CUDA graphs

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32"):
        self.on_cuda = device.startswith("cuda")
        self.backend = "ort-cuda" if self.on_cuda else "ort-cpu"
        self.device = device
        self.device_id = cuda_device_id(device) if self.on_cuda else 0
        path = Path(path)
        self.session = open_session(path, device, precision, cuda_graph=self.cuda_graph)
        info = artifact_info(path, from_props(self.session.get_modelmeta().custom_metadata_map))
        contract: Contract = info.contract
        stored = info.get("precision", "f32")
        if precision == "tf32" and not self.on_cuda:
            raise BackendUnavailableError("tf32 is a mode of CUDA GPUs: use ort-cuda, or f32 on the CPU")
        if stored != ("f32" if precision == "tf32" else precision):  # tf32 runs the f32 file  # model.onnx given with --precision int8, or the other way round
            raise ArtifactError(f"{path} holds a {stored} model, not {precision}: "
                                f"{'ptx export --format onnx-int8 writes model.int8.onnx' if precision == 'int8' else 'use its own --precision'}")
        self.precision = precision
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{path}: the graph has {len(inputs)} inputs and {len(outputs)} outputs; "
                                "a ptx export has one of each")
        _check_graph_tensor(inputs[0], info.raw_input or contract.input,
                            "input" if info.raw_input is None else "raw_input", path)
        _check_graph_tensor(outputs[0], contract.output, "output", path)
        super().__init__(info, path)
        self.input_name = self.graph_input.name
        self.output_names = [contract.output.name]
        self._dtype = np.dtype(self.graph_input.dtype.value)
        if self.on_cuda:  # the session has loaded CUDA's runtime library: pinning can use it
            self.host = HostBuffers(cuda_runtime_pinner())

    def predict_array(self, x) -> np.ndarray:
        if self.on_cuda and getattr(x, "is_cuda", False):
            return self.predict_on_device(x).cpu().numpy()  # run_with_binding checks the input
        self.check_input(x)
        if hasattr(x, "detach"):  # a torch tensor (torch is loaded already: the caller made it)
            x = x.detach().cpu()
        return self.run_host(np.ascontiguousarray(self.feed(x), dtype=self._dtype))

    def run_pictures(self, pictures) -> np.ndarray:
        return self.run_host(pictures)

    def run_host(self, x: np.ndarray) -> np.ndarray:
        """The graph's input, checked and contiguous in host memory -> outputs (host)."""
        if self.on_cuda:
            return run_bound_host(self, x)
        return self.session.run(self.output_names, {self.input_name: x})[0]

    def predict_on_device(self, x):
        """A torch tensor on the GPU in, a torch tensor on the same GPU out (ort-cuda only): IO
        binding hands ONNX Runtime both pointers, so nothing crosses to the host."""
        if not self.on_cuda:
            raise InputError(f"predict_on_device is ort-cuda's; this predictor is {self.backend}: use predict_array")
        if not getattr(x, "is_cuda", False):
            raise InputError(f"predict_on_device takes a torch tensor on a CUDA device, not {_describe_tensor(x)}; "
                             "use predict_array for host data")
        if (x.device.index or 0) != self.device_id:
            # ORT's CUDA provider runs on its device_id: a pointer on another GPU is not its memory.
            raise InputError(f"the tensor is on cuda:{x.device.index or 0}, this predictor runs on cuda:{self.device_id}: "
                             f"move it with x.to('cuda:{self.device_id}') or load the predictor with device='cuda:{x.device.index or 0}'")
        return run_with_binding(self, x, "cuda", self._binding_run_options())

    def _binding_run_options(self):
        """Run options of a run on bound GPU tensors (ort-cuda-graph's: never captured)."""
        return None


def _describe_tensor(x) -> str:
    device = getattr(x, "device", None)
    return f"{type(x).__name__}" + (f" on {device}" if device is not None else "")


def run_with_binding(predictor: OrtPredictor, x, device_type: str, run_options=None):
    """Run ``predictor``'s session on torch tensor ``x`` through IO binding: ``x`` and a torch
    output tensor on the same device are bound by pointer. Only ort-cuda serves predictions this
    way; ``device_type`` is a parameter so that the binding is also checked on CPU machines.

    torch is imported here only because ``x`` is a torch tensor: it is loaded already."""
    import torch

    contract = predictor.contract
    if predictor.info.raw_input is not None:
        predictor.check_pictures(x)  # an --input uint8 graph is bound to uint8 pictures
    else:
        predictor.check_input(x)
    want = predictor.graph_input.dtype.value
    if x.dtype != getattr(torch, want):
        # Bound by pointer, ORT would read the bytes as the graph's dtype: refuse instead.
        raise InputError(f"input dtype {x.dtype} does not fit {contract.model}'s {want} input: "
                         f"convert it with x.to(torch.{want})")
    x = x.detach().contiguous()
    out_dtype = contract.output.dtype.value
    out = torch.empty(bound_output_shape(predictor, x), dtype=getattr(torch, out_dtype), device=x.device)
    device_id = predictor.device_id if device_type == "cuda" else 0  # the GPU the session's provider runs on
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
    predictor.session.run_with_iobinding(binding, run_options)
    return out


def bound_output_shape(predictor: OrtPredictor, x) -> tuple[int, ...]:
    """The output shape for graph input ``x``: the contract's, or (--input uint8) one row per picture."""
    contract = predictor.contract
    if predictor.info.raw_input is None:
        return expected_output_shape(contract, x)
    return (len(x), *contract.output.shape[1:])


def run_bound_host(predictor: OrtPredictor, x: np.ndarray, run_options=None) -> np.ndarray:
    """Run on host input ``x`` through IO binding: ``x`` is bound by pointer where it lies (no
    copy of ours; the driver reads it directly when it is page-locked) and the output lands in a
    reused buffer of ``predictor.host`` (page-locked on CUDA), copied out for the caller. On the
    CPU provider (tests) the output is a fresh array."""
    binding = predictor.session.io_binding()
    binding.bind_input(predictor.input_name, "cpu", 0, x.dtype.type, tuple(x.shape), x.ctypes.data)
    shape, dtype = bound_output_shape(predictor, x), np.dtype(predictor.contract.output.dtype.value)
    host = predictor.host
    with (host.lease(shape, dtype) if host is not None else contextlib.nullcontext(np.empty(shape, dtype))) as out:
        binding.bind_output(predictor.output_names[0], "cpu", 0, dtype.type, shape, out.ctypes.data)
        predictor.session.run_with_iobinding(binding, run_options)
        return out.copy() if host is not None else out


def node_placement(ort, path: Path, providers: list) -> dict[str, list[str]]:
    """Execution provider -> the nodes ORT assigned it ("name (OpType)"), as ORT reports it
    (``session.record_ep_graph_assignment_info``, ORT 1.31), for a session with ptx's options."""
    options = session_options(ort)
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session = ort.InferenceSession(str(path), options, providers=providers)
    placed: dict[str, list[str]] = {}
    for subgraph in session.get_provider_graph_assignment_info():
        for node in subgraph.get_nodes():
            entry = f"{node.name} ({node.op_type})"
            if entry not in placed.setdefault(subgraph.ep_name, []):
                placed[subgraph.ep_name].append(entry)
    return placed


def cuda_placement_error(ort, path: Path, providers: list, missing_libraries: list[str], device_id: int = 0) -> str:
    """Why ORT refused an ort-cuda session that may not fall back to the CPU, in one line: CUDA is
    not active at all, or these nodes would run on the CPU, each with its reason (no CUDA kernel,
    cuDNN's limits, or ORT's shape heuristic), read from ptx's static placement check."""
    from .cuda_placement import cuda_placement

    try:
        placed = node_placement(ort, path, providers)
    except Exception as exc:  # the placement session failed too: say what we know
        return f"ort-cuda: {path} does not load with the CUDA provider ({first_line(exc)}); use --backend ort-cpu"
    if "CUDAExecutionProvider" not in placed:
        return f"ort-cuda: CUDA is not active: {why_no_cuda(missing_libraries, device_id)}; use --backend ort-cpu"
    on_cpu = placed.get("CPUExecutionProvider", [])
    try:
        reasons = {n.name: n.reason for n in cuda_placement(path).on_cpu}
    except Exception:  # the explanation is a courtesy: the refusal stands without it
        reasons = {}
    explained = [f"{entry}: {reasons.get(entry.rsplit(' (', 1)[0], 'left on the CPU by ONNX Runtime')}" for entry in on_cpu]
    shown = "; ".join(explained[:6]) + (f"; and {len(explained) - 6} more" if len(explained) > 6 else "")
    return (f"ort-cuda: {len(on_cpu)} node(s) of {path.name} would run on the CPU in onnxruntime {ort.__version__}: "
            f"{shown}; use --backend ort-cpu")


def bare_session_runner(predictor: OrtPredictor, x: np.ndarray):
    session, feed = predictor.session, {predictor.input_name: x}
    return "bare InferenceSession.run", lambda: session.run(None, feed)
