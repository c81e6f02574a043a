"""``ptx verify NAME --locate``: a tutorial model's reduced-precision rows triaged (infer/locate/triage.py)
on its ONNX export, and the ranking ``ptx export NAME --format onnx-int8 --keep-f32 auto`` is handed.

Each reduced row is set against the f32 run of the same runtime, so that what is measured is the
precision and not a runtime's other habits: ort-cpu-int8 (model.int8.onnx) against ort-cpu on
model.onnx; openvino-int8 and openvino-bf16 against OpenVINO at f32 on model.onnx. The case is a
batch of the real test samples verify judges labels on. Never torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.contract.comparison import JUDGING_BATCH
from ptx.contract.names import FULL_PRECISION
from ptx.contract.transforms import normalize, to_layout

from ..model.opening import artifact_path, load
from .graph import LocateGraph
from .sides import OpenVinoSide, OrtSide
from .triage import Triage, triage


def _sides(label: str, f32: LocateGraph, reduced: LocateGraph, feeds):
    """(reference side, reduced side) for a verify row's label, or a line saying why not."""
    if label == "ort-cpu-int8":
        return OrtSide(f32, feeds), OrtSide(reduced, feeds, label=label)
    if label == "openvino-int8":
        return OpenVinoSide(f32, feeds), OpenVinoSide(reduced, feeds, "int8", label)
    if label == "openvino-bf16":
        return OpenVinoSide(f32, feeds), OpenVinoSide(f32, feeds, "bf16", label)
    return f"{label}: not triaged here (tf32 and CUDA rows need ort-cuda's sides on a GPU)"


def real_feeds(model: str, root, run, notice: Callable[[str], None]) -> tuple[dict[str, np.ndarray], str]:
    """A batch of the real test samples verify judges labels on, as model.onnx takes them."""
    from ptx.trainers.data import judging_samples

    f32 = load(model, "ort-cpu", "cpu", FULL_PRECISION, root=root, run=run)
    contract = f32.contract
    raw, _, data = judging_samples(f32.info.get("dataset") or model, contract, JUDGING_BATCH, notice=notice)
    x = to_layout(normalize(raw, contract), contract)
    [name] = f32.signature.input_names if hasattr(f32.signature, "input_names") else [contract.input.name]
    return {name: np.ascontiguousarray(x)}, f"{len(raw)} real {data} test samples"


def triage_rows(model: str, rows: list[str], root=DEFAULT_RUNS_ROOT, run=None,
                notice: Callable[[str], None] = print) -> list[Triage | str]:
    """A Triage for each reduced-precision row label in ``rows``, or the line why it is not triaged."""
    if not rows:
        return []
    feeds, case = real_feeds(model, root, run, notice)
    done: list[Triage | str] = []
    f32_path = artifact_path(model, "ort-cpu", root, FULL_PRECISION, run)
    with LocateGraph.open(f32_path) as f32:
        for label in rows:
            int8 = label.endswith("-int8")
            reduced = LocateGraph.open(artifact_path(model, "ort-cpu", root, "int8", run)) if int8 else f32
            try:
                sides = _sides(label, f32, reduced, feeds)
                done.append(sides if isinstance(sides, str) else
                            triage(f32, reduced, *sides, row=label, case=case, progress=notice))
            finally:
                if reduced is not f32:
                    reduced.close()
    return done


def rank_int8(f32_path: Path, int8_path: Path, feeds: Mapping[str, np.ndarray]) -> list[tuple[str, float]]:
    """(node, born error) of the int8 file's reduced nodes that add error, worst first: what
    ``ptx export --keep-f32 auto`` keeps in f32 next (handed to export by the CLI: export never
    imports infer)."""
    with LocateGraph.open(f32_path) as f32, LocateGraph.open(int8_path) as int8:
        found = triage(f32, int8, OrtSide(f32, feeds), OrtSide(int8, feeds, label="ort-cpu-int8"),
                       row="ort-cpu-int8", case="calibration samples")
    return [(b.node, b.born) for b in found.blames if b.quantized and b.born > 0]
