"""Batch-composition independence: a sample's outputs when it runs alone against the same sample's
rows when it runs inside a batch of others, under the tolerance its backend is judged by.

A model whose answer changes with its batch-mates (a normalisation over the batch left in training
mode, a padded sequence whose padding leaks, a runtime that picks another kernel per batch size and
rounds differently) answers a server's request differently depending on which requests it was joined
with: Triton server #5640, #5891 and TensorRT #4813 report it again and again, and no checker looks
for it. numpy only: any runner (``run(feeds) -> {name: array}``) is checked the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.cases import Case
from ptx.contract.schema import Tolerance
from ptx.contract.comparison import OutputAgreement, compare_output
from ptx.contract.tensors import Signature
from ptx.errors import PtxError, first_line

from .cases import batch_of

MAX_ALONE = 3  # samples run alone: the first, the middle and the last of the batch


@dataclass
class CompositionCheck:
    """One backend's answer to "does a sample's answer depend on its batch-mates?"."""

    batch: int  # the batch the samples were taken from
    alone: list[int] = field(default_factory=list)  # their rows in it
    outputs: list[OutputAgreement] = field(default_factory=list)  # per output, over those rows
    skipped: str | None = None  # why nothing was compared (no batch axis, a batch of one)
    # The runtime could not run a sample alone (a batch of one the exporter ruled out): no answer
    # about the model, so no failure; it fails only under verify --strict.
    error: str | None = None
    # outputs left out as not per row, and why, as export found it (ptx.contract.batch_rows); '' where none
    left_out: str = ""

    @property
    def checked(self) -> bool:
        return self.skipped is None and self.error is None

    @property
    def ok(self) -> bool:
        return not self.checked or all(o.ok for o in self.outputs)

    def summary(self) -> str:
        if not self.checked:
            return f"not checked: {self.skipped or self.error}"
        rows = ", ".join(map(str, self.alone))
        if self.ok:
            worst = max((o.max_abs for o in self.outputs), default=0.0)
            return (f"samples {rows} alone = their rows in a batch of {self.batch} (max abs {worst:.2e})"
                    + (f"; left out, not per row: {self.left_out}" if self.left_out else ""))
        bad = next(o for o in self.outputs if not o.ok)
        return (f"sample answers depend on the batch: samples {rows} alone differ from their rows in a batch of "
                f"{self.batch}: {bad.summary()}")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "batch": self.batch, "alone": self.alone, "skipped": self.skipped, "error": self.error,
                "outputs": [o.to_dict() for o in self.outputs], **({"left_out": self.left_out} if self.left_out else {})}


def check_largest_batch(run: Callable[[dict], Mapping[str, np.ndarray]], signature: Signature, cases: Sequence[Case],
                        got: Mapping[int, Mapping[str, np.ndarray]],
                        tolerance_of: Callable[[str], Tolerance], left_out: str = "") -> CompositionCheck | None:
    """Verify's check of one row, a tutorial model's or a file's: the largest batch case that ran
    (``got``: the row's outputs by case index) against a few of its samples run alone; None where no
    case holds a batch of two or more. ``left_out``: the outputs the file records are not per row, and
    why (they keep no batch axis, so they are not compared): said with the check."""
    batched = [i for i in got if (cases[i].batch or 0) > 1]
    if not batched:
        return None
    index = max(batched, key=lambda i: cases[i].batch)
    try:
        check = check_batch_composition(run, signature, cases[index].feeds, got[index], tolerance_of)
        check.left_out = left_out
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot run one sample alone: this row's reason
        return CompositionCheck(cases[index].batch, error=f"a sample alone: {exc if isinstance(exc, PtxError) else first_line(exc)}")
    # every output left out as not per row: nothing compared, and verify says so and why (a check that
    # vanished said nothing, and a user could not tell a skipped check from one never thought of)
    return None if check.skipped and not left_out else check


def check_batch_composition(run: Callable[[dict], Mapping[str, np.ndarray]], signature: Signature,
                            feeds: Mapping[str, np.ndarray], batched: Mapping[str, np.ndarray],
                            tolerance_of: Callable[[str], Tolerance]) -> CompositionCheck:
    """Run a few samples of ``feeds`` alone through ``run`` and compare each with its rows of
    ``batched`` (``run(feeds)``'s outputs, computed by the caller, which has them already).
    Inputs without a batch axis go whole with every sample; outputs without one are not compared."""
    batch = batch_of(signature, feeds)
    if batch is None:
        return CompositionCheck(0, skipped="the model has no batch axis")
    if batch < 2:
        return CompositionCheck(batch, skipped=f"a batch of {batch}: nothing to compose")
    compared = [t for t in signature.outputs if t.batch_axis is not None and t.name in batched]
    if not compared:
        return CompositionCheck(batch, skipped="no output has a batch axis")
    rows = sorted({0, batch // 2, batch - 1})[:MAX_ALONE]
    answers = [run({t.name: feeds[t.name] if t.batch_axis is None else _take(feeds[t.name], t.batch_axis, [row])
                    for t in signature.inputs}) for row in rows]
    outputs = [compare_output(t.name, np.concatenate([np.asarray(a[t.name]) for a in answers], axis=t.batch_axis),
                              _take(batched[t.name], t.batch_axis, rows), tolerance_of(t.name), t.batch_axis)
               for t in compared]
    return CompositionCheck(batch, rows, outputs)


def _take(x: np.ndarray, axis: int, rows: list[int]) -> np.ndarray:
    """The ``rows`` of ``x`` along ``axis``, C-ordered as runtimes want them."""
    return np.ascontiguousarray(np.take(np.asarray(x), rows, axis=axis))
