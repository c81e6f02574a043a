"""A decoder's key/value cache, owned by the runtime that runs it (onnxruntime-genai's KV cache object; OpenVINO's
stateful model): one object a runner makes (``runner.new_cache(generation)``), one interface, one form per runtime.

    cache = runner.new_cache(generation)     # no rows yet
    joining = cache.empty(rows=2)            # prompts that join: their own cache of the same form, 0 positions
    out = joining.run(feeds)                 # a run of the decoder on these feeds with the cache as its past: the
                                             # presents become the cache (feeds() and advance(out) are its parts)
    cache.add(joining)                       # their rows after the others' (both at the longer one's length)
    cache.keep([0, 2])                       # the rows that stay; the others leave with their cache
    cache.fit(length)                        # the past axis made ``length`` long on its left (cut, or zeros)
    cache.truncate(length)                   # the first ``length`` positions kept: the newest cut (drafts rejected)
    cache.release()                          # nothing runs again: what the runtime holds for it goes now

The decoding loop (infer/model/generation.py) asks for these and never knows the form:
- ``ArrayCache``: numpy arrays, each present fed back as the next past (any runner: eager, TorchScript, a run
  function of export's);
- ``HeldCache`` (ort_cache.py): ONNX Runtime's OrtValues through IO binding, on the runner's device, never copied
  into numpy and back between steps;
- ``PlacedCache`` (ort_cache.py): a GroupQueryAttention decoder's (exported with --ort-attention) buffer, past
  and present bound to one array that the operator writes each step's keys and values into, in place;
- ``StateCache`` (openvino_state.py): OpenVINO's stateful model, the cache in its infer request's variables;
- ``SlotCache`` (buffer_cache.py): a fixed-length cache's buffer (exported with --static-cache), the mask widened
  to it and the slots of each run's new positions fed (cache_position); bound as both past and present where the
  runner writes an output in place (ONNX Runtime on the CPU), else each present taken as the buffer (any runner);
  ``DeviceSlotCache`` (ort_cache.py) keeps it as OrtValues on the GPU (ort-cuda), and ``GraphSlotCache``
  (ort_graph_cache.py) there too, each one-position step replayed as one CUDA graph (ort-cuda-graph).
ArrayCache, HeldCache and StateCache feed each present back as the next past (``FedBackCache``, their shared
bookkeeping); PlacedCache and the slot forms keep a buffer longer than the past (``BufferCache``).

Every row's cache sits at the right end of the past axis (the positions a row does not have are on its left, zeros
its mask hides), so that rows of different lengths share one past length; the mask is the decoding's, not the
cache's. Structural changes (rows joining and leaving, fitting) are rare next to steps: a form that cannot do them
where its values lie does them on numpy copies (``arrays``, ``load``), the arithmetic written once here.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature
from ptx.errors import PtxError

Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def empty_past(signature: Signature, generation: Generation, batch: int, length: int = 0) -> dict[str, np.ndarray]:
    """Each past input with a past length of 0 (``length`` slots of zeros: a fixed-length cache's empty buffer), the
    batch ``batch`` and its fixed sizes (heads, head size)."""
    feeds = {}
    for past, _ in generation.cache:
        sig = signature.input(past)
        shape = []
        for axis, dim in enumerate(sig.shape):
            if axis == generation.past_axis:
                shape.append(length)
            elif axis == sig.batch_axis or (axis == 0 and isinstance(dim, str)):
                shape.append(batch)
            elif isinstance(dim, str):
                raise PtxError(f"{past}: its axis {axis} ({dim}) is neither the batch nor the past length; ptx decodes a "
                               "cache of [batch, heads, past, head size]")
            else:
                shape.append(int(dim))
        feeds[past] = np.zeros(shape, dtype=sig.dtype)
    return feeds


class Cache:
    """The interface every form keeps, and the arithmetic of rows and positions on numpy copies, which a form
    overrides where it can do better where its values lie. ``rows`` and ``length`` (positions on the past axis)
    say where it stands; a subclass implements ``_run`` (a run with its past), ``arrays`` (its values copied out),
    ``load`` (its values set from arrays), ``empty`` and ``release``."""

    def __init__(self, signature: Signature, generation: Generation):
        self.signature, self.generation = signature, generation
        self.rows, self.length = 0, 0
        self.axis = generation.past_axis
        self._batch_axes = {past: signature.input(past).batch_axis or 0 for past, _ in generation.cache}
        self.presents = [present for _, present in generation.cache]

    # -- what a decoding asks ---------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A run of the decoder on ``feeds`` (the new ids, the mask over past and new, the positions) with this cache
        as its past; its presents become the cache; the other outputs come back as arrays."""
        if self.rows == 0:
            raise PtxError("this cache has no rows: make one with empty(rows) for the prompts that join")
        width = next(iter(feeds.values())).shape[1] if feeds else 0
        out = self._run(feeds, width)
        self.length += width
        return out

    def feeds(self) -> dict[str, object]:
        """The past as the runner takes it, for the next run."""
        raise NotImplementedError

    def advance(self, outputs: Mapping[str, object]) -> None:
        """The presents of a run become the past of the next."""
        raise NotImplementedError

    def _run(self, feeds: Mapping[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def empty(self, rows: int) -> "Cache":
        """A new cache of this form with ``rows`` rows and no positions yet, for prompts that join."""
        raise NotImplementedError

    def reserve(self, positions: int) -> None:
        """The most positions this cache is expected to reach (a hint: the in-place buffer's length)."""

    def widest(self) -> int | None:
        """The most positions a run after the first may feed each row (None: as many as asked): a decoding runs no
        guesses where it is 1."""
        return None

    def arrays(self) -> dict[str, np.ndarray]:
        """Each past as a numpy array [.., rows, .., length, ..], copied out where the runtime holds it."""
        raise NotImplementedError

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Its values set from ``arrays`` (each past's), which give its rows and length."""
        raise NotImplementedError

    def release(self) -> None:
        """Nothing runs on it again: what the runtime holds for it goes now."""
        self.rows, self.length = 0, 0

    # -- rows and positions ------------------------------------------------------------------------------------------
    def add(self, other: "Cache") -> None:
        """``other``'s rows after this cache's, both at the longer one's length (the shorter padded on its left);
        ``other`` is spent. A cache with no rows takes ``other``'s values as they are."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self._adopt(other)
            return
        length = max(self.length, other.length)
        mine, theirs = _fitted(self.arrays(), self.axis, length), _fitted(other.arrays(), self.axis, length)
        other.release()
        self.load({name: np.concatenate([a, theirs[name]], axis=self._batch_axes[name]) for name, a in mine.items()})

    def _adopt(self, other: "Cache") -> None:
        """``other``'s values taken as this cache's (it had none): no copy where the form allows."""
        self.load(other.arrays())
        other.release()

    def keep(self, rows: Sequence[int]) -> None:
        """Only ``rows`` (their indices, in order): the others leave with their cache."""
        kept = np.asarray(rows, dtype=np.int64)
        if len(kept) == self.rows and (kept == np.arange(self.rows)).all():
            return
        if not len(kept):
            self.release()
            return
        self.load({name: np.take(a, kept, axis=self._batch_axes[name]) for name, a in self.arrays().items()})

    def fit(self, length: int) -> None:
        """The past axis made ``length`` long on its left: cut (the oldest positions, which every row's mask hides)
        or padded with zeros (hidden by the mask likewise)."""
        if length != self.length and self.rows:
            self.load(_fitted(self.arrays(), self.axis, length))

    def truncate(self, length: int) -> None:
        """The first ``length`` positions kept, the newest cut: a step's positions that were not accepted."""
        if length > self.length:
            raise PtxError(f"truncate to {length} positions: the cache holds {self.length}")
        if length < self.length:
            cut = (slice(None),) * self.axis + (slice(0, length),)
            self.load({name: np.ascontiguousarray(a[cut]) for name, a in self.arrays().items()})

    def _shape_of(self, arrays: Mapping[str, np.ndarray]) -> None:
        first = next(iter(arrays.values()), None)
        if first is not None:
            self.rows = first.shape[self._batch_axes[next(iter(arrays))]]
            self.length = first.shape[self.axis]


def _fitted(arrays: Mapping[str, np.ndarray], axis: int, length: int) -> dict[str, np.ndarray]:
    """Each array's ``axis`` made ``length`` long on its left: its oldest positions cut, or zeros before them."""
    out = {}
    for name, a in arrays.items():
        have = a.shape[axis]
        if have >= length:
            out[name] = np.ascontiguousarray(a[(slice(None),) * axis + (slice(have - length, None),)])
        else:
            widths = [(0, 0)] * a.ndim
            widths[axis] = (length - have, 0)
            out[name] = np.pad(a, widths)
    return out


class FedBackCache(Cache):
    """A cache whose presents are fed back as the next run's past in the form the runtime gave them (numpy
    arrays, ONNX Runtime's OrtValues, OpenVINO's variables): the bookkeeping its three forms share. A form says
    how a run goes with the past (``_run_with``), how it makes another of itself (``_new``), and, where its values
    are not numpy arrays, how one is copied out (``_copied``) and how a present is held (``_held``)."""

    def __init__(self, signature: Signature, generation: Generation):
        super().__init__(signature, generation)
        self._past: dict[str, object] = {}

    def feeds(self) -> dict[str, object]:
        return self._past

    def advance(self, outputs: Mapping[str, object]) -> None:
        self._past = {past: self._held(outputs[present]) for past, present in self.generation.cache}

    def _held(self, present: object) -> object:
        return present

    def _copied(self, value: object) -> np.ndarray:
        return np.asarray(value)

    def _run(self, feeds, width):
        out = self._run_with({**feeds, **self._past})
        self.advance(out)
        return out

    def _run_with(self, feeds: Mapping[str, object]) -> dict[str, object]:
        raise NotImplementedError

    def _new(self) -> "FedBackCache":
        raise NotImplementedError

    def empty(self, rows: int) -> "FedBackCache":
        fresh = self._new()
        fresh.load(empty_past(self.signature, self.generation, rows))
        return fresh

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: self._copied(value) for name, value in self._past.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._past = dict(arrays)  # a runtime's form binds them from host memory at the next run
        self._shape_of(arrays)

    def _adopt(self, other: Cache) -> None:
        self._past, self.rows, self.length = other._past, other.rows, other.length  # the values as they are
        other._past, other.rows, other.length = {}, 0, 0

    def release(self) -> None:
        super().release()
        self._past = {}


class ArrayCache(FedBackCache):
    """The cache as numpy arrays, each present fed back as the next run's past: any runner (``run``: its run)."""

    def __init__(self, run: Run, signature: Signature, generation: Generation):
        super().__init__(signature, generation)
        self._run_fn = run

    def _held(self, present):
        return np.asarray(present)

    def _run_with(self, feeds):
        return self._run_fn(feeds)

    def _new(self) -> "ArrayCache":
        return ArrayCache(self._run_fn, self.signature, self.generation)
