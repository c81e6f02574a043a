"""ptx bench: latency percentiles and throughput per backend and batch size (Triton perf_analyzer,
small), next to the bare runtime with no ptx code around it, so ptx's overhead shows as a ratio.

One bench for every model (model/target.py decides once what it is): each row times
``Model.run(feeds)``, the runner's named-tensor call, beside the runner's ``bare(feeds)`` (and, on
a GPU, its ``resident`` ceiling), on every variant that runs the model. The inputs: the user's
samples (--inputs) or seeded tensors from its signature (--seed), else a head's own making
pictures, tokens or rows where the model has one (images/s), else seeded tensors (samples/s, or
runs/s where no input has a batch axis)."""
from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from ptx.contract.cases import Case
from ptx.contract.tensor_inputs import BENCH_BATCHES, check_feeds, plan_inputs
from ptx.contract.transforms import to_model_input
from ptx.errors import AskedRowError, MissingArtifactError, PtxError, first_line

from ..runtime.timing import time_calls, time_interleaved, time_rounds  # noqa: F401 - bench's, and scripts' through it
from ..verify.cases import file_cases, generated_cases, has_batch
from .samples import sized_cases
from ..verify.tables import markdown_table, text_table

if TYPE_CHECKING:
    from ..model.target import Target

# The default run answers "which backend, how much overhead" in ~20 s on 2 cores; the long run
# (--batch-sizes 1,64,1024 --seconds 1 --rounds 6, as scripts/bench.py times) is for the record.
DEFAULT_BATCH_SIZES = (1, 64)
DEFAULT_FILE_BATCH_SIZES = BENCH_BATCHES
DEFAULT_SECONDS = 0.25  # timed seconds per runner and batch size, shared out over the rounds
DEFAULT_ROUNDS = 4


def speed_ratio(row: "BenchRow", peer: "BenchRow") -> float:
    """``row``'s images/s over ``peer``'s (above 1: faster): bench's one ratio between two runners."""
    return round(row.images_per_s / peer.images_per_s, 3)


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
    # images/s over the bare runtime's at the same batch: the one ratio bench prints, in the rows
    # ("vs bare") and in the fastest-verified summary ("Nx the fastest bare peer")
    vs_bare: float | None = None
    round_spread: float = 1.0  # slowest round's p50 / fastest round's (NOISY_SPREAD and up: noisy)
    # the GPU-resident ceiling row of this ptx runner: neither a peer nor a backend verify can judge
    ceiling_of: str | None = None

    @property
    def noisy(self) -> bool:
        return self.round_spread >= NOISY_SPREAD


# A row whose p50 differs more than this between its fastest and slowest round is flagged noisy: a
# busy moment on a shared machine (or a first call's one-off work) moved it, and its numbers are not
# to be trusted (issue 21 saw eager batch 1 at 51,883 us in one run, 240 us in the next).
NOISY_SPREAD = 2.0


def round_spread(rounds: list[np.ndarray]) -> float:
    """The slowest round's p50 over the fastest round's."""
    medians = [float(np.median(r)) for r in rounds if len(r)]
    return max(medians) / min(medians) if medians and min(medians) > 0 else 1.0


def _row(runner, device, batch, latencies, **fields) -> BenchRow:
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1e6
    return BenchRow(runner, device, batch, round(float(p50), 1), round(float(p90), 1), round(float(p99), 1),
                    round(batch / float(np.median(latencies)), 1), len(latencies), **fields)


def in_host_buffer(model, x: np.ndarray, leases: contextlib.ExitStack) -> np.ndarray:
    """``x`` where a caller on this backend would keep a batch: in one of the model's reused,
    page-locked host buffers on a GPU (serve's batcher joins requests into them), as it is on the
    CPU. The bare peer is fed the same array, so both pay the same host copies."""
    if model.host is None:
        return x
    buffer = leases.enter_context(model.host.lease(x.shape, x.dtype))
    np.copyto(buffer, x)
    return buffer


def bench_pictures(contract, batch: int) -> np.ndarray:
    """The raw uint8 pictures bench_inputs normalises: what an --input uint8 artifact is fed."""
    canvas = contract.picture.canvas
    return np.random.default_rng(0).integers(0, 256, (batch, canvas, canvas)).astype(np.uint8)


def bench_inputs(contract, batch: int) -> np.ndarray:
    """Random raw samples of the artifact's kind, preprocessed as a user's would be."""
    rng = np.random.default_rng(0)
    encoding = contract.encoding
    if encoding is not None:  # tokens: words of 10 characters, no padding
        low = 1 if encoding.pad_id == 0 else 0
        return to_model_input(rng.integers(low, encoding.vocab_size, (batch, 10)), contract)
    if contract.picture is not None:  # raw pictures are canvas x canvas whatever padding the model adds
        return to_model_input(bench_pictures(contract, batch), contract)
    # numbers and feature rows: as many values as the input has per sample
    return to_model_input(rng.normal(size=(batch, contract.sample_size)), contract)


def timed_rows(timed: list[tuple], batch: int, *, warmup: int, seconds: float, rounds: int) -> list[BenchRow]:
    """Time each (runner, Variant, peer_of, ceiling_of, call) of ``timed`` (each ``seconds``) in
    alternating rounds at ``batch``: one row each; a ptx row gets its bare peer's ratio."""
    timings = time_rounds([t[-1] for t in timed], warmup=warmup, seconds=seconds * len(timed), rounds=rounds)
    rows = [_row(runner, variant.device, batch, np.concatenate(parts), precision=variant.precision, peer_of=peer_of,
                 ceiling_of=ceiling_of, round_spread=round(round_spread(parts), 2))
            for (runner, variant, peer_of, ceiling_of, _), parts in zip(timed, timings)]
    for row in rows:
        peer = next((r for r in rows if r.peer_of == row.runner), None)
        if peer is not None:
            row.overhead = round(row.p50_us / peer.p50_us, 3)
            row.vs_bare = speed_ratio(row, peer)
    return rows


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


def case_feeds(model, case: Case) -> dict[str, np.ndarray]:
    """The case's inputs: its own, or where it has none (a tutorial model's), made by the model's head
    at its batch: raw pictures for an --input uint8 artifact (its graph normalises them, as predict
    feeds it), else preprocessed samples."""
    if case.feeds is not None:
        return case.feeds
    head = model.head
    make = bench_pictures if head.info.raw_input is not None else bench_inputs
    return {head.input_name: make(head.contract, case.batch)}


def time_models(opened: list[tuple], cases: Sequence[Case], *, skipped: dict[str, str], bare: bool, warmup: int,
                seconds: float, rounds: int, progress: Callable[[str], None]) -> list[BenchRow]:
    """Each opened (Variant, Model) timed at each case, all in the same
    alternating rounds per case: ``Model.run`` beside its runner's bare call on the same inputs (in
    the model's host buffers on a GPU, so both pay the same copies) and, on CUDA, the resident
    ceiling. A model that cannot run a case is that row's entry in ``skipped``, not timed."""
    rows: list[BenchRow] = []
    for case in cases:
        timed = []
        with contextlib.ExitStack() as leases:  # host buffers the inputs lie in, held until timed
            for variant, model in opened:
                label = variant.label
                try:  # once untimed: inputs the model cannot take are said, not timed
                    feeds = check_feeds(model.signature, case_feeds(model, case), model.name)
                    model.run(feeds)
                except Exception as exc:  # noqa: BLE001 - that row only; the others are timed
                    skipped[f"{label} {case.label}"] = (str(exc) if isinstance(exc, PtxError) else
                                                        f"{type(exc).__name__}: {first_line(exc)}")
                    continue
                progress(f"{label} {case.label}")
                feeds = {n: in_host_buffer(model, x, leases) for n, x in feeds.items()}
                timed.append((label, variant, None, None, functools.partial(model.run, feeds)))
                if not bare:
                    continue
                bare_name, call = model.bare(feeds)
                timed.append((f"{bare_name} ({label})", variant, label, None, call))
                if variant.backend.resident and variant.device.startswith("cuda"):
                    # Not a peer: no ptx row can pay less than the host copies it leaves out.
                    resident_name, call = model.runner.resident(feeds)
                    timed.append((f"{resident_name} ({label})", variant, None, label, call))
            if timed:
                rows += timed_rows(timed, case.batch or 1, warmup=warmup, seconds=seconds, rounds=rounds)
    return rows


@dataclass
class Bench:
    """``bench``'s answer: a model's rows, what was not timed and why, and notes on its inputs."""

    name: str
    unit: str = "images/s"  # samples/s for tensors a head did not make, runs/s for a model without a batch axis
    rows: list[BenchRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why it was not timed
    notes: list[str] = field(default_factory=list)

    def text(self, markdown: bool = False) -> str:
        from ..model.target import group_reasons

        skipped = self.skipped if markdown else {  # one line per reason, as verify says it
            labels: why for labels, _, why in (line.partition(": ") for line in group_reasons(self.skipped))}
        table = (to_markdown if markdown else to_text)(self.name, self.rows, skipped, self.unit)
        return "\n".join([*self.notes, table])

    def to_dict(self) -> dict:
        return {"model": self.name, "unit": self.unit, "rows": [{**asdict(r), "noisy": r.noisy} for r in self.rows],
                "skipped": self.skipped, "notes": self.notes}


def bench_cases(model, plan: Mapping | None, input_files: Sequence, batch_sizes: Sequence[int], seed: int | None,
                result: Bench, asked_sizes: Sequence[int] | None = None) -> list[Case]:
    """The cases (their inputs: case_feeds): the user's samples (cut or repeated to the
    ``asked_sizes``, where --batch-sizes was given; else one case per batch the files hold, rows
    being per batch size) or seeded tensors from the signature (--seed); else a head's own inputs
    where the model has one; else seeded tensors."""
    signature = model.signature
    if input_files:
        cases, note = sized_cases(file_cases(input_files, signature), signature, asked_sizes,
                                  ", ".join(Path(p).name for p in input_files))
        result.notes.append(note)
        result.unit = "samples/s"
        return cases
    if model.head is not None and seed is None:
        return [Case(f"batch {b}", None, b) for b in batch_sizes]
    chosen = plan_inputs(signature, **(plan or {}))
    if chosen.describe_choices():
        result.notes.append(chosen.describe_choices())
    result.unit = "samples/s" if has_batch(signature) else "runs/s"
    if not has_batch(signature):
        result.notes.append("no input has a batch axis: timed at its fixed shape only (--batch-sizes does not apply); "
                            "throughput is calls per second")
    return generated_cases(signature, chosen, batch_sizes, seed or 0)


def bench(target: Target, *, backends: Sequence[str] | None = None, batch_sizes: Sequence[int] | None = None,
          plan: Mapping | None = None, input_files: Sequence[str | Path] = (), seed: int | None = None,
          warmup: int = 10, seconds: float = DEFAULT_SECONDS, bare: bool = True, rounds: int = DEFAULT_ROUNDS,
          progress: Callable[[str], None] = lambda _: None) -> Bench:
    """Time every variant ``backends`` pick (default: all that run the model) of ``target``, a tutorial
    model's run or a model file, decided where the argument entered: ``bench(Target.of("convnet"))``,
    ``bench(Target.of("net.onnx", options={"inputs": [...]}))`` (``root=``, ``run=`` for a run
    elsewhere; ``options`` are load()'s for a file), each variant next to its bare runtime. ``plan``,
    ``input_files`` and ``seed`` make inputs.

    The torch-free runtimes (ONNX Runtime, OpenVINO) are timed together, all in the same alternating
    rounds per batch size, so their ratios hold on a shared machine; the torch backends after them,
    in rounds of their own: once torch has run, its idle OpenMP threads compete for the cores and
    doubled ORT's batch-1 latency here (26 us alone, 57 us after).

    A row ``backends`` names (ort-cpu: its f32 row) that this machine could run but that cannot open
    (its file missing or unreadable) fails the bench with AskedRowError, before anything is timed
    where it is found among the rows opened first: a timing of other rows is no answer to it."""
    from ..model.target import Skip, group_reasons, require_targets
    from ..runtime.memory_plan import cases_that_fit

    require_targets("bench", target)
    result = Bench(target.name if target.is_run else target.path.name)
    sizes = tuple(batch_sizes or (DEFAULT_BATCH_SIZES if target.is_run else DEFAULT_FILE_BATCH_SIZES))
    chosen = [v for v in target.variants(backends) if not v.backend.third_opinion]  # a third opinion is no runtime to time
    for variant in chosen:  # an asked row's missing file is known before any group opens
        if variant.asked_by(backends) and not variant.unavailable():
            try:
                target.file_for(variant)
            except MissingArtifactError as exc:
                raise AskedRowError(_asked_failure(variant.label, result.name, exc)) from None
    cases = None
    groups = []
    for needs_torch in (False, True):
        group = [v for v in chosen if v.backend.needs_torch == needs_torch]
        unavailable = {v.label: v.unavailable() for v in group}
        result.skipped.update((label, why) for label, why in unavailable.items() if why)
        cut = held_together(target, [v for v in group if not unavailable[v.label]])
        if len(cut) > 1:
            result.notes.append("memory holds only some of these runtimes at once, so each group was timed in rounds "
                                "of its own (its ratios to another group's were measured apart): "
                                + "; ".join(", ".join(v.label for v in g) for g in cut))
        groups += cut
    def skipped(skip: Skip) -> None:
        if not skip.unavailable and skip.variant.asked_by(backends):  # an asked row that does not open fails
            raise AskedRowError(_asked_failure(skip.variant.label, result.name, skip.error))
        # not exported, or not on this CPU (not memory enough now): as it says; a file that does not open on it
        result.skipped[skip.variant.label] = skip.why if skip.unavailable or skip.missing else \
            f"cannot open it: {skip.why}"

    for group in groups:
        if group:
            progress(f"opening {target.name} with {', '.join(v.label for v in group)}")
        # the sessions, their thread pools and weights go before the next group opens
        with target.opened_together(group, skipped=skipped) as opened:
            if not opened:
                continue
            if cases is None:
                cases = bench_cases(opened[0][1], plan, input_files, sizes, seed, result, asked_sizes=batch_sizes)
                cases, left = cases_that_fit(opened[0][1].signature, cases, runtimes=len(opened))
                result.notes += left
                if not cases:
                    raise PtxError(f"no batch size of {result.name} fits in the memory available here: {left[0]}; "
                                   "give smaller --batch-sizes (or --shape for the other symbols)")
            result.rows += time_models(opened, cases, skipped=result.skipped, bare=bare, warmup=warmup,
                                       seconds=seconds, rounds=rounds, progress=progress)
    if not result.rows:
        reasons = "; ".join(group_reasons(result.skipped)) or "no backend was picked"
        raise PtxError(f"no backend could run {result.name} here: {reasons}")
    return result


def held_together(target: Target, group: Sequence) -> list[list]:
    """``group`` (variants timed in the same alternating rounds) cut into runs of variants whose runtimes
    memory holds at once (memory_plan: each backend's peak, as a multiple of its file's weights, added
    up against the memory available now; a runtime's compiled copies come after it opens, so what is
    free at each opening is not the measure). One group where memory is unknown or holds them all."""
    from ..runtime.memory_plan import available_memory, opening_need, shortfall

    if len(group) < 2:
        return [list(group)]
    available = available_memory()
    if available is None:
        return [list(group)]
    cut: list[list] = [[]]
    used = 0.0
    for variant in group:
        try:
            need = opening_need(variant.backend, target.file_for(variant), variant.precision)
        except PtxError:  # no file: its opening says why
            need = 0.0
        if cut[-1] and shortfall("the group", used + need, available):  # the plan's one question: does it fit
            cut.append([])
            used = 0.0
        cut[-1].append(variant)
        used += need
    return cut


def _asked_failure(label: str, name: str, exc: Exception) -> str:
    """One line: the row asked for, why it cannot open, and that nothing was timed in its place."""
    return (f"{label}, asked for with --backends, cannot open {name}: {first_line(exc)}; nothing timed in its "
            f"place (leave it out of --backends to time the others)")


def fastest(rows: list[BenchRow], verified: set[str]) -> list[Fastest]:
    """Per batch size, the fastest ptx row whose (backend, precision) ``ptx verify`` passed."""
    out = []
    for batch in dict.fromkeys(r.batch for r in rows):
        ours = [r for r in rows if r.batch == batch and r.peer_of is None and r.ceiling_of is None
                and r.runner in verified]
        if not ours:
            continue
        best = max(ours, key=lambda r: r.images_per_s)
        peers = [r for r in rows if r.batch == batch and r.peer_of is not None]
        verdict = Fastest(batch, best.runner, best.precision, best.images_per_s)
        if peers:
            peer = max(peers, key=lambda r: r.images_per_s)
            verdict.peer, verdict.vs_peer = peer.runner, speed_ratio(best, peer)
        ort = next((r for r in peers if r.runner == ORT_F32_PEER), None)
        if ort is not None:
            verdict.vs_ort_f32 = speed_ratio(best, ort)
        out.append(verdict)
    return out


def describe_fastest(verdicts: list[Fastest], unverified: dict[str, str], unit: str = "images/s") -> list[str]:
    """Per batch, the fastest verified row, its throughput in the table's ``unit`` (a user's model:
    samples/s, or runs/s unbatched)."""
    lines = []
    for v in verdicts:
        line = f"batch {v.batch}: fastest verified is {v.runner} ({v.precision}), {v.images_per_s:,.0f} {unit}"
        if v.peer:
            line += f"; {v.vs_peer:.2f}x the fastest bare peer ({v.peer})"
        if v.vs_ort_f32 is not None:
            line += f", {v.vs_ort_f32:.2f}x bare ORT f32"
        lines.append(line)
    lines += [f"not verified, so never named fastest: {label} ({why})" for label, why in unverified.items()]
    return lines


def columns(unit: str = "images/s") -> list[str]:
    """The table's columns, throughput in ``unit`` (a user's model: samples/s, or runs/s unbatched)."""
    return ["runner", "device", "batch", "p50 us", "p90 us", "p99 us", unit, "vs bare"]


def _cells(r: BenchRow) -> list[str]:
    vs_bare = f"{r.vs_bare:.2f}x" if r.vs_bare is not None else ""
    return [r.runner, r.device, str(r.batch), f"{r.p50_us:,.1f}", f"{r.p90_us:,.1f}", f"{r.p99_us:,.1f}",
            f"{r.images_per_s:,.0f}", vs_bare + (" noisy" if r.noisy else "")]


def noisy_warning(rows: list[BenchRow]) -> str | None:
    """One line naming the rows whose rounds disagreed (worst first), or None."""
    noisy = sorted((r for r in rows if r.noisy), key=lambda r: -r.round_spread)
    if not noisy:
        return None
    worst = ", ".join(f"{r.runner} batch {r.batch} {r.round_spread:.1f}x" for r in noisy[:3])
    more = f" and {len(noisy) - 3} more" if len(noisy) > 3 else ""
    return (f"{len(noisy)} of {len(rows)} rows are noisy, their p50 moving {NOISY_SPREAD:g}x or more between rounds "
            f"({worst}{more}): the machine was busy; re-run, or time longer with --seconds")


def to_markdown(name: str, rows: list[BenchRow], skipped: dict[str, str], unit: str = "images/s") -> str:
    head = columns(unit)
    lines = markdown_table([[f"{name}: {head[0]}", *head[1:]]] + [_cells(r) for r in rows], range(2, len(head)))
    return "\n".join(lines + [f"\nskipped {b}: {why}" for b, why in skipped.items()])


def to_text(name: str, rows: list[BenchRow], skipped: dict[str, str], unit: str = "images/s") -> str:
    cells = [columns(unit)] + [_cells(r) for r in rows]
    width = max(len(row[0]) for row in cells)
    skips = [f"{b:<{width}}  skipped: {why}" for b, why in skipped.items()]
    return "\n".join([f"ptx bench {name}", *text_table(cells, range(2, len(cells[0]))), *skips])
