"""Prove an exported artifact equals eager PyTorch before it is kept (optimum's
validate_model_outputs), through the model that will serve it and the one comparison (ptx.contract.comparison)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ptx.contract import Contract, Tolerance, compare
from ptx.contract.comparison import JUDGING_BATCH, OutputAgreement, ReducedJudgement, judge_reduced_outputs
from ptx.contract.transforms import batch_size, expected_output_shape, normalize, run_in_batches, to_layout
from ptx.errors import ValidationError
from ptx.trainers.data import judging_samples

VALIDATION_BATCHES = (1, 2, 7, 64)


class ServingPredictor(Protocol):
    """What export needs of the infer stage's Model: ``run`` fed by its ``head`` (``_outputs``)."""

    head: object

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _outputs(predictor: ServingPredictor, x: np.ndarray) -> np.ndarray:
    """A preprocessed batch -> its output (the head feeds an --input uint8 graph its pictures)."""
    return np.asarray(predictor.run(predictor.head.feeds(x))[predictor.head.output_name])


@dataclass
class ValidationReport:
    agreement: OutputAgreement
    batches: tuple[int, ...]
    seq_lengths: tuple[int, ...] = ()

    @property
    def worst_abs_diff(self) -> float:
        return self.agreement.max_abs

    def describe(self) -> str:
        seqs = f"; sequence lengths {', '.join(map(str, self.seq_lengths))}" if self.seq_lengths else ""
        return f"batches {', '.join(map(str, self.batches))}{seqs}"


def validation_inputs(ckpt: dict, batches=VALIDATION_BATCHES) -> list[np.ndarray]:
    """Real test samples kept in the checkpoint, cycled up to the largest batch, in model layout."""
    contract: Contract = ckpt["contract"]
    raw = ckpt["samples"]["x"].numpy()
    needed = max(batches)
    raw = np.concatenate([raw] * (-(-needed // len(raw))))[:needed]
    samples = normalize(raw, contract)
    inputs = [to_layout(samples[:b], contract) for b in batches]
    encoding = contract.encoding
    if encoding is not None:
        # A sequence length other than the export example's proves the length stayed dynamic. Pad
        # with the pad id, or, for a model without one, repeat real tokens (all rows stay one length).
        extra = np.full((len(samples), 3), encoding.pad_id) if encoding.pad_id is not None else samples[:, :3]
        inputs.append(to_layout(np.concatenate([samples, extra], axis=1)[:needed], contract))
    return inputs


def validate(predictor: ServingPredictor, model: torch.nn.Module, ckpt: dict, fmt: str,
             tolerance: Tolerance) -> ValidationReport:
    """Run the validation inputs through ``predictor`` and eager ``model``; ValidationError on any
    disagreement under the contract's rule."""
    return _validate(predictor, model, ckpt, fmt, validation_inputs(ckpt), tolerance)


def validate_reduced(predictor: ServingPredictor, model: torch.nn.Module, ckpt: dict, fmt: str,
                     calibration: np.ndarray | None) -> ValidationReport:
    """A reduced-precision artifact cannot meet the f32 atol: it must run every validation shape
    with finite outputs of the right shape. Its label agreement with eager on the checkpoint's
    real samples (test and calibration) is reported; the accuracy gate is ``ptx verify``'s, on
    1,000 real test samples (a few hundred here would judge a borderline model by one label)."""
    inputs = validation_inputs(ckpt) + ([calibration] if calibration is not None else [])
    return _validate(predictor, model, ckpt, fmt, inputs, None)


def _validate(predictor: ServingPredictor, model: torch.nn.Module, ckpt: dict, fmt: str, inputs: list[np.ndarray],
              tolerance: Tolerance | None) -> ValidationReport:
    """Each input through both; ``tolerance`` None: any difference passes (a reduced precision), and
    only shapes, finite values and the decisions are wanted."""
    contract: Contract = ckpt["contract"]
    agreement = OutputAgreement(contract.output.name, tolerance or Tolerance(1e30, 0.0))
    for x in inputs:
        batch = batch_size(x, contract)
        try:
            got = _outputs(predictor, x)
        except Exception as exc:  # e.g. a dimension the exporter fixed that should have stayed dynamic
            raise ValidationError(f"{fmt}: input of shape {x.shape} does not run: "
                                  f"{' '.join(str(exc).split())}") from None
        if got.shape != expected_output_shape(contract, x):
            raise ValidationError(f"{fmt}: batch {batch}: output shape {got.shape} != "
                                  f"{expected_output_shape(contract, x)}")
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        result = compare(got, want, contract, tolerance=agreement.tolerance)
        if not result.ok:
            raise ValidationError(f"{fmt}: batch {batch}: {'; '.join(result.failures)} (max |diff| "
                                  f"{result.max_abs:.3g})")
        agreement.merge(result)
    seq_axis = contract.input.seq_axis
    return ValidationReport(agreement, tuple(sorted({batch_size(x, contract) for x in inputs})),
                            tuple(sorted({x.shape[seq_axis] for x in inputs})) if seq_axis is not None else ())


def judge_reduced(predictor: ServingPredictor, model: torch.nn.Module, ckpt: dict,
                  notice=print, eager: dict | None = None) -> tuple[ReducedJudgement, str]:
    """Judge a reduced-precision artifact as ``ptx verify`` does, on the same real test samples in
    the same batches: (judgement, dataset name). DataError where the run's dataset is not on this
    machine. ``eager``: a dict that keeps the samples and eager's answers between calls, for a
    caller judging many files of one model (--keep-f32 auto's search)."""
    contract: Contract = ckpt["contract"]
    kept = eager if eager is not None else {}
    if "want" not in kept:
        dataset = (ckpt.get("dataset") or {}).get("name") or contract.model
        raw, kept["truth"], kept["data"] = judging_samples(dataset, contract, notice=notice)
        kept["x"] = to_layout(normalize(raw, contract), contract)
        with torch.inference_mode():
            kept["want"] = run_in_batches(lambda batch: model(torch.from_numpy(batch)).numpy(), kept["x"],
                                          contract.input.batch_axis, JUDGING_BATCH)
    got = run_in_batches(lambda batch: _outputs(predictor, batch), kept["x"], contract.input.batch_axis, JUDGING_BATCH)
    return judge_reduced_outputs(got, kept["want"], kept["truth"], contract), kept["data"]
