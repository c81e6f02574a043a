"""What `ptx verify` and `ptx bench` found, kept in the run folder (verify.json, bench.json), so that
`ptx serve --backend auto` can pick the fastest backend that passed verify *on this machine*.

A record counts only where it was made: on a machine with the same CPU and core count and the same
runtime versions, and for artifact files whose SHA-256 is still the one judged (an artifact
re-exported or a runtime upgraded since needs `ptx verify` again). Torch-free: the server reads it.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path

from ptx.atomic import atomic_path
from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FILE
from ptx.contract.names import BENCH_RECORD_FILE, VERIFY_RECORD_FILE
from ptx.files import file_sha256
from ptx.machine import cpu_name

from ..runtime import backends as registry

FORMAT = "ptx-record/1"
# Distributions whose version changes what a backend computes or how fast.
RUNTIMES = ("ptx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch")


def machine() -> dict:
    """This machine as far as a verdict or a timing depends on it."""
    versions = {}
    for name in RUNTIMES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "system": f"{platform.system()} {platform.machine()}",
            "versions": versions}


def read_any(path: Path) -> dict:
    """A record whichever machine made it ({} when it is not one)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else {}


def _read(path: Path) -> dict:
    doc = read_any(path)
    return doc if doc.get("machine") == machine() else {}


def _write(path: Path, rows: dict) -> Path:
    """Rows merged over those already recorded on this machine (a verify of one backend keeps the
    verdicts of the others); ``path`` back."""
    doc = {"format": FORMAT, "machine": machine(), "rows": {**_read(path).get("rows", {}), **rows}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _verdict_row(run_dir: Path, verdict, backend: str, device: str, precision: str, batch_sizes) -> dict:
    """A judgement of a run's file as verify.json keeps it: the one stored form (verdict.stored), bound
    to the file the backend read at that precision by its SHA-256."""
    from ptx.contract.verdict import stored

    file_name = ARTIFACT_FILES[registry.get(backend).artifact_for(precision)]  # the file it read at that precision
    path = run_dir / file_name
    return stored(verdict, backend=backend, device=device, precision=precision, batch_sizes=list(batch_sizes),
                  artifact=file_name, sha256=file_sha256(path) if path.is_file() else None, date=_now())


def record_verify(report, run_dir: str | Path) -> Path:
    """Keep ``report``'s verdicts (infer/verify/report.py) with the artifacts they judged."""
    run_dir = Path(run_dir)
    # A backend's own rows only: not --against another file's, nor the stored reference's second look;
    # nor a row that compared no case, which judged nothing to keep.
    # A reduced row the user named is kept as its verdict (NOT USABLE), not verify's exit status (FAIL).
    rows = {v.label: _verdict_row(run_dir, v.as_verdict(), v.backend, v.device, v.precision, v.batch_sizes)
            for v in report.rows if v.backend in registry.list_backends() and v.against != "stored reference"
            and getattr(v, "no_case", None) is None}
    return _write(run_dir / VERIFY_RECORD_FILE, rows)


SERVED_RECORD_FILE = "served.json"


def record_served(report, run_dir: str | Path) -> Path:
    """Keep the verdicts of served models (`ptx verify URL` against this run) beside the run's own: by
    endpoint URL, in the one stored form (verdict.stored) with what it was held to, its cases, the kinds of
    difference named and when; merged over earlier ones."""
    from ptx.contract.verdict import stored

    path = Path(run_dir) / SERVED_RECORD_FILE
    found = {r.backend.partition(" ")[2]: stored(r.as_verdict(), against=r.against, cases=r.cases,
                                                 max_abs=r.max_abs if r.outputs else None, kinds=r.kinds,
                                                 error=r.error, date=_now())
             for r in report.rows if r.backend.startswith("served ")}
    doc = read_any(path)
    doc = {"format": FORMAT, "endpoints": {**doc.get("endpoints", {}), **found}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def record_export_judgement(result, run_dir: str | Path) -> Path | None:
    """Keep the verdict export gave a reduced-precision artifact (an ExportResult judged by verify's
    judge), in the form verify keeps its own, so predict and serve can warn before anyone runs `ptx verify`."""
    if result.judgement is None:
        return None
    run_dir = Path(run_dir)
    backend, device, precision = next((b.name, d, p) for b, d, p in registry.variants([result.judged_by]))
    row = _verdict_row(run_dir, result.judgement, backend, device, precision, [])
    return _write(run_dir / VERIFY_RECORD_FILE, {result.judged_by: row})


def failed_here(run_dir: str | Path, label: str, artifact: str | Path) -> str | None:
    """The status (NOT USABLE or FAIL) this machine's record gives ``label`` for the file at
    ``artifact`` as it is now (same SHA-256); None when it passed or nothing was recorded."""
    row = _read(Path(run_dir) / VERIFY_RECORD_FILE).get("rows", {}).get(label, {})
    status = row.get("status")
    if status in (None, "PASS") or not Path(artifact).is_file() or row.get("sha256") != file_sha256(artifact):
        return None
    return str(status)


def failed_at(run_dir: str | Path, precision: str) -> dict[str, str]:
    """Label -> status (NOT USABLE or FAIL) of each ``precision`` row this machine's verify record
    failed, on the files as they are now."""
    return {label: str(row["status"]) for label, row in _judged_as_now(run_dir).items()
            if row.get("precision") == precision and row.get("status") != "PASS"}


def recorded_statuses(target, labels) -> dict[str, str]:
    """Label -> the verdict kept for the file each of ``labels`` reads of ``target`` (a Target) as it
    is now: a run's record on this machine (verify.json, or export's judgement there), else the
    verdict export wrote in the file for that label's runtime (ptx.verdict; a model file written
    before it: ptx.judgement, "NOT USABLE: ..."). A label with none is left out: nothing recorded a
    verdict for it."""
    from ptx.contract.verdict import recorded_verdicts
    from ptx.errors import PtxError

    from ..formats.model_files import read_model_file

    found = {}
    for variant in target.variants(labels) if labels else []:
        if variant.label not in labels:
            continue
        try:
            path = target.file_for(variant)
        except PtxError:
            continue
        row = _read(path.parent / VERIFY_RECORD_FILE).get("rows", {}).get(variant.label, {})
        if row.get("status") and row.get("sha256") == file_sha256(path):
            found[variant.label] = str(row["status"])
            continue
        if path.name == CHECKPOINT_FILE:  # a run's eager reads its checkpoint, which is no model file and records no verdict
            continue
        metadata = read_model_file(path, digest=False).metadata
        verdict = recorded_verdicts(metadata).get(variant.label)  # export's, for the runtime that reads it
        carried = metadata.get("judgement") if not target.is_run else None  # a file written before ptx.verdict
        if verdict is not None:
            found[variant.label] = verdict.status
        elif carried:
            found[variant.label] = carried.partition(":")[0]
    return found


def record_bench(rows, run_dir: str | Path) -> Path:
    """Keep images/s per ptx row (BenchRow, bare peers left out) and batch size."""
    run_dir = Path(run_dir)
    now = _now()
    found: dict[str, dict] = {}
    for r in rows:
        if r.peer_of is None:
            found.setdefault(r.runner, {"images_per_s": {}, "date": now})["images_per_s"][str(r.batch)] = r.images_per_s
    return _write(run_dir / BENCH_RECORD_FILE, found)


def verified(run_dir: str | Path) -> dict[str, dict]:
    """Label -> verdict row, for rows that PASSed on this machine on artifacts unchanged since."""
    return {label: row for label, row in _judged_as_now(run_dir).items() if row.get("status") == "PASS"}


def _judged_as_now(run_dir: str | Path) -> dict[str, dict]:
    """Label -> this machine's verdict row (with a status) whose artifact is unchanged since (the same
    SHA-256): the record read once, each file hashed once, however many rows read it."""
    run_dir = Path(run_dir)
    digests: dict[Path, str | None] = {}
    out = {}
    for label, row in _read(run_dir / VERIFY_RECORD_FILE).get("rows", {}).items():
        path = run_dir / str(row.get("artifact"))
        if path not in digests:
            digests[path] = file_sha256(path) if path.is_file() else None
        if row.get("status") and digests[path] is not None and row.get("sha256") == digests[path]:
            out[label] = row
    return out


def throughput(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """Label -> {batch size: images/s} that `ptx bench` measured on this machine."""
    rows = _read(Path(run_dir) / BENCH_RECORD_FILE).get("rows", {})
    return {label: {int(b): float(v) for b, v in row.get("images_per_s", {}).items()} for label, row in rows.items()}


def has_verify_record(run_dir: str | Path) -> bool:
    return (Path(run_dir) / VERIFY_RECORD_FILE).is_file()
