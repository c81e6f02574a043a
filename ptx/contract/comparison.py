"""The one comparison (torch-free): export's validation, ``ptx verify`` of a tutorial model or of a
model file, and the tests all judge an output with ``compare_output``; a tutorial model's head adds
its decisions (``compare``); for a reduced precision, its labels and accuracy are judged by
ptx.contract.accuracy_rule (the gate ``judge_reduced_precision``, which ptx.contract.verdict's labels evidence applies).
The report is the best checkers' (Polygraphy's per-output atol/rtol and "minimum required
tolerance", torch.onnx's log-binned error histogram).

A value agrees when |got - want| <= atol + rtol x its scale, the largest |want| of its row (``row_scale``:
the last axis, a dot product's outputs; a value without a row is its own scale, numpy's allclose rule);
NaN agrees with NaN and an infinity with the same infinity, at the same place. Why the row: f32 rounds
each product and partial sum of a dot product at the size of its terms, so every output of a row (a
vector of logits, of hidden features) carries noise at the scale of the row's largest values, about
7 to 125 units of u = 2^-24 of it (docs/error-model.md measures it), whatever the value itself:
a logit near 0 in a row of logits near 100 differs by up to 5e-4 between two runtimes, which the
per-element rule's atol (1e-4) called a failure. Integers and booleans agree only when
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
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .detections import DetectionSet, box_text, compared_names, grouped, overlap, pair
from .error_model import SCALE_WORDS, allowance, row_scale
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

# A reduced precision of a model with no labels to judge it by (a user's file): each output's
# relative error (||got - want|| / ||want||, SQNR's ratio) at most this, and an output that looks
# like class scores keeps its argmax on accuracy_rule.MIN_LABEL_AGREEMENT of its rows.
# int4 weights (blocks of 32 sharing a scale) carry a rounding error of about 9% of each weight's spread (a
# step of max/7 with max ~2 sigma), which a dot product averages, and which grows across layers.
MAX_RELATIVE_ERROR = {"bf16": 0.02, "tf32": 0.01, "fp16": 0.01, "int8": 0.1, "int4": 0.25}


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
    """How one tensor compares with the reference's, over one run or merged over several: what verify
    judges an output by, locate every tensor it traces, and a reduced precision's verdict its relative
    error (ptx's one comparison: ``compare_output``)."""

    name: str
    tolerance: Tolerance
    compared: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0  # over the values whose scale is not 0 (elsewhere a relative error is infinite)
    beyond: int = 0  # values outside the tolerance
    needed_atol: float = 0.0  # the smallest atol that would have passed, at this rtol (0: rtol alone passes)
    # max_rel: |got - want| over the value's scale (its row's largest |want|: the rule's), where that is not 0
    histogram: list[int] = field(default_factory=list)
    # Rows whose decision was compared: a head's (argmax, or the 0.5 threshold), or for a model file
    # the argmax of what looks like class scores (0: none).
    decisions: int = 0
    same_decisions: int = 0
    ties: int = 0  # differing decisions the tolerance allows: the reference is within it of a tie
    judged: bool = False  # the decisions are a head's rule, which the verdict holds to
    problem: str | None = None  # a shape, dtype or NaN mismatch: no value comparison is meaningful
    differs: str | None = None  # what departs, in words, where a count says too little (a detection's box)
    tied: str | None = None  # the first tie in words where a count says too little (a detection at the threshold)
    shape: list[int] = field(default_factory=list)  # the reference's
    dtype: str = ""
    magnitude: float = 0.0  # the reference's largest |value|: how big the numbers are that differ
    excess: float = 0.0  # the largest |got - want| - (atol + rtol x its scale): > 0 departs
    error_sq: float = 0.0  # sum of (got - want)^2 and of want^2 (finite values): rel and SQNR are their ratio
    reference_sq: float = 0.0
    # Vectors judged by their angle and length (an embedding: ptx.contract.embedding): the least cosine similarity
    # with the reference's, the largest relative error of a length, and the rule in words (None: atol and rtol's)
    cosine: float | None = None
    length_error: float | None = None
    rule: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.beyond == 0 and self.flipped == 0

    @property
    def other_shape(self) -> bool:
        """Its shape is not the reference's: another model, or another head, where no node of a graph
        is to blame (``problem`` as compare_output says it)."""
        return (self.problem or "").startswith("shape ")

    @property
    def departs(self) -> bool:
        """Some value lies outside the tolerance, or no value comparison is meaningful (decisions aside)."""
        return self.problem is not None or self.excess > 0

    @property
    def rel(self) -> float:
        """||got - want|| / ||want||: the error at the scale of the values; two all-zero tensors agree."""
        if self.reference_sq > 0:
            return math.sqrt(self.error_sq / self.reference_sq)
        return 0.0 if self.error_sq == 0 else math.inf

    @property
    def sqnr_db(self) -> float:
        """Signal-to-quantization-noise ratio in dB, -20 log10 rel (higher agrees better)."""
        return sqnr_db(self.rel)

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
            found.append(self.differs or f"{self.beyond:,} of {self.compared:,} values beyond atol "
                         f"{self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x {SCALE_WORDS}")
        if self.flipped:
            found.append(f"decision differs on {self.flipped} of {self.decisions}"
                         + (f" (and {self.ties} ties)" if self.ties else ""))
        return found

    def merge(self, other: "OutputAgreement") -> "OutputAgreement":
        """Fold another run of the same output (another case) into this one: the worst errors, the
        counts and the sums of squares summed."""
        for name in ("compared", "beyond", "decisions", "same_decisions", "ties"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.merge_values(other)
        self.judged = self.judged or other.judged
        self.rule = self.rule or other.rule
        self.problem = self.problem or other.problem
        self.differs = self.differs or other.differs
        self.tied = self.tied or other.tied
        return self

    def merge_values(self, other: "OutputAgreement") -> "OutputAgreement":
        """Fold in only how far another comparison's values are off (the worst errors, the sums of squares,
        the histogram), not its counts or flags: a detection's matched pairs, whose counts are detections."""
        for name in ("error_sq", "reference_sq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("max_abs", "max_rel", "needed_atol", "magnitude", "excess"):
            setattr(self, name, max(getattr(self, name), getattr(other, name)))
        for name, worst in (("cosine", min), ("length_error", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs if mine is None else mine if theirs is None else worst(mine, theirs))
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram)] if self.histogram else list(
            other.histogram)
        return self

    def summary(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        if self.differs and not self.ok:
            return f"{self.name}: {self.differs}"
        if self.cosine is not None:  # vectors: by their angle and length, the values' difference beside
            return (f"{self.name}: least cosine {self.cosine:.7f}, lengths within {self.length_error:.1e} ({self.rule}); "
                    f"max abs {self.max_abs:.2e}")
        text = (f"{self.name}: max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e}"
                + ("" if self.ok else f", {self.beyond:,} of {self.compared:,} values beyond atol "
                   f"{self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x {SCALE_WORDS} (passes with atol "
                   f">= {self.needed_atol:.2e})"))
        if self.decisions:
            text += f"; argmax agrees on {self.same_decisions:,} of {self.decisions:,}"
            if self.ties and not self.tied:
                text += f" ({self.ties:,} more at a near-tie)"
        if self.tied:  # said, not counted: either side could have kept it
            text += f"; {self.ties} tie{'s' * (self.ties != 1)} at the threshold, not counted (first: {self.tied})"
        return text

    def to_dict(self, numbers=None) -> dict:
        """As JSON holds it: an infinity or NaN as a string, unless ``numbers`` (locate's: float) says how."""
        num = numbers or json_float
        return {"name": self.name, "ok": self.ok, "departs": self.departs, "shape": self.shape, "dtype": self.dtype,
                "atol": self.tolerance.atol, "rtol": self.tolerance.rtol, "compared": self.compared,
                "max_abs": num(self.max_abs), "max_rel": num(self.max_rel), "rel": num(self.rel),
                "sqnr_db": num(self.sqnr_db), "magnitude": num(self.magnitude), "beyond": self.beyond,
                "needed_atol": num(self.needed_atol),
                "histogram": {"edges": [json_float(e) for e in HISTOGRAM_EDGES], "counts": self.histogram},
                "argmax": {"compared": self.decisions, "same": self.same_decisions} if self.decisions else None,
                "problem": self.problem, **({"differs": self.differs} if self.differs else {}),
                **({"cosine": num(self.cosine), "length_error": num(self.length_error), "rule": self.rule}
                   if self.cosine is not None else {}),
                **({"ties": self.ties, "tied": self.tied} if self.tied else {})}


def sqnr_db(rel: float) -> float:
    """A relative error as SQNR in dB: -20 log10 rel (infinite where the two agree exactly)."""
    return -20 * math.log10(rel) if rel > 0 else math.inf


def json_float(x: float):
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf") if not math.isnan(x) else "nan"


def needed_atol_text(agreement: OutputAgreement) -> str:
    """The needed atol as a table shows it: "none" where the rtol alone passes every value (a 0
    beside a non-zero max abs reads as a mistake)."""
    return f"{agreement.needed_atol:.2e}" if agreement.needed_atol > 0 else "none"


def compare_output(name: str, got, want, tolerance: Tolerance, batch_axis: int | None = None,
                   detail: bool = True) -> OutputAgreement:
    """``got`` against the reference ``want`` under ``tolerance``: max abs, relative error (and
    SQNR), the values beyond it; the argmax of rows that look like class scores (``batch_axis``
    given) is compared too, and shown. ``detail``: the histogram and max rel too (verify's table;
    locate compares thousands of tensors and shows neither). float32 against float32 is compared in
    float32 (a difference to their own precision, and half the memory), anything else in float64.
    A model's detections (a ``DetectionSet`` on both sides) are compared as detections."""
    if isinstance(want, DetectionSet) and isinstance(got, DetectionSet):
        return compare_detections(name, got, want, tolerance)
    got, want = np.asarray(got), np.asarray(want)
    result = OutputAgreement(name, tolerance, compared=int(want.size), shape=list(want.shape), dtype=str(want.dtype))
    if got.shape != want.shape:
        result.problem = f"shape {list(got.shape)} where the reference's is {list(want.shape)}"
        result.max_abs = result.max_rel = float("inf")
        return result
    kinds = got.dtype.kind + want.dtype.kind
    if any(k not in "biufc" for k in kinds):  # strings, objects: equal or not
        result.problem = None if np.array_equal(got, want) else "values differ"
        return result
    exact = any(k in "biu" for k in kinds)  # integers and booleans agree only when equal
    if exact and not all(k in "iu" for k in kinds) and got.dtype.kind != want.dtype.kind:
        result.problem = f"dtype {got.dtype} where the reference's is {want.dtype}"
        return result
    wide = np.float32 if got.dtype == want.dtype == np.float32 else np.float64
    g, w = got.astype(wide, copy=False), want.astype(wide, copy=False)
    scale = np.abs(w) if exact else row_scale(w, batch_axis)  # what rtol multiplies, from the whole rows
    if not exact and not (np.isfinite(g).all() and np.isfinite(w).all()):  # the rare path: the finite values
        same_special = (np.isnan(g) & np.isnan(w)) | (np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w)))
        finite = np.isfinite(g) & np.isfinite(w)
        mismatched = ~finite & ~same_special
        if mismatched.any():
            result.beyond = int(mismatched.sum())
            first = tuple(map(int, np.unravel_index(int(np.argmax(mismatched)), w.shape)))
            result.problem = f"{result.beyond:,} NaN/Inf values where the reference's differ (first at index {first})"
        g, w, scale = g[finite], w[finite], scale[finite]
    if not g.size:
        return result
    diff, magnitude = np.abs(g - w), np.abs(w)
    loose = diff if exact else diff - wide(tolerance.rtol) * scale
    worst = float(loose.max())
    result.beyond += int((loose > (0.0 if exact else tolerance.atol)).sum())
    result.excess = worst - (0.0 if exact else tolerance.atol)
    result.needed_atol = max(0.0, worst)
    result.max_abs, result.magnitude = float(diff.max()), float(magnitude.max())
    # plain sums, not np.linalg.norm (its BLAS call is many times slower on a busy machine); in
    # float64 where float32's squares overflow
    with np.errstate(over="ignore"):
        result.error_sq = float(np.square(diff).sum(dtype=np.float64))
        result.reference_sq = float(np.square(magnitude).sum(dtype=np.float64))
    if not (math.isfinite(result.error_sq) and math.isfinite(result.reference_sq)):
        result.error_sq = float(np.square(diff.astype(np.float64)).sum())
        result.reference_sq = float(np.square(magnitude.astype(np.float64)).sum())
    if detail:
        # relative to the value's scale where it is not 0: beside a row of 0s (a state's padding, a ReLU's
        # zeros) any difference is infinitely relative, and "max rel inf" says nothing max abs does not
        with np.errstate(divide="ignore", invalid="ignore"):
            result.max_rel = float(np.where(scale > 0, diff / scale, 0.0).max())
        result.histogram = np.histogram(diff, bins=HISTOGRAM_EDGES)[0].tolist()
    if not exact and class_scores(want, batch_axis, name):
        # every row of scores (batch first, any axes between) compared by the class it ranks first
        rows_got = np.moveaxis(got, batch_axis, 0).reshape(-1, got.shape[-1])
        rows_want = np.moveaxis(want, batch_axis, 0).reshape(-1, want.shape[-1])
        want_labels, got_labels = rows_want.argmax(-1), rows_got.argmax(-1)
        same = got_labels == want_labels
        result.decisions, result.same_decisions = int(same.size), int(same.sum())
        # a row whose two classes the reference puts within the band both may move is a near-tie, the same
        # rule as a head's decision (not a disagreement: either side within tolerance could rank either first)
        result.ties = int((~same & near_tie(rows_want, want_labels, got_labels, tolerance)).sum())
    return result


# (name, got, want, tolerance) -> an OutputAgreement: a head's comparison (its decisions) in the one's place.
Judge = Callable[[str, object, object, Tolerance], OutputAgreement]


def compare_outputs(got: Mapping[str, object], want: Mapping[str, object], signature,
                    tolerance: Callable[[str], Tolerance], *, judge: Judge | None = None,
                    names: Sequence[str] | None = None, detail: bool = True) -> dict[str, OutputAgreement]:
    """One run's outputs ``got`` against the reference's ``want``, each by the one comparison (``compare_output``,
    at its signature's batch axis), in the signature's order: {name: agreement}. The one loop over outputs that
    export's validation, verify, the shape certificate and a decoder's check run: a model's detections once, as
    detections, under their boxes' name (ptx.contract.detections). ``tolerance(name)``: the output's;
    ``judge``: a head's comparison in the one's place; ``names``: these outputs only (a decoder's logits)."""
    detections = signature.detections
    got, want = grouped(got, detections), grouped(want, detections)
    found = {}
    for name in compared_names(list(names) if names is not None else signature.output_names, detections):
        allowed = tolerance(name)
        found[name] = judge(name, got[name], want[name], allowed) if judge is not None else compare_output(
            name, got[name], want[name], allowed, signature.output(name).batch_axis, detail)
    return found


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
    result = compare_output(contract.output.name, got, want, tolerance, contract.output.batch_axis)
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
    if contract.task is Task.BINARY:
        want = want.astype(np.float64)
        p = want[:, 0]
        return np.abs(p - BINARY_THRESHOLD) <= allowance(want, tolerance)[:, 0]
    return near_tie(want, want_labels, got_labels, tolerance)


def near_tie(want: np.ndarray, want_labels: np.ndarray, got_labels: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    """Per row of scores ``want``, whether its classes ``want_labels`` and ``got_labels`` lie within the band
    both may move (each value's allowance at its row's scale, the one rule): either could rank first."""
    want = want.astype(np.float64)
    band = allowance(want, tolerance)
    chosen = np.take_along_axis(want, want_labels[..., None], -1)[..., 0]
    other = np.take_along_axis(want, got_labels[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):  # infinite scores (inf - inf): no tie, which the NaN's comparison says
        return chosen - other <= np.take_along_axis(band, want_labels[..., None], -1)[..., 0] + \
            np.take_along_axis(band, got_labels[..., None], -1)[..., 0]


# Detections as detections (ptx.contract.detections says the rule): here, beside the one comparison that
# calls it and that it calls for each matched pair's values, so that neither module imports the other.
def _value_diff(key: str, got, want) -> str:
    """``scores 0.61 where the reference's is 0.65``; for a key with axes of its own (a mask), at the
    place they differ most."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if want.ndim == 0:
        return f"{key} {float(got):.4g} where the reference's is {float(want):.4g}"
    at = np.unravel_index(int(np.argmax(np.abs(got - want))), want.shape)
    return f"{key}{list(map(int, at))} {float(got[at]):.4g} where the reference's is {float(want[at]):.4g}"


def compare_detections(name: str, got: DetectionSet, want: DetectionSet, tolerance):
    """``got``'s detections against the reference's ``want``, image by image: paired (ptx.contract.detections'
    ``pair``: in order where both keep the same ones, else by IoU within each label, or by coordinates where
    IoU is undefined), then each pair's box and score within ``tolerance`` and its label the same; detections
    without a partner on either side counted, except ties at the threshold (said, not counted). An
    OutputAgreement (the one comparison's record) whose ``differs`` names the first image and detection that
    differ (``image 1, detection 3: box [..] where the reference's is [..], IoU 0.62``), with how many differ."""
    det = want.detections
    boxes_dtype = str(np.asarray(want.images[0][det.boxes]).dtype) if want.images else "float32"
    result = OutputAgreement(name, tolerance, compared=want.total, shape=[want.total, 4], dtype=boxes_dtype)
    if got.problem or want.problem:
        result.problem = got.problem or f"the reference's {want.problem}"
        return result
    if len(got) != len(want):
        result.problem = f"detections for {len(got)} images where the reference has {len(want)}"
        return result
    first, differ, missing, extra, pairs = None, 0, 0, 0, 0
    scores, labels = det.role("scores"), det.role("labels")
    others = [k for k in det.keys if k not in (det.boxes, scores, labels)]
    for image, (g, w) in enumerate(zip(got.images, want.images)):
        paired = pair(g, w, det, tolerance)
        result.ties += len(paired.ties)
        result.tied = result.tied or (f"image {image}, {paired.ties[0]}" if paired.ties else None)
        found: dict[int, str] = {i: f"box {box_text(w[det.boxes][i])} has no partner ({why})"
                                 for i, why in paired.missing.items()}
        missing += len(paired.missing)
        extra += len(paired.extra)
        pairs += len(paired.pairs)
        for i, j in paired.pairs:
            why = None
            for key in (det.boxes, scores, *others):
                if key is None:
                    continue
                part = compare_output(key, g[key][j], w[key][i], tolerance)
                result.merge_values(part)
                if not part.ok and why is None:
                    how = overlap(w[det.boxes][i], g[det.boxes][j], paired.boxes_xyxy)[1]
                    why = (f"box {box_text(g[key][j])} where the reference's is {box_text(w[key][i])}, {how}"
                           if key == det.boxes else _value_diff(key, g[key][j], w[key][i]))
            if labels and np.asarray(g[labels][j]).tolist() != np.asarray(w[labels][i]).tolist():
                how = overlap(w[det.boxes][i], g[det.boxes][j], paired.boxes_xyxy)[1]
                why = why or f"label {np.asarray(g[labels][j]).tolist()} where the reference's is " \
                              f"{np.asarray(w[labels][i]).tolist()} ({how})"
            if why:
                differ += 1
                found[i] = why
        if found and first is None:
            i = min(found)
            first = f"image {image}, detection {i}: {found[i]}"
        elif paired.extra and first is None:
            first = f"image {image}: a detection the reference does not have, box {box_text(g[det.boxes][paired.extra[0]])}"
    result.beyond = differ + missing + extra
    if result.beyond:  # values that depart, not a problem: a reduced precision is judged by its own rule
        result.excess = max(result.excess, 1.0)
        tied = f"; {result.ties} tie{'s' * (result.ties != 1)} at the threshold not counted" if result.ties else ""
        result.differs = (f"{first} ({differ} of {pairs} paired detection{'s' * (pairs != 1)} differ; without a partner: "
                          f"{missing} of the reference's {want.total}, {extra} of this side's {got.total}{tied})")
    return result
