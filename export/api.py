"""A tutorial model's checkpoint -> validated artifacts. This module prepares the checkpoint (its
real test samples as cases, the contract's tolerance, calibration, the judge of a reduced file) and
hands it to the one export driver (export/pipeline.py): each file is written by its format's one
writer under a temporary name, checked through the model that will serve it, and only then renamed
into place: a failed or interrupted export keeps any earlier good file.

Export sits on the runtime floor (infer's formats, runtime and model opening): each file is checked
through ``ptx.infer.load``, as ptx serves it (the floor's ``load_file``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ptx.atomic import ensure_writable_dir
from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FILE, DEFAULT_OPSET, DEFAULT_RUNS_ROOT, Tolerance
from ptx.contract import compare as compare_by_contract
from ptx.contract.comparison import check_tolerance
from ptx.contract.schema import signature_of_contract
from ptx.contract.transforms import normalize, picture_input, to_layout
from ptx.errors import CheckpointError, PtxError
from ptx.files import file_sha256
from ptx.models import get
from ptx.trainers.checkpoint import build_model_from_checkpoint, describe_run, load_checkpoint
from ptx.infer.model.records import record_export_judgement
from ptx.infer.model.target import load, load_file

from . import formats
from .formats.onnx import DEFAULT_EXPORTER, Exporter
from .pipeline import ExportSource, atomic_file, check_options, export_files, guard
from .metadata import artifact_strings
from .raw_input import RawPictureModel
from .bound import Bound
from .validate import (ExportResult, judge_reduced, tutorial_accuracy, tutorial_cases,
                       validation_inputs)

def calibration_inputs(ckpt: dict, name: str) -> np.ndarray:
    """The real training samples the checkpoint keeps for int8 calibration, in model layout."""
    contract = ckpt["contract"]
    calibration = ckpt.get("calibration")
    if not isinstance(calibration, dict) or not isinstance(calibration.get("x"), torch.Tensor) \
            or len(calibration["x"]) == 0:
        raise CheckpointError(f"the checkpoint of {name} holds no calibration samples (made by an older ptx): "
                              f"retrain with `ptx train {name}` to export int8")
    return to_layout(normalize(calibration["x"].numpy(), contract), contract)


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


def export_model(name: str, formats_: Sequence[str] | None = None, *,
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
    verify judges on (export/bound.py); the file keeps the fewest nodes in f32 that hold it. A reduced
    file's verdict on its own runtime is kept in the folder's verify.json too, as verify keeps its own,
    so that predict and serve warn on a NOT USABLE one before anyone runs `ptx verify`."""
    spec = get(name)
    chosen = [formats.get(f) for f in (formats_ or formats.default_formats())]
    exporter = Exporter(exporter or spec.onnx_exporter or DEFAULT_EXPORTER)
    onnx_options = dict(opset=opset, exporter=exporter)
    per_format = {"onnx": onnx_options, **{f: dict(onnx_options, log=log) for f in ("onnx-int8", "openvino-int8")},
                  "torchscript": dict(mode=spec.torchscript.value, fallback=True), "pt2": dict(device=device)}
    check_options(chosen, per_format, spec=spec, device=device, keep_f32=keep_f32, rank=rank, max_drop=max_drop)
    raw = _check_raw_input(input_dtype, spec, chosen)
    ckpt_path = _checkpoint_for(name, checkpoint, out)
    if not ckpt_path.is_file():
        raise CheckpointError(f"no checkpoint for {name} at {ckpt_path}: run `ptx train {name}` first")
    ckpt = load_checkpoint(ckpt_path, expected_model=name)
    log(f"checkpoint: {ckpt_path} ({describe_run(ckpt, ckpt_path)})")
    source = TutorialSource(name, ckpt, file_sha256(ckpt_path), per_format, raw=raw, atol=atol,
                            int8=dict(keep_f32=keep_f32, rank=rank), max_drop=max_drop, log=log)
    out_dir = ensure_writable_dir(out or ckpt_path.parent)
    results = export_files(source, chosen, lambda fmt: _place(fmt, name, out_dir, force, device), log)
    for result in results:  # kept as verify keeps its own: predict and serve warn on a NOT USABLE verdict at once
        record_export_judgement(result, out_dir)
    return results


class TutorialSource(ExportSource):
    """A tutorial model's checkpoint as the one driver writes it: the model (behind its own preprocessing
    for raw pictures, ``raw``), checked on the checkpoint's real test samples by the contract's head and
    tolerance (``atol``: the user's), a reduced file judged by labels and accuracy on the real test
    samples verify draws (and ``max_drop``'s bound), a calibrated format calibrated on the checkpoint's
    training samples (``int8``: onnx-int8's keep_f32 and rank)."""

    serve_instead = "(predict and serve warn; serve model.onnx)"

    def __init__(self, name: str, ckpt: dict, ckpt_sha256: str, per_format: dict[str, dict], *, raw: bool,
                 atol: float | None, int8: dict, max_drop: float | None, log: Callable[[str], None]):
        _, self.model = build_model_from_checkpoint(ckpt)
        self.ckpt, self.contract, self.atol, self.log = ckpt, ckpt["contract"], atol, log
        self.per_format, self.int8, self.max_drop = per_format, int8, max_drop
        self.tolerance_on("cpu")  # a bad --atol is refused before any work
        graph_input = picture_input(self.contract) if raw else None
        signature = signature_of_contract(self.contract, graph_input)
        # What is exported: the model, or behind its own preprocessing for raw pictures; its example a
        # real batch of 2 (torch.export specializes batch sizes 0 and 1).
        written = RawPictureModel(self.model, self.contract).eval() if raw else self.model
        example = torch.from_numpy(np.ascontiguousarray(ckpt["samples"]["x"].numpy()[:2]) if raw
                                   else validation_inputs(ckpt, batches=(2,))[0])
        super().__init__(name, written, (example,), signature,
                         artifact_strings(self.contract, ckpt, ckpt_sha256, raw_input=graph_input))
        self._cases = tutorial_cases(written, self.contract, signature, validation_inputs(ckpt), raw)
        self.eager: dict = {}  # the judging samples and eager's answers on them, computed once for every file judged

    def tolerance_on(self, device: str) -> Tolerance:
        # A format compiled for the GPU (pt2 --device cuda) is judged by the contract's CUDA tolerance.
        own = self.contract.tolerance(device)
        return check_tolerance(Tolerance(own.atol if self.atol is None else self.atol, own.rtol))

    def tolerance(self, sig, on: str) -> Tolerance:
        return self.tolerance_on(on)

    def compare(self, sig, got, want, tolerance: Tolerance):
        return compare_by_contract(got, want, self.contract, tolerance=tolerance)  # the head's: a decision flipped, or values

    def cases(self, fmt) -> list:
        # A calibrated format is not judged by the f32 tolerance: it must run every validation shape, and its
        # calibration batch.
        return self._cases + (tutorial_cases(self.subject, self.contract, self.signature,
                                             [calibration_inputs(self.ckpt, self.name)]) if fmt.calibrated else [])

    def options(self, fmt) -> dict:
        options = dict(self.per_format.get(fmt.name, {}))
        if fmt.calibrated:
            # The judge goes in on every export: the fastest way to quantize is kept only if it passes.
            options.update(calibration=[{self.contract.input.name: calibration_inputs(self.ckpt, self.name)}],
                           judge=lambda path, fmt=fmt: self.judged(fmt, path)[0])
            if fmt.name == "onnx-int8":
                options.update(self.int8)
            if self.max_drop is not None:
                options["bound"] = _accuracy_bound(self.max_drop, fmt, self.model, self.ckpt, self.eager, self.log)
        return options

    def judged(self, fmt, path: Path, backend: str | None = None, bound: float | None = None, notice=lambda _: None,
               opened=None):
        """(Evidence, the data's name): verify's judge, samples and batches, through ``backend`` (``opened``: the
        file as that runtime opened it already; else opened here, and closed once judged)."""
        if opened is not None:
            return judge_reduced(opened, self.model, self.ckpt, notice=notice, eager=self.eager, max_drop=bound)
        with load_file(path, backend or fmt.serving_backend, precision=fmt.precision) as here:
            return judge_reduced(here, self.model, self.ckpt, notice=notice, eager=self.eager, max_drop=bound)

    def evidence(self, fmt, path: Path, backend: str, answers, opened=None) -> list:
        # by labels and accuracy on the real test samples verify draws, and by --max-drop where given; the file
        # opened once on ``backend`` for both (the check's own opening where it hands it in); DataError where the
        # run's data is not here
        found = []
        with opened or load_file(path, backend, precision=fmt.precision) as on_runtime:
            for bound in (None, self.max_drop) if self.max_drop is not None else (None,):
                judgement, data = self.judged(fmt, path, backend, bound, notice=self.log, opened=on_runtime)
                said = f"{judgement.samples:,} real {data} test samples as `ptx verify` draws them: {judgement.describe()}"
                found.append(replace(judgement, measured=said))  # what the judge ran on, as the line and the record say it
        return found

    def describe(self, result: ExportResult, tolerance: Tolerance) -> str:
        if not result.judged:
            return f"runs every validation shape ({result.checked()})"
        return (f"worst |diff| vs eager {result.worst.max_abs:.2e} ({result.checked()}, atol {tolerance.atol:g}, "
                f"rtol {tolerance.rtol:g})")


def _place(fmt, name: str, out_dir: Path, force: bool, device: str):
    """Where ``fmt``'s file of tutorial model ``name`` goes (atomic_file), guarded: ``--out runs/convnet`` for
    lstm is refused (an unreadable file there: nothing worth keeping)."""
    def foreign(final: Path) -> str | None:
        try:
            with load_file(final, fmt.serving_backend, device if fmt.name == "pt2" else "cpu", fmt.precision) as there:
                other = there.contract.model
        except PtxError:
            return None
        return f"{final} holds {other}'s export, not {name}'s: pass another --out folder" if other != name else None

    guard(out_dir / ARTIFACT_FILES[fmt.name], force, foreign)
    return atomic_file(out_dir / ARTIFACT_FILES[fmt.name])


def _accuracy_bound(max_drop: float, fmt, model, ckpt: dict, eager: dict, log) -> Bound:
    """--max-drop on a tutorial model: accuracy on the real test samples verify judges on, in points,
    counted from eager's; a candidate opened as its format's serving backend opens it, at the file's
    own precision (NNCF's f32 reference too)."""
    reference = tutorial_accuracy(None, model, ckpt, eager, notice=log)[0]

    def measure(path: Path, indices=None):
        with load(path, fmt.serving_backend, "cpu") as candidate:
            return tutorial_accuracy(candidate, model, ckpt, eager, indices)

    samples = len(eager["truth"])
    return Bound(max_drop, f"accuracy on {samples:,} real {eager['data']} test samples", reference, measure,
                 items=samples, points=100.0, unit=" accuracy points")
