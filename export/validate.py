"""Prove an exported artifact equals eager PyTorch before it is kept (optimum's
validate_model_outputs: names, then shapes, then values)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ptx.errors import ValidationError
from ptx.infer.preprocess import decisions, expected_output_shape, normalize, to_layout

VALIDATION_BATCHES = (1, 2, 7, 64)


@dataclass
class ValidationReport:
    worst_abs_diff: float
    batches: tuple[int, ...]
    seq_lengths: tuple[int, ...] = ()

    def describe(self) -> str:
        seqs = f"; sequence lengths {', '.join(map(str, self.seq_lengths))}" if self.seq_lengths else ""
        return f"batches {', '.join(map(str, self.batches))}{seqs}"


def validation_inputs(ckpt: dict, batches=VALIDATION_BATCHES) -> list[np.ndarray]:
    """Real test samples kept in the checkpoint, cycled up to the largest batch, in model layout."""
    contract = ckpt["contract"]
    raw = ckpt["samples"]["x"].numpy()
    needed = max(batches)
    raw = np.concatenate([raw] * (-(-needed // len(raw))))[:needed]
    samples = normalize(raw, contract)
    inputs = [to_layout(samples[:b], contract) for b in batches]
    if "seq" in contract["shape"]:
        # A sequence length other than the export example's: proves the length stayed dynamic.
        # Padding at the end is token 0, which the models read as padding or as a real character.
        longer = np.pad(samples, [(0, 0), (0, 3)])
        inputs.append(to_layout(longer[:max(batches)], contract))
    return inputs


def validate(run_artifact: Callable[[np.ndarray], tuple[list[str], np.ndarray]], model: torch.nn.Module,
             ckpt: dict, fmt: str, atol: float) -> ValidationReport:
    """``run_artifact(x)`` returns (output names, first output). Raises ValidationError on mismatch."""
    contract = ckpt["contract"]
    worst = 0.0
    inputs = validation_inputs(ckpt)
    for x in inputs:
        batch = x.shape[contract["batch_axis"]]
        try:
            names, got = run_artifact(x)
        except Exception as exc:  # e.g. a dimension the exporter fixed that should have stayed dynamic
            raise ValidationError(f"{fmt}: input of shape {x.shape} does not run: "
                                  f"{' '.join(str(exc).split())[:200]}") from None
        if names != [contract["output_name"]]:
            raise ValidationError(f"{fmt}: output names {names} != [{contract['output_name']!r}]")
        if got.shape != expected_output_shape(contract, x):
            raise ValidationError(f"{fmt}: batch {batch}: output shape {got.shape} != {expected_output_shape(contract, x)}")
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
    seq_axis = contract["shape"].index("seq") if "seq" in contract["shape"] else None
    return ValidationReport(worst, tuple(sorted({x.shape[contract["batch_axis"]] for x in inputs})),
                            tuple(sorted({x.shape[seq_axis] for x in inputs})) if seq_axis is not None else ())
