"""`--backend auto`: the fastest backend that passed `ptx verify` on this machine for the batch sizes
a server forms, else ort-cpu, with the reason in words.

"Fastest" is what `ptx bench` measured here (its record in the run folder), over the batch sizes the
batcher forms (1 up to the largest batch); without a bench record the torch-free candidates are
timed briefly at load (batch 1 and the largest batch), measured rather than assumed. A precision
that missed its gate in verify (NOT USABLE) never passed, so it is never chosen. Without a
precision named, tf32 (CUDA's TensorFloat-32 math on the f32 file) competes with f32: it is chosen
only when it passed verify's labels/accuracy gate and measured faster.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from statistics import geometric_mean


from ptx.contract.names import FULL_PRECISION, TF32
from ptx.errors import PtxError

from ..runtime import backends as registry
from ..model import records
from ..model.opening import DEFAULT_BACKEND
from ..model.target import load

TIMING_S = 0.3  # per candidate and batch size, when no bench record says
# Another backend replaces the default only when it is this much faster: short timings on a shared
# machine differ by a few percent from run to run, and the default is the lightest to run.
CLEAR_MARGIN = 1.10


@dataclass
class Choice:
    backend: str
    device: str
    precision: str
    reason: str


def choose_backend(model: str, run_dir: str | Path, *, max_batch_size: int, precision: str | None = None,
                   root: str | Path | None = None) -> Choice:
    """``precision`` None: f32, or tf32 on a GPU where it passed verify and is faster; a precision
    named is the only one considered."""
    run_dir = Path(run_dir)
    accepted = {precision} if precision else {FULL_PRECISION, TF32}
    precision = precision or FULL_PRECISION
    passed = records.verified(run_dir)
    # A reduced precision asked for, whose rows verify judged NOT USABLE or FAIL here: the default is not
    # served in their place where it is one of them, or where none of that precision passed (a row that
    # missed its precision's rule is never chosen)
    failed = records.failed_at(run_dir, precision) if precision in accepted - {FULL_PRECISION, TF32} else {}
    refused = failed and (registry.get(DEFAULT_BACKEND).label("cpu", precision) in failed
                          or not any(row["precision"] == precision for row in passed.values()))

    def fallback(reason: str) -> Choice:
        if refused:
            raise PtxError(f"--backend auto --precision {precision}: `ptx verify {model}` judged "
                           f"{', '.join(f'{label} {status}' for label, status in failed.items())} on this machine, and "
                           f"no other {precision} row serves here ({reason}): serve it at f32 (drop --precision), or "
                           "name a row with --backend to serve it anyway")
        return Choice(DEFAULT_BACKEND, "cpu", precision, f"the default: {reason}")

    if not passed:
        why = ("no verify record on this machine" if not records.has_verify_record(run_dir)
               else "nothing passed verify on this machine for the artifacts as they are now")
        return fallback(f"{why}; `ptx verify {model}` lets auto choose the fastest verified")
    candidates = {label: row for label, row in passed.items()
                  if row["precision"] in accepted and max(row["batch_sizes"]) >= max_batch_size}
    if not candidates:
        return fallback(f"nothing passed verify at {precision} for batches up to {max_batch_size}; "
                        f"`ptx verify {model} --batch-sizes 1,7,{max_batch_size}` would check them")
    speeds = records.throughput(run_dir)
    batches = [b for b in {b for label in candidates for b in speeds.get(label, {})} if b <= max_batch_size]
    if batches and all(all(b in speeds.get(label, {}) for b in batches) for label in candidates):
        scores = {label: geometric_mean(max(speeds[label][b], 1e-9) for b in batches) for label in candidates}
        how = f"by ptx bench at batch {', '.join(map(str, sorted(batches)))}"
    else:
        torch_free = {k: v for k, v in candidates.items() if not registry.get(v["backend"]).needs_torch}
        timed = {k: v for k, v in (torch_free or candidates).items() if _runs_here(v)}
        scores = {label: _measure(model, row, max_batch_size, root, run_dir) for label, row in timed.items()}
        how = f"timed now at batch 1 and {max_batch_size}, as no ptx bench record is here"
    # Whether a backend runs here is asked in order of speed: asking imports its runtime (torch for
    # eager), which a faster torch-free winner never needs.
    best = next((label for label in sorted(scores, key=scores.get, reverse=True) if _runs_here(candidates[label])), None)
    if best is None:
        return fallback("no verified backend can run here now")
    default = next((label for label, row in candidates.items()
                    if row["backend"] == DEFAULT_BACKEND and label in scores), None)
    if default is not None and default != best and scores[best] < CLEAR_MARGIN * scores[default]:
        return Choice(DEFAULT_BACKEND, candidates[default]["device"], precision,
                      f"the default, verified here: {scores[default]:,.0f} images/s {how}; {best} "
                      f"({scores[best]:,.0f}) is not {CLEAR_MARGIN - 1:.0%} faster")
    row = candidates[best]
    others = ", ".join(f"{label} {scores[label]:,.0f}" for label in sorted(scores, key=scores.get, reverse=True)
                       if label != best)
    return Choice(row["backend"], row["device"], row["precision"],
                  f"the fastest that passed verify here: {scores[best]:,.0f} images/s {how}"
                  + (f"; then {others}" if others else ""))


def _runs_here(row: dict) -> bool:
    return registry.get(row["backend"]).unavailable(row["device"]) is None


def _measure(model: str, row: dict, max_batch_size: int, root, run_dir: Path) -> float:
    """Images/s of one candidate: the geometric mean over batch 1 and the largest batch, on bench's
    inputs (speed does not depend on the values for these models)."""
    from .timing import case_feeds, time_calls
    from ptx.contract.cases import Case

    predictor = load(model, row["backend"], row["device"], row["precision"], root=root or run_dir.parent,
                           run=run_dir)
    rates = []
    for batch in sorted({1, max_batch_size}):
        feeds = case_feeds(predictor, Case(f"batch {batch}", None, batch))  # timed as bench times it: run()
        # one warm-up call: first calls allocate
        latencies = time_calls(functools.partial(predictor.run, feeds), warmup=1, seconds=TIMING_S, min_iters=1)
        rates.append(len(latencies) * batch / latencies.sum())
    del predictor
    return geometric_mean(max(rate, 1e-9) for rate in rates)


def describe(model: str, choice: Choice) -> str:
    precision = "" if choice.precision == FULL_PRECISION else f" at {choice.precision}"
    label = registry.get(choice.backend).label(choice.device)
    return f"{model}: {label}{precision} ({choice.reason})"

