"""The commands a verify table offers after a row that fails or is not usable: where it parts
(``--locate``), each printed so that it runs as typed."""
from __future__ import annotations

from pathlib import Path

from ptx.contract.names import FULL_PRECISION

from ..model.opening import run_option, sha256_now
from ..model.target import Target
from ..runtime import backends as registry
from .comparator import Tolerances
from .report import STORED, Report
from .report_table import REPRO_NOTE


def offers(target: Target, report: Report, atol, rtol, triaged: bool) -> list[str]:
    """The command that says where each failing row parts, one line each, "where ... (what it adds):
    COMMAND", the command last so that it runs as printed: an ONNX row is traced on its file against
    ort-cpu (a run's ort-cpu against its TorchScript export, module by module); a reduced row by its
    triage (--locate after a run's table, or ``triaged`` already); an --against row that pairs an int8
    file with its f32 source by the triage of the two files."""
    given = "".join(f" {arg}" for arg in Tolerances.options(atol, rtol))
    found = []
    where = f"{target.name}{run_option(target.name, target.run_dir)}" if target.is_run else str(target.path)
    # the inputs that made the verdict go with a triage's command (it triages on the case verify fed)
    fed = "".join(f" {g}" for g in report.given if not g.startswith("--backends "))
    for row in report.failed + [r for r in report.rows if r.status == "NOT USABLE"]:
        if row.error or (row.disagreeing is None and not row.unusable) or row.against == STORED:
            continue
        if row.disagreeing is not None and row.disagreeing.other_shape:
            continue  # another model, or another head: no node of the graph is to blame
        loses = "loses labels" if report.head else "departs"
        ours = row.backend in registry.list_backends()
        paired = report.against is not None and row.backend.startswith(f"{Path(report.against).name} (")
        if row.precision != FULL_PRECISION and (target.is_run or target.precision == FULL_PRECISION or paired):
            pick = f"--backends {row.label}" if ours else f"--against {report.against}" if paired else None
            if pick and not triaged:
                found.append(f"where {row.label} {loses} (the nodes to keep in f32): ptx verify {where} {pick}{fed} "
                              "--locate")
        elif row.precision != FULL_PRECISION:
            # an int8 file verified by its path: its rows are judged against the f32 file it was made from,
            # and the pair's triage traces where the two part (its rows against its own runtime part nowhere)
            source = f32_source(target)
            if source:
                found.append(f"where {target.path.name} {loses} against {Path(source).name} (the nodes to keep in "
                              f"f32): ptx verify {where} --against {source}{fed} --locate")
        elif ours and registry.get(row.backend).artifact == "onnx" and target.is_run:
            onnx_file = target.run_dir / "model.onnx"
            found.append(f"where ort-cpu parts from eager{REPRO_NOTE}: ptx verify {onnx_file} --against "
                          f"{target.run_dir / 'model.torchscript.pt'}{given} --locate"
                          if row.backend == "ort-cpu" else
                          f"where {row.label} parts (against ort-cpu on the same file; {REPRO_NOTE[2:]}: "
                          f"ptx verify {onnx_file} --backends {row.label}{given} --locate")
    commands = [line.rsplit(": ptx ", 1)[-1] for line in found]
    return [line for k, line in enumerate(found) if commands[k] not in commands[:k]]  # each command offered once


def f32_source(target: Target) -> str | None:
    """The f32 model file an int8 file was made from, beside it: the file its metadata names (ptx.source) whose
    bytes are the ones it records (ptx.source_sha256); None where there is none (a module's factory made it, the
    file was moved alone, or a file of that name holds other bytes: another model, or the source since changed,
    which judging the int8 file by would misjudge it)."""
    metadata = target.found.metadata if target.found is not None else {}
    source, recorded = metadata.get("source"), metadata.get("source_sha256")
    path = target.path.with_name(source) if source and "/" not in source else None
    if path is None or not recorded or not path.is_file() or path.suffix != ".onnx":
        return None
    return str(path) if sha256_now(path) == recorded else None


def source_beside(target: Target) -> str | None:
    """The name the int8 file records as its source where a file of that name lies beside it and is not that
    source (``f32_source`` found none), else None: what a note says instead of holding rows to it."""
    source = target.found.metadata.get("source") if target.found is not None else None
    if not source or "/" in source or not target.path.with_name(source).is_file() or f32_source(target):
        return None
    return source
