"""checkpoint -> validated artifacts. Each file is written under a temporary name, validated
through the Predictor that will serve it, and only then renamed into place: a failed or
interrupted export keeps any earlier good file.

Export comes before infer in ptx's flow, so it does not import the Predictor classes: the caller
hands ``open_predictor(path, backend_name)`` in (the CLI passes ``ptx.infer.open_artifact``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ptx.atomic import atomic_path, ensure_writable_dir
from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FILE, DEFAULT_OPSET, DEFAULT_RUNS_ROOT, Tolerance
from ptx.contract.agreement import check_tolerance
from ptx.errors import CheckpointError, PtxError
from ptx.models import get
from ptx.trainers.checkpoint import build_model_from_checkpoint, file_sha256, load_checkpoint

from . import formats
from .formats.onnx import DEFAULT_EXPORTER, Exporter
from .metadata import artifact_strings
from .validate import ServingPredictor, ValidationReport, validate, validation_inputs

OpenPredictor = Callable[[Path, str, str], ServingPredictor]  # (path, backend, device)


@dataclass
class ExportResult:
    format: str
    path: Path
    size_bytes: int
    report: ValidationReport


def _guard_foreign_artifact(final: Path, model: str, open_predictor: OpenPredictor, backend: str, device: str,
                            force: bool) -> None:
    """Refuse to replace another model's artifact (``--out runs/convnet`` for lstm)."""
    if force or not final.is_file():
        return
    try:
        other = open_predictor(final, backend, device).contract.model
    except PtxError:
        return  # unreadable or foreign: nothing worth keeping under that name
    if other != model:
        raise PtxError(f"{final} holds {other}'s export, not {model}'s: pass another --out folder, "
                       "or --force to replace it")


def export_model(name: str, formats_: Sequence[str] | None = None, *, open_predictor: OpenPredictor,
                 checkpoint: str | Path | None = None, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                 exporter: str | None = None, atol: float | None = None, force: bool = False,
                 device: str = "cpu", log: Callable[[str], None] = print) -> list[ExportResult]:
    """Export ``name``'s checkpoint to ``formats_`` (default: the formats ``--format all`` writes).
    ``device`` is the device a compiled format (pt2) is compiled for; the others are portable."""
    spec = get(name)
    chosen = [formats.get(f) for f in (formats_ or formats.default_formats())]
    exporter = Exporter(exporter or spec.onnx_exporter or DEFAULT_EXPORTER)
    per_format = {"onnx": dict(opset=opset, exporter=exporter), "torchscript": dict(method=spec.torchscript.value),
                  "pt2": dict(device=device)}
    for fmt in chosen:  # bad options and models a format cannot express are refused before any work
        why = fmt.unsupported(spec) if fmt.unsupported else None
        if why:
            raise PtxError(why)
        if fmt.check_options:
            fmt.check_options(**per_format.get(fmt.name, {}))
    ckpt_path = Path(checkpoint) if checkpoint else Path(DEFAULT_RUNS_ROOT) / name / CHECKPOINT_FILE
    if not ckpt_path.is_file():
        raise CheckpointError(f"no checkpoint for {name} at {ckpt_path}: run `ptx train {name}` first")
    ckpt = load_checkpoint(ckpt_path, expected_model=name)
    spec, model = build_model_from_checkpoint(ckpt)
    contract = ckpt["contract"]

    def tolerance_on(dev: str) -> Tolerance:
        # A format compiled for the GPU (pt2 --device cuda) is judged by the contract's CUDA tolerance.
        own = contract.tolerance(dev)
        return check_tolerance(Tolerance(own.atol if atol is None else atol, own.rtol))

    tolerance_on("cpu")  # a bad --atol is refused before any work
    out_dir = ensure_writable_dir(out or ckpt_path.parent)
    strings = artifact_strings(contract, ckpt, file_sha256(ckpt_path))
    # A real batch of 2: torch.export specializes batch sizes 0 and 1.
    example = torch.from_numpy(validation_inputs(ckpt, batches=(2,))[0])

    results = []
    for fmt in chosen:
        final = out_dir / ARTIFACT_FILES[fmt.name]
        options = per_format.get(fmt.name, {})
        on = options.get("device", "cpu")
        _guard_foreign_artifact(final, name, open_predictor, fmt.serving_backend, on, force)
        tolerance = tolerance_on(on)
        with atomic_path(final) as tmp:
            fmt.write(model, example, tmp, contract, strings, **options)
            report = validate(open_predictor(tmp, fmt.serving_backend, on), model, ckpt, fmt.name, tolerance)
            size = tmp.stat().st_size
        results.append(ExportResult(fmt.name, final, size, report))
        log(f"{fmt.name:<11} {final}  {size / 1024:,.1f} KiB  worst |diff| vs eager {report.worst_abs_diff:.2e} "
            f"({report.describe()}, atol {tolerance.atol:g}, rtol {tolerance.rtol:g})")
    return results
