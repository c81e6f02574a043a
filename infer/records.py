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
from ptx.contract import ARTIFACT_FILES
from ptx.contract.names import BENCH_RECORD_FILE, VERIFY_RECORD_FILE
from ptx.files import file_sha256

from . import backends as registry

FORMAT = "ptx-record/1"
# Distributions whose version changes what a backend computes or how fast.
RUNTIMES = ("ptx", "onnxruntime", "onnxruntime-gpu", "openvino", "torch")


def machine() -> dict:
    """This machine as far as a verdict or a timing depends on it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for name in RUNTIMES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": f"{platform.system()} {platform.machine()}",
            "versions": versions}


def artifact_of(backend: str, precision: str) -> str:
    """The file in a run folder that ``backend`` reads at ``precision``."""
    return ARTIFACT_FILES[registry.get(backend).artifact_for(precision)]


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


def _write(path: Path, rows: dict) -> None:
    """Rows merged over those already recorded on this machine (a verify of one backend keeps the
    verdicts of the others)."""
    doc = {"format": FORMAT, "machine": machine(), "rows": {**_read(path).get("rows", {}), **rows}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def record_verify(report, run_dir: str | Path) -> Path:
    """Keep ``report``'s verdicts (a VerifyReport) with the artifacts they judged."""
    run_dir = Path(run_dir)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    rows = {}
    for v in report.verdicts:
        file_name = artifact_of(v.backend, v.precision)
        path = run_dir / file_name
        rows[v.label] = {"backend": v.backend, "device": v.device, "precision": v.precision, "status": v.status,
                         "batch_sizes": v.batch_sizes, "artifact": file_name,
                         "sha256": file_sha256(path) if path.is_file() else None, "date": now}
    _write(run_dir / VERIFY_RECORD_FILE, rows)
    return run_dir / VERIFY_RECORD_FILE


def record_bench(rows, run_dir: str | Path) -> Path:
    """Keep images/s per ptx row (BenchRow, bare peers left out) and batch size."""
    run_dir = Path(run_dir)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    found: dict[str, dict] = {}
    for r in rows:
        if r.peer_of is None:
            found.setdefault(r.runner, {"images_per_s": {}, "date": now})["images_per_s"][str(r.batch)] = r.images_per_s
    _write(run_dir / BENCH_RECORD_FILE, found)
    return run_dir / BENCH_RECORD_FILE


def verified(run_dir: str | Path) -> dict[str, dict]:
    """Label -> verdict row, for rows that PASSed on this machine on artifacts unchanged since."""
    run_dir = Path(run_dir)
    out = {}
    for label, row in _read(run_dir / VERIFY_RECORD_FILE).get("rows", {}).items():
        path = run_dir / str(row.get("artifact"))
        if row.get("status") == "PASS" and path.is_file() and row.get("sha256") == file_sha256(path):
            out[label] = row
    return out


def throughput(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """Label -> {batch size: images/s} that `ptx bench` measured on this machine."""
    rows = _read(Path(run_dir) / BENCH_RECORD_FILE).get("rows", {})
    return {label: {int(b): float(v) for b, v in row.get("images_per_s", {}).items()} for label, row in rows.items()}


def has_verify_record(run_dir: str | Path) -> bool:
    return (Path(run_dir) / VERIFY_RECORD_FILE).is_file()
