"""The commands a verify table offers after a row that fails or is not usable: where it parts
(``--locate``), each printed so that it runs as typed."""
from __future__ import annotations

from ptx.contract.names import FULL_PRECISION

from ..model.opening import run_option
from ..model.target import Target, Variant
from ..runtime import backends as registry
from .comparator import Tolerances
from .report import STORED, Report


def offers(target: Target, report: Report, atol, rtol, triaged: bool) -> list[str]:
    """The command that says where each failing row parts, one line each: an ONNX row is traced on
    its file against ort-cpu (a run's ort-cpu against its TorchScript export, module by module); a
    reduced row by its triage (--locate after a run's table, or ``triaged`` already)."""
    given = "".join(f" {arg}" for arg in Tolerances.options(atol, rtol))
    found = []
    for row in report.failed + [r for r in report.rows if r.status == "NOT USABLE"]:
        if row.error or (row.disagreeing is None and not row.unusable) or row.against == STORED \
                or row.backend not in registry.list_backends():
            continue
        variant = Variant(registry.get(row.backend), row.device, row.precision)
        where = f"{target.name}{run_option(target.name, target.run_dir)}" if target.is_run else str(target.path)
        if row.precision != FULL_PRECISION:
            if not triaged:  # labels only where the model has them (a head); any other model's outputs depart
                found.append(f"where {row.label} {'loses labels' if report.head else 'departs'}: ptx verify {where} "
                             f"--backends {row.label} --locate (the nodes to keep in f32)")
        elif variant.backend.artifact == "onnx" and target.is_run:
            onnx_file = target.run_dir / "model.onnx"
            found.append(f"where ort-cpu parts from eager: ptx verify {onnx_file} --against "
                         f"{target.run_dir / 'model.torchscript.pt'}{given} --locate [--repro DIR]"
                          if row.backend == "ort-cpu" else
                          f"where {row.label} parts: ptx verify {onnx_file} --backends {row.label}{given} --locate "
                          "[--repro DIR] (against ort-cpu on the same file)")
    return found
