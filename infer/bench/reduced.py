"""What each reduced precision buys and costs, side by side (issue 53): a bench's bf16 and int8 rows
with their speed against ort-cpu f32 at the same batch (the row a CPU's reduced precision has to
beat to be worth serving) and their accuracy against eager's on the real test samples verify judged
them on, with verify's verdict (an int8 file exported with --max-drop: judged by that bound).

A table of its own under bench's timing table, which keeps its columns: with the runner names it
is 110 characters wide already, and the cost of a precision belongs with its speed, not with its
latency percentiles. Reads verify's rows by their fields only (label, accuracy, argmax_agreement,
status, max_drop, reference_accuracy, is_reference), and draws its tables as verify's report does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from ptx.contract.accuracy_rule import accuracy_points
from ptx.contract.names import FULL_PRECISION

from .timing import speed_ratio
from ..verify.tables import markdown_table, text_table

F32_PEER = "ort-cpu"  # the row each reduced precision's speed is set against


@dataclass
class ReducedRow:
    runner: str
    batch: int
    images_per_s: float
    vs_ort_f32: float | None = None  # images/s over ort-cpu f32's at the same batch
    accuracy: float | None = None  # on verify's real test samples
    drop_points: float | None = None  # eager's accuracy minus this row's, in accuracy points
    label_agreement: float | None = None
    verdict: str | None = None  # verify's status (None: not verified)
    max_drop: float | None = None  # the bound its file was exported to hold


def reduced_rows(rows: Sequence, verified: Sequence = (), recorded: Mapping[str, str] | None = None) -> list[ReducedRow]:
    """One ReducedRow per reduced-precision ptx row of a bench (BenchRow), with ``verified``'s
    (verify's Rows) accuracy and verdict where verify judged that label, else ``recorded``'s verdict
    (label -> the status kept for its file: verify.json, or export's judgement in the file)."""
    f32 = {r.batch: r for r in rows if r.runner == F32_PEER and r.precision == FULL_PRECISION and r.peer_of is None}
    judged: dict = {}
    for v in (v for v in verified if not v.is_reference):  # a label by its worst row (its stored-reference row too)
        if v.label not in judged or (judged[v.label].ok and not v.ok):
            judged[v.label] = v
    out = []
    for r in rows:
        if r.precision == FULL_PRECISION or r.peer_of is not None or r.ceiling_of is not None:
            continue
        row = ReducedRow(r.runner, r.batch, r.images_per_s)
        if r.batch in f32:
            row.vs_ort_f32 = speed_ratio(r, f32[r.batch])
        v = judged.get(r.runner)
        row.verdict = (recorded or {}).get(r.runner)
        if v is not None:
            row.verdict, row.max_drop = v.status, v.max_drop
            row.accuracy, row.label_agreement = v.accuracy, v.argmax_agreement
            if v.accuracy is not None and v.reference_accuracy is not None:
                row.drop_points = round(accuracy_points(v.reference_accuracy - v.accuracy), 2)
        out.append(row)
    return out


# Short headings, so that a row with its verdict and bound fits 100 columns; heading() says what they mean.
COLUMNS = ("reduced row", "batch", "images/s", "vs ort f32", "accuracy", "drop pts", "labels", "verify")


def _cells(r: ReducedRow) -> list[str]:
    verdict = (r.verdict or "not verified") + (f" (--max-drop {r.max_drop:g})" if r.max_drop is not None else "")
    return [r.runner, str(r.batch), f"{r.images_per_s:,.0f}", f"{r.vs_ort_f32:.2f}x" if r.vs_ort_f32 else "-",
            f"{r.accuracy:.4f}" if r.accuracy is not None else "-",
            f"{r.drop_points:.2f}" if r.drop_points is not None else "-",
            f"{100 * r.label_agreement:.1f}%" if r.label_agreement is not None else "-", verdict]


def heading(cpu: str, verified: Sequence, unit: str = "images/s") -> str:
    """Lines under 100 characters: the CPU, then what the columns are measured against (throughput in
    the main table's ``unit``: samples/s for a user's model)."""
    eager = next((v.reference_accuracy for v in verified if v.reference_accuracy is not None), None)
    cost = (f"drop pts: eager's accuracy ({eager:.4f}) minus the row's, in points; labels: the share agreeing"
            if eager is not None else "accuracy: not judged here (ptx verify judges it)")
    return f"reduced precision on {cpu}\nvs ort f32: {unit} over {F32_PEER} f32's at the same batch\n{cost}"


def slower_line(rows: Sequence[ReducedRow], cpu: str) -> str | None:
    """One line naming each reduced row slower than ort-cpu f32 at its batch on this CPU: what it
    costs in accuracy buys nothing here, so it is no row to serve for speed."""
    slower = [f"{r.runner} {r.vs_ort_f32:.2f}x at batch {r.batch}" for r in rows if r.vs_ort_f32 and r.vs_ort_f32 < 1]
    if not slower:
        return None
    return (f"slower than {F32_PEER} f32 on this CPU ({cpu}): {', '.join(slower)}; smaller or less exact, not faster "
            "here: serve f32 or a faster verified row (docs/precisions.md, per CPU)")


def _table(rows: list[ReducedRow], unit: str) -> list[list[str]]:
    """The heading, throughput in ``unit``, then a row of cells per ReducedRow."""
    return [[unit if c == "images/s" else c for c in COLUMNS]] + [_cells(r) for r in rows]


def to_text(rows: list[ReducedRow], title: str, unit: str = "images/s") -> str:
    return "\n".join([title, *text_table(_table(rows, unit), range(1, len(COLUMNS) - 1))])


def to_markdown(rows: list[ReducedRow], title: str, unit: str = "images/s") -> str:
    return "\n".join([title, "", *markdown_table(_table(rows, unit), range(1, len(COLUMNS) - 1))])


def to_dicts(rows: list[ReducedRow]) -> list[dict]:
    return [asdict(r) for r in rows]
