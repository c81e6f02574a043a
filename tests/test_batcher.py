"""The dynamic batcher alone, with a stand-in runtime: what it merges, what it keeps apart, and that
one request's failure is that request's alone."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ptx.serve.batcher import Batcher, Merge


def run_async(coroutine):
    return asyncio.run(coroutine)


def merge(axis=0, pads=None):
    """One input ``x`` batched on ``axis``, one output ``y`` batched on axis 0."""
    return Merge({"x": axis}, {"y": 0}, pads or {})


class Runtime:
    """Records the batches it is given; rows whose first value is negative make it fail."""

    def __init__(self, axis=0, delay=0.0):
        self.batches, self.axis, self.delay = [], axis, delay

    def __call__(self, feeds):
        x = feeds["x"]
        time.sleep(self.delay)
        self.batches.append(x.shape)
        rows = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
        if (rows[:, 0] < 0).any():
            raise RuntimeError("the runtime failed on this batch")
        return {"y": rows.sum(axis=1, keepdims=True)}  # (batch, 1), batch first as models answer


async def submit_all(batcher, xs):
    """Each array as a request's input ``x``; each answer's ``y``, or its exception."""
    answers = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs), return_exceptions=True)
    return [a if isinstance(a, Exception) else a["y"] for a in answers]


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_rows():
    runtime = Runtime(delay=0.05)
    batcher = Batcher(runtime, merge=merge(), max_batch_size=64, max_delay_s=0.002)
    xs = [np.full((n, 3), float(i)) for i, n in enumerate([1, 2, 3, 1, 1], start=1)]
    results = run_async(submit_all(batcher, xs))
    for x, out in zip(xs, results):
        np.testing.assert_array_equal(out, x.sum(axis=1, keepdims=True))
    assert len(runtime.batches) < len(xs)  # the first runs alone, the rest wait for it and share
    batcher.close()


def test_a_request_that_breaks_the_runtime_fails_alone_and_its_batch_mates_are_answered():
    runtime = Runtime(delay=0.02)
    batcher = Batcher(runtime, merge=merge(), max_batch_size=64, max_delay_s=0.002)
    xs = [np.ones((1, 2)), np.ones((1, 2)), -np.ones((1, 2)), np.ones((2, 2)), np.ones((1, 2))]
    results = run_async(submit_all(batcher, xs))
    assert isinstance(results[2], RuntimeError)
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(results[i], np.full((len(xs[i]), 1), 2.0))
    batcher.close()


def test_max_batch_size_caps_every_batch_and_a_larger_request_runs_alone():
    runtime = Runtime(delay=0.02)
    batcher = Batcher(runtime, merge=merge(), max_batch_size=4, max_delay_s=0.002)
    xs = [np.ones((1, 2))] * 9 + [np.ones((7, 2))]
    results = run_async(submit_all(batcher, xs))
    assert all(not isinstance(r, Exception) for r in results)
    assert max(shape[0] for shape in runtime.batches if shape[0] != 7) <= 4
    assert (7, 2) in runtime.batches
    batcher.close()


def test_lstm_requests_merge_along_the_batch_axis_1():
    runtime = Runtime(axis=1, delay=0.02)
    batcher = Batcher(runtime, merge=merge(axis=1), max_batch_size=64, max_delay_s=0.002)
    xs = [np.abs(np.random.default_rng(i).normal(size=(28, n, 28))).astype(np.float32) for i, n in enumerate([1, 3, 2])]
    results = run_async(submit_all(batcher, xs))
    for x, out in zip(xs, results):
        np.testing.assert_allclose(out[:, 0], np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).sum(1), rtol=1e-5)


def test_token_requests_pad_to_the_longest_or_share_a_batch_only_at_one_length():
    padded = merge(axis=1, pads={"x": (0, 0)})  # gru-classifier: (seq, batch), pad id 0
    joined = padded.join([{"x": np.array([[5], [6]])}, {"x": np.array([[1, 2], [3, 4], [7, 8]])}])
    np.testing.assert_array_equal(joined["x"], [[5, 1, 2], [6, 3, 4], [0, 7, 8]])
    assert padded.key({"x": np.zeros((5, 1))}) == padded.key({"x": np.zeros((4, 1))})
    by_length = merge(axis=1)  # rnn-hello: no pad id
    assert by_length.key({"x": np.zeros((5, 1))}) != by_length.key({"x": np.zeros((4, 1))})
    runtime = Runtime(axis=1, delay=0.02)
    batcher = Batcher(runtime, merge=by_length, max_batch_size=64, max_delay_s=0.002)
    xs = [np.ones((5, 1)), np.ones((4, 1)), np.ones((5, 2)), np.ones((4, 1))]
    results = run_async(submit_all(batcher, xs))
    assert [r.shape[0] for r in results] == [1, 1, 2, 1]
    assert all(shape[0] in (4, 5) for shape in runtime.batches)  # never a mixed-length batch


def test_a_lone_client_never_waits_for_company():
    """After a batch of one the next request runs at once; the delay applies only under load."""
    runtime = Runtime()
    batcher = Batcher(runtime, merge=merge(), max_batch_size=64, max_delay_s=0.5)

    async def one_by_one():
        waits = []
        for _ in range(5):
            started = time.perf_counter()
            await batcher.submit({"x": np.ones((1, 2))})
            waits.append(time.perf_counter() - started)
        return waits

    assert max(run_async(one_by_one())) < 0.25  # far below the 0.5 s delay
    batcher.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_every_request_is_answered_under_concurrency(workers):
    runtime = Runtime(delay=0.001)
    batcher = Batcher(runtime, merge=merge(), max_batch_size=8, max_delay_s=0.002, workers=workers)
    xs = [np.full((1, 2), float(i)) for i in range(200)]
    results = run_async(submit_all(batcher, xs))
    assert [float(r[0, 0]) for r in results] == [2.0 * i for i in range(200)]
    batcher.close()


def test_every_input_of_a_joined_batch_is_written_into_a_host_buffer():
    """A model on a GPU lends reused (page-locked) host buffers: a joined batch of a model with
    several named inputs (a user's model) goes into one buffer per input, as a tutorial model's
    single input does, so each crosses to the GPU by DMA."""
    import contextlib

    class Host:
        def __init__(self):
            self.leased, self.buffers = [], []

        @contextlib.contextmanager
        def lease(self, shape, dtype):
            buffer = np.empty(shape, dtype)
            self.leased.append((tuple(shape), np.dtype(dtype)))  # as HostBuffers.lease takes them
            self.buffers.append(buffer)
            yield buffer

    seen = []

    def run(feeds):
        time.sleep(0.02)
        seen.append(feeds)
        return {"y": feeds["a"].sum(axis=1, keepdims=True) + feeds["ids"][0][:, None]}

    host = Host()
    batcher = Batcher(run, merge=Merge({"a": 0, "ids": 1}, {"y": 0}), max_batch_size=64, max_delay_s=0.01, host=host)
    requests = [{"a": np.full((n, 3), float(i), np.float32), "ids": np.full((2, n), i, np.int64)}
                for i, n in enumerate([1, 2, 1, 3], start=1)]
    async def all_at_once():
        return await asyncio.gather(*(batcher.submit(r) for r in requests))

    answers = run_async(all_at_once())
    for r, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], r["a"].sum(axis=1, keepdims=True) + r["ids"][0][:, None])
    joined = [f for f in seen if f["a"].shape[0] > 1]
    assert joined, "no two requests shared a batch"
    assert all(any(f["a"] is b for b in host.buffers) and any(f["ids"] is b for b in host.buffers) for f in joined)
    assert (joined[0]["ids"].shape, np.dtype(np.int64)) in host.leased  # joined along its own batch axis, 1
    batcher.close()


def test_an_output_that_does_not_hold_one_row_per_input_row_is_never_split_by_rows():
    """`ptx serve nonzero.onnx`: NonZero's output [N, 2] (its count unnamed, so read as the batch)
    was split by the requests' rows, and 11 of 16 concurrent requests got other requests' indices.
    A batch whose output cannot be split is run again request by request, and so is every later one."""
    class NonZero:
        def __init__(self):
            self.batches = []

        def __call__(self, feeds):
            time.sleep(0.02)
            self.batches.append(feeds["x"].shape[0])
            return {"y": np.argwhere(feeds["x"] > 0)}

    runtime = NonZero()
    batcher = Batcher(runtime, merge=merge(), max_batch_size=64, max_delay_s=0.002)
    xs = [np.array([[1.0, 0, 1]]), np.array([[0, 1.0, 0], [1, 1, 0]]), np.array([[0, 0, 0.0]]),
          np.array([[1.0, 1, 1]])]
    async def two_rounds():
        return await submit_all(batcher, xs) + await submit_all(batcher, xs)

    for x, out in zip(xs + xs, run_async(two_rounds())):
        np.testing.assert_array_equal(out, np.argwhere(x > 0))
    assert batcher.alone and max(runtime.batches[-len(xs):]) <= 2  # the second round ran each alone
    batcher.close()
