"""ptx bench PATH: latency percentiles and throughput of a model file on every backend that runs it
here, per batch size, each beside its bare runtime call (a bare ``InferenceSession.run`` for the
ONNX Runtime rows), timed as ``ptx bench NAME`` times the tutorial models (infer/bench.py: the same
alternating rounds, rows, table and noisy-row warning)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ptx.contract.tensor_inputs import check_feeds, plan_inputs
from ptx.errors import PtxError, first_line

from .bench import DEFAULT_ROUNDS, DEFAULT_SECONDS, BenchRow, rows_to_dicts, timed_rows, to_markdown, to_text
from .model_files import read_model_file
from .cases import Case, file_cases, generated_cases, has_batch
from .readers import file_backends, group_reasons, open_options_for, open_rows

DEFAULT_FILE_BATCH_SIZES = (1, 8)  # a user's model may be large: 1 for latency, 8 for a first look at throughput


@dataclass
class FileBench:
    path: Path
    unit: str  # samples/s, or runs/s for a model without a batch axis
    rows: list[BenchRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why it was not timed
    notes: list[str] = field(default_factory=list)

    def text(self, markdown: bool = False) -> str:
        skipped = dict(self.skipped)
        if not markdown:  # one line per reason, as verify says it
            skipped = {labels: why for labels, _, why in (line.partition(": ") for line in group_reasons(skipped))}
        table = (to_markdown if markdown else to_text)(self.path.name, self.rows, skipped, self.unit)
        return "\n".join([*self.notes, table])

    def to_dict(self) -> dict:
        return {"path": str(self.path), "unit": self.unit, "rows": rows_to_dicts(self.rows), "skipped": self.skipped,
                "notes": self.notes}


def _cases(signature, plan: Mapping | None, input_files: Sequence, batch_sizes: Sequence[int], seed: int,
           notes: list[str]) -> list[Case]:
    if input_files:
        cases = file_cases(input_files, signature)
        by_batch = {}
        for case in cases:  # one case per batch size: rows are per batch size
            by_batch.setdefault(case.batch, case)
        notes.append(f"timed on the samples given ({', '.join(c.label for c in by_batch.values())})")
        return list(by_batch.values())
    chosen = plan_inputs(signature, **(plan or {}))
    if chosen.describe_choices():
        notes.append(chosen.describe_choices())
    if not has_batch(signature):
        notes.append("no input has a batch axis: timed at its fixed shape only (--batch-sizes does not apply); "
                     "throughput is calls per second")
    return generated_cases(signature, chosen, batch_sizes, seed)


def bench_file(path: str | Path, *, backends: Sequence[str] | None = None, options: Mapping | None = None,
               plan: Mapping | None = None, input_files: Sequence[str | Path] = (), seed: int = 0,
               batch_sizes: Sequence[int] = DEFAULT_FILE_BATCH_SIZES, warmup: int = 10,
               seconds: float = DEFAULT_SECONDS, rounds: int = DEFAULT_ROUNDS, bare: bool = True,
               progress: Callable[[str], None] = lambda _: None) -> FileBench:
    """Time the model file at ``path`` on every backend ``backends`` picks (default: all that read
    it). The torch-free runtimes are timed first and torch's after them, as bench() does and for its
    reason (torch's idle threads slowed ONNX Runtime once torch had run)."""
    path = Path(path)
    found = read_model_file(path)
    options = open_options_for(found, options or {})
    result = FileBench(path, "samples/s")
    chosen = file_backends(found.kind, backends)
    cases: list[Case] | None = None
    for needs_torch in (False, True):
        group = []
        for row in (r for r in chosen if r.backend.needs_torch == needs_torch):
            why = row.unavailable()
            if why:
                result.skipped[row.label] = why
            else:
                group.append(row)
        if group:
            progress(f"opening {path.name} with {', '.join(r.label for r in group)}")
        opened, models = [], open_rows(path, group, options)
        for row in group:
            model = models[row.label]
            if isinstance(model, Exception):
                result.skipped[row.label] = f"cannot open it: {model}"
            else:
                opened.append((row, model))
        if not opened:
            continue
        if cases is None:
            signature = opened[0][1].signature
            cases = _cases(signature, plan, input_files, batch_sizes, seed, result.notes)
            result.unit = "samples/s" if has_batch(signature) else "runs/s"
        for case in cases:
            names, calls = [], []
            for row, model in opened:
                try:
                    model.run(case.feeds)  # once untimed: a batch the model cannot take is said, not timed
                except Exception as exc:  # noqa: BLE001 - that row only; the others are timed
                    result.skipped[f"{row.label} {case.label}"] = str(exc) if isinstance(exc, PtxError) else \
                        f"{type(exc).__name__}: {first_line(exc)}"
                    continue
                progress(f"{row.label} {case.label}")
                names.append((row.label, row.device, model.precision, None, None))
                calls.append(functools.partial(model.run, case.feeds))
                if bare:
                    # the inputs as the runtime takes them (checked and cast once, as run() does each call)
                    label, call = model.bare(check_feeds(model.signature, case.feeds, model.name))
                    names.append((f"{label} ({row.label})", row.device, model.precision, row.label, None))
                    calls.append(call)
            if calls:
                result.rows += timed_rows(names, calls, case.batch or 1, warmup=warmup, seconds=seconds, rounds=rounds)
        del opened  # frees sessions' thread pools before the next group is timed
    if not result.rows:
        reasons = "; ".join(group_reasons(result.skipped)) or "no backend was picked"
        raise PtxError(f"no backend could run {path.name} here: {reasons}")
    return result

