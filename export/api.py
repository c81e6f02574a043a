"""checkpoint -> validated artifacts. Each file is written under a temporary name, validated, and
only then renamed into place: a failed or interrupted export keeps any earlier good file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ptx.atomic import atomic_path, ensure_writable_dir
from ptx.errors import CheckpointError, PtxError
from ptx.models import get
from ptx.trainers.checkpoint import build_model_from_checkpoint, file_sha256, load_checkpoint

from . import torchscript
from .metadata import artifact_metadata
from .onnx_export import DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, export_onnx
from .validate import ValidationReport, validate, validation_inputs

FORMATS = ("onnx", "torchscript")
FILENAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


@dataclass
class ExportResult:
    format: str
    path: Path
    size_bytes: int
    report: ValidationReport


def _onnx_runner(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    return lambda x: (names, session.run(None, {input_name: x})[0])


def _torchscript_runner(path, output_name: str):
    module, _ = torchscript.load(path)

    def run(x):
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        if not isinstance(out, torch.Tensor):  # TorchScript names no outputs: one tensor is the contract
            return [f"{type(out).__name__} of {len(out)}"], np.asarray(out[0])
        return [output_name], out.numpy()

    return run


def export_model(name: str, formats=FORMATS, *, checkpoint: str | Path | None = None, out: str | Path | None = None,
                 opset: int = DEFAULT_OPSET, exporter: str | None = None, atol: float | None = None,
                 log: Callable[[str], None] = print) -> list[ExportResult]:
    spec = get(name)
    exporter = exporter or spec.onnx_exporter or DEFAULT_EXPORTER
    if exporter not in EXPORTERS:
        raise PtxError(f"unknown exporter {exporter!r}; choose {' or '.join(EXPORTERS)}")
    ckpt_path = Path(checkpoint) if checkpoint else Path("runs") / name / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise CheckpointError(f"no checkpoint for {name} at {ckpt_path}: run `ptx train {name}` first")
    ckpt = load_checkpoint(ckpt_path, expected_model=name)
    spec, model = build_model_from_checkpoint(ckpt)
    out_dir = ensure_writable_dir(out or ckpt_path.parent)
    atol = spec.atol if atol is None else atol
    meta = artifact_metadata(ckpt, file_sha256(ckpt_path))
    contract = ckpt["contract"]
    # A real batch of 2: torch.export specializes batch sizes 0 and 1.
    example = torch.from_numpy(validation_inputs(ckpt, batches=(2,))[0])

    results = []
    for fmt in formats:
        final = out_dir / FILENAMES[fmt]
        with atomic_path(final) as tmp:
            if fmt == "onnx":
                export_onnx(model, example, tmp, contract, meta, opset=opset, exporter=exporter)
                report = validate(_onnx_runner(tmp), model, ckpt, "onnx", atol)
            else:
                module, method = torchscript.compile_module(model, example, prefer=spec.torchscript)
                torchscript.save(module, tmp, {**meta, "torchscript_method": method})
                report = validate(_torchscript_runner(tmp, contract["output_name"]), model, ckpt, "torchscript", atol)
            size = tmp.stat().st_size
        result = ExportResult(fmt, final, size, report)
        log(f"{fmt:<11} {final}  {size / 1024:,.1f} KiB  worst |diff| vs eager {report.worst_abs_diff:.2e} "
            f"({report.describe()}, atol {atol:g})")
        results.append(result)
    return results
