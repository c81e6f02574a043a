"""A tutorial model's checkpoint -> validated artifacts. This module prepares the checkpoint (its
real test samples as cases, the contract's tolerance, calibration, the judge of a reduced file) and
hands it to the one export driver (export/pipeline.py): each file is written by its format's one
writer under a temporary name, checked through the model that will serve it, and only then renamed
into place: a failed or interrupted export keeps any earlier good file.

Export comes before infer in ptx's flow, so it does not import infer's models: the caller hands
``open_predictor(path, backend, device, precision=...)`` in (the CLI passes ``ptx.infer.load``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ptx.atomic import ensure_writable_dir
from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FILE, DEFAULT_OPSET, DEFAULT_RUNS_ROOT, Tolerance, compare
from ptx.contract.comparison import check_tolerance
from ptx.contract.schema import signature_of_contract
from ptx.contract.transforms import normalize, picture_input, to_layout
from ptx.errors import CheckpointError, PtxError
from ptx.files import file_sha256
from ptx.models import get
from ptx.trainers.checkpoint import build_model_from_checkpoint, describe_run, load_checkpoint

from . import formats
from .formats.onnx import DEFAULT_EXPORTER, Exporter
from .pipeline import Plan, atomic_file, check_options, export_files, guard
from .metadata import artifact_strings
from .raw_input import RawPictureModel
from .bound import Bound
from .validate import (ExportResult, OpenModel, eager_accuracy, judge_reduced, open_file, tutorial_accuracy,
                       tutorial_cases, validation_inputs)

def calibration_inputs(ckpt: dict, name: str) -> np.ndarray:
    """The real training samples the checkpoint keeps for int8 calibration, in model layout."""
    contract = ckpt["contract"]
    calibration = ckpt.get("calibration")
    if not isinstance(calibration, dict) or not isinstance(calibration.get("x"), torch.Tensor) \
            or len(calibration["x"]) == 0:
        raise CheckpointError(f"the checkpoint of {name} holds no calibration samples (made by an older ptx): "
                              f"retrain with `ptx train {name}` to export int8")
    return to_layout(normalize(calibration["x"].numpy(), contract), contract)


def _other_model(model: str, open_predictor: OpenModel, fmt: formats.ExportFormat, device: str):
    """Why a file at an artifact's name is not ``model``'s to replace (``--out runs/convnet`` for lstm:
    export/pipeline.guard), or None: unreadable or foreign, nothing worth keeping under that name."""
    def foreign(final: Path) -> str | None:
        try:
            other = open_file(open_predictor, final, fmt, device).contract.model
        except PtxError:
            return None
        return f"{final} holds {other}'s export, not {model}'s: pass another --out folder" if other != model else None
    return foreign


def _check_raw_input(input_dtype: str, spec, chosen) -> bool:
    """--input uint8 is for picture models and the formats that can carry it; True when asked."""
    if input_dtype == "float32":
        return False
    if input_dtype != "uint8":
        raise PtxError(f"--input {input_dtype}: choose float32 (the model's own input) or uint8 (raw pictures)")
    if spec.contract().picture is None:
        raise PtxError(f"--input uint8 feeds raw pictures; {spec.name} takes {spec.contract().kind.value} input")
    refused = [f.name for f in chosen if not f.raw_pictures]
    if refused:
        takes = ", ".join(name for name in formats.list_formats() if formats.get(name).raw_pictures)
        raise PtxError(f"--input uint8: {', '.join(refused)} cannot take raw pictures; give --format {takes}")
    return True


def _checkpoint_for(name: str, checkpoint: str | Path | None, out: str | Path | None) -> Path:
    """The checkpoint to export: the one named, else the run in ``out`` (exporting into a run
    folder exports that run), else the default run folder's."""
    if checkpoint:
        return Path(checkpoint)
    if out and (Path(out) / CHECKPOINT_FILE).is_file():
        return Path(out) / CHECKPOINT_FILE
    return Path(DEFAULT_RUNS_ROOT) / name / CHECKPOINT_FILE


def export_model(name: str, formats_: Sequence[str] | None = None, *, open_predictor: OpenModel,
                 checkpoint: str | Path | None = None, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                 exporter: str | None = None, atol: float | None = None, force: bool = False,
                 device: str = "cpu", input_dtype: str = "float32", keep_f32=None, rank=None,
                 max_drop: float | None = None, log: Callable[[str], None] = print) -> list[ExportResult]:
    """Export ``name``'s checkpoint to ``formats_`` (default: the two portable files, onnx and torchscript).

    The checkpoint is ``checkpoint``, else the one in ``out`` when that folder holds one (a run
    ``ptx train --out`` wrote), else runs/NAME/checkpoint.pt; the log names it. ``device`` is the
    device a compiled format (pt2) is compiled for; the others are portable. ``keep_f32``: onnx-int8's
    nodes left in f32, or ``auto`` with ``rank`` (export/keep_f32.py; the CLI hands infer's triage in).
    ``max_drop``: the accuracy points an int8 format may lose against eager on the real test samples
    verify judges on (export/bound.py); the file keeps the fewest nodes in f32 that hold it."""
    spec = get(name)
    chosen = [formats.get(f) for f in (formats_ or formats.default_formats())]
    exporter = Exporter(exporter or spec.onnx_exporter or DEFAULT_EXPORTER)
    onnx_options = dict(opset=opset, exporter=exporter)
    per_format = {"onnx": onnx_options, "onnx-int8": dict(onnx_options, log=log),
                  "openvino-int8": dict(onnx_options, log=log),
                  "torchscript": dict(mode=spec.torchscript.value, fallback=True), "pt2": dict(device=device)}
    check_options(chosen, per_format, spec=spec, device=device, keep_f32=keep_f32, rank=rank, max_drop=max_drop)
    raw = _check_raw_input(input_dtype, spec, chosen)
    ckpt_path = _checkpoint_for(name, checkpoint, out)
    if not ckpt_path.is_file():
        raise CheckpointError(f"no checkpoint for {name} at {ckpt_path}: run `ptx train {name}` first")
    ckpt = load_checkpoint(ckpt_path, expected_model=name)
    log(f"checkpoint: {ckpt_path} ({describe_run(ckpt, ckpt_path)})")
    spec, model = build_model_from_checkpoint(ckpt)
    contract = ckpt["contract"]

    def tolerance_on(dev: str) -> Tolerance:
        # A format compiled for the GPU (pt2 --device cuda) is judged by the contract's CUDA tolerance.
        own = contract.tolerance(dev)
        return check_tolerance(Tolerance(own.atol if atol is None else atol, own.rtol))

    tolerance_on("cpu")  # a bad --atol is refused before any work
    out_dir = ensure_writable_dir(out or ckpt_path.parent)
    graph_input = picture_input(contract) if raw else None
    strings = artifact_strings(contract, ckpt, file_sha256(ckpt_path), raw_input=graph_input)
    signature = signature_of_contract(contract, graph_input)
    # What is exported: the model, or behind its own preprocessing for raw pictures; its example a
    # real batch of 2 (torch.export specializes batch sizes 0 and 1).
    written = RawPictureModel(model, contract).eval() if raw else model
    example = torch.from_numpy(np.ascontiguousarray(ckpt["samples"]["x"].numpy()[:2]) if raw
                               else validation_inputs(ckpt, batches=(2,))[0])
    cases = tutorial_cases(written, contract, signature, validation_inputs(ckpt), raw)

    def cases_of(fmt) -> tuple[list, list]:
        if not fmt.calibrated:
            return cases, cases
        # Not judged by the f32 tolerance: it must run every validation shape, and its calibration batch.
        checked = cases + tutorial_cases(written, contract, signature, [calibration_inputs(ckpt, name)])
        return checked, checked

    eager: dict = {}  # the judging samples and eager's answers on them, computed once for every file judged

    def options_of(fmt) -> dict:
        options = dict(per_format.get(fmt.name, {}))
        if fmt.calibrated:
            options["calibration"] = [{contract.input.name: calibration_inputs(ckpt, name)}]

            def judge(path: Path, fmt=fmt):  # verify's judge, samples and batches, as below
                return judge_reduced(open_file(open_predictor, path, fmt), model, ckpt, notice=lambda _: None,
                                     eager=eager)[0]

            # The judge goes in on every export: the fastest way to quantize is kept only if it passes.
            options.update(judge=judge, **({"keep_f32": keep_f32, "rank": rank} if fmt.name == "onnx-int8" else {}))
            if max_drop is not None:
                options["bound"] = _accuracy_bound(max_drop, open_predictor, fmt, model, ckpt, eager, log)
        return options

    @contextmanager
    def place(fmt):
        final = out_dir / ARTIFACT_FILES[fmt.name]
        guard(final, force, _other_model(name, open_predictor, fmt, per_format.get(fmt.name, {}).get("device", "cpu")))
        with atomic_file(final) as paths:
            yield paths

    def describe(result: ExportResult, tolerance: Tolerance) -> str:
        size = f"{result.size_bytes / 1024:,.1f} KiB"
        if result.judged:
            return (f"{result.format:<11} {result.path}  {size}  worst |diff| vs eager {result.worst.max_abs:.2e} "
                    f"({result.checked()}, atol {tolerance.atol:g}, rtol {tolerance.rtol:g})")
        return f"{result.format:<11} {result.path}  {size}  runs every validation shape ({result.checked()})"

    plan = Plan(name, written, (example,), signature, strings, cases_of, lambda _, on: tolerance_on(on), options_of,
                lambda fmt, path, backend, _: _evidence(fmt, path, backend, open_predictor, model, ckpt, eager,
                                                        max_drop, log),
                describe, "(predict and serve warn; serve model.onnx)",
                compare=lambda sig, got, want, tol: compare(got, want, contract, tolerance=tol))
    return export_files(plan, chosen, open_predictor, place, log)


def _evidence(fmt, path: Path, backend: str, open_predictor: OpenModel, model, ckpt: dict, eager: dict,
              max_drop: float | None, log) -> list:
    """A reduced file's evidence through ``backend``: by labels and accuracy on the real test samples
    verify draws, and by --max-drop where given. DataError where the run's data is not here."""
    def judged(bound):
        judgement, data = judge_reduced(open_file(open_predictor, path, fmt, backend=backend), model, ckpt,
                                        notice=log, eager=eager, max_drop=bound)
        said = (f"{judgement.samples:,} real {data} test samples as `ptx verify` draws them: "
                f"{judgement.describe()}")  # what the judge ran on, as the line and the record say it
        return replace(judgement, measured=said)
    return [judged(None)] + ([judged(max_drop)] if max_drop is not None else [])


def _accuracy_bound(max_drop: float, open_predictor: OpenModel, fmt, model, ckpt: dict, eager: dict, log) -> Bound:
    """--max-drop on a tutorial model: accuracy on the real test samples verify judges on, in points,
    counted from eager's; a candidate opened as its format's serving backend opens it, at the file's
    own precision (NNCF's f32 reference too)."""
    reference = eager_accuracy(model, ckpt, eager, notice=log)

    def measure(path: Path, indices=None):
        candidate = open_predictor(path, fmt.serving_backend, "cpu")
        try:
            return tutorial_accuracy(candidate, model, ckpt, eager, indices)
        finally:
            candidate.close()

    samples = len(eager["truth"])
    return Bound(max_drop, f"accuracy on {samples:,} real {eager['data']} test samples", reference, measure,
                 items=samples, points=100.0, unit=" accuracy points")
