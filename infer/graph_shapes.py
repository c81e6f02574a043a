"""The fixed shapes the CUDA-graph backends (ort-cuda-graph, eager-cuda-graph) capture.

A captured CUDA graph replays the same kernels on the same buffers: one graph per input shape.
A server's batcher forms any batch size from 1 to its maximum, so batch sizes are rounded up to a
power of two (at most 9 graphs up to 256); the padding rows are zeros and their outputs are
dropped, which changes no answer because every ptx model answers each sample on its own (ptx
verify checks the backend on batch sizes that are not powers of two). Above GRAPH_MAX_BATCH a run
is bound by arithmetic rather than kernel launches, so it runs uncaptured, as it does once
MAX_GRAPHS shapes (text of many lengths) have been captured.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

import numpy as np

GRAPH_MAX_BATCH = 256
MAX_GRAPHS = 16

Slot = TypeVar("Slot")


def graph_batch(rows: int) -> int | None:
    """The batch size a ``rows``-row batch runs at as a graph (the next power of two), or None:
    run it uncaptured."""
    if rows < 1 or rows > GRAPH_MAX_BATCH:
        return None
    return 1 << (rows - 1).bit_length()


def padded_shape(shape: tuple[int, ...], axis: int, batch: int) -> tuple[int, ...]:
    return tuple(batch if i == axis else d for i, d in enumerate(shape))


def fill_padded(out: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` in the first rows of ``out`` along ``axis``, zeros after: the graph's input."""
    rows = x.shape[axis]
    np.copyto(_rows(out, axis, 0, rows), x)
    _rows(out, axis, rows, out.shape[axis])[...] = 0
    return out


def first_rows(out: np.ndarray, axis: int, rows: int) -> np.ndarray:
    """The outputs of the real rows (a copy: the graph's buffers are overwritten by the next run)."""
    return np.array(_rows(out, axis, 0, rows))


def _rows(a: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    return a[tuple(index)]


class GraphSlots(Generic[Slot]):
    """Padded input shape -> what its captured graph needs (buffers, graph id), made on first use
    by ``make(shape, number)``; None once MAX_GRAPHS shapes are taken. Thread-safe."""

    def __init__(self, make: Callable[[tuple[int, ...], int], Slot], limit: int = MAX_GRAPHS):
        self.make, self.limit = make, limit
        self.slots: dict[tuple[int, ...], Slot] = {}
        self.lock = threading.Lock()

    def for_rows(self, shape: tuple[int, ...], axis: int) -> tuple[Slot | None, int | None]:
        """The slot a batch of ``shape`` (batch on ``axis``) runs in, its padded shape's, and that
        padded batch size; (None, None) where it runs uncaptured."""
        batch = graph_batch(shape[axis])
        slot = self.get(padded_shape(tuple(shape), axis, batch)) if batch is not None else None
        return (slot, batch) if slot is not None else (None, None)

    def get(self, shape: tuple[int, ...]) -> Slot | None:
        with self.lock:
            slot = self.slots.get(shape)
            if slot is None and len(self.slots) < self.limit:
                slot = self.slots[shape] = self.make(shape, len(self.slots) + 1)
            return slot
