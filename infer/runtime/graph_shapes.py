"""The fixed shapes the CUDA-graph backends (ort-cuda-graph, eager-cuda-graph) capture.

A captured CUDA graph replays the same kernels on the same buffers: one graph per input shape.
A server's batcher forms any batch size from 1 to its maximum, so batch sizes are rounded up to a
power of two (at most 9 graphs up to 256); the padding rows are zeros and their outputs are
dropped, which changes no answer because every ptx model answers each sample on its own (ptx
verify checks the backend on batch sizes that are not powers of two). Above GRAPH_MAX_BATCH a run
is bound by arithmetic rather than kernel launches, so it runs uncaptured, as it does once
MAX_GRAPHS shapes (text of many lengths) have been captured. A language model's decoding step with a fixed-length
cache (--static-cache) is captured at the sizes ``step_sizes`` names (ort_graph_cache.py).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature

GRAPH_MAX_BATCH = 256
# a fixed-length cache's buffer is rounded up to this many slots in ort-cuda-graph's step sessions
# (ort_graph_cache.py), so that decodings of similar lengths replay one session
ROUNDED = 256
MAX_GRAPHS = 16

Slot = TypeVar("Slot")


def graph_batch(rows: int) -> int | None:
    """The batch size a ``rows``-row batch runs at as a graph (the next power of two), or None:
    run it uncaptured."""
    if rows < 1 or rows > GRAPH_MAX_BATCH:
        return None
    return 1 << (rows - 1).bit_length()


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
    return a[(slice(None),) * axis + (slice(start, stop),)]


class GraphSlots(Generic[Slot]):
    """Padded input shapes -> what their captured graph needs (buffers, graph id), made on first
    use by ``make(key, number)``; None once MAX_GRAPHS shapes are taken. Thread-safe."""

    def __init__(self, make: Callable[[tuple[int, ...], int], Slot], limit: int = MAX_GRAPHS):
        self.make, self.limit = make, limit
        self.slots: dict[tuple[int, ...], Slot] = {}
        self.lock = threading.Lock()

    def for_feeds(self, signature, feeds) -> tuple[Slot | None, int | None, int | None]:
        """(slot, padded batch, real rows) a run of ``feeds`` (inputs by name, of ``signature``:
        ptx.contract.tensors.Signature) replays; (None, None, rows) where it runs uncaptured. Every
        batched input is padded to the same power of two where every tensor of the signature has a
        batch axis (the padding rows' outputs are then dropped); any other model is captured at the
        exact shapes it is given. A slot's key is each input's (name, padded shape)."""
        pads = signature.batched
        batched = [t for t in signature.inputs if t.batch_axis is not None]
        rows = feeds[batched[0].name].shape[batched[0].batch_axis] if batched else None
        batch = graph_batch(rows) if rows is not None and pads else rows
        if rows is not None and batch is None:
            return None, None, rows
        key = tuple((t.name, tuple(batch if pads and axis == t.batch_axis else size
                                   for axis, size in enumerate(feeds[t.name].shape))) for t in signature.inputs)
        slot = self.get(key)
        return (slot, batch, rows) if slot is not None else (None, None, rows)

    def get(self, shape: tuple[int, ...]) -> Slot | None:
        with self.lock:
            slot = self.slots.get(shape)
            if slot is None and len(self.slots) < self.limit:
                slot = self.slots[shape] = self.make(shape, len(self.slots) + 1)
            return slot


def step_sizes(signature: Signature, generation: Generation, rows: int, capacity: int) -> dict[str, int]:
    """Each dynamic size of the file named as the step fixes it: the batch (rows), the new positions (1), the
    buffer's slots (capacity) and the kept logits (1)."""
    ids = signature.input(generation.input_ids).shape
    sizes = {ids[0]: rows, ids[1]: 1}
    if generation.attention_mask:
        sizes[signature.input(generation.attention_mask).shape[1]] = capacity
    if generation.logits_to_keep:
        sizes[signature.input(generation.logits_to_keep).shape[0]] = 1
    return {name: size for name, size in sizes.items() if isinstance(name, str)}
