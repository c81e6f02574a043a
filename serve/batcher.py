"""A dynamic batcher per model (Triton's dynamic_batching, in asyncio): requests are queued and run
together, up to ``max_batch_size`` rows or ``max_delay`` of waiting, whichever comes first.

How long it waits is what decides latency at low load, so it adapts: after a batch of one row it
runs the next request at once (a lone client never waits for company that is not coming); after a
larger batch it waits, at most ``max_delay`` from the oldest request's arrival, for about as many
rows as last time. Under load batches therefore form from what arrives while the model runs, and a
single client sees the unbatched latency.

Requests are merged along the model's batch axis. Models whose inputs differ in another dimension
(token models: the sequence length) are merged only when the model allows it: padded at the end with
its pad id when its output does not depend on the length (gru-classifier); else only requests of the
same length share a batch (rnn-hello's output has one row per position). A batch that fails in the
runtime is run again request by request, so one bad request never fails its batch-mates.
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Merge:
    """How requests' inputs combine into one batch: the batch axis of the input, the axis whose
    length may differ between requests (None: all dims but the batch are fixed), and the value to
    pad it with (None: only equal lengths share a batch)."""

    batch_axis: int = 0
    ragged_axis: int | None = None
    pad_value: int | None = None

    def rows(self, x: np.ndarray) -> int:
        """How many rows a request brings to a batch."""
        return x.shape[self.batch_axis]

    def key(self, x: np.ndarray):
        """Requests with equal keys may share a batch."""
        if self.ragged_axis is None or self.pad_value is not None:
            return None
        return x.shape[self.ragged_axis]

    def join(self, xs: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """One batch of ``xs``, written into ``out`` (of ``joined_shape(xs)``) when given."""
        if len(xs) == 1 and out is None:
            return xs[0]
        if self.ragged_axis is not None and self.pad_value is not None:
            longest = max(x.shape[self.ragged_axis] for x in xs)
            xs = [self._pad(x, longest) for x in xs]
        return np.concatenate(xs, axis=self.batch_axis, out=out)

    def joined_shape(self, xs: list[np.ndarray]) -> tuple[int, ...]:
        shape = list(xs[0].shape)
        shape[self.batch_axis] = sum(x.shape[self.batch_axis] for x in xs)
        if self.ragged_axis is not None and self.pad_value is not None:
            shape[self.ragged_axis] = max(x.shape[self.ragged_axis] for x in xs)
        return tuple(shape)

    def split(self, out, rows: list[int]) -> list[np.ndarray]:
        """A batch's outputs (the Predictor's: batch first) -> each request's rows."""
        out = np.asarray(out)
        starts = np.cumsum([0, *rows])
        return [out[a:b] for a, b in zip(starts[:-1], starts[1:])]

    def _pad(self, x: np.ndarray, length: int) -> np.ndarray:
        missing = length - x.shape[self.ragged_axis]
        if not missing:
            return x
        widths = [(0, 0)] * x.ndim
        widths[self.ragged_axis] = (0, missing)
        return np.pad(x, widths, constant_values=self.pad_value)


@dataclass
class _Pending:
    x: object  # what the merge joins: an array, or a tensor model's inputs by name
    rows: int
    key: object
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``await submit(x)`` -> the model's outputs for ``x``'s rows. ``run`` is the runtime call (a
    Predictor's predict_array, a tensor model's _run); it runs in ``workers`` threads, off the event
    loop. ``merge`` joins requests into one batch and splits its outputs back (Merge: one array,
    batch first out; serve/tensor_model.py's TensorMerge: inputs and outputs by name).
    ``host``: the predictor's reused (page-locked) host buffers, where it has them: requests are
    joined straight into one, so the batch crosses to the GPU by DMA with no copy more than today's."""

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
        loop = asyncio.get_running_loop()
        try:
            live = [p for p in batch if not p.future.done()]  # a client that went away is not run
            if live:
                rows = sum(p.rows for p in live)
                self.last_rows = rows
                self.on_batch(rows)
                try:
                    out = await loop.run_in_executor(self.executor, self._run_joined, [p.x for p in live])
                    self._deliver(live, out)
                except Exception:  # noqa: BLE001 - whichever request broke the runtime fails alone
                    if len(live) == 1:
                        raise
                    for p in live:
                        await self._execute_alone(p)
        except Exception as exc:  # noqa: BLE001 - the request's own failure, answered as a 500
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        finally:
            self.free += 1
            self.wake.set()

    def _run_joined(self, xs: list):
        """Join the requests (in a worker thread, off the event loop) and run them."""
        if self.host is None or len(xs) == 1:
            return self.run(self.merge.join(xs))
        with self.host.lease(self.merge.joined_shape(xs), np.result_type(*xs)) as batch:
            return self.run(self.merge.join(xs, out=batch))  # the predictor's outputs are its own arrays

    async def _execute_alone(self, p: _Pending) -> None:
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, p.x)
            self._deliver([p], out)
        except Exception as exc:  # noqa: BLE001
            if not p.future.done():
                p.future.set_exception(exc)

    def _deliver(self, batch: list[_Pending], out) -> None:
        """Split a batch's outputs back to its requests."""
        for p, part in zip(batch, self.merge.split(out, [p.rows for p in batch])):
            if not p.future.done():
                p.future.set_result(part)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


