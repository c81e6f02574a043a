"""The one comparison (torch-free): export's validation, ``ptx verify`` of a tutorial model or of a
model file, and the tests all judge an output with ``compare_output``; a tutorial model's head adds
its decisions (``compare``) and, for a reduced precision, its labels and accuracy (``judge_reduced``).
The report is the best checkers' (Polygraphy's per-output atol/rtol and "minimum required
tolerance", torch.onnx's log-binned error histogram).

A value agrees when |got - want| <= atol + rtol * |want| (numpy's allclose rule); NaN agrees with
NaN and an infinity with the same infinity, at the same place. Integers and booleans agree only when
equal. A model file's default tolerance follows the dtype (float16 is judged as float16); a tutorial
model's is its contract's, per device. A tutorial model's decision (argmax, or the 0.5 threshold)
that flips between two outputs closer together than the tolerance band lets them move is a tie,
counted and shown, never a disagreement: any output within tolerance could have decided either way.
Reduced precision (bf16, tf32, int8) cannot meet the f32 atol: it is judged by what users see, label
agreement with the reference and the change in test accuracy on real samples.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ptx.errors import PtxError

from .schema import BINARY_THRESHOLD, DEFAULT_TOLERANCES, Contract, Task, Tolerance
from .transforms import decisions

EXACT = Tolerance(0.0, 0.0)
# |got - want| histogram: one bin per decade, as torch.onnx's verification report bins them.
HISTOGRAM_EDGES = (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, math.inf)
MAX_CLASSES = 100_000  # an output's last axis up to this size may be class scores
# Outputs whose names say they are no class scores, whatever their shape: hidden states, recurrent
# states, embeddings, pooled features (a [batch, hidden] pooler_output or h_n is 2-D like logits).
NOT_SCORES = re.compile(r"hidden|state|embed|pool|feature|encod|^[hc](_?n|_?t|\d*)$|^(h|c|hx|cx)_|_(h|c|hx|cx)$",
                        re.IGNORECASE)

# Reduced-precision artifacts pass when labels agree on this share of real samples and test accuracy
# drops by at most this much (absolute).
MIN_LABEL_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.005
# A reduced precision of a model with no labels to judge it by (a user's file): each output's
# relative error (||got - want|| / ||want||, SQNR's ratio) at most this, and an output that looks
# like class scores keeps its argmax on MIN_LABEL_AGREEMENT of its rows.
MAX_RELATIVE_ERROR = {"bf16": 0.02, "tf32": 0.01, "fp16": 0.01, "int8": 0.1}
# The real samples a reduced precision is judged on, by export and by verify alike (one file, one
# verdict): this many, drawn with this seed across the model's test split.
JUDGING_SAMPLES = 1000
JUDGING_SEED = 0
JUDGING_BATCH = 64  # verify's largest default batch: the judged backend runs the samples in these
# --max-drop X holds where the drop is at most X plus this: accuracies are counts over samples, and a
# drop of exactly X must not fail for the last bit of a float subtraction.
BOUND_SLACK = 1e-9


def default_tolerance(dtype: str, device: str = "cpu") -> Tolerance:
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return DEFAULT_TOLERANCES.get((dtype, kind), EXACT if not dtype.startswith("float") else
                                  DEFAULT_TOLERANCES[("float32", kind)])


def check_tolerance(tolerance: Tolerance) -> Tolerance:
    """Refuse tolerances under which nothing could fail (NaN) or everything would (negative)."""
    for name in ("atol", "rtol"):
        value = getattr(tolerance, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PtxError(f"--{name} {value!r}: give a finite number >= 0")
    return tolerance


@dataclass
class OutputAgreement:
    """How one output compares with the reference's, over one run or merged over several."""

    name: str
    tolerance: Tolerance
    compared: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0  # over the values whose reference is not 0 (elsewhere a relative error is infinite)
    beyond: int = 0  # values outside the tolerance
    needed_atol: float = 0.0  # the smallest atol that would have passed, at this rtol (0: rtol alone passes)
    histogram: list[int] = field(default_factory=list)
    # Rows whose decision was compared: a head's (argmax, or the 0.5 threshold), or for a model file
    # the argmax of what looks like class scores (0: none).
    decisions: int = 0
    same_decisions: int = 0
    ties: int = 0  # differing decisions the tolerance allows: the reference is within it of a tie
    judged: bool = False  # the decisions are a head's rule, which the verdict holds to
    problem: str | None = None  # a shape, dtype or NaN mismatch: no value comparison is meaningful

    @property
    def ok(self) -> bool:
        return self.problem is None and self.beyond == 0 and self.flipped == 0

    @property
    def flipped(self) -> int:
        """Decisions that differ and are no tie (a head's only: a file's argmax is shown, not judged)."""
        return self.decisions - self.same_decisions - self.ties if self.judged else 0

    @property
    def label_agreement(self) -> float | None:
        """Share of decisions equal to the reference's; None where there are none."""
        return self.same_decisions / self.decisions if self.decisions else None

    @property
    def failures(self) -> list[str]:
        """What fails, in words (empty when ``ok``)."""
        found = [self.problem] if self.problem else []
        if self.beyond and not self.problem:
            found.append(f"{self.beyond:,} of {self.compared:,} values beyond atol {self.tolerance.atol:g} + rtol "
                         f"{self.tolerance.rtol:g} x |reference|")
        if self.flipped:
            found.append(f"decision differs on {self.flipped} of {self.decisions}"
                         + (f" (and {self.ties} ties)" if self.ties else ""))
        return found

    def merge(self, other: "OutputAgreement") -> "OutputAgreement":
        """Fold another run of the same output (another case) into this one: the worst errors, the
        counts summed."""
        self.compared += other.compared
        self.beyond += other.beyond
        self.max_abs, self.max_rel = max(self.max_abs, other.max_abs), max(self.max_rel, other.max_rel)
        self.needed_atol = max(self.needed_atol, other.needed_atol)
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram)] if self.histogram else list(
            other.histogram)
        self.decisions += other.decisions
        self.same_decisions += other.same_decisions
        self.ties += other.ties
        self.judged = self.judged or other.judged
        self.problem = self.problem or other.problem
        return self

    def summary(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        text = (f"{self.name}: max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e}"
                + ("" if self.ok else f", {self.beyond:,} of {self.compared:,} values beyond atol "
                   f"{self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x |ref| (passes with atol "
                   f">= {self.needed_atol:.2e})"))
        if self.decisions:
            text += f"; argmax agrees on {self.same_decisions:,} of {self.decisions:,}"
        return text

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "atol": self.tolerance.atol, "rtol": self.tolerance.rtol,
                "compared": self.compared, "max_abs": json_float(self.max_abs), "max_rel": json_float(self.max_rel),
                "beyond": self.beyond, "needed_atol": json_float(self.needed_atol),
                "histogram": {"edges": [json_float(e) for e in HISTOGRAM_EDGES], "counts": self.histogram},
                "argmax": {"compared": self.decisions, "same": self.same_decisions} if self.decisions else None,
                "problem": self.problem}


def json_float(x: float):
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf") if not math.isnan(x) else "nan"


def needed_atol_text(agreement: OutputAgreement) -> str:
    """The needed atol as a table shows it: "none" where the rtol alone passes every value (a 0
    beside a non-zero max abs reads as a mistake)."""
    return f"{agreement.needed_atol:.2e}" if agreement.needed_atol > 0 else "none"


def compare_output(name: str, got, want, tolerance: Tolerance, batch_axis: int | None = None) -> OutputAgreement:
    """``got`` against the reference ``want`` under ``tolerance``; the argmax of rows that look like
    class scores (``batch_axis`` given) is compared too, and shown."""
    got, want = np.asarray(got), np.asarray(want)
    result = OutputAgreement(name, tolerance, compared=int(want.size))
    if got.shape != want.shape:
        result.problem = f"shape {list(got.shape)} where the reference's is {list(want.shape)}"
        result.max_abs = result.max_rel = float("inf")
        return result
    if got.dtype.kind in "biu" or want.dtype.kind in "biu" or got.dtype == bool:
        if got.dtype.kind != want.dtype.kind and not (got.dtype.kind in "iu" and want.dtype.kind in "iu"):
            result.problem = f"dtype {got.dtype} where the reference's is {want.dtype}"
            return result
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        result.beyond = int((diff > 0).sum())
        result.max_abs = float(diff.max(initial=0.0))
        result.needed_atol = result.max_abs
        result.histogram = np.histogram(diff, bins=HISTOGRAM_EDGES)[0].tolist() if diff.size else []
        return result
    g, w = got.astype(np.float64), want.astype(np.float64)
    same_special = (np.isnan(g) & np.isnan(w)) | (np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w)))
    finite = np.isfinite(g) & np.isfinite(w)
    mismatched_special = ~finite & ~same_special
    diff = np.where(finite, np.abs(g - w), 0.0)
    scale = np.abs(np.where(finite, w, 0.0))
    beyond = finite & (diff > tolerance.atol + tolerance.rtol * scale)
    result.beyond = int(beyond.sum() + mismatched_special.sum())
    if mismatched_special.any():
        result.problem = (f"{int(mismatched_special.sum()):,} NaN/Inf values where the reference's differ "
                          f"(first at index {np.unravel_index(int(np.argmax(mismatched_special)), w.shape)})")
    if diff.size:
        result.max_abs = float(diff.max())
        # relative to the reference where it is not 0: beside a 0 (a state's padding, a ReLU's zeros)
        # any difference is infinitely relative, and "max rel inf" says nothing max abs does not
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(scale > 0, diff / scale, 0.0)
        result.max_rel = float(rel.max())
        result.needed_atol = float(max(0.0, (diff - tolerance.rtol * scale).max()))
        result.histogram = np.histogram(diff[finite], bins=HISTOGRAM_EDGES)[0].tolist()
    if class_scores(want, batch_axis, name):
        # every row of scores (batch first, any axes between) compared by the class it ranks first
        rows_got = np.moveaxis(g, batch_axis, 0).reshape(-1, g.shape[-1])
        rows_want = np.moveaxis(w, batch_axis, 0).reshape(-1, w.shape[-1])
        same = rows_got.argmax(-1) == rows_want.argmax(-1)
        result.decisions, result.same_decisions = int(same.size), int(same.sum())
    return result


def class_scores(want: np.ndarray, batch_axis: int | None, name: str | None = None) -> bool:
    """An output that looks like class scores: floats with a batch axis and a last axis of 2 or more
    classes (the argmax of each row is then a label worth comparing). Comparing, ``name`` is given
    too, and only a 2-D [batch, classes] output whose name is no state's or hidden state's
    (last_hidden_state, h_n, pooler_output) counts: the argmax of a hidden state is no label."""
    if name is not None and (want.ndim != 2 or NOT_SCORES.search(name)):
        return False
    return (batch_axis is not None and want.dtype.kind == "f" and want.ndim >= 2 and batch_axis != want.ndim - 1
            and 2 <= want.shape[-1] <= MAX_CLASSES)


# -- a tutorial model's head: its decisions, and for a reduced precision its labels and accuracy --


def compare(got, want, contract: Contract, *, device: str = "cpu", tolerance: Tolerance | None = None) -> OutputAgreement:
    """A tutorial model's output against the reference's under its contract's tolerance for
    ``device``, with every decision the same except on a tie."""
    tolerance = check_tolerance(tolerance or contract.tolerance(device))
    got, want = np.asarray(got), np.asarray(want)
    result = compare_output(contract.output.name, got, want, tolerance)
    if result.problem is None and not np.isfinite(got).all():  # eager's own NaN still fails a tutorial model
        result.problem = f"{int((~np.isfinite(got)).sum())} NaN/Inf values in the output"
    want_labels = decisions(want, contract) if result.problem is None or "NaN" in result.problem else None
    if want_labels is not None:
        got_labels = decisions(got, contract)
        same = got_labels == want_labels
        result.decisions, result.same_decisions, result.judged = int(same.size), int(same.sum()), True
        result.ties = int((~same & _within_tie(want, want_labels, got_labels, contract, tolerance)).sum())
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


def judge_reduced_precision(label_agreement: float, accuracy: float | None, reference_accuracy: float | None,
                            max_drop: float | None = None) -> list[str]:
    """Why a reduced-precision backend is not usable, judged by labels and accuracy, not by atol.
    ``max_drop``: the loss its file was made to hold (``ptx export --max-drop``, in accuracy
    points), which then is the whole gate: the user named what they accept and on what measure, and
    ptx's own label rule is the default for those who named nothing."""
    if max_drop is not None:
        drop = accuracy_points(reference_accuracy - accuracy) if accuracy is not None and reference_accuracy is not None \
            else 0.0
        return [] if drop <= max_drop + BOUND_SLACK else \
            [f"accuracy {accuracy:.4f} is {drop:.2f} points below the reference (--max-drop {max_drop:g})"]
    failures = []
    if label_agreement < MIN_LABEL_AGREEMENT:
        failures.append(f"labels agree on {100 * label_agreement:.1f}% (< {100 * MIN_LABEL_AGREEMENT:.0f}%)")
    if accuracy is not None and reference_accuracy is not None and reference_accuracy - accuracy > MAX_ACCURACY_DROP:
        failures.append(f"accuracy {accuracy:.4f} is {reference_accuracy - accuracy:.4f} below the reference")
    return failures


ACCURACY_METRIC = "accuracy on "  # how ptx.metric begins where a tutorial model's bound is its test accuracy


def recorded_max_drop(metadata) -> float | None:
    """The --max-drop a tutorial model's int8 file was made to hold (``ptx.max_drop``, accuracy
    points, where ``ptx.metric`` is its test accuracy), which verify then judges it by; None for a
    file made without one, or bound on a user's own metric (which verify cannot run)."""
    value = metadata.get("max_drop")
    if value is None or not str(metadata.get("metric", "")).startswith(ACCURACY_METRIC):
        return None
    try:
        return float(str(value).split()[0])
    except ValueError:
        return None


def accuracy_points(share: float) -> float:
    """A share of samples (0.005) in accuracy points (0.5), the unit --max-drop is given in."""
    return 100.0 * share


def below_or_above(drop: float, digits: int, unit: str = "") -> str:
    """A drop in words: "0.20 points below", and a gain as "0.10 points above", not "-0.10 below"."""
    return f"{abs(drop):.{digits}f}{unit} {'below' if drop >= 0 else 'above'}"


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
    max_drop: float | None = None  # the bound it was judged by (--max-drop, accuracy points), else ptx's gate

    @property
    def status(self) -> str:
        return "NOT USABLE" if self.unusable else "PASS"

    def describe(self) -> str:
        bound = "" if self.max_drop is None else \
            f", {below_or_above(accuracy_points(self.reference_accuracy - self.accuracy), 2, ' points')} (--max-drop {self.max_drop:g})"
        return (f"labels agree with eager on {100 * self.label_agreement:.1f}%, accuracy {self.accuracy:.4f} (eager "
                f"{self.reference_accuracy:.4f}{bound})")


def judge_reduced_outputs(got: np.ndarray, want: np.ndarray, truth: np.ndarray, contract: Contract,
                          max_drop: float | None = None) -> ReducedJudgement:
    """Reduced-precision outputs ``got`` against the reference's ``want`` on real samples whose true
    labels are ``truth`` (judge_reduced_precision's gate, or ``max_drop``'s). Classification tasks only."""
    got_labels, want_labels = decisions(got, contract), decisions(want, contract)
    if got_labels is None:
        raise PtxError(f"{contract.model} has no labels: a reduced precision cannot be judged on it")
    truth = np.asarray(truth).reshape(got_labels.shape)
    agreement = float((got_labels == want_labels).mean())
    accuracy, reference = float((got_labels == truth).mean()), float((want_labels == truth).mean())
    return ReducedJudgement(int(got_labels.shape[0]), agreement, accuracy, reference,
                            judge_reduced_precision(agreement, accuracy, reference, max_drop), max_drop)


# -- a model without a head (a user's file): a reduced precision judged by its tensors ---------------


def relative_error(got, want) -> float:
    """||got - want|| / ||want|| over every value: the error at the scale of the values (SQNR is
    -20 log10 of it); NaN counts as infinitely wrong, and two all-zero tensors agree."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = float(np.linalg.norm(want))
    diff = float(np.linalg.norm(np.nan_to_num(got - want, nan=np.inf)))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
