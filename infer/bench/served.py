"""`ptx bench URL`: a served model's latency percentiles and throughput at the concurrency given,
beside the local file's own on the same inputs, so that what the network and the server add is a
number (Triton's perf_analyzer measures the server alone; here the file it serves stands beside it).

The served row: ``concurrency`` threads each send one request after another for the timed seconds;
each request's latency counts (p50/p90/p99), throughput is the samples answered over the wall time.
The local row: the file's own runner called in turn, as bench times any backend.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

from .timing import Bench, BenchRow, _row, bench_cases, case_feeds, speed_ratio, time_calls


def bench_served(local, served, name: str, *, batch_sizes: Sequence[int], concurrency: int, seconds: float,
                 warmup: int = 3, seed: int | None = None, progress: Callable[[str], None] = lambda _: None) -> Bench:
    """``served`` (verify/served.py's Model of a URL, held to ``local``'s signature) timed beside
    ``local`` (the file or run's model on this machine) at each batch size; the served row's
    ``overhead`` is its p50 over the local one's."""
    served.runner.hold_to(local.signature)
    result = Bench(name)
    cases = bench_cases(local, None, (), batch_sizes, seed, result)
    result.notes.append(f"{served.runner.describe()}; {concurrency} request{'s' * (concurrency != 1)} in flight; "
                        "a served row's \"vs bare\" is its throughput over the local row's")
    for case in cases:
        feeds = case_feeds(local, case)
        batch = case.batch or 1
        progress(f"{local.backend} (local) at batch {batch}")
        mine = _row(f"{local.backend} (local)", local.device, batch,
                    time_calls(lambda: local.run(feeds), warmup=warmup, seconds=seconds))
        progress(f"served at batch {batch}, concurrency {concurrency}")
        theirs = _concurrent(lambda: served.run(feeds), batch, concurrency, seconds, warmup)
        theirs.overhead = round(theirs.p50_us / mine.p50_us, 2) if mine.p50_us else None
        theirs.vs_bare = speed_ratio(theirs, mine) if mine.images_per_s else None
        result.rows += [mine, theirs]
    return result


def _concurrent(call: Callable[[], object], batch: int, concurrency: int, seconds: float, warmup: int) -> BenchRow:
    """``call`` from ``concurrency`` threads for ``seconds`` (after ``warmup`` calls each, untimed)."""
    start_line = threading.Barrier(concurrency + 1)
    warm = []  # a mark for each thread whose warm-up calls answered

    def worker() -> np.ndarray:
        try:
            for _ in range(warmup):  # before the start line, so that every thread's timing starts together
                call()
            warm.append(True)
        finally:
            start_line.wait()
        # where a thread's warm-up failed (its result raises it), the others time nothing
        return time_calls(call, warmup=0, seconds=seconds, min_iters=1) if len(warm) == concurrency else np.empty(0)

    with ThreadPoolExecutor(concurrency) as pool:
        timed = [pool.submit(worker) for _ in range(concurrency)]
        start_line.wait()
        began = time.perf_counter()
        every = np.concatenate([t.result() for t in timed])
        wall = time.perf_counter() - began
    row = _row(f"served (x{concurrency})", "remote", batch, every)
    row.images_per_s = round(batch * len(every) / wall, 1)  # answered over the wall time, all threads together
    return row
