"""``ptx verify FILE.onnx --locate [--repro DIR]``: after a model file's verify, trace the row that
disagrees on the case it disagrees most, and say where the difference is born.

The row's backend is one side (ort-cuda, openvino and its bf16 row, onnx.reference; ``--against``
an ONNX file of the same graph, matched tensor by name; ``--against`` a TorchScript file, module by
module in locate_torchscript.py), the file's reference (ort-cpu) the other. Only the TorchScript
path imports torch.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from ptx.errors import PtxError

from ..formats.model_files import ONNX, read_model_file
from .graph import LocateGraph
from .origin import Located, NothingToLocate, locate
from .repro import check_repro_dir, write_repro
from .sweep import Side
from .triage import Triage


def check_locatable(path: str | Path, repro: str | Path | None = None) -> None:
    """Refuse, before verify runs, what --locate cannot trace: a file that is no ONNX graph, a
    --repro folder that holds files already."""
    path = Path(path)
    if read_model_file(path).kind != ONNX:
        raise PtxError(f"--locate traces an ONNX graph; {path.name} is not one: export it to ONNX (`ptx export "
                       "--module`) and give the TorchScript file as --against")
    if repro is not None:
        check_repro_dir(repro)


def reduced_pair(report, against: str | Path | None):
    """The --against row of a reduced pair (an int8 file against its f32 source, either way round:
    verify judges it by the int8 rule), whatever its verdict: where a pair passes its rule, the user
    who asks --locate still asks where its error is born. None where there is none."""
    return next((r for r in report.rows if r.of_file(against) and r.precision != "f32" and not r.error and r.outputs),
                None)


def _row_to_locate(report, against: str | Path | None = None):
    """The failed row to trace: the --against file's row where it failed (what the user asked
    about), else the first that compared values against the file's reference; where none failed, a
    third opinion that departs alone (its origin is a note); where no f32 row departs, the --against
    row of a reduced pair (reduced_pair). A runtime's reduced row (ort-cpu-int8, openvino-bf16) is
    triaged (locate/triage_run.py), not traced."""
    failed = [r for r in report.failed if r.precision == "f32"] or \
        [r for r in report.rows if r.status == "DIFFERS" and r.precision == "f32"]
    if not failed:
        return reduced_pair(report, against)
    row = next((r for r in sorted(failed, key=lambda r: not r.of_file(against)) if r.traceable), None)
    if row is not None:
        return row
    row = next((r for r in failed if r.error or r.disagreeing), None)
    if row is None:
        raise PtxError("--locate traces two sides of one graph; what disagrees here is a sample alone against the "
                       "same sample inside a batch (the 'itself, batch of N' rows): the model's answer depends on its "
                       "batch-mates, as a normalisation over the batch does")
    why = row.error if row.error else "it was compared with the stored reference tensors, which keep no intermediates"
    raise PtxError(f"--locate: the row that disagrees ({row.backend}) cannot be traced: {why}; give --backends or "
                   "--against to name one that ran")


def locate_report(report, *, against: str | Path | None = None, atol=(), rtol=(), repro: str | Path | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> Located | None:
    """Trace the first disagreeing row of ``report`` (infer/verify/report.py's Report of a file); None where all agree."""
    from ..verify.comparator import Tolerances

    path = Path(report.path)
    check_locatable(path, repro)
    row = _row_to_locate(report, against)
    if row is None:
        return None
    case = report.fed[row.worst_case if row.worst_case is not None else 0]
    tolerances = Tolerances.parse(atol, rtol, report.signature.output_names)
    tolerance_of = lambda name, dtype: tolerances.of(name, dtype, row.device)  # noqa: E731
    tolerance_args = Tolerances.options(atol, rtol)
    other_file = Path(against) if row.of_file(against) else None
    paired = row.precision != "f32" and other_file is not None  # a reduced pair: its f32 file is the reference
    if paired and read_model_file(path).precision != "f32":
        path, other_file = other_file, path
    with LocateGraph.open(path) as graph, ExitStack() as opened:
        # the row's own reference label: the reference's row is in the table only where --backends named it
        reference = Side(graph, case.feeds, "ort-cpu", None if paired else row.against)
        if other_file is not None and read_model_file(other_file).kind != ONNX:
            from .torchscript import locate_torchscript

            located, write_against = locate_torchscript(graph, reference, other_file, tolerance_of, case, row.backend,
                                                        progress)
            if repro is not None:
                located.repro = write_repro(Path(repro), located, graph, tolerance_args=tolerance_args,
                                            write_against=write_against)
            return located
        if other_file is not None:
            other_graph = opened.enter_context(LocateGraph.open(other_file))
            # a reduced pair's reduced file, whichever was given first, by its name and runtime (as triaged)
            other = Side(other_graph, case.feeds, "ort-cpu-int8", f"{other_file.name} (ort-cpu-int8)") if paired \
                else Side(other_graph, case.feeds, "ort-cpu", row.backend)
        else:
            other_graph = None
            other = Side(graph, case.feeds, row.label)  # one that cannot be asked refuses in a line
        try:
            located = locate(graph, reference, other, tolerance_of, case.label, other_graph, progress)
        except NothingToLocate as exc:
            raise NothingToLocate(f"{exc} ({row.label} on {case.label})") from None
        if paired:  # the pair's triage is read from the same sweep, not swept again
            located.triage = Triage.of(located.values["sweep"], row.label, case.label, located.keep)
        if repro is not None:
            backends = [] if other_file is not None or row.backend == "onnx.reference" else [row.label]
            # a third opinion's departure is a note unless --strict: the repro's command asks for it
            strict = ["--strict"] if row.backend == "onnx.reference" else []
            located.repro = write_repro(Path(repro), located, graph, other_graph=other_graph, backends=backends,
                                        tolerance_args=[*tolerance_args, *strict])
        return located

