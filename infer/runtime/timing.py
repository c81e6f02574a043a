"""Timing calls on a shared machine, for every command that times (bench's rows, export's int8 speed
against f32): repeated calls after a warm-up, and rounds that alternate between the calls timed so
that a busy moment on a shared machine weighs on them alike. numpy only: any runtime's call is timed."""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import numpy as np

CHOICE_ROUNDS = 20  # alternating rounds timing every choice against model.onnx at export
CHOICE_SECONDS = 20.0  # ... or fewer where they take longer (a slow CPU), but never under MIN_ROUNDS
MIN_ROUNDS = 5


def time_calls(fn: Callable[[], object], *, warmup: int, seconds: float, max_iters: int = 20000,
               min_iters: int = 20) -> np.ndarray:
    """Latencies in seconds of repeated calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    latencies = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < max_iters and (time.perf_counter() < deadline or len(latencies) < min_iters):
        start = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - start)
    return np.asarray(latencies)


def time_rounds(fns: list[Callable[[], object]], *, warmup: int, seconds: float,
                rounds: int = 6) -> list[list[np.ndarray]]:
    """Time several callables in alternating rounds (``seconds`` in all, shared between them), so
    that a noisy moment on a shared machine lands on all of them rather than skewing their ratio.
    Returns each callable's latencies (seconds) per round."""
    per_round = seconds / rounds / len(fns)
    # At least 20 calls in all, spread over the rounds: a slow runner (int8 convolutions at batch
    # 1024 take ~0.2 s a call here) must not need 20 calls in every round.
    min_iters = -(-20 // rounds)
    latencies: list[list[np.ndarray]] = [[] for _ in fns]
    for r in range(rounds):
        for i, fn in enumerate(fns):
            latencies[i].append(time_calls(fn, warmup=warmup if r == 0 else 2, seconds=per_round, min_iters=min_iters))
    return latencies


def time_interleaved(fns: list[Callable[[], object]], *, warmup: int, seconds: float, rounds: int = 6) -> list[np.ndarray]:
    """``time_rounds``, each callable's rounds put together."""
    return [np.concatenate(parts) for parts in time_rounds(fns, warmup=warmup, seconds=seconds, rounds=rounds)]


def alternating_times(calls: list[Callable[[], object]], rounds: int = CHOICE_ROUNDS,
                      seconds: float = CHOICE_SECONDS) -> list[list[float]]:
    """Each round's seconds of each call. Each round runs every call once in a shuffled order, so a
    busy moment on a shared machine weighs on one round's calls alike."""
    for call in calls:  # warm up: the first runs allocate and pack weights
        call()
        call()
    times: list[list[float]] = []
    start, shuffle = time.perf_counter(), random.Random(0).shuffle
    order = list(range(len(calls)))
    while len(times) < rounds and (len(times) < MIN_ROUNDS or time.perf_counter() - start < seconds):
        took = [0.0] * len(calls)
        shuffle(order)
        for i in order:
            took[i] = float(time_calls(calls[i], warmup=0, seconds=0.0, max_iters=1, min_iters=1)[0])
        times.append(took)
    return times


def alternating_ratios(calls: list[Callable[[], object]]) -> tuple[list[float], int]:
    """Each call's speed against the first: the median over ``alternating_times``' rounds of the
    first's seconds per call over its. Returns (ratios of calls[1:], rounds run)."""
    times = alternating_times(calls)
    return [statistics.median(took[0] / took[i] for took in times) for i in range(1, len(calls))], len(times)
