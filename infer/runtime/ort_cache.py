"""ONNX Runtime's two forms of a decoder's cache (cache.py says the interface): ``HeldCache``, each present left
where ONNX Runtime made it (an OrtValue on the runner's device, through IO binding) and bound as the next past, and
``PlacedCache``, a GroupQueryAttention decoder's (exported with --ort-attention, export/ort_attention.py) buffer per
layer's key and value that its past and present are both bound to, so that the operator writes each step's new
positions after the past in place and nothing is copied. numpy and onnxruntime only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature

from .cache import Cache, FedBackCache, empty_past
from .runner import as_array


def _rows_and_length(value, batch_axis: int, past_axis: int) -> tuple[int, int]:
    shape = value.shape() if callable(getattr(value, "shape", None)) else value.shape
    return int(shape[batch_axis]), int(shape[past_axis])


class HeldCache(FedBackCache):
    """The cache as the runtime's own values: each present an OrtValue where ONNX Runtime made it (on the GPU for
    ort-cuda), bound as the next run's past, never copied into numpy and back between steps. ``runner``: an
    OrtRunner (its run_holding)."""

    def __init__(self, runner, signature: Signature, generation: Generation):
        super().__init__(signature, generation)
        self._runner = runner

    def _run_with(self, feeds):
        return self._runner.run_holding(feeds, self.presents)

    def _new(self) -> "HeldCache":
        return HeldCache(self._runner, self.signature, self.generation)

    def _copied(self, value) -> np.ndarray:
        return as_array(value)


class PlacedCache(Cache):
    """A GroupQueryAttention decoder's cache in place (ort-cpu): one buffer per past input, ``capacity`` positions
    long on its past axis (the most the decoding is expected to reach; grown, doubling, where it reaches past it),
    bound as both the past and the present of each run, so that the operator writes each step's keys and values
    after the ``length`` positions held. A step's positions not accepted are cut by counting fewer: the next run
    writes over them. Zeros, which the operating system gives as pages are first written: a buffer costs the
    positions filled, not its length."""

    def __init__(self, runner, signature: Signature, generation: Generation):
        super().__init__(signature, generation)
        self._runner = runner
        self._buffers: dict[str, np.ndarray] | None = None
        self._empty: dict[str, np.ndarray] = {}  # the first run's past (length 0), before any buffer exists
        self.capacity = 0
        self._reach = 0

    def reserve(self, positions: int) -> None:
        self._reach = max(self._reach, int(positions))

    def widest(self) -> int | None:
        """One position a row where there are several: ONNX Runtime's GroupQueryAttention (1.31) refuses a run of
        more than one new position over a past for a batch of more than one."""
        return 1 if self.rows > 1 else None

    def feeds(self) -> dict[str, object]:
        return self._empty if self._buffers is None else self._buffers

    def advance(self, outputs: Mapping[str, object]) -> None:
        """The first run's presents copied into new buffers; after it, the operator wrote them in place already."""
        if self._buffers is not None:
            return
        presents = {past: as_array(outputs[present]) for past, present in self.generation.cache}
        width = next(iter(presents.values())).shape[self.axis]
        self._buffers = self._allocated(presents, max(self._reach, width))

    def _run(self, feeds, width):
        if self._buffers is None:  # from its empty past: the operator's scratch spans the prompt's positions, not
            # the buffer's, so the first run is given the empty past apart and its presents copied in
            out = self._runner.run_holding({**feeds, **self._empty}, ())
            self.advance(out)
            return out
        self._room(self.length + width)
        return self._runner.run_holding({**feeds, **self._buffers}, (),
                                        {present: self._buffers[past] for past, present in self.generation.cache})

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

    def empty(self, rows: int) -> "PlacedCache":
        fresh = PlacedCache(self._runner, self.signature, self.generation)
        fresh._reach = self._reach
        fresh.load(empty_past(self.signature, self.generation, rows))
        return fresh

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
