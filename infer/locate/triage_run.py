"""``ptx verify NAME|FILE --locate``: a model's reduced-precision rows triaged (infer/locate/triage.py)
on its ONNX file, and the ranking ``ptx export ... --format onnx-int8 --keep-f32 auto`` is handed.

Each reduced row is triaged on the file it ran (Target.file_for its variant) and set against the f32
run of the same runtime, so that what is measured is the precision and not a runtime's other habits:
ort-cpu-int8 (model.int8.onnx, or a file's .int8.onnx twin) against ort-cpu on the f32 file;
openvino-int8 (model.openvino-int8.onnx, NNCF's) against OpenVINO at f32; openvino-bf16 against
OpenVINO at f32 on the f32 file. An ``--against`` row that pairs an int8 file with its f32 source,
either way round, is triaged on those two files through ONNX Runtime, which ran it. The case is a
batch of the real test samples verify judges labels on where the model's head names a dataset, else
the case verify fed. Never torch.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ptx.contract.accuracy_rule import JUDGING_BATCH
from ptx.contract.transforms import normalize, to_layout
from ptx.errors import PtxError

from ..model.target import Target, Variant
from ..runtime import backends as registry
from .graph import LocateGraph
from .sweep import Side
from .triage import Triage, triage

TRIAGED = ("ort-cpu-int8", "openvino-int8", "openvino-bf16")  # each against its own runtime at f32


def real_feeds(target: Target, notice: Callable[[str], None]) -> tuple[dict[str, np.ndarray], str] | None:
    """A batch of the real test samples verify judges labels on, as the ONNX file takes them; None
    where the model has no head naming a dataset."""
    from ptx.trainers.data import judging_samples

    # the target at its own precision: an int8 file given by its path opens only at int8
    f32 = target.open(Variant(registry.get("ort-cpu"), "cpu", target.precision))
    dataset = f32.info.get("dataset") if f32.head is not None else None
    if f32.head is None or not (dataset or target.is_run):
        return None
    contract = f32.contract
    raw, _, data = judging_samples(dataset or target.name, contract, JUDGING_BATCH, notice=notice)
    x = to_layout(normalize(raw, contract), contract)
    return {f32.signature.input_names[0]: np.ascontiguousarray(x)}, f"{len(raw)} real {data} test samples"


def against_files(target: Target, against: Path) -> tuple[Path, Path]:
    """(the f32 file, the reduced file) of an ``--against`` row: the int8 one of the two is reduced,
    whichever was given first (verify's table judges the pair at its reduced precision)."""
    return (against, target.path) if target.precision != "f32" else (target.path, against)


def _files(target: Target, label: str, against: Path | None) -> tuple[Path, Path, str] | str:
    """(f32 file, the file the row ran, its runtime's label) of a verify row, or why it is not triaged."""
    if against is not None and label.startswith(f"{against.name} ("):
        return (*against_files(target, against), "ort-cpu-int8")
    variant = next((v for v in target.variants() if v.label == label), None)
    if variant is None:
        return f"{label}: not triaged: no backend runs {target.name} as {label}"
    try:
        return target.file_for(Variant(variant.backend, variant.device)), target.file_for(variant), label
    except PtxError as exc:
        return f"{label}: not triaged: {exc}"


def triage_rows(target: Target, rows: list[str], fed: tuple[dict, str] | None = None,
                notice: Callable[[str], None] = print, against: str | Path | None = None) -> list[Triage | str]:
    """A Triage for each reduced-precision row label in ``rows`` of ``target`` (a run or an ONNX
    file), on the file that row ran, or the line why it is not triaged; ``fed``: (feeds, what they
    are) where the model has no real samples; ``against``: verify's --against file (its row's label
    is "NAME (runtime)")."""
    if not rows:
        return []
    if not target.is_run and target.kind != "onnx":
        return [f"{label}: not triaged: the triage reads ONNX graphs, and {target.name} is none" for label in rows]
    feeds, case = real_feeds(target, notice) or fed
    against = Path(against) if against is not None else None
    done: list[Triage | str] = []
    for label in rows:
        files = _files(target, label, against)
        if isinstance(files, str):
            done.append(files)
            continue
        f32_path, reduced_path, runtime = files
        if runtime not in TRIAGED:
            done.append(f"{runtime}: not triaged here (tf32 and CUDA rows need ort-cuda's sides on a GPU)")
            continue
        with LocateGraph.open(f32_path) as f32, \
                (LocateGraph.open(reduced_path) if reduced_path != f32_path else nullcontext(f32)) as reduced:
            sides = Side(f32, feeds, runtime.rpartition("-")[0]), Side(reduced, feeds, runtime)
            done.append(triage(f32, reduced, *sides, row=label, case=case, progress=notice))
    return done


def rank_int8(f32_path: Path, int8_path: Path, feeds: Mapping[str, np.ndarray]) -> list[tuple[str, float]]:
    """(node, born error) of the int8 file's reduced nodes that add error, worst first: what
    ``ptx export --keep-f32 auto`` keeps in f32 next (handed to export by the CLI: export never
    imports infer)."""
    with LocateGraph.open(f32_path) as f32, LocateGraph.open(int8_path) as int8:
        found = triage(f32, int8, Side(f32, feeds), Side(int8, feeds, "ort-cpu-int8"),
                       row="ort-cpu-int8", case="calibration samples", measure=False)
    return [(b.node, b.born) for b in found.blames if b.quantized and b.born > 0]
