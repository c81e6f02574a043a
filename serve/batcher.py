"""A dynamic batcher per model (Triton's dynamic_batching, in asyncio): requests are queued and run
together, up to ``max_batch_size`` rows or ``max_delay`` of waiting, whichever comes first.

How long it waits is what decides latency at low load, so it adapts: after a batch of one row it
runs the next request at once (a lone client never waits for company that is not coming); after a
larger batch it waits, at most ``max_delay`` from the oldest request's arrival, for about as many
rows as last time. Under load batches therefore form from what arrives while the model runs, and a
single client sees the unbatched latency.

Requests are merged by input name, each input along its own batch axis, and the batch's outputs split
back along each output's own. Requests whose inputs differ in another dimension share a batch only
where the model allows it: a token model's sequence is padded at the end with its pad id when its
output does not depend on the length (gru-classifier); anything else (rnn-hello's one row per
position, a user's model, where ptx cannot know what padding would change) only with requests of
the same shapes. A batch that fails in the runtime is run again request by request, so one bad
request never fails its batch-mates.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class Unsplittable(RuntimeError):
    """A joined batch's output does not hold one row per input row: it cannot be split back."""


@dataclass
class Merge:
    """How requests' inputs (arrays by name) combine into one batch, and its outputs split back:
    ``inputs`` and ``outputs`` are each tensor's batch axis by name; ``pads`` the inputs whose
    ``axis`` may differ between requests, padded to the longest with ``value``."""

    inputs: dict[str, int]
    outputs: dict[str, int]
    pads: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, signature, pads: dict[str, tuple[int, int]] | None = None) -> "Merge":
        """The merge of a signature whose every tensor has a batch axis (``Signature.batched``)."""
        return cls({t.name: t.batch_axis for t in signature.inputs}, {t.name: t.batch_axis for t in signature.outputs},
                   dict(pads or {}))

    def rows(self, feeds: dict[str, np.ndarray]) -> int:
        """How many rows a request brings to a batch."""
        name, axis = next(iter(self.inputs.items()))
        return feeds[name].shape[axis]

    def key(self, feeds: dict[str, np.ndarray]):
        """Requests with equal keys may share a batch: every dimension but the batch and the padded."""
        return tuple(tuple(d for i, d in enumerate(feeds[name].shape) if i != axis and i != self.pads.get(name, (-1,))[0])
                     for name, axis in self.inputs.items())

    def join(self, batch: list[dict[str, np.ndarray]], out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """One batch of the requests' inputs, written into ``out`` (of ``joined_shapes``) when given."""
        if len(batch) == 1 and out is None:
            return batch[0]
        joined = {}
        for name, axis in self.inputs.items():
            parts = [feeds[name] for feeds in batch]
            if name in self.pads:
                parts = self._padded(parts, *self.pads[name])
            joined[name] = np.concatenate(parts, axis=axis, out=None if out is None else out[name])
        return joined

    def joined_shapes(self, batch: list[dict[str, np.ndarray]]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Each input's (shape, dtype) once the requests are joined."""
        shapes = {}
        for name, axis in self.inputs.items():
            shape = list(batch[0][name].shape)
            shape[axis] = sum(feeds[name].shape[axis] for feeds in batch)
            if name in self.pads:
                ragged = self.pads[name][0]
                shape[ragged] = max(feeds[name].shape[ragged] for feeds in batch)
            shapes[name] = (tuple(shape), np.result_type(*(feeds[name] for feeds in batch)))
        return shapes

    def split(self, out: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
        """A batch's outputs by name -> each request's rows, along each output's batch axis."""
        if len(rows) == 1:
            return [out]
        starts = np.cumsum([0, *rows])
        for name, value in out.items():
            # An output whose leading size the graph leaves unnamed (NonZero's count, say) is read as
            # the batch; split by rows anyway, its rows went to the wrong requests.
            if value.shape[self.outputs[name]] != starts[-1]:
                raise Unsplittable(f"output {name!r} has {value.shape[self.outputs[name]]} along its batch axis "
                                   f"for a batch of {starts[-1]} rows")
        return [{name: np.take(value, np.arange(a, b), axis=self.outputs[name]) for name, value in out.items()}
                for a, b in zip(starts[:-1], starts[1:])]

    @staticmethod
    def _padded(parts: list[np.ndarray], axis: int, value: int) -> list[np.ndarray]:
        longest = max(x.shape[axis] for x in parts)
        padded = []
        for x in parts:
            widths = [(0, 0)] * x.ndim
            widths[axis] = (0, longest - x.shape[axis])
            padded.append(np.pad(x, widths, constant_values=value) if longest > x.shape[axis] else x)
        return padded


@dataclass
class _Pending:
    x: dict  # the request's inputs by name
    rows: int
    key: object
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``await submit(feeds)`` -> the model's outputs by name for ``feeds``' rows. ``run`` is the
    runtime call (checked inputs by name -> outputs by name: a runner's ``_run``); it runs in
    ``workers`` threads, off the event loop. ``merge`` joins requests into one batch and splits its
    outputs back. ``host``: the model's reused (page-locked) host buffers, where it has them: each
    input of a joined batch is written straight into one, so it crosses to the GPU by DMA."""

    def __init__(self, run: Callable, *, merge: Merge, max_batch_size: int,
                 max_delay_s: float, workers: int = 1, on_batch: Callable[[int], None] = lambda rows: None,
                 host=None):
        self.run, self.merge, self.host = run, merge, host
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_s
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ptx-infer")
        self.free = workers
        self.queue: collections.deque[_Pending] = collections.deque()
        self.last_rows = 1
        self.alone = False  # set once a batch's outputs could not be split back: requests run one by one
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None

    async def submit(self, x):
        if self.task is None:  # created on first use, in the server's own event loop
            self.wake = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._dispatch())
        future = asyncio.get_running_loop().create_future()
        self.queue.append(_Pending(x, self.merge.rows(x), self.merge.key(x), future))
        self.wake.set()
        return await future

    async def _dispatch(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue and self.free:
                if not await self._wait_for_company():
                    break
                batch = self._take()
                self.free -= 1
                asyncio.get_running_loop().create_task(self._execute(batch))

    async def _wait_for_company(self) -> bool:
        """After a multi-row batch, wait (until the oldest request is max_delay old) for about as
        many rows as last time. Returns False when the queue emptied meanwhile."""
        target = min(self.max_batch_size, self.last_rows)
        while self.queue and self._queued_rows() < target:
            left = self.queue[0].arrived + self.max_delay_s - time.monotonic()
            if left <= 0:
                break
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except asyncio.TimeoutError:
                break
        return bool(self.queue)

    def _queued_rows(self) -> int:
        first = self.queue[0].key
        return sum(p.rows for p in self.queue if p.key == first)

    def _take(self) -> list[_Pending]:
        """The oldest request and those after it that fit beside it (same key, within max rows);
        a request larger than max_batch_size runs alone."""
        first = self.queue.popleft()
        batch, rows, kept = [first], first.rows, collections.deque()
        while self.queue:
            item = self.queue.popleft()
            if item.key == first.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self.queue.extendleft(reversed(kept))
        return batch

    async def _execute(self, batch: list[_Pending]) -> None:
        try:
            live = [p for p in batch if not p.future.done()]  # a client that went away is not run
            if live:
                self.last_rows = sum(p.rows for p in live)
                self.on_batch(self.last_rows)
                await self._run_batch(live)
        finally:
            self.free += 1
            self.wake.set()

    async def _run_batch(self, live: list[_Pending]) -> None:
        """The requests joined into one run; when that fails, each again alone, so that whichever
        broke the runtime fails alone (answered as a 500)."""
        try:
            if self.alone and len(live) > 1:
                raise Unsplittable("an earlier batch could not be split")
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self._run_joined, [p.x for p in live])
            self._deliver(live, out)
        except Exception as exc:  # noqa: BLE001 - the request's own failure
            if len(live) > 1:
                self.alone = self.alone or isinstance(exc, Unsplittable)
                for p in live:
                    await self._run_batch([p])
            elif not live[0].future.done():
                live[0].future.set_exception(exc)

    def _run_joined(self, xs: list):
        """Join the requests (in a worker thread, off the event loop) and run them."""
        if self.host is None or len(xs) == 1:
            return self.run(self.merge.join(xs))
        with contextlib.ExitStack() as leases:
            buffers = {name: leases.enter_context(self.host.lease(shape, dtype))
                       for name, (shape, dtype) in self.merge.joined_shapes(xs).items()}
            return self.run(self.merge.join(xs, out=buffers))  # the runtime's outputs are its own arrays

    def _deliver(self, batch: list[_Pending], out) -> None:
        """Split a batch's outputs back to its requests."""
        for p, part in zip(batch, self.merge.split(out, [p.rows for p in batch])):
            if not p.future.done():
                p.future.set_result(part)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


