"""`ptx runs`: the runs under a root, whatever their folders are called, from their side files only
(metrics.json, verify.json, bench.json, file dates): no checkpoint is loaded and torch is never
imported, so the listing answers at once. A run that cannot be read is a row with its reason.
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ptx.contract import CHECKPOINT_FILE, DEFAULT_RUNS_ROOT
from ptx.contract.catalog import names as catalog_names
from ptx.contract.degenerate import degenerate
from ptx.contract.names import VERIFY_RECORD_FILE
from ptx.contract.runs import METRICS_FILE, exported, run_folders

from ..model import records

# Short names for the export files, for the table (JSON keeps the file names).
SHORT = {"model.onnx": "onnx", "model.torchscript.pt": "torchscript", "model.pt2": "pt2", "model.int8.onnx": "int8",
         "model.openvino-int8.onnx": "ov-int8"}


@dataclass
class RunRow:
    folder: str
    model: str | None = None
    dataset: str | None = None
    epochs: int | None = None
    planned_epochs: int | None = None
    test_accuracy: float | None = None
    test_mse: float | None = None
    date: str | None = None
    exports: list[str] = field(default_factory=list)
    verify: str | None = None  # "pass 6/6", "FAIL 1/6", "other machine", None: never verified
    fastest: str | None = None  # the fastest backend that passed verify here, by ptx bench's record
    flags: list[str] = field(default_factory=list)  # stale exports, a degenerate model
    problem: str | None = None  # why the run cannot be read (a broken run)

    def to_dict(self) -> dict:
        return asdict(self)


def list_runs(root: str | Path = DEFAULT_RUNS_ROOT) -> list[RunRow]:
    """One row per run folder directly under ``root`` (a folder with checkpoint.pt or metrics.json)."""
    return [describe(d) for d in run_folders(root)]


def describe(run_dir: Path) -> RunRow:
    row = RunRow(folder=str(run_dir))
    path = run_dir / METRICS_FILE
    if not path.is_file():
        row.problem = (f"no {METRICS_FILE} beside {CHECKPOINT_FILE} (training stopped before its first epoch was "
                       f"saved, or the file was removed); `ptx train MODEL --out {run_dir} --overwrite` trains it again")
        return row
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        row.problem = f"{METRICS_FILE} is not readable JSON ({' '.join(str(exc).split())[:80]})"
        return row
    model = metrics.get("model") if isinstance(metrics, dict) else None
    if not isinstance(model, str):
        row.problem = f"{METRICS_FILE} names no model (not a ptx run, or damaged)"
        return row
    row.model = model
    if not (run_dir / CHECKPOINT_FILE).is_file():
        row.problem = f"no {CHECKPOINT_FILE}: nothing to export or serve; `ptx train {model} --out {run_dir} --overwrite`"
    elif model not in catalog_names():
        row.problem = f"{model} is no model this ptx knows (`ptx models` lists them)"
    history = [r for r in metrics.get("epochs", []) if isinstance(r, dict)]
    last = history[-1] if history else {}
    row.dataset = metrics.get("dataset") if isinstance(metrics.get("dataset"), str) else None
    row.epochs = last.get("epoch") if isinstance(last.get("epoch"), int) else None
    row.planned_epochs = metrics.get("planned_epochs") if isinstance(metrics.get("planned_epochs"), int) else None
    for key in ("test_accuracy", "test_mse"):
        value = metrics.get(f"final_{key}")
        if isinstance(value, (int, float)) and math.isfinite(value):
            setattr(row, key, float(value))
    row.date = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    row.exports = exported(run_dir)
    _flag(row, run_dir, last)
    _records(row, run_dir)
    return row


def _flag(row: RunRow, run_dir: Path, last: dict) -> None:
    why = degenerate(last)
    if why:
        row.flags.append(f"learned nothing: {why}")
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        # An export older than the checkpoint was made from an earlier one (`ptx train --resume` since).
        older = [SHORT[f] for f in row.exports if (run_dir / f).stat().st_mtime < checkpoint.stat().st_mtime]
        if older:
            row.flags.append(f"stale: {', '.join(older)} exported before the last training; "
                             f"`ptx export --run {run_dir}`")


def _records(row: RunRow, run_dir: Path) -> None:
    """Verify's verdicts and bench's speeds, as far as they hold on this machine for the files as they are."""
    if not (run_dir / VERIFY_RECORD_FILE).is_file():
        return
    doc = records.read_any(run_dir / VERIFY_RECORD_FILE)
    rows = doc.get("rows", {}) if isinstance(doc.get("rows"), dict) else {}
    if not rows:
        row.verify = "unreadable"
        return
    if doc.get("machine") != records.machine():
        row.verify = "other machine"
        return
    passed = records.verified(run_dir)
    failed = sorted(label for label, r in rows.items() if isinstance(r, dict) and r.get("status") == "FAIL")
    changed = [label for label, r in rows.items()
               if isinstance(r, dict) and r.get("status") == "PASS" and label not in passed]
    row.verify = f"FAIL {len(failed)}/{len(rows)}" if failed else f"pass {len(passed)}/{len(rows)}"
    if changed:
        row.flags.append(f"verify is out of date for {', '.join(sorted(changed))} (re-exported since): "
                         f"`ptx verify --run {run_dir}`")
    speeds = records.throughput(run_dir)
    timed = {label: s for label, s in speeds.items() if label in passed and s}
    if timed:
        best = max(timed, key=lambda label: max(timed[label].values()))
        batch, rate = max(timed[best].items(), key=lambda item: item[1])
        row.fastest = f"{best} {rate:,.0f}/s (batch {batch})"


def table(rows: list[RunRow]) -> str:
    """The rows as text: one line per run, then its flags and problems indented under it."""
    if not rows:
        return ""
    cells = []
    for r in rows:
        score = (f"acc {r.test_accuracy:.4f}" if r.test_accuracy is not None
                 else f"mse {r.test_mse:.4f}" if r.test_mse is not None else "-")
        epochs = "-" if r.epochs is None else (f"{r.epochs}/{r.planned_epochs}"
                                              if r.planned_epochs not in (None, r.epochs) else str(r.epochs))
        cells.append([r.folder, r.model or "?", r.dataset or "-", epochs, score, r.date or "-",
                      ",".join(SHORT[f] for f in r.exports) or "-", r.verify or "-", r.fastest or "-"])
    header = ["folder", "model", "dataset", "epochs", "test", "date", "exports", "verify", "fastest verified"]
    width = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, width)).rstrip()]
    for r, c in zip(rows, cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, width)).rstrip())
        lines += [f"  broken: {r.problem}"] if r.problem else []
        lines += [f"  {flag}" for flag in r.flags]
    return "\n".join(lines)


def runs_with_artifacts(root: str | Path = DEFAULT_RUNS_ROOT) -> list[Path]:
    """Run folders under ``root``, whatever they are called, that hold a checkpoint and at least one
    exported artifact."""
    return [d for d in run_folders(root) if (d / CHECKPOINT_FILE).is_file() and exported(d)]
