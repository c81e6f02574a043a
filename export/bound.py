"""``ptx export NAME|FILE --format onnx-int8|openvino-int8 --max-drop X [--metric FILE.py:FN]``: the
loss a user accepts from int8, measured on what they name, and held by the file that is written.

What is measured: a tutorial model's accuracy on the real test samples ``ptx verify`` judges it on,
X in accuracy points (0.5: half a percentage point below eager's accuracy); for a user's ONNX file,
``FN(run) -> float`` from FILE.py, higher is better, where ``run({name: array}) -> {name: array}``
runs the candidate on the user's own data and labels (as NNCF's validation function is handed a
model). ptx calls FN once for the f32 file and once per candidate, and X is in FN's own units (NNCF's
absolute drop). A candidate holds the bound where the f32 value minus its value is at most X.

Each format's search keeps the fewest nodes in f32 that hold it (export/keep_f32.py's ranking and
revert pass; for openvino-int8, NNCF's ``quantize_with_accuracy_control`` first), and the file
records the bound (ptx.max_drop), the metric (ptx.metric), the f32 and int8 values (ptx.metric_f32,
ptx.metric_int8), the nodes kept (ptx.keep_f32) and its speed on this CPU (ptx.speed_vs_f32).

Torch-free: a user's file and metric run on onnx and the serving runtime alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ptx.contract.verdict import Evidence, bound_evidence
from ptx.errors import PtxError

from .refusal import raised
from .user_code import import_callable

# value, and each item's (None: the metric has no items ptx can take a subset of)
Measure = Callable[[Path, Sequence[int] | None], tuple[float, list[float] | None]]


@dataclass
class Bound:
    """The most the metric may drop from f32's ``reference`` (``max_drop``, in ``unit``) and how a
    candidate file is measured (``measure(path, items)``; ``items``: how many items it can take a
    subset of, for NNCF's ranking: a tutorial model's samples, 1 for a user's metric)."""

    max_drop: float
    metric: str  # what is measured, in words: "accuracy on 1,000 real ... test samples", "metric.py:accuracy"
    reference: float
    measure: Measure
    items: int = 1
    points: float = 1.0  # the metric's value -> max_drop's unit (accuracy, a share, in points: 100)
    unit: str = ""  # " accuracy points", or "" (the user's metric's own units)
    about: str = ""  # said of the metric where the file records it (ptx.metric)
    # The file at a path measured through another runtime's backend (ort-cpu, openvino): a file is
    # judged on every runtime it is offered to, not only the one it was made for.
    measure_through: Callable[[Path, str], float] | None = None

    def judge(self, path: Path) -> Evidence:
        """The candidate at ``path`` measured and held to the bound (the search's judge)."""
        return Held(self, self.measure(Path(path), None)[0])

    def strings(self, value: float) -> dict[str, str]:
        """What the written file records of the bound, beside its ptx.keep_f32 and ptx.speed_vs_f32."""
        return {"max_drop": f"{self.max_drop:g}{self.unit}", "metric": self.metric + self.about,
                "metric_f32": f"{self.reference:.6g}", "metric_int8": f"{value:.6g}"}


def Held(bound: Bound, value: float) -> Evidence:  # noqa: N802 - read as the record it makes
    """One candidate's value against ``bound``, as the evidence keep_f32's search and the verdict
    read (ptx.contract.verdict.bound_evidence), measured here by export."""
    return bound_evidence(bound.max_drop, bound.unit, bound.metric, bound.reference, value, rechecked=True)


def check_max_drop(value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise PtxError(f"--max-drop {value}: give the most the metric may drop, a finite number >= 0 (accuracy "
                       "points for a tutorial model: 0.5 is half a percentage point)")
    return value


def load_metric(spec: str) -> Callable[[Callable], float]:
    """``--metric FILE.py:FN`` as a call ``metric(run) -> float``; the user's errors in one line
    naming FILE.py:FN and the exception's first line."""
    fn, path, name = import_callable(spec, "--metric", "FILE.py:FN, FN(run) returning one number, higher is "
                                                       "better, e.g. --metric metric.py:accuracy")
    shown = f"{path.name}:{name}"

    def metric(run: Callable) -> float:
        try:
            value = fn(run)
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
            raise PtxError(f"--metric {shown} {raised(exc, path)}") from None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise PtxError(f"--metric {shown} returned {value!r}: return one finite number, higher is better")
        return number

    metric.shown = shown  # how the file's ptx.metric names it
    return metric


def metric_bound(spec: str, max_drop: float, f32_run: Callable, open_candidate: Callable) -> Bound:
    """The bound of a user's ``--metric``: FN over the f32 file's ``f32_run`` for the reference,
    over ``open_candidate(path, backend)`` (a Model, closed after; backend None: the format's
    serving backend) for each candidate."""
    metric = load_metric(spec)

    def measure_through(path: Path, backend: str | None = None) -> float:
        with open_candidate(path, backend) as model:
            return metric(model.run)

    return Bound(check_max_drop(max_drop), metric.shown, metric(f32_run), lambda path, items=None: (
        measure_through(path), None), about=" (the user's metric, higher is better, in its own units)",
                 measure_through=measure_through)
