"""The cache forms that keep a buffer longer than the past (cache.py says the interface): ``BufferCache``, the
bookkeeping of a buffer of ``capacity`` positions of which the first ``length`` are filled (GroupQueryAttention's
in-place buffer, ort_cache.PlacedCache, keeps one too), and ``SlotCache``, a fixed-length cache's (a decoder
exported with --static-cache, export/static_cache.py): the buffer is the past of every run, the mask widened to
it, the slots of the run's new positions fed. ``cache_for`` picks the numpy form of a decoder's cache. numpy only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature

from .cache import ArrayCache, Cache, Run, empty_past


class BufferCache(Cache):
    """A cache held in one buffer per past input, ``capacity`` positions long on its past axis (the most the decoding
    is expected to reach; grown, doubling, where it reaches past it), of which the first ``length`` are filled. A
    step's positions not accepted are cut by counting fewer: the next run writes over them. Zeros, which the
    operating system gives as pages are first written: a buffer costs the positions filled, not its length. The
    forms that keep one (PlacedCache, the slot forms) say how a run goes over it (``_run``)."""

    def __init__(self, signature: Signature, generation: Generation):
        super().__init__(signature, generation)
        self._buffers: dict[str, np.ndarray] | None = None
        self._empty: dict[str, np.ndarray] = {}  # the past of no positions, before any buffer exists
        self.capacity = 0
        self._reach = 0

    def reserve(self, positions: int) -> None:
        self._reach = max(self._reach, int(positions))

    def feeds(self) -> dict[str, object]:
        return self._empty if self._buffers is None else self._buffers

    def _room(self, positions: int) -> None:
        """Buffers of at least ``positions``: where they are shorter, longer ones (twice, or the reach) with the
        filled positions copied in."""
        if positions <= self.capacity:
            return
        self._buffers = self._allocated(self.arrays(), max(positions, self._reach, 2 * self.capacity))

    def _allocated(self, arrays: Mapping[str, np.ndarray], capacity: int) -> dict[str, np.ndarray]:
        buffers = {}
        for name, a in arrays.items():
            shape = list(a.shape)
            shape[self.axis] = capacity
            buffers[name] = np.zeros(shape, dtype=a.dtype)
            buffers[name][self._first(a.shape[self.axis])] = a
        self.capacity = capacity
        return buffers

    def _first(self, positions: int) -> tuple:
        return (slice(None),) * self.axis + (slice(0, positions),)

    def empty(self, rows: int) -> "BufferCache":
        fresh = self._new()
        fresh._reach = self._reach
        fresh.load(empty_past(self.signature, self.generation, rows))
        return fresh

    def _new(self) -> "BufferCache":
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        if self._buffers is None:
            return dict(self._empty)
        return {name: np.ascontiguousarray(b[self._first(self.length)]) for name, b in self._buffers.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._shape_of(arrays)
        if self.length == 0:
            self._buffers, self._empty, self.capacity = None, dict(arrays), 0
        else:
            self._buffers = self._allocated(arrays, max(self._reach, self.length))

    def _adopt(self, other: Cache) -> None:
        self._buffers, self._empty, self.capacity = other._buffers, other._empty, other.capacity
        self.rows, self.length, self._reach = other.rows, other.length, max(self._reach, other._reach)
        other._buffers, other._empty, other.rows, other.length = None, {}, 0, 0

    def truncate(self, length: int) -> None:
        """Counted shorter: the next run writes over the positions cut."""
        if length > self.length:
            super().truncate(length)  # its refusal
        self.length = length

    def release(self) -> None:
        super().release()
        self._buffers, self._empty, self.capacity = None, {}, 0


class SlotCache(BufferCache):
    """A fixed-length cache (a decoder exported with --static-cache, Generation.cache_position): its buffer is the
    past of every run, the decoding's mask widened with zeros to the buffer's length, and the slots the run's new
    positions are written at fed (the ``length`` after those filled). ``run``: the runner's run, whose present is
    then taken as the buffer; ``run_holding``: ONNX Runtime's (OrtRunner.run_holding on the CPU), which writes each
    present into the buffer bound as its past: nothing copied."""

    def __init__(self, run: Run, signature: Signature, generation: Generation, run_holding=None):
        super().__init__(signature, generation)
        self._run_fn, self._run_holding = run, run_holding

    def _new(self) -> "SlotCache":
        return SlotCache(self._run_fn, self.signature, self.generation, self._run_holding)

    def _run(self, feeds, width):
        self._room(self.length + width)
        out = self._run_over(self.slot_feeds(feeds, width))
        self.advance(out)
        return out

    def slot_feeds(self, feeds: Mapping[str, np.ndarray], width: int) -> dict[str, object]:
        """``feeds`` (the decoding's: the mask over the ``length`` positions held and the new ones) as the file takes
        them: the mask widened to the buffer, the slots written, the buffers as the past."""
        gen = self.generation
        slotted = {**feeds, gen.cache_position: np.arange(self.length, self.length + width, dtype=np.int64)}
        if gen.attention_mask:
            mask = np.asarray(feeds[gen.attention_mask])
            slotted[gen.attention_mask] = np.pad(mask, [(0, 0), (0, self.capacity - mask.shape[1])])
        return {**slotted, **self._buffers}

    def _run_over(self, feeds: Mapping[str, object]) -> Mapping[str, object]:
        if self._run_holding is not None:
            return self._run_holding(feeds, (), {present: self._buffers[past] for past, present in self.generation.cache})
        return self._run_fn(feeds)

    def advance(self, outputs: Mapping[str, object]) -> None:
        """Each present is the buffer with the run's positions written: taken as it, where the runner did not write
        it in place."""
        for past, present in self.generation.cache:
            value = outputs[present]
            if value is not self._buffers[past]:
                self._buffers[past] = np.require(value, requirements=("C", "W"))

    def _room(self, positions: int) -> None:
        if self._buffers is None:  # the first run: buffers of the reach, or of its own positions
            self._buffers = self._allocated(self._empty, max(self._reach, positions))
        super()._room(positions)


def cache_for(run: Run, signature: Signature, generation: Generation, run_holding=None) -> Cache:
    """The numpy form of ``generation``'s cache through ``run``: a fixed-length cache's buffer (SlotCache; in
    place through ``run_holding`` where given), else arrays fed back (ArrayCache)."""
    if generation.cache_position:
        return SlotCache(run, signature, generation, run_holding)
    return ArrayCache(run, signature, generation)
