"""ptx bench: latency percentiles and throughput per backend and batch size (Triton perf_analyzer,
small), next to the bare runtime with no ptx code around it, so ptx's overhead shows as a ratio."""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.contract.transforms import to_model_input
from ptx.errors import MissingArtifactError, PtxError

from . import backends as registry
from .api import open_model

DEFAULT_BATCH_SIZES = (1, 64, 1024)


@dataclass
class BenchRow:
    runner: str  # the ptx backend, or "bare <runtime>" for the runtime called directly
    device: str
    batch: int
    p50_us: float
    p90_us: float
    p99_us: float
    images_per_s: float
    iterations: int
    overhead: float | None = None  # p50 / the bare runtime's p50 at the same batch


def time_calls(fn: Callable[[], object], *, warmup: int, seconds: float, max_iters: int = 20000) -> np.ndarray:
    """Latencies in seconds of repeated calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    latencies = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < max_iters and (time.perf_counter() < deadline or len(latencies) < 20):
        start = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - start)
    return np.asarray(latencies)


def time_interleaved(fns: list[Callable[[], object]], *, warmup: int, seconds: float, rounds: int = 6) -> list[np.ndarray]:
    """Time several callables in alternating rounds, so that a noisy moment on a shared machine
    lands on all of them rather than skewing their ratio."""
    per_round = seconds / rounds
    latencies: list[list[np.ndarray]] = [[] for _ in fns]
    for r in range(rounds):
        for i, fn in enumerate(fns):
            latencies[i].append(time_calls(fn, warmup=warmup if r == 0 else 2, seconds=per_round))
    return [np.concatenate(parts) for parts in latencies]


def _row(runner, device, batch, latencies) -> BenchRow:
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1e6
    return BenchRow(runner, device, batch, round(float(p50), 1), round(float(p90), 1), round(float(p99), 1),
                    round(batch / float(np.median(latencies)), 1), len(latencies))


def bench_inputs(contract, batch: int, seed: int = 0) -> np.ndarray:
    """Random raw samples of the artifact's kind, preprocessed as a user's would be."""
    rng = np.random.default_rng(seed)
    encoding = contract.encoding
    if encoding is not None:  # tokens: words of 10 characters, no padding
        low = 1 if encoding.pad_id == 0 else 0
        return to_model_input(rng.integers(low, encoding.vocab_size, (batch, 10)), contract)
    picture = contract.picture
    if picture is not None:  # raw pictures are canvas x canvas whatever padding the model adds
        raw = rng.integers(0, 256, (batch, picture.canvas, picture.canvas)).astype(np.uint8)
    else:  # numbers and feature rows: as many values as the input has per sample
        raw = rng.normal(size=(batch, contract.sample_size))
    return to_model_input(raw, contract)


def bench(name: str, *, backends: list[str] | None = None, batch_sizes=DEFAULT_BATCH_SIZES,
          root: str | Path = DEFAULT_RUNS_ROOT, warmup: int = 10, seconds: float = 1.0, bare: bool = True,
          progress: Callable[[str], None] = lambda _: None) -> tuple[list[BenchRow], dict[str, str]]:
    rows: list[BenchRow] = []
    skipped: dict[str, str] = {}
    # ONNX Runtime first: once torch has run, its idle OpenMP threads compete for the cores and
    # doubled ORT's batch-1 latency here (26 us alone, 57 us after the torch backends).
    pairs = sorted(registry.select(backends), key=lambda pair: pair[0].needs_torch)
    for backend, device in pairs:
        label = backend.label(device)
        why = backend.unavailable(device)
        if why:
            skipped[label] = why
            continue
        try:
            predictor = open_model(name, backend.name, root, device)
        except MissingArtifactError as exc:  # not exported for this backend: skipped, with the command
            skipped[label] = str(exc)
            continue
        for batch in batch_sizes:
            x = bench_inputs(predictor.contract, batch)
            progress(f"{label} batch {batch}")

            through_ptx = functools.partial(predictor.predict_array, x)
            if bare:
                bare_name, call = backend.bare(predictor, x)
                ours_t, bare_t = time_interleaved([through_ptx, call], warmup=warmup, seconds=2 * seconds)
                ours, reference = _row(label, device, batch, ours_t), _row(f"{bare_name} ({label})", device, batch, bare_t)
                ours.overhead = round(ours.p50_us / reference.p50_us, 3)
                rows += [ours, reference]
            else:
                rows.append(_row(label, device, batch, time_calls(through_ptx, warmup=warmup, seconds=seconds)))
        del predictor  # frees an ORT session's thread pool before the next backend is timed
    if not rows:
        raise PtxError(f"no backend could run {name}: " + "; ".join(f"{b}: {w}" for b, w in skipped.items()))
    return rows, skipped


COLUMNS = ("runner", "device", "batch", "p50 us", "p90 us", "p99 us", "images/s", "vs bare")


def _cells(r: BenchRow) -> list[str]:
    overhead = f"{r.overhead:.2f}x" if r.overhead is not None else ""
    return [r.runner, r.device, str(r.batch), f"{r.p50_us:,.1f}", f"{r.p90_us:,.1f}", f"{r.p99_us:,.1f}",
            f"{r.images_per_s:,.0f}", overhead]


def to_markdown(name: str, rows: list[BenchRow], skipped: dict[str, str]) -> str:
    lines = [f"| {name}: " + " | ".join(COLUMNS) + " |", "| --- | --- |" + " ---: |" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    lines += [f"\nskipped {b}: {why}" for b, why in skipped.items()]
    return "\n".join(lines)


def to_text(name: str, rows: list[BenchRow], skipped: dict[str, str]) -> str:
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    out = [f"ptx bench {name}", lines[0], "-" * len(lines[0]), *lines[1:]]
    out += [f"{b:<{widths[0]}}  skipped: {why}" for b, why in skipped.items()]
    return "\n".join(out)


def rows_to_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
