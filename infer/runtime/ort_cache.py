"""ONNX Runtime's forms of a decoder's cache (cache.py says the interface): ``HeldCache``, each present left
where ONNX Runtime made it (an OrtValue on the runner's device, through IO binding) and bound as the next past;
``PlacedCache``, a GroupQueryAttention decoder's (exported with --ort-attention, export/ort_attention.py) buffer per
layer's key and value that its past and present are both bound to, so that the operator writes each step's new
positions after the past in place and nothing is copied; and ``DeviceSlotCache``, a fixed-length cache's buffer
(--static-cache) on the runner's device, bound likewise (ort-cuda; ort_graph_cache.py replays its steps).
numpy and onnxruntime only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature

from .buffer_cache import BufferCache, SlotCache
from .cache import FedBackCache
from .ort_session import import_ort
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


class PlacedCache(BufferCache):
    """A GroupQueryAttention decoder's cache in place (ort-cpu): one buffer per past input (BufferCache), bound as
    both the past and the present of each run, so that the operator writes each step's keys and values after the
    ``length`` positions held."""

    def __init__(self, runner, signature: Signature, generation: Generation):
        super().__init__(signature, generation)
        self._runner = runner

    def _new(self) -> "PlacedCache":
        return PlacedCache(self._runner, self.signature, self.generation)

    def widest(self) -> int | None:
        """One position a row where there are several: ONNX Runtime's GroupQueryAttention (1.31) refuses a run of
        more than one new position over a past for a batch of more than one."""
        return 1 if self.rows > 1 else None

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


class DeviceSlotCache(SlotCache):
    """A fixed-length cache on ``runner``'s device (an OrtRunner's, ort-cuda): each buffer an OrtValue there, bound
    as the past and the present of every run (run_holding writes the present into it), never copied to the host
    between steps."""

    def __init__(self, runner, signature: Signature, generation: Generation):
        super().__init__(runner.run, signature, generation, runner.run_holding)
        self._runner = runner

    def _new(self) -> "DeviceSlotCache":
        return DeviceSlotCache(self._runner, self.signature, self.generation)

    def _on_host(self, arrays: Mapping[str, np.ndarray], capacity: int) -> dict[str, np.ndarray]:
        """``arrays`` in the first positions of host buffers of ``capacity`` positions, zeros after."""
        return BufferCache._allocated(self, arrays, capacity)

    def _allocated(self, arrays: Mapping[str, np.ndarray], capacity: int) -> dict[str, object]:
        ort = import_ort()
        return {name: ort.OrtValue.ortvalue_from_numpy(a, *self._runner.ort_device)
                for name, a in self._on_host(arrays, capacity).items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled positions of this cache's rows, copied to the host (a buffer may hold more rows: a graph step
        session's padding rows, ort_graph_cache.py). Always a copy: on the CPU an OrtValue's numpy() is a view of
        the host array it was made from, which the OrtValue alone keeps alive; a view (ascontiguousarray of a slice
        that is contiguous already) read after the cache released it (Cache.add releases the joining cache before it
        loads) reads freed memory."""
        if self._buffers is None:
            return dict(self._empty)
        out = {}
        for name, b in self._buffers.items():
            rows = (slice(None),) * self._batch_axes[name] + (slice(0, self.rows),)
            out[name] = np.array(b.numpy()[self._first(self.length)][rows], order="C", copy=True)
        return out

    def advance(self, outputs: Mapping[str, object]) -> None:
        """The presents were written into the buffers bound as them: nothing to take."""
