"""The one agreement rule: export validation, ``ptx verify`` and the tests all call ``compare``.

Full precision (float32 artifacts): outputs must have the promised shape, be finite, and every
element must satisfy ``|got - want| <= atol + rtol * |want|`` (numpy.isclose's rule, with the
contract's tolerance for the device), and every decision (argmax, or the 0.5 threshold) must be
the same, except where the reference itself sits on a tie: a decision that flips between two
outputs closer together than the tolerance band lets them move (argmax between two logits, or a
probability next to 0.5) is a tie, counted and shown, never a disagreement, since any output within
tolerance could have decided either way. Reduced precision (bf16, int8) is judged by what users see
instead: label agreement with the reference and the change in test accuracy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ptx.errors import PtxError

from .schema import BINARY_THRESHOLD, Contract, Task, Tolerance
from .transforms import decisions

# Reduced-precision artifacts cannot meet a float32 atol; they pass when labels agree on this
# share of real samples and test accuracy drops by at most this much (absolute).
MIN_LABEL_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.005
# The real samples a reduced precision is judged on, by export and by verify alike (one file, one
# verdict): this many, drawn with this seed across the model's test split.
JUDGING_SAMPLES = 1000
JUDGING_SEED = 0
JUDGING_BATCH = 64  # verify's largest default batch: the judged backend runs the samples in these


@dataclass
class Agreement:
    """The outcome of comparing one backend's outputs with the reference's."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    compared: int = 0  # output elements
    decisions: int = 0  # decisions compared (0 for regression)
    same_decisions: int = 0
    ties: int = 0  # differing decisions the tolerance allows: the reference is within it of a tie
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def label_agreement(self) -> float | None:
        """Share of decisions equal to the reference's; None where the task has none."""
        return self.same_decisions / self.decisions if self.decisions else None

    def merge(self, other: "Agreement", prefix: str = "") -> "Agreement":
        """Fold another comparison (another input batch) into this one."""
        self.max_abs, self.max_rel = max(self.max_abs, other.max_abs), max(self.max_rel, other.max_rel)
        self.compared += other.compared
        self.decisions += other.decisions
        self.same_decisions += other.same_decisions
        self.ties += other.ties
        self.failures += [f"{prefix}{f}" for f in other.failures]
        return self


def check_tolerance(tolerance: Tolerance) -> Tolerance:
    """Refuse tolerances under which nothing could fail (NaN) or everything would (negative)."""
    for name in ("atol", "rtol"):
        value = getattr(tolerance, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PtxError(f"--{name} {value!r}: give a finite number >= 0")
    return tolerance


def compare(got: np.ndarray, want: np.ndarray, contract: Contract, *, device: str = "cpu",
            tolerance: Tolerance | None = None) -> Agreement:
    """Compare ``got`` with the reference ``want`` under the contract's rule for ``device``."""
    tolerance = check_tolerance(tolerance or contract.tolerance(device))
    got, want = np.asarray(got), np.asarray(want)
    result = Agreement(compared=int(want.size))
    if got.shape != want.shape:
        result.failures.append(f"output shape {got.shape} != {want.shape}")
        result.max_abs = result.max_rel = float("inf")
        return result
    if not np.isfinite(got).all():
        result.failures.append(f"{int((~np.isfinite(got)).sum())} NaN/Inf values in the output")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = np.abs(want.astype(np.float64))
    finite = np.isfinite(diff)
    if finite.any():
        result.max_abs = float(diff[finite].max())
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(scale > 0, diff / scale, np.where(diff > 0, np.inf, 0.0))
        result.max_rel = float(rel[finite].max())
    beyond = finite & (diff > tolerance.atol + tolerance.rtol * scale)
    if beyond.any():
        result.failures.append(f"{int(beyond.sum())} of {want.size} values beyond atol {tolerance.atol:g} + "
                               f"rtol {tolerance.rtol:g} x |reference|")
    got_labels, want_labels = decisions(got, contract), decisions(want, contract)
    if want_labels is not None:
        same = got_labels == want_labels
        result.decisions, result.same_decisions = int(same.size), int(same.sum())
        tied = ~same & _within_tie(want, want_labels, got_labels, contract, tolerance)
        result.ties = int(tied.sum())
        flipped = int((~same & ~tied).sum())
        if flipped:
            result.failures.append(f"decision differs on {flipped} of {same.size}"
                                   + (f" (and {result.ties} ties)" if result.ties else ""))
    return result


def _within_tie(want: np.ndarray, want_labels: np.ndarray, got_labels: np.ndarray, contract: Contract,
                tolerance: Tolerance) -> np.ndarray:
    """Where outputs within tolerance of ``want`` could decide ``got_labels`` instead: the two
    logits (or the probability and the 0.5 threshold) lie within the band both may move."""
    want = want.astype(np.float64)

    def band(values):
        return tolerance.atol + tolerance.rtol * np.abs(values)

    if contract.task is Task.BINARY:
        p = want[:, 0]
        return np.abs(p - BINARY_THRESHOLD) <= band(p)
    chosen = np.take_along_axis(want, want_labels[..., None], -1)[..., 0]
    other = np.take_along_axis(want, got_labels[..., None], -1)[..., 0]
    return chosen - other <= band(chosen) + band(other)


def judge_reduced_precision(label_agreement: float, accuracy: float | None, reference_accuracy: float | None) -> list[str]:
    """Failures of a reduced-precision backend, judged by labels and accuracy, not by atol."""
    failures = []
    if label_agreement < MIN_LABEL_AGREEMENT:
        failures.append(f"labels agree on {100 * label_agreement:.1f}% (< {100 * MIN_LABEL_AGREEMENT:.0f}%)")
    if accuracy is not None and reference_accuracy is not None and reference_accuracy - accuracy > MAX_ACCURACY_DROP:
        failures.append(f"accuracy {accuracy:.4f} is {reference_accuracy - accuracy:.4f} below the reference")
    return failures


def judging_pick(test_size: int, count: int = JUDGING_SAMPLES) -> np.ndarray:
    """Indices of the test samples a backend is judged on: a fixed-seed draw across the whole test
    split (some test sets are stored class by class, and the first N would then be one class)."""
    return np.sort(np.random.default_rng(JUDGING_SEED).permutation(test_size)[:count])


@dataclass
class ReducedJudgement:
    """How a reduced-precision backend's labels compare with the reference's on real samples."""

    samples: int
    label_agreement: float
    accuracy: float
    reference_accuracy: float
    unusable: list[str]

    @property
    def status(self) -> str:
        return "NOT USABLE" if self.unusable else "PASS"

    def describe(self) -> str:
        return (f"labels agree with eager on {100 * self.label_agreement:.1f}%, accuracy {self.accuracy:.4f} (eager "
                f"{self.reference_accuracy:.4f})")


def judge_reduced_outputs(got: np.ndarray, want: np.ndarray, truth: np.ndarray, contract: Contract) -> ReducedJudgement:
    """Judge reduced-precision outputs ``got`` against the reference's ``want`` on real samples whose
    true labels are ``truth`` (judge_reduced_precision's gate). Classification tasks only."""
    got_labels, want_labels = decisions(got, contract), decisions(want, contract)
    if got_labels is None:
        raise PtxError(f"{contract.model} has no labels: a reduced precision cannot be judged on it")
    truth = np.asarray(truth).reshape(got_labels.shape)
    agreement = float((got_labels == want_labels).mean())
    accuracy, reference = float((got_labels == truth).mean()), float((want_labels == truth).mean())
    return ReducedJudgement(int(got_labels.shape[0]), agreement, accuracy, reference,
                            judge_reduced_precision(agreement, accuracy, reference))
