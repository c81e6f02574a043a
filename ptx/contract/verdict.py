"""The one verdict on a reduced precision (int8, bf16, tf32), torch-free: one record type, one rule,
made by export and by verify alike and stored with the file, so every command reads the same answer.

The rule takes the strongest evidence at hand, in this order (DESIGN.md idea 15):

1. ``bound``: the loss the user accepted on their own metric when the file was made (``ptx export
   --max-drop X [--metric FILE.py:FN]``), re-measured where the metric and its data are at hand, else
   read from the file as export measured it (said so);
2. ``labels``: a tutorial model's head, labels and accuracy on its real test samples;
3. ``inputs``: the user's own inputs (``--inputs``, ``--calibration``'s held-out rows), by the tensors;
4. ``generated``: inputs generated from the signature, said as such.

By the tensors (3 and 4), an output that looks like class scores keeps its argmax on
MIN_LABEL_AGREEMENT of the rows where f32 itself decides (f32's own top-two margin at least
NEAR_TIE_MARGIN, in softmax probability: generated noise fed to a classifier gives rows of near-ties
whose argmax no precision keeps, and those say nothing about the file); any other output stays
within MAX_RELATIVE_ERROR of f32. Only the first evidence decides; the weaker ones are shown, never
counted.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .comparison import EXACT, MAX_RELATIVE_ERROR, class_scores, compare_output
from .accuracy_rule import BOUND_SLACK, MIN_LABEL_AGREEMENT, accuracy_points, below_or_above, judge_reduced_precision
from .detections import reduced_evidence
from .schema import Contract
from .transforms import decisions, softmax

PASS, NOT_USABLE = "PASS", "NOT USABLE"
EVIDENCE = ("bound", "labels", "inputs", "generated")  # strongest first
EVIDENCE_WORDS = {"bound": "the bound it was made to hold", "labels": "labels and accuracy on real samples",
                  "inputs": "your inputs", "generated": "generated inputs"}
# A row whose f32 top-two softmax probabilities are closer than this is a near-tie: its argmax is
# not counted either way.
NEAR_TIE_MARGIN = 0.1
VERDICT_KEY = "verdict"  # ptx.verdict in a file: {row label: Verdict}, as JSON
# An f32 row is judged by the one comparison within its tolerance against its reference: the evidence its
# records keep (a reduced precision's row keeps one of EVIDENCE).
TOLERANCE = "tolerance"
EVIDENCE_WORDS[TOLERANCE] = "its tolerance against the reference"


def in_one_line(reasons: Sequence[str]) -> str:
    """A verdict's reasons as one line says them: the first (a decoder's worst prompt, a file's first output), and
    how many more the record keeps (a decoder at int4 can fail each prompt twice: the full list is --json's)."""
    return reasons[0] + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "") if reasons else ""


@dataclass
class Evidence:
    """One piece of evidence on a reduced precision, of one kind (EVIDENCE): what was measured, in
    words, and why it is not usable (empty: it passes). Each kind has its one maker below
    (bound_evidence, labels_evidence, judge_tensors; recorded_evidence for a verdict a file records),
    and ``decide`` turns the strongest at hand into the Verdict."""

    kind: str  # one of EVIDENCE
    measured: str  # what was measured, in words
    reasons: list[str] = field(default_factory=list)  # why it is NOT USABLE (empty: PASS)
    by: str | None = None  # who measured it (export, verify); None: the one deciding
    rechecked: bool = True  # False: read from the file, not measured again here
    # The number it was judged by, higher is better (a bound's metric, a head's label agreement): the
    # candidate closest to passing is the one with the highest (onnx-int8's choice of a way to quantize).
    value: float | None = None
    samples: int = 0  # the real samples it was measured on (labels), else 0

    @property
    def unusable(self) -> list[str]:
        return self.reasons

    @property
    def status(self) -> str:
        return NOT_USABLE if self.reasons else PASS

    def describe(self) -> str:
        return self.measured


@dataclass
class Verdict:
    """One reduced-precision row's judgement: PASS or NOT USABLE, by which evidence, measuring what."""

    label: str  # the row it judges: ort-cpu-int8, openvino-int8, openvino-bf16
    status: str
    evidence: str  # one of EVIDENCE
    measured: str  # what was measured, in words
    reasons: list[str] = field(default_factory=list)  # why it is NOT USABLE (empty: PASS)
    by: str = "verify"  # who measured it: export, verify
    rechecked: bool = True  # False: a recorded bound read from the file, not measured again here
    also: list[str] = field(default_factory=list)  # the weaker evidence at hand, shown and not counted

    @property
    def unusable(self) -> list[str]:
        return self.reasons

    def describe(self) -> str:
        """``NOT USABLE by generated inputs: ...``; a recorded bound says it was not measured here."""
        how = _words(self.evidence) + ("" if self.rechecked else f", as `ptx {self.by}` measured it")
        text = f"{self.status} by {how}: {self.measured}"
        return text + (f"; {in_one_line(self.reasons)}" if self.reasons else "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping) -> "Verdict":
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})  # fields a later ptx added: left out


def decide(label: str, evidence: Sequence, by: str = "verify") -> Verdict:
    """The verdict from the strongest of ``evidence`` (Evidence, None where absent). The others are
    shown, not counted."""
    ranked = sorted((e for e in evidence if e is not None), key=lambda e: EVIDENCE.index(e.kind))
    if not ranked:
        raise ValueError(f"{label}: no evidence to judge it by")
    first = ranked[0]
    also = [f"{_words(e.kind)}: {e.measured} ({e.status}, not counted)" for e in ranked[1:]]
    return Verdict(label, first.status, first.kind, first.measured, list(first.reasons), first.by or by,
                   first.rechecked, also)


def does_not_run(label: str, evidence: str, error: str, by: str = "verify") -> Verdict:
    """The verdict on a row whose runtime cannot run the file: NOT USABLE, on the ``evidence`` kind
    the file's own runtime was judged by (what this runtime could not run), ``error`` the reason."""
    return Verdict(label, NOT_USABLE, evidence, "the file does not run through it", [error], by=by)


def as_evidence(verdict: Verdict) -> Evidence:
    """A verdict made here, as evidence for another row of the same file (verify's stored-reference
    row reads what its row's verdict rests on)."""
    return Evidence(verdict.evidence, verdict.measured, list(verdict.reasons), verdict.by, verdict.rechecked)


def recorded_evidence(verdict: Verdict) -> Evidence:
    """A verdict a file records, as evidence read from it (not measured again here)."""
    return replace(as_evidence(verdict), rechecked=False)


def _words(evidence: str) -> str:
    """An evidence kind in words; one a later ptx wrote is said as it is, never a KeyError."""
    return EVIDENCE_WORDS.get(evidence, evidence)


# -- evidence 1: the bound a file was made to hold ------------------------------------------------


def bound_evidence(max_drop: float, unit: str, metric: str, reference: float, value: float, by: str = "export",
                   rechecked: bool = False) -> Evidence:
    """The bound an int8 file was made to hold (``ptx export --max-drop``: the most ``metric`` may
    drop from f32's ``reference``, in ``unit``: " accuracy points", or "" for the user's metric's own
    units) against ``value``, the row's; as export measured it (``rechecked`` False where read from
    the file) or as verify measured it again."""
    drop = (reference - value) * (100.0 if unit.strip() == "accuracy points" else 1.0)
    name = metric.split(" (")[0]
    measured = (f"{name}: {value:.4f} (f32 {reference:.4f}), "
                f"{below_or_above(drop, 2 if abs(drop) >= 0.01 or drop == 0 else 4, unit)}, --max-drop {max_drop:g}")
    reasons = [] if drop <= max_drop + BOUND_SLACK else [f"{name} drops {drop:.3g}{unit} (more than --max-drop {max_drop:g})"]
    return Evidence("bound", measured, reasons, by, rechecked, value)


def recorded_bound(metadata: Mapping[str, str], again: tuple[str, float, float] | None = None) -> Evidence | None:
    """The bound a file records (ptx.max_drop, ptx.metric, ptx.metric_f32, ptx.metric_int8) as
    export measured it, or None (made without --max-drop, or written before ptx recorded it).
    ``again``: (the metric, f32's value, the row's) as verify measured them again here."""
    try:
        number, _, unit = str(metadata["max_drop"]).partition(" ")
        bound = float(number), f" {unit}" if unit else "", str(metadata["metric"])
        values = float(metadata["metric_f32"]), float(metadata["metric_int8"])
    except (KeyError, ValueError):
        return None
    if again is not None:
        return bound_evidence(*bound[:2], *again, by="verify", rechecked=True)
    return bound_evidence(*bound, *values)


def bound_metric(metadata: Mapping[str, str]) -> str | None:
    """FILE.py:FN where the bound a file records is on the user's own metric (which only they can
    run), else None (no bound, or a tutorial model's accuracy)."""
    metric = str(metadata.get("metric", ""))
    if recorded_bound(metadata) is None or metric.startswith("accuracy on "):
        return None
    return metric.split(" (")[0]


# -- evidence 2: a head's labels and accuracy on real samples ----------------------------------------


def labels_evidence(got: np.ndarray, want: np.ndarray, truth: np.ndarray, contract: Contract,
                    max_drop: float | None = None) -> Evidence:
    """Reduced-precision outputs ``got`` against the reference's ``want`` on real samples whose true
    labels are ``truth``, by judge_reduced_precision's gate; ``max_drop`` given (the accuracy bound
    its file was made to hold, in points), by that bound instead: evidence of kind "bound".
    Classification tasks only."""
    got_labels, want_labels = decisions(got, contract), decisions(want, contract)
    if got_labels is None:
        raise PtxError(f"{contract.model} has no labels: a reduced precision cannot be judged on it")
    truth = np.asarray(truth).reshape(got_labels.shape)
    agreement = float((got_labels == want_labels).mean())
    accuracy, reference = float((got_labels == truth).mean()), float((want_labels == truth).mean())
    bound = "" if max_drop is None else \
        f", {below_or_above(accuracy_points(reference - accuracy), 2, ' points')} (--max-drop {max_drop:g})"
    measured = (f"labels agree with eager on {100 * agreement:.1f}%, accuracy {accuracy:.4f} (eager "
                f"{reference:.4f}{bound})")
    return Evidence("labels" if max_drop is None else "bound", measured,
                    judge_reduced_precision(agreement, accuracy, reference, max_drop), value=agreement,
                    samples=int(got_labels.shape[0]))


# -- evidence 3 and 4: the tensors -------------------------------------------------------------------


def softmax_margin(scores: np.ndarray) -> np.ndarray:
    """Each row's top-two margin in probability: the scores themselves where they already are
    probabilities (rows in [0, 1] summing to 1), else their softmax."""
    x = np.asarray(scores, dtype=np.float64)
    if not ((x >= 0).all() and (x <= 1).all() and np.allclose(x.sum(-1), 1.0, atol=1e-3)):
        x = softmax(x)
    top = np.sort(x, axis=-1)[..., -2:]
    return top[..., 1] - top[..., 0]


def judge_tensors(got: Sequence[Mapping[str, np.ndarray]], want: Sequence[Mapping[str, np.ndarray]],
                  outputs: Sequence[tuple[str, int | None]], precision: str, held: str,
                  against: str = "the f32 file", kind: str = "generated", detections=None) -> Evidence:
    """Each case's reduced outputs ``got`` against f32's ``want`` (evidence of ``kind``: the user's
    "inputs", or "generated" ones), said as ``held`` on them; ``outputs`` are (name, batch axis). Class scores are joined along their batch axis and judged by their argmax on the rows f32 decides
    (near-ties not counted); where every row is a near-tie, by their relative error instead."""
    measured, reasons = [], []
    if detections is not None:  # a model's detections: matched by IoU, never element by element
        said, failed = reduced_evidence(got, want, detections, MAX_RELATIVE_ERROR[precision], MIN_LABEL_AGREEMENT)
        measured.append(said)
        reasons += failed
        outputs = [(name, axis) for name, axis in outputs if name not in detections.names]
    for name, axis in outputs:
        g = [np.asarray(case[name]) for case in got]
        w = [np.asarray(case[name]) for case in want]
        # class scores have one count of classes: a last axis whose size moves between cases (an output of
        # [batch, seq] at two sequence lengths) is judged by its relative error
        if all(class_scores(x, axis, name) for x in w) and len({x.shape[-1] for x in w}) == 1:
            rows_g = np.concatenate([np.moveaxis(x, axis, 0).reshape(-1, x.shape[-1]) for x in g])
            rows_w = np.concatenate([np.moveaxis(x, axis, 0).reshape(-1, x.shape[-1]) for x in w])
            decided = softmax_margin(rows_w) >= NEAR_TIE_MARGIN
            ties = int((~decided).sum())
            if decided.any():
                same = float((rows_g[decided].argmax(-1) == rows_w[decided].argmax(-1)).mean())
                tie_words = f", {ties} near-tie{'s' * (ties != 1)} not counted" if ties else ""
                measured.append(f"{name} argmax agrees on {100 * same:.1f}% of {int(decided.sum())} rows{tie_words}")
                if same < MIN_LABEL_AGREEMENT:
                    reasons.append(f"{name}: argmax agrees on {100 * same:.1f}% of the rows f32 decides "
                                   f"(< {100 * MIN_LABEL_AGREEMENT:.0f}%)")
                continue
            measured.append(f"{name}: all {ties} rows near-ties (f32's top-two margin < {NEAR_TIE_MARGIN:g}), "
                            "judged by relative error")
        # every case at once: ptx's one comparison (NaN where f32 has none is a problem, never agreement)
        agreement = compare_output(name, np.concatenate([x.ravel() for x in g]), np.concatenate([x.ravel() for x in w]),
                                   EXACT, detail=False)
        error, bound = agreement.rel, MAX_RELATIVE_ERROR[precision]
        measured.append(f"{name} relative error {error:.2g} (SQNR {agreement.sqnr_db:.1f} dB)")
        if agreement.problem:
            reasons.append(f"{name}: {agreement.problem}")
        elif error > bound:
            reasons.append(f"{name}: relative error {error:.3g} (> {bound:g} for {precision})")
    return Evidence(kind, f"{held} against {against}: {', '.join(measured)}", reasons)


# -- the record in a file --------------------------------------------------------------------------


def stored(verdict: Verdict, **binding) -> dict:
    """A judgement as every record keeps it, in one form: the Verdict's fields (label, status, evidence,
    measured, reasons, by, ...), and where the record lives apart from what it judged, what binds it
    there (``binding``: a file's artifact and SHA-256 in verify.json, a served endpoint's URL in
    served.json; the date; backend, device, precision, batches). A file's own ptx.verdict keeps the
    Verdict's fields alone: the file is what it judges."""
    return {**verdict.to_dict(), **binding}


def recorded_verdicts(metadata: Mapping[str, str]) -> dict[str, Verdict]:
    """{row label: Verdict} a file records (ptx.verdict); {} for a file without one."""
    try:
        doc = json.loads(metadata.get(VERDICT_KEY) or "{}")
        return {label: Verdict.from_dict(v) for label, v in doc.items()} if isinstance(doc, dict) else {}
    except (TypeError, ValueError):
        return {}


def verdict_strings(verdicts: Sequence[Verdict]) -> dict[str, str]:
    """What a file records of its verdicts, in the one form every command reads: ptx.verdict, each
    runtime's row by its label (a file written before it carries ptx.judgement, its serving runtime's
    verdict as one string, which readers still take from such a file)."""
    return {VERDICT_KEY: json.dumps({v.label: v.to_dict() for v in verdicts})}


# The row an int8 file's own runtime gives it (the runtime its quantizer made it for).
SERVING_LABELS = {"onnx-int8": "ort-cpu-int8", "openvino-int8": "openvino-int8", "onnx-int8w": "ort-cpu-int8",
                  "openvino-int8w": "openvino-int8", "onnx-int4": "ort-cpu-int4", "openvino-int4": "openvino-int4"}


def serving_label(metadata: Mapping[str, str]) -> str | None:
    """The row of the runtime a reduced file (int8, int4) was made for (its ptx.format), or None for any
    other file."""
    from .names import FILE_PRECISIONS, int8_format

    return SERVING_LABELS[int8_format(metadata)] if metadata.get("precision") in FILE_PRECISIONS else None


def differs_note(recorded: Verdict, now: Verdict) -> str:
    """Where verify's verdict is not the one the file records, and why, in one line."""
    if recorded.evidence != now.evidence:
        why = f"export judged it by {_words(recorded.evidence)}, verify by {_words(now.evidence)}"
        if recorded.evidence == "bound" and now.evidence != "bound":
            why += (" (verify measures a bound again only on what it was made with: a tutorial model's real test "
                    "samples, or your --metric FILE.py:FN on a model file)")
        elif recorded.evidence == "inputs" and now.evidence == "generated":
            why += " (give --inputs with your samples to judge it as export did)"
    else:
        why = f"measured then: {recorded.measured}; now: {now.measured}"
    return f"note: {now.label}: the file records {recorded.status} (ptx {recorded.by}), verify finds {now.status}: {why}"


def outweighed_note(verdict: Verdict) -> str | None:
    """Where a verdict read from the file (stronger evidence than verify has here) decided over verify's
    own measurement, which found otherwise: said, with how to measure the stronger evidence here."""
    doubts = [a for a in verdict.also if not a.endswith(f"({verdict.status}, not counted)")]
    if verdict.rechecked or not doubts:
        return None
    again = " (give --inputs with your samples to measure it on this machine)" if verdict.evidence == "inputs" else ""
    return f"note: {verdict.label}: verify's own measurement, weaker evidence than the file's: {doubts[0]}{again}"
