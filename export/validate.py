"""Prove an exported artifact equals eager PyTorch before it is kept (optimum's
validate_model_outputs: names, then shapes, then values)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ptx.errors import ValidationError
from ptx.infer.preprocess import decisions, normalize, output_width, to_layout

VALIDATION_BATCHES = (1, 2, 7, 64)


@dataclass
class ValidationReport:
    worst_abs_diff: float
    batches: tuple[int, ...]


def validation_inputs(ckpt: dict, batches=VALIDATION_BATCHES) -> list[np.ndarray]:
    """Real test samples kept in the checkpoint, cycled up to the largest batch, in model layout."""
    contract = ckpt["contract"]
    raw = ckpt["samples"]["x"].numpy()
    needed = max(batches)
    raw = np.concatenate([raw] * (-(-needed // len(raw))))[:needed]
    samples = normalize(raw, contract)
    return [to_layout(samples[:b], contract) for b in batches]


def validate(run_artifact: Callable[[np.ndarray], tuple[list[str], np.ndarray]], model: torch.nn.Module,
             ckpt: dict, fmt: str, atol: float) -> ValidationReport:
    """``run_artifact(x)`` returns (output names, first output). Raises ValidationError on mismatch."""
    contract = ckpt["contract"]
    expected_width = output_width(contract)
    worst = 0.0
    inputs = validation_inputs(ckpt)
    for x in inputs:
        batch = x.shape[contract["batch_axis"]]
        names, got = run_artifact(x)
        if names != [contract["output_name"]]:
            raise ValidationError(f"{fmt}: output names {names} != [{contract['output_name']!r}]")
        if got.shape != (batch, expected_width):
            raise ValidationError(f"{fmt}: batch {batch}: output shape {got.shape} != {(batch, expected_width)}")
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        diff = float(np.max(np.abs(got - want)))
        if not np.isfinite(got).all() or diff > atol:
            raise ValidationError(f"{fmt}: batch {batch}: max |diff| {diff:.3g} exceeds atol {atol:g}")
        got_labels, want_labels = decisions(got, contract), decisions(want, contract)
        if got_labels is not None and not np.array_equal(got_labels, want_labels):
            n = int((got_labels != want_labels).sum())
            raise ValidationError(f"{fmt}: batch {batch}: predicted label differs from eager on {n} of {batch} samples")
        worst = max(worst, diff)
    return ValidationReport(worst, tuple(x.shape[contract["batch_axis"]] for x in inputs))
