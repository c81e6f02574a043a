"""A command's memory plan: before it opens a model in a runtime, a command knows the weights' size
(the file, and an ONNX file's external data beside it) and the memory the process may still have
(ptx.machine.available_memory: MemAvailable, bounded by the container's cgroup limit and by
PTX_MEMORY_LIMIT); what cannot fit is skipped with one line saying what it needs and what is
available, never opened for the kernel to kill the process.

What a runtime holds is a multiple of the weights, measured (scripts/backend_memory.py) and declared by each
backend in its registry entry (``Backend.holds``; ``holds_external`` for an ONNX file whose weights lie in
external data, ``holds_at`` per precision, ``compiled_copy_at`` for each compiled shape): ONNX Runtime peaks
at 2.5x while it opens a file that holds its weights (the protobuf parsed, then the weights prepacked) and
at 1.2x where they lie in external data; OpenVINO at 2.4x with one compiled shape. Every other factor a
"does it fit" question needs lives here, each with where it was measured: what a run, a decoding, an
optimising session, a --locate question and an export that checks one file while it writes the next hold.
Torch-free: every stage may plan.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ptx.contract.names import dequantized_weights_file, weight_only_file
from ptx.contract.onnx_wire import external_data_files
from ptx.errors import BackendUnavailableError
from ptx.machine import MEMORY_LIMIT_ENV, available_memory, memory_limit

# Left free beyond a runtime's measured peak: the cases, their answers, what the allocator keeps.
MARGIN = 0.10


class OutOfMemoryPlan(BackendUnavailableError):
    """A model, a row or a check that this machine's memory cannot hold now: skipped in one line."""


def weights_bytes(path: str | Path) -> int:
    """The bytes a model file's weights take: the file, and an ONNX file's external data files."""
    path = Path(path)
    if not path.is_file():
        return 0
    total = path.stat().st_size
    if path.suffix.lower() == ".onnx":
        try:
            total += sum((path.parent / name).stat().st_size for name in external_data_files(path))
        except (OSError, ValueError, Exception):  # noqa: BLE001 - a damaged file is its opener's to refuse
            pass
    return total


def size_text(nbytes: float, decimals: int = 0) -> str:
    """``1983000000`` -> ``1.98 GB``; ``783000000`` -> ``783 MB``; ``492800`` -> ``493 kB`` (a tiny model's weights
    are not 0 MB); MB and kB with ``decimals`` (GB always with two), each unit taken after rounding (999,999 bytes
    is ``1 MB``, not ``1,000 kB``)."""
    for scale, unit in ((1e3, "kB"), (1e6, "MB")):
        if round(nbytes / scale, decimals) < 1000:
            return f"{nbytes / scale:,.{decimals}f} {unit}"
    return f"{nbytes / 1e9:,.2f} GB"


def file_size_text(nbytes: float) -> str:
    """A written file's size as export says it: ``62027`` -> ``62.0 kB``, ``24912345`` -> ``24.9 MB``,
    ``4780700000`` -> ``4.78 GB``; always with a decimal, as a file's bytes move a little with what its metadata
    records (when and on what it was made)."""
    return size_text(nbytes, decimals=1)


def where_available() -> str:
    """What bounds the available memory, as a line says it."""
    return f"{MEMORY_LIMIT_ENV} less what ptx holds" if memory_limit() is not None else "MemAvailable or the cgroup limit"


def shortfall(what: str, need: float, available: int | None = None) -> str | None:
    """One line where ``what`` needs ``need`` bytes (plus MARGIN) and less is available now, else None
    (None too where the machine says nothing of its memory)."""
    available = available_memory() if available is None else available
    if available is None or need * (1 + MARGIN) <= available:
        return None
    return (f"{what} needs about {size_text(need * (1 + MARGIN))} of memory and {size_text(available)} is available "
            f"({where_available()})")


def require_room(what: str, need: float) -> None:
    """OutOfMemoryPlan (a skip, in one line) where ``what`` cannot fit in the memory available now."""
    why = shortfall(what, need)
    if why:
        raise OutOfMemoryPlan(why)


def opening_need(backend, path: str | Path, precision: str = "f32") -> float:
    """The bytes ``backend`` holds at its peak while it opens and runs the model file at ``path`` at
    ``precision``: what the registry says it holds, as a multiple of the file's weights (for an ONNX file
    whose weights lie in external data, its figure for those where it has one), and what it holds to open any."""
    path = Path(path)
    weights = weights_bytes(path)
    if not weights:  # no such file: its opening says why
        return 0.0
    external = backend.holds_external is not None and path.suffix.lower() == ".onnx" and weights > path.stat().st_size
    if backend.holds_dequantized is not None and dequantized_weights_file(path):
        held = backend.holds_dequantized  # its weights widened as it runs, wherever they lie
    elif external:
        held = backend.holds_external
    else:
        held = backend.holds_for(precision, weight_only_file(path))
    return held * weights + backend.opens_with


def opening_shortfall(backend, label: str, path: str | Path, precision: str = "f32",
                      beside: Sequence[Path] = ()) -> str | None:
    """One line where ``label`` (a backend's row) cannot open the file at ``path`` at ``precision`` (with the
    files opened beside it: an encoder-decoder's encoder) in the memory available now, else None."""
    own = weights_bytes(path)
    if not own:  # no such file: its opening says why
        return None
    weights = own + sum(map(weights_bytes, beside))
    return shortfall(f"{label} on {Path(path).name} ({size_text(weights)} of weights)",
                     sum(opening_need(backend, f, precision) for f in [Path(path), *beside]))


# The most memory a runner spends on compiled copies of one model beyond the first: a small model keeps
# a copy per shape it meets (a server's few, verify's handful), a big one recompiles instead.
COMPILED_COPIES_BYTES = 1 << 30


def compiled_shapes_room(weights: int, per_shape: float, most: int) -> int:
    """How many compiled copies of a model (``per_shape`` times its ``weights`` each) to keep, from 1
    to ``most``: as many as COMPILED_COPIES_BYTES holds, or a quarter of the memory available now
    where that is less."""
    available = available_memory()
    budget = COMPILED_COPIES_BYTES if available is None else min(COMPILED_COPIES_BYTES, available / 4)
    return max(1, min(most, int(budget // max(1.0, per_shape * weights))))


# A run holds its inputs and outputs, and the runtime's intermediate tensors, which for the layers that
# widen (an LM's logits, a classifier's last features) are of the outputs' order: a case is planned at
# this many times what its inputs and outputs take, for every runtime timed beside it.
RUN_COPIES = 4


def case_bytes(signature, feeds) -> int | None:
    """The bytes a run on ``feeds`` takes in inputs and outputs (``signature``'s output shapes at these
    inputs' sizes), or None where an output's size depends on the values."""
    import numpy as np

    shapes = signature.output_shapes(feeds)
    if shapes is None:
        return None
    outputs = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(signature.output(name).dtype).itemsize
                  for name, shape in shapes.items())
    return outputs + sum(int(np.asarray(a).nbytes) for a in feeds.values())


def cases_that_fit(signature, cases, runtimes: int = 1) -> tuple[list, list[str]]:
    """(the ``cases`` whose runs fit in the memory available now, one line per case left out): each run
    planned at RUN_COPIES times its inputs and outputs for each of ``runtimes``."""
    available = available_memory()
    kept, left = [], []
    for case in cases:
        size = case_bytes(signature, case.feeds) if case.feeds is not None and available is not None else None
        need = None if size is None else size * RUN_COPIES * max(1, runtimes)
        if need is not None and need * (1 + MARGIN) > available:
            left.append(f"{case.label}: left out: its runs need about {size_text(need * (1 + MARGIN))} of memory "
                        f"({size_text(size)} of inputs and outputs each) and {size_text(available)} is available "
                        f"({where_available()})")
        else:
            kept.append(case)
    return kept, left


def decoding_need(cache_bytes: float, logits_bytes: float, kept_bytes: float = 0.0) -> float:
    """The bytes a decoding holds beyond the runtime's weights: its cache at its longest (``cache_bytes``) twice,
    the past fed and the present returned, the prompt's run's logits (``logits_bytes``) at RUN_COPIES, with the
    runtime's intermediates of their order, and what its caller keeps of them (``kept_bytes``: a judge's copy of
    every position's). Measured on Qwen2-0.5B's config, a prompt of 1,500 tokens (0.91 GB of logits, every
    position's; planned 3.72 GB): the process's peak grew by 1.73 GB on ort-cpu and 3.17 GB on openvino (2-core
    Intel Xeon, 2026-11-27)."""
    return 2 * cache_bytes + RUN_COPIES * logits_bytes + kept_bytes


# A session that optimises a file and writes it out (ort-cuda's static placement check, ONNX Runtime's basic
# optimisations) holds the weights as ort-cpu does, and the copy it writes: 2.4x measured on a 783 MB Qwen2
# with prepacking off, which the optimised copy has no use for (3.4x with it).
HOLDS_WHILE_OPTIMISING = 2.6


def optimising_need(weights: int) -> float:
    """The bytes ONNX Runtime holds while it optimises a file of ``weights`` bytes and writes the result out."""
    return HOLDS_WHILE_OPTIMISING * weights


# A module's files are checked while the next is written only where memory has room for this many copies of
# its weights: the check holds the checking runtime beside the writer's work (ort-cpu's peak, about 2.5x the
# weights), at most an eighth of what is available. A ViT-B/16 (347 MB) overlaps on a 24 GB machine; a
# 0.5B-parameter LM (1.98 GB) is exported and checked in turn, near a bare exporter's memory.
OVERLAP_ROOM = 20


def room_to_overlap(weights: int) -> bool:
    """Whether memory has room for a file of ``weights`` bytes to be checked while the next is written."""
    room = available_memory()
    return room is not None and room > OVERLAP_ROOM * weights


# What one question of `ptx verify --locate` may hold in tensors per side: a PIECE_SHARE-th of what the process
# already held at its peak (the verify before it), within PIECE_BYTES. A piece costs each side a session (an
# OpenVINO compile) and holds about six times its tensors at once: pieces of a tenth keep a locate's peak under
# 1.6x the verify's in half the sessions of a twentieth (PaddleOCR's detector with four 320x320 pages: 2.7x a
# plain verify's time and 1.28x its peak, where a twentieth took 4.0x and 1.09x).
PIECE_BYTES = (8 << 20, 48 << 20)
PIECE_SHARE = 10


def piece_budget() -> int:
    """The bytes of tensors one --locate question may compute per side."""
    return min(max(PIECE_BYTES[0], peak_memory() // PIECE_SHARE), PIECE_BYTES[1])


def peak_memory() -> int:
    """The process's peak resident memory so far, in bytes (Linux counts KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# A full garbage-collector pass is paid for where what was let go may be large: a reference cycle holding
# the copies a quantizer made of a model smaller than this holds less than it, and the pass's cost grows with
# the process's objects, not with the model (0.8 s a pass in the test suite's long-lived workers, which ran
# some 180 of them for tutorial-sized models: a minute and a half per worker).
COLLECT_FROM_BYTES = 64 << 20


def give_back_freed(collect: bool = True, weights: int | None = None) -> None:
    """What was freed given back to the system: glibc keeps freed blocks in its arenas for reuse, so a
    closed runtime's or a quantizer's gigabytes stayed counted against the process and against the
    plan's next decision (4.0 GB held after onnxruntime's quantizer on Qwen2-0.5B; 0.08 GB after
    malloc_trim). A no-op where the C library is not glibc. ``collect``: the garbage collector's full
    pass first, for what a reference cycle still holds; a pass cost 74 to 158 ms in a process that
    imported torch, onnxruntime and ptx (ten passes on a shared 2-core Intel Xeon), which a caller
    closing hundreds of one-question runners (--locate) need not pay; ``weights``: the bytes of the model
    whose copies were let go, where known: the pass is made from COLLECT_FROM_BYTES of them."""
    collect = collect and (weights is None or weights >= COLLECT_FROM_BYTES)
    import ctypes
    import gc

    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
