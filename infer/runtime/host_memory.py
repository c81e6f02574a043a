"""Host arrays that are kept and reused, page-locked ("pinned") for the GPU where CUDA is loaded.

A copy to the GPU from ordinary (pageable) memory goes through the driver's own staging buffers,
a CPU copy and a DMA in turn; from page-locked memory the GPU's copy engine reads the array
directly (issue 28: every batch-4096 row was bound by float32 copies from pageable memory).
Locking pages is a system call that costs far more than a batch's copy, so a buffer is locked
once and reused: a batch is written straight into one (``ptx serve``'s batcher joins its requests
into it, ``ptx bench`` fills one), and the runtime reads it from there.

torch-free: ort-cuda pins through CUDA's runtime library (``cudaHostRegister``), which ONNX
Runtime's CUDA provider has loaded already, via ctypes. ONNX Runtime's Python API offers pinned
host memory only through a plugin execution provider's memory info (1.31), and numpy has none;
torch's ``pin_memory`` would bring torch into the ONNX Runtime path. The torch backends pin
through the same library where ctypes finds it, else through torch's binding of the call
(``torch.cuda.cudart()``).
"""
from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Iterator

import numpy as np

PAGE = 4096
# Buffers kept per pool: enough for the batch shapes a server forms and bench's sizes; beyond it
# the least recently used free buffer is released (and unpinned) first.
MAX_POOL_BYTES = 1 << 30


class CudaRuntimePinner:
    """``cudaHostRegister``/``cudaHostUnregister`` of a CUDA runtime: the library the process has
    loaded, through ctypes (ONNX Runtime's CUDA provider links it; ``preload_dlls`` loads it from
    pip's packages), or torch's binding of the same calls (``torch.cuda.cudart()``)."""

    def __init__(self, runtime):
        self.runtime = runtime
        if isinstance(runtime, ctypes.CDLL):
            runtime.cudaHostRegister.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
            runtime.cudaHostUnregister.argtypes = [ctypes.c_void_p]

    def pin(self, array: np.ndarray) -> bool:
        # flags 1, cudaHostRegisterPortable: pinned for every CUDA context of the process, so also for
        # a runtime (torch's, ONNX Runtime's) other than the library that registered it
        if int(self.runtime.cudaHostRegister(array.ctypes.data, array.nbytes, 1)) == 0:  # 0: cudaSuccess
            return True
        # A failed call leaves the runtime's "last error" set, which torch and ONNX Runtime read after
        # their next kernel launch and would report as that kernel's failure: clear it where the
        # runtime offers the call (torch's binding does not; pinning is then not retried: see HostBuffers).
        clear = getattr(self.runtime, "cudaGetLastError", None)
        if clear is not None:
            clear()
        return False

    def unpin(self, array: np.ndarray) -> None:
        self.runtime.cudaHostUnregister(array.ctypes.data)


def cuda_runtime_pinner(major_versions=("13", "12")) -> CudaRuntimePinner | None:
    """A pinner over the process's CUDA runtime library, or None where none can be loaded (the
    buffers are then reused unpinned: slower copies, the same answers)."""
    for name in [f"libcudart.so.{v}" for v in major_versions] + ["libcudart.so", "cudart64_13.dll", "cudart64_12.dll"]:
        try:
            return CudaRuntimePinner(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue
    return None


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array whose memory starts on a page boundary (what page-locking locks)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(count, 1) * dtype.itemsize
    raw = np.empty(nbytes + PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % PAGE
    return raw[start:start + nbytes].view(dtype)[:count].reshape(shape)


def lease_or_new(host: "HostBuffers | None", shape, dtype):
    """``host.lease(shape, dtype)``, or a fresh array where there is no pool (the model runs on the CPU)."""
    return host.lease(shape, dtype) if host is not None else contextlib.nullcontext(np.empty(shape, dtype))


class HostBuffers:
    """A pool of reusable host arrays, one or more per (shape, dtype), pinned by ``pinner`` (its
    ``pin(array)`` -> False where it cannot, and ``unpin(array)``; None: reused unpinned). ``lease`` hands one out for the length of a ``with`` block: concurrent
    callers (a server's worker threads) never share one. Thread-safe."""

    def __init__(self, pinner: CudaRuntimePinner | None = None, max_bytes: int = MAX_POOL_BYTES):
        self.pinner = pinner
        self._unpinner = pinner  # kept when pinning is given up: what was pinned is unpinned by it
        self.max_bytes = max_bytes
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._pinned: dict[int, np.ndarray] = {}  # id -> array, for unpinning at release
        self._kept: set[int] = set()  # ids of the arrays the pool counts and hands out again
        self._bytes = 0
        self._lock = threading.Lock()
        self.pin_failures = 0
        self.closed = False

    @contextlib.contextmanager
    def lease(self, shape, dtype) -> Iterator[np.ndarray]:
        key = (tuple(int(d) for d in shape), np.dtype(dtype).str)
        array = self._take(key)
        try:
            yield array
        finally:
            self._give_back(key, array)

    def _take(self, key) -> np.ndarray:
        with self._lock:
            free = self._free.get(key)
            if free:
                array = free.pop()
                self._free[key] = self._free.pop(key)  # most recently used last
                return array
        array = aligned_empty(key[0], key[1])
        with self._lock:
            self._make_room(array.nbytes)
            if self._bytes + array.nbytes > self.max_bytes:
                return array  # over budget with every buffer in use: a one-off, not kept
            self._bytes += array.nbytes
            self._kept.add(id(array))
        if self.pinner is not None:
            if self.pinner.pin(array):
                self._pinned[id(array)] = array
            else:
                self.pin_failures += 1
                self.pinner = None  # out of lockable memory, or no such call: reuse unpinned from now on
        return array

    def _give_back(self, key, array: np.ndarray) -> None:
        with self._lock:
            if id(array) not in self._kept:
                return
            if self.closed:
                self._release(array)
            else:
                self._free.setdefault(key, []).append(array)

    def _make_room(self, nbytes: int) -> None:
        """Release least recently used free buffers until ``nbytes`` more fit (lock held)."""
        while self._bytes + nbytes > self.max_bytes and self._free:
            oldest = next(iter(self._free))
            for array in self._free.pop(oldest):
                self._release(array)

    def _release(self, array: np.ndarray) -> None:
        self._bytes -= array.nbytes
        self._kept.discard(id(array))
        if self._pinned.pop(id(array), None) is not None:
            self._unpinner.unpin(array)

    def close(self) -> None:
        """Unpin and drop every free buffer; leased ones are unpinned and dropped when given back."""
        with self._lock:
            self.closed = True
            for arrays in self._free.values():
                for array in arrays:
                    self._release(array)
            self._free.clear()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()
