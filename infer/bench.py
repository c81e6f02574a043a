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
from ptx.errors import BackendUnavailableError, MissingArtifactError, PtxError

from . import backends as registry
from .api import open_model, require_run

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
    precision: str = "f32"
    peer_of: str | None = None  # for a bare row: the ptx runner it is the bare runtime of


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


def time_interleaved(fns: list[Callable[[], object]], *, warmup: int, seconds: float, rounds: int = 6) -> list[np.ndarray]:
    """Time several callables in alternating rounds (``seconds`` in all, shared between them), so
    that a noisy moment on a shared machine lands on all of them rather than skewing their ratio."""
    per_round = seconds / rounds / len(fns)
    # At least 20 calls in all, spread over the rounds: a slow runner (int8 convolutions at batch
    # 1024 take ~0.2 s a call here) must not need 20 calls in every round.
    min_iters = -(-20 // rounds)
    latencies: list[list[np.ndarray]] = [[] for _ in fns]
    for r in range(rounds):
        for i, fn in enumerate(fns):
            latencies[i].append(time_calls(fn, warmup=warmup if r == 0 else 2, seconds=per_round, min_iters=min_iters))
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


@dataclass
class Fastest:
    """ptx bench's verdict for one batch size: the fastest verified backend and precision, against
    the fastest bare runtime call and bare ORT f32 timed in the same alternating rounds."""

    batch: int
    runner: str
    precision: str
    images_per_s: float
    peer: str | None = None
    vs_peer: float | None = None  # images/s over the fastest bare peer's
    vs_ort_f32: float | None = None  # images/s over bare ORT f32's


ORT_F32_PEER = "bare InferenceSession.run (ort-cpu)"


def bench(name: str, *, backends: list[str] | None = None, batch_sizes=DEFAULT_BATCH_SIZES,
          root: str | Path = DEFAULT_RUNS_ROOT, warmup: int = 10, seconds: float = 1.0, bare: bool = True,
          progress: Callable[[str], None] = lambda _: None,
          run: str | Path | None = None) -> tuple[list[BenchRow], dict[str, str]]:
    """Time every (backend, device, precision) ``backends`` pick, each next to its bare runtime.

    The torch-free runtimes (ONNX Runtime, OpenVINO) are timed together, all in the same
    alternating rounds per batch size, so their ratios hold on a shared machine; the torch
    backends after them, in rounds of their own: once torch has run, its idle OpenMP threads
    compete for the cores and doubled ORT's batch-1 latency here (26 us alone, 57 us after)."""
    require_run(name, root, run)
    rows: list[BenchRow] = []
    skipped: dict[str, str] = {}
    chosen = registry.variants(backends)
    for needs_torch in (False, True):
        opened = []
        for backend, device, precision in (v for v in chosen if v[0].needs_torch == needs_torch):
            label = backend.label(device, precision)
            why = backend.unavailable(device)
            if why:
                skipped[label] = why
                continue
            try:
                opened.append((backend, device, precision, label, open_model(name, backend.name, root, device, precision,
                                                                           run)))
            except (MissingArtifactError, BackendUnavailableError) as exc:  # not exported, or not on this CPU
                skipped[label] = str(exc)
        for batch in batch_sizes:
            calls, names = [], []
            for backend, device, precision, label, predictor in opened:
                x = bench_inputs(predictor.contract, batch)
                progress(f"{label} batch {batch}")
                calls.append(functools.partial(predictor.predict_array, x))
                names.append((label, device, precision, None))
                if bare:
                    bare_name, call = backend.bare(predictor, x)
                    calls.append(call)
                    names.append((f"{bare_name} ({label})", device, precision, label))
            if not calls:
                continue
            if len(calls) == 1:
                timings = [time_calls(calls[0], warmup=warmup, seconds=seconds)]
            else:
                timings = time_interleaved(calls, warmup=warmup, seconds=seconds * len(calls))
            batch_rows = []
            for (runner, device, precision, peer_of), latencies in zip(names, timings):
                row = _row(runner, device, batch, latencies)
                row.precision, row.peer_of = precision, peer_of
                batch_rows.append(row)
            for row in batch_rows:
                peer = next((r for r in batch_rows if r.peer_of == row.runner), None)
                if peer is not None:
                    row.overhead = round(row.p50_us / peer.p50_us, 3)
            rows += batch_rows
        del opened  # frees sessions' thread pools before the next group is timed
    if not rows:
        raise PtxError(f"no backend could run {name}: " + "; ".join(f"{b}: {w}" for b, w in skipped.items()))
    return rows, skipped


def fastest(rows: list[BenchRow], verified: set[str]) -> list[Fastest]:
    """Per batch size, the fastest ptx row whose (backend, precision) ``ptx verify`` passed."""
    out = []
    for batch in dict.fromkeys(r.batch for r in rows):
        ours = [r for r in rows if r.batch == batch and r.peer_of is None and r.runner in verified]
        if not ours:
            continue
        best = max(ours, key=lambda r: r.images_per_s)
        peers = [r for r in rows if r.batch == batch and r.peer_of is not None]
        verdict = Fastest(batch, best.runner, best.precision, best.images_per_s)
        if peers:
            peer = max(peers, key=lambda r: r.images_per_s)
            verdict.peer, verdict.vs_peer = peer.runner, round(best.images_per_s / peer.images_per_s, 3)
        ort = next((r for r in peers if r.runner == ORT_F32_PEER), None)
        if ort is not None:
            verdict.vs_ort_f32 = round(best.images_per_s / ort.images_per_s, 3)
        out.append(verdict)
    return out


def describe_fastest(verdicts: list[Fastest], unverified: dict[str, str]) -> list[str]:
    lines = []
    for v in verdicts:
        line = f"batch {v.batch}: fastest verified is {v.runner} ({v.precision}), {v.images_per_s:,.0f} images/s"
        if v.peer:
            line += f"; {v.vs_peer:.2f}x the fastest bare peer ({v.peer})"
        if v.vs_ort_f32 is not None:
            line += f", {v.vs_ort_f32:.2f}x bare ORT f32"
        lines.append(line)
    lines += [f"not verified, so never named fastest: {label} ({why})" for label, why in unverified.items()]
    return lines


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
