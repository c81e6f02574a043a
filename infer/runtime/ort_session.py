"""ONNX Runtime's set-up for every ONNX runner: the import, session options, the CUDA provider and
whether it runs here. numpy and onnxruntime only: never torch."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from pathlib import Path

from ptx.errors import BackendUnavailableError, PtxError

ORT_QUIET = 4  # FATAL only: ORT's multi-line provider errors become our one-line error instead
ORT_DEFAULT = 2
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


# A command's choice of whether idle intra-op threads spin, where PTX_ORT_SPINNING says nothing ("" = ONNX
# Runtime's own default, spinning): see threads_spinning.
_SPINNING_CHOICE = [""]


@contextlib.contextmanager
def threads_spinning(on: bool):
    """The ONNX Runtime sessions opened inside the block spin (``on``) or sleep between runs, unless
    PTX_ORT_SPINNING says otherwise. Spinning threads answer the next run at once but hold their cores: a server's
    single-pass models sleep, since the event loop and the batcher need those cores between runs, while a
    decoder's step loop runs steps back to back and loses the wake-up on every operator when its threads sleep
    (SmolLM2-135M served: 0.92x the library's tokens/s with them sleeping, 0.98x spinning;
    docs/benchmarks/generation.md)."""
    before = _SPINNING_CHOICE[0]
    _SPINNING_CHOICE[0] = "1" if on else "0"
    try:
        yield
    finally:
        _SPINNING_CHOICE[0] = before


# Session options measured on the 2-core Xeon (docs/benchmarks/cpu.md): ORT's default intra-op pool
# (one thread per core) and full graph optimisation were the fastest; PTX_ORT_THREADS and
# PTX_ORT_OPT_LEVEL (disable, basic, extended, all) override them for other machines.
ORT_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                  "all": "ORT_ENABLE_ALL"}


def session_options(ort):
    """ORT's SessionOptions with ptx's defaults, or PTX_ORT_THREADS / PTX_ORT_OPT_LEVEL / PTX_ORT_SPINNING's
    values; PTX_ORT_PROFILE=PREFIX turns ONNX Runtime's profiler on."""
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
    profile = os.environ.get("PTX_ORT_PROFILE", "").strip()
    if profile:  # ONNX Runtime's profiler on, its JSON files named from this prefix (scripts/profile_decode_step.py)
        options.enable_profiling = True
        options.profile_file_prefix = profile
    spinning = os.environ.get("PTX_ORT_SPINNING", "").strip() or _SPINNING_CHOICE[0]
    if spinning:
        if spinning not in ("0", "1"):
            raise PtxError(f"PTX_ORT_SPINNING={spinning!r}: give 1 (threads spin between runs) or 0 (they sleep)")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return options


def part_session(model: bytes):
    """A CPU session, with ptx's session options, on a small graph given serialized: a part of a model that
    export evaluates to rewrite the model (export/onnx_rotary.py's cos and sin tables, computed by ONNX
    Runtime's own kernels as the model's run computes them)."""
    ort = import_ort()
    return ort.InferenceSession(model, session_options(ort), providers=["CPUExecutionProvider"])


def file_session(path):
    """A CPU session, with ptx's session options, on the ONNX file at ``path`` (its external data beside it):
    export's look inside a file it wrote (export/departure.py's layer outputs)."""
    ort = import_ort()
    return ort.InferenceSession(str(path), session_options(ort), providers=["CPUExecutionProvider"])


def timing_session(path):
    """A CPU session on the ONNX file at ``path`` for timing one file against another (export's int8
    speed against f32, infer/runtime/timing.py's alternating rounds): its threads do not spin between
    runs, since a spinning worker holds a core while the next file's session runs
    (export/formats/onnx_int8.speed_against_f32 says what that did to the ratios)."""
    ort = import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
