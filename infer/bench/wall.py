"""The wall a decoder's speed is said against: every new token reads every weight once (and the cache), so one
step cannot take less than (the bytes it reads) / (the machine's read bandwidth).

``read_bandwidth`` measures the bandwidth in the same run as the rows it is compared with (the machine is
shared, and its bandwidth on the day is what the rows got): a numpy probe, one thread per core each reducing
its own share of a buffer far larger than the caches to its minimum, as a decoding step's kernels stream the
weights on every core. The minimum, not the sum: numpy's pairwise float32 sum runs at about 60% of the speed
of its min on the same buffer (measured here, 2026-11-26: 5.7 against 9.4 GB/s on one thread), so it would
measure the adder, not the memory. It is a lower bound: a decoder's own f32 products have read faster (Qwen2-0.5B's
1,976 MB a token at 35.0 GB/s where the probe read 34.7 in the same run, an AMD EPYC's 2 cores, 2026-11-28), so
a row can come out past 100% of its wall. ONNX Runtime's ReduceMin is no better probe of the host: over a buffer
it allocated and never wrote it read 64 GB/s, the kernel's one zero page read for every page of the buffer;
written first, 31 to 32 (so ``ort_read_bandwidth`` writes a host buffer before it reads it). A row on a GPU
reads its weights from the GPU's memory, not the host's (an H100's HBM3 reads some 30x the host's 100 GB/s:
the host's wall put ort-cuda at 135% of it on 2026-11-27), so ``device_bandwidth`` measures the memory of the
row's device: on a GPU, ONNX Runtime's CUDA provider reducing a buffer already on the GPU to its minimum, the
same probe. ``bytes_per_token`` reads what one step of a decoder file reads from its graph: every initializer
but the tables a Gather reads one row of per token (the embedding; a head tied to it reads the table whole and
counts), at the bytes each is stored in (an int4 weight half a byte).

numpy, onnx (the graph's structure, never its weights), onnxruntime for a GPU's probe and the standard
library: never torch.
"""
from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptx.machine import usable_cores

PROBE_BYTES = 1 << 30  # far past any CPU's last-level cache (a few hundred MB at most on a server)
PROBE_PASSES = 7
DEVICE_PROBE_BYTES = 1 << 29  # 512 MiB: ten times an H100's L2 cache, and room on a GPU already holding a model
# The bytes an element of each ONNX tensor type takes (TensorProto.DataType): int4 and uint4 pack two a byte.
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2, 21: 0.5, 22: 0.5}
# Ops a table passes through on its way to a Gather that reads one row of it (a dequantized table).
TABLE_CARRIERS = ("DequantizeLinear", "Cast", "Reshape", "Identity")
# Inputs read one row per index, which a step's bytes leave out (its rows are a rounding error beside the
# weights): a Gather's table, a quantized table's scales and zero points, and the cos and sin tables ONNX
# Runtime's rotary ops read one row per position.
ROW_INPUTS = {"Gather": (0,), "GatherBlockQuantized": (0, 2, 3), "RotaryEmbedding": (2, 3),
              "GroupQueryAttention": (7, 8)}


@dataclass(frozen=True)
class Bandwidth:
    """A read bandwidth measured here, and how."""

    bytes_per_s: float
    how: str


def read_bandwidth(nbytes: int = PROBE_BYTES, passes: int = PROBE_PASSES) -> Bandwidth:
    """The machine's read bandwidth now: ``nbytes`` of float32 (fewer where memory is short), one share per
    core reduced by its own thread (numpy's reductions release the GIL), the median of ``passes`` passes
    after one that touches every page."""
    from ptx.machine import available_memory

    room = available_memory()
    if room:
        nbytes = int(min(nbytes, room // 8))
    threads = usable_cores()
    buffer = np.ones(max(nbytes // 4, threads * 1024), dtype=np.float32)
    shares = np.array_split(buffer, threads)
    times = []
    with ThreadPoolExecutor(threads) as pool:
        for k in range(passes + 1):
            start = time.perf_counter()
            list(pool.map(np.min, shares))
            if k:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return Bandwidth(buffer.nbytes / seconds, f"numpy read probe: {buffer.nbytes / 2**20:,.0f} MiB of float32 read by "
                                              f"{threads} thread{'s' * (threads != 1)}, median of {passes} passes")


def device_bandwidth(device: str) -> Bandwidth | str:
    """The read bandwidth of the memory a row on ``device`` (cpu, cuda or cuda:N) reads its weights from, or
    why it cannot be measured here (one line)."""
    if device == "cpu":
        return read_bandwidth()
    if device.partition(":")[0] != "cuda":
        return f"no read probe for {device}"
    from ..runtime.ort_session import cuda_device_id, cuda_provider, cuda_unavailable

    why = cuda_unavailable(device)
    if why:
        return f"{device}'s read bandwidth is not measured: {why}"
    device_id = cuda_device_id(device)
    return ort_read_bandwidth([cuda_provider(device_id)], "cuda", device_id)


def ort_read_bandwidth(providers: list, device_type: str = "cpu", device_id: int = 0,
                       nbytes: int = DEVICE_PROBE_BYTES, passes: int = PROBE_PASSES) -> Bandwidth | str:
    """The read bandwidth of ``device_type``'s memory as ONNX Runtime's ``providers`` reach it: one ReduceMin
    over ``nbytes`` of float32 held on that device (bound, so no copy is timed), the median of ``passes`` runs
    after one; or why the buffer could not be had."""
    from onnx import TensorProto, helper

    from ..runtime.ort_session import ORT_QUIET, import_ort

    ort = import_ort()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    graph = helper.make_graph([helper.make_node("ReduceMin", ["x"], ["y"], keepdims=0)], "read_probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_QUIET
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        if device_type == "cpu":  # written first: an unwritten host buffer reads the kernel's zero page
            host = np.ones(nbytes // 4, dtype=np.float32)
            buffer = ort.OrtValue.ortvalue_from_numpy(host)
        else:
            buffer = ort.OrtValue.ortvalue_from_shape_and_type([nbytes // 4], np.float32, device_type, device_id)
    except Exception as exc:  # no room for the buffer on the device: no wall rather than a wrong one
        return f"{device_type}'s read probe did not start: {str(exc).splitlines()[0][:200]}"
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", buffer)
    binding.bind_output("y", device_type, device_id)
    times = []
    for k in range(passes + 1):
        start = time.perf_counter()
        session.run_with_iobinding(binding)  # returns once the device's stream is done (ORT synchronizes a run)
        if k:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return Bandwidth(nbytes / seconds, f"ONNX Runtime read probe on {device_type}: {nbytes / 2**20:,.0f} MiB of "
                                       f"float32 on the device reduced by one ReduceMin, median of {passes} runs")


def bytes_per_token(path: str | Path, float_bytes: float = 4) -> int | None:
    """The bytes of weights one decoding step of the ONNX file at ``path`` reads: every initializer but the
    tables read one row per token, a float32 one at ``float_bytes`` (2 where the runtime keeps it in bf16);
    None where the file is not ONNX."""
    from ptx.errors import ArtifactError
    from ptx.infer.formats.onnx_files import load_structure

    if Path(path).suffix.lower() != ".onnx":
        return None
    try:
        graph = load_structure(path).graph
    except ArtifactError:
        return None
    consumers: dict[str, list[tuple[object, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))

    def rows_only(name: str, seen: int = 0) -> bool:
        """Whether every path from ``name`` ends in a Gather reading it one row at a time."""
        uses = consumers.get(name, [])
        if not uses or seen > 4:
            return False
        for node, slot in uses:
            if slot in ROW_INPUTS.get(node.op_type, ()):
                continue
            if node.op_type in TABLE_CARRIERS and slot == 0 and all(rows_only(o, seen + 1) for o in node.output):
                continue
            return False
        return True

    total = 0
    for tensor in graph.initializer:
        if rows_only(tensor.name):
            continue
        size = float_bytes if tensor.data_type == 1 else ELEMENT_BYTES.get(tensor.data_type, 4)
        total += int(np.prod(tensor.dims, dtype=np.int64) * size)
    return total
