"""Detections as detections (torch-free): a model that returns one dict per image whose tensors are as
long as the detections it kept (torchvision's convention: ``[{"boxes": [K_i, 4], "scores": [K_i],
"labels": [K_i]}, ...]``) is exported as flat tensors, each key's concatenation over the images, plus
``counts`` [images] (how many detections each image kept); the signature records which outputs they
are (``DetectionOutputs``), so every reader gives back one dict per image (``per_image``).

Two answers are compared as detections, never element by element (one extra box would shift every
row after it), and so that identical answers always agree (``pair``): per image, first in order, where
both sides keep the same detections in the same order within the tolerance; then, among the rest, each
of the reference's in order of falling score takes a partner identical within the tolerance, else the
unpaired detection of its label that overlaps it most (IoU at least ``MATCH_IOU``: the rule the COCO
evaluators match by, greedy by score within a category; pycocotools is no dependency of ptx, and this
path stays numpy only, so it is written here in a few lines), else one of another label (named as a
label that differs). IoU is defined only for (x1, y1, x2, y2) boxes with an area: boxes of any other
format (cx, cy, w, h; x2 < x1), clipped to a line at the picture's edge, or NaN are paired by their
coordinates. A paired detection then agrees when its box and score are within the tolerance and its
label is the same. A detection one side keeps alone is counted and shown, unless its score is within the
tolerance of the other side's lowest kept score: a tie at the threshold (one side keeps what the other
drops), said and not counted (as the argmax rule's ties). Never a tie: a detection whose unpaired
counterpart on the other side has its score (within the tolerance) and its label, where no third kept
detection scores so: two such detections that do not overlap are one detection put in two places, whatever
their rank (an image's lowest, or its only one, moved). ``comparison.compare_detections`` is what the one comparison (``compare_output``)
calls for an output that holds a ``DetectionSet`` (it lives there, since it calls that comparison for each
paired detection's values); ``grouped`` makes one of a run's flat tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .error_model import allowance

COUNTS = "counts"  # the output that says how many detections each image kept
ROLES = ("boxes", "scores", "labels")  # the keys whose meaning the comparison knows
MATCH_IOU = 0.5  # COCO's loosest threshold: below it two boxes are not one detection
SHOWN = 3  # coordinates shown per box: 1 decimal is what a reader compares by eye


@dataclass(frozen=True)
class _Exact:
    """No tolerance (a reduced precision's pairing): the atol/rtol pair ``pair`` reads, without importing the
    schema, which imports this module's reader through the signature."""

    atol: float = 0.0
    rtol: float = 0.0


EXACT = _Exact()


@dataclass(frozen=True)
class DetectionOutputs:
    """Which outputs of a signature are detections: ``counts`` ([images] int64) and ``keys`` (each
    [detections, ...], the images' detections one after another, in the module's key order)."""

    counts: str
    keys: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.keys, self.counts)

    def role(self, role: str) -> str | None:
        """The key that plays ``role`` (boxes, scores, labels): the one so named, or ending so
        (``pred_boxes``)."""
        return next((k for k in self.keys if k == role), None) or next((k for k in self.keys if k.endswith(role)), None)

    @property
    def boxes(self) -> str:
        return self.role("boxes") or self.keys[0]  # export records detections only with a boxes key

    def to_dict(self) -> dict:
        return {"counts": self.counts, "keys": list(self.keys)}

    @classmethod
    def from_dict(cls, doc, where: str) -> "DetectionOutputs":
        if not isinstance(doc, Mapping) or set(doc) != {"counts", "keys"} or not isinstance(doc["counts"], str) \
                or not isinstance(doc["keys"], list) or not doc["keys"] or not all(isinstance(k, str) for k in doc["keys"]):
            raise ValueError(f"{where}: {doc!r} is not {{\"counts\": OUTPUT, \"keys\": [OUTPUT, ...]}}")
        return cls(doc["counts"], tuple(doc["keys"]))


def per_image(outputs: Mapping[str, object], detections: DetectionOutputs) -> list[dict[str, np.ndarray]]:
    """One dict per image ({key: its detections' rows}) from a run's flat outputs."""
    counts = np.asarray(outputs[detections.counts]).astype(np.int64).reshape(-1)
    flat = {k: np.asarray(outputs[k]) for k in detections.keys}
    total = int(counts.sum())
    wrong = [k for k, v in flat.items() if v.ndim == 0 or v.shape[0] != total]
    if wrong or (counts < 0).any():
        rows = (flat[wrong[0]].shape[0] if flat[wrong[0]].ndim else 0) if wrong else total
        raise PtxError(f"output {wrong[0] if wrong else detections.counts!r}: the counts per image {counts.tolist()} "
                       f"do not add up to its {rows} rows; the file does not answer as its contract says: re-export it")
    ends = np.cumsum(counts)[:-1]
    return [dict(zip(flat, parts)) for parts in zip(*(np.split(v, ends) for v in flat.values()))] if len(counts) \
        else []


def from_images(images: Sequence[Mapping[str, object]], detections: DetectionOutputs) -> dict[str, np.ndarray]:
    """The flat outputs of one dict per image (what ``per_image`` reads back)."""
    flat = {k: np.concatenate([np.asarray(d[k]) for d in images]) for k in detections.keys}
    flat[detections.counts] = np.array([len(np.asarray(d[detections.keys[0]])) for d in images], dtype=np.int64)
    return flat


class DetectionSet:
    """One run's detections, one dict per image: the value the one comparison receives for them."""

    def __init__(self, images: list[dict[str, np.ndarray]], detections: DetectionOutputs, problem: str | None = None):
        self.images, self.detections = images, detections
        self.problem = problem  # outputs that cannot be split into images (counts that do not add up)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def total(self) -> int:
        return sum(len(d[self.detections.keys[0]]) for d in self.images)


def grouped(outputs: Mapping[str, object], detections: DetectionOutputs | None) -> dict[str, object]:
    """A run's outputs with its detection tensors as one ``DetectionSet`` under the boxes' name (the
    name that is compared, by the one comparison, for them all); others as they are."""
    if detections is None or any(n not in outputs for n in detections.names):
        return dict(outputs)
    out = {n: v for n, v in outputs.items() if n not in detections.names}
    try:
        out[detections.boxes] = DetectionSet(per_image(outputs, detections), detections)
    except PtxError as exc:  # a file that answers otherwise than its contract: a failed comparison, not a crash
        out[detections.boxes] = DetectionSet([], detections, problem=str(exc).partition("; ")[0])
    return out


def compared_names(names: Sequence[str], detections: DetectionOutputs | None) -> list[str]:
    """The output names a comparison goes through: the detections' once, as their boxes."""
    if detections is None:
        return list(names)
    return [n for n in names if n not in detections.names or n == detections.boxes]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] intersection over union of boxes (x1, y1, x2, y2)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, (a[:, None] == b[None, :]).all(-1).astype(np.float64))


def xyxy(boxes: np.ndarray) -> bool:
    """Whether every box reads as (x1, y1, x2, y2): finite, x1 <= x2 and y1 <= y2. One that does not (x2 < x1:
    cx, cy, w, h, or a head's own format) makes IoU meaningless for the image's boxes."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return bool(np.isfinite(boxes).all() and (boxes[:, 2:] >= boxes[:, :2]).all())


def _close(got, want, tolerance) -> np.ndarray:
    """Elementwise, the one comparison's rule (ptx.contract.error_model: each detection's values a row), NaN with
    NaN, an infinity with the same infinity."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    with np.errstate(invalid="ignore"):
        near = np.abs(got - want) <= allowance(want, tolerance)
    return near | (got == want) | (np.isnan(got) & np.isnan(want))


@dataclass
class Pairing:
    """How one image's detections pair with the reference's (``pair``)."""

    pairs: list[tuple[int, int]]  # (the reference's detection, its partner on the other side)
    missing: dict[int, str]  # the reference's detections without a partner: why, in words
    extra: list[int]  # the other side's without a partner
    ties: list[str]  # kept by one side only, at the threshold (said, not counted): what, in words
    boxes_xyxy: bool  # IoU is the measure of the image's boxes (else their coordinates)


def pair(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], detections: DetectionOutputs, tolerance,
         ties: bool = True) -> Pairing:
    """``got``'s detections of one image paired with the reference's ``want``, so that identical answers
    always agree: first in order, the longest run from the start and then from the end where both keep the
    same detections within ``tolerance`` (an atol/rtol pair: every key, labels equal); among the rest, each of
    the reference's (by falling score) takes a partner identical within tolerance, else the one of its label
    it overlaps most (COCO pairs within a category; IoU at least MATCH_IOU), else, a box whose label alone
    differs, the one of any label it overlaps most. Overlap is IoU where the image's boxes are (x1, y1, x2, y2)
    and the pair's IoU is defined (both boxes of positive area), else their coordinates: each within half the
    reference box's size. ``ties``: a detection one side keeps alone whose score is within the tolerance of
    the other side's lowest kept score is a tie at the threshold (either side could have kept it), not a
    difference, unless the other side keeps an unpaired detection of its score and label (``_moved``)."""
    boxes, scores, labels = detections.boxes, detections.role("scores"), detections.role("labels")
    wb, gb = (np.asarray(side[boxes], np.float64).reshape(-1, 4) for side in (want, got))
    n, m = len(wb), len(gb)
    plain = xyxy(wb) and xyxy(gb)

    def agree(wi, gi, aligned: bool) -> np.ndarray:
        """[len(wi)] (``aligned``) or [len(wi), len(gi)]: the detections identical within the tolerance."""
        wi, gi = np.asarray(wi, np.int64), np.asarray(gi, np.int64)
        same = np.ones(len(wi) if aligned else (len(wi), len(gi)), bool)
        for key in detections.keys:
            w, g = np.asarray(want[key]), np.asarray(got[key])
            if w.shape[1:] != g.shape[1:]:
                return np.zeros_like(same)
            width = int(np.prod(w.shape[1:], dtype=np.int64))  # each detection's values in one row (a mask's too)
            w, g = w[wi].reshape(len(wi), width), g[gi].reshape(len(gi), width)
            if not aligned:
                w, g = w[:, None, :], g[None, :, :]
            exact = key == labels or w.dtype.kind not in "fc" or g.dtype.kind not in "fc"
            same &= (w == g).all(-1) if exact else _close(g, w, tolerance).all(-1)
        return same

    # in order: from the start, then from the end (one detection more or fewer in the middle shifts no other)
    k = min(n, m)
    head = agree(range(k), range(k), True)
    start = int(np.argmin(head)) if not head.all() else k
    tail = agree(range(n - 1, start - 1 + n - k, -1), range(m - 1, start - 1 + m - k, -1), True)
    end = int(np.argmin(tail)) if not tail.all() else k - start
    pairs = [(i, i) for i in range(start)] + [(n - 1 - t, m - 1 - t) for t in range(end)]
    left_w, left_g = list(range(start, n - end)), list(range(start, m - end))
    rank = np.asarray(want[scores], np.float64).reshape(-1) if scores else np.zeros(n)
    order = sorted(left_w, key=lambda i: -rank[i])  # COCO's greedy order: the reference's falling score
    taken: set[int] = set()
    missing: dict[int, str] = {}
    if left_w and left_g:
        same = agree(left_w, left_g, False)  # identical within the tolerance: whatever their boxes' format
        at = {i: a for a, i in enumerate(left_w)}
        for i in order:
            j = next((left_g[b] for b in np.flatnonzero(same[at[i]]) if left_g[b] not in taken), None)
            if j is not None:
                taken.add(j)
                pairs.append((i, j))
        paired = {i for i, _ in pairs}
        wl = np.asarray(want[labels]).reshape(n, -1) if labels else None
        gl = np.asarray(got[labels]).reshape(m, -1) if labels else None
        # within its label first; a box whose label alone differs is then named as such, not as two misses
        near = closeness(wb[left_w], gb[left_g], plain)  # [left_w, left_g], at once: a row of numpy per detection
        same_label = (wl[left_w][:, None, :] == gl[left_g][None, :, :]).all(-1) if labels else None
        free = np.array([j not in taken for j in left_g], bool)
        for within in ((True, False) if labels else (False,)):
            for i in order:
                if i in paired:
                    continue
                allowed = free & same_label[at[i]] if within else free
                row = np.where(allowed, near[at[i]], -1.0)
                best = int(np.argmax(row)) if allowed.any() else -1
                if best >= 0 and row[best] >= MATCH_IOU:
                    free[best] = False
                    taken.add(left_g[best])
                    paired.add(i)
                    pairs.append((i, left_g[best]))
                    missing.pop(i, None)
                elif i not in missing:
                    label = (wl[i].tolist()[0] if wl[i].size == 1 else wl[i].tolist()) if within else None
                    nearest = gb[left_g[best]] if best >= 0 else None
                    missing[i] = _unpaired(nearest, overlap(wb[i], nearest, plain)[1] if best >= 0 else "", label)
    else:
        missing = {i: "the other side keeps no unpaired detection" for i in left_w}
    extra = [j for j in left_g if j not in taken]
    tied: dict[str, dict[int, str]] = {"want": {}, "got": {}}
    if ties and scores:
        moved = _moved(want, got, list(missing), extra, scores, labels, tolerance)
        for i, j in moved.items():  # said as what it is: the same detection, somewhere else
            missing[i] = (f"this side keeps a detection of the same score and label at {box_text(gb[j])}, which does "
                          "not overlap it: a box that moved, not a tie")
        tied = {"want": _ties(want, got, [i for i in missing if i not in moved], scores, tolerance, "the reference"),
                "got": _ties(got, want, [j for j in extra if j not in moved.values()], scores, tolerance, "this side")}
    return Pairing(sorted(pairs), {i: why for i, why in sorted(missing.items()) if i not in tied["want"]},
                   [j for j in extra if j not in tied["got"]], [*tied["want"].values(), *tied["got"].values()], plain)


def overlap(want_box: np.ndarray, got_box: np.ndarray, plain: bool) -> tuple[float, str]:
    """(how much two boxes are one, in [0, 1]: IoU, or by coordinates 1 - the largest coordinate difference
    over the reference box's size; MATCH_IOU or more pairs them, and what that number is, in words). IoU
    where the image's boxes are (x1, y1, x2, y2) and both have an area; else the coordinates (cx, cy, w, h
    or a head's own format, a box clipped to a line at the picture's edge, NaN)."""
    w, g = np.asarray(want_box, np.float64), np.asarray(got_box, np.float64)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    if plain and area(w) > 0 and area(g) > 0:
        value = float(iou(w, g)[0, 0])
        return value, f"IoU {value:.2f}"
    if (np.isnan(g) != np.isnan(w)).any():
        return 0.0, "NaN where the other has a number"
    with np.errstate(invalid="ignore"):
        apart = np.where((g == w) | np.isnan(g), 0.0, np.abs(g - w))  # NaN with NaN, an infinity with itself: 0
    diff, size = float(apart.max()), _size(w)
    if not np.isfinite(diff):
        return 0.0, "an infinity where the other has a number"
    return max(0.0, 1.0 - diff / size), f"{diff:.3g} apart in a coordinate (box size {size:.3g})"


def closeness(want: np.ndarray, got: np.ndarray, plain: bool) -> np.ndarray:
    """[len(want), len(got)] ``overlap``'s number for every pair of boxes, at once."""
    want, got = np.asarray(want, np.float64).reshape(-1, 4), np.asarray(got, np.float64).reshape(-1, 4)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    w, g = want[:, None, :], got[None, :, :]
    with np.errstate(invalid="ignore"):
        apart = np.where((g == w) | (np.isnan(g) & np.isnan(w)), 0.0, np.abs(g - w))  # NaN beside a number: NaN
    diff = np.where(np.isnan(apart).any(-1), np.inf, apart.max(-1, initial=0.0))
    sizes = np.array([_size(b) for b in want])[:, None]
    with np.errstate(invalid="ignore"):
        value = np.clip(1.0 - diff / sizes, 0.0, None)
    if plain:
        defined = (area(want) > 0)[:, None] & (area(got) > 0)[None, :]
        value = np.where(defined, iou(want, got), value)
    return np.nan_to_num(value, nan=0.0)


def _size(box: np.ndarray) -> float:
    """A box's size to measure its coordinates' differences by: its larger side read as x1, y1, x2, y2 (or
    its w, h as cx, cy, w, h: the same spread), else its largest coordinate, else 1."""
    finite = box[np.isfinite(box)]
    spread = max(abs(box[2] - box[0]), abs(box[3] - box[1])) if np.isfinite(box).all() else 0.0
    return float(spread) or float(np.abs(finite).max() if finite.size else 0.0) or 1.0


def box_text(values) -> str:
    """A box as a message shows it: ``[43.0, 40.0, 63.0, 60.0]``, a fraction to SHOWN digits."""
    return "[" + ", ".join(f"{float(v):.{SHOWN}g}" if 0 < abs(float(v)) < 1 else f"{float(v):.1f}" for v in values) + "]"


def _unpaired(nearest, how: str, label) -> str:
    """Why a reference detection has no partner, true to the numbers it gives."""
    of = f" of label {label}" if label is not None else ""
    if nearest is None:
        return f"the other side keeps no unpaired detection{of}"
    shown = box_text(nearest)
    if how.startswith("IoU"):
        return f"the unpaired box{of} it overlaps most, {shown}, has {how} < {MATCH_IOU}"
    if " apart " in how:
        return f"the nearest unpaired box{of}, {shown}, is {how}: more than half that size"
    return f"the unpaired box{of} {shown} has {how}"


def _moved(want, got, missing: Sequence[int], extra: Sequence[int], scores: str, labels: str | None,
           tolerance) -> dict[int, int]:
    """{the reference's unpaired detection: this side's unpaired one of the same score (within the tolerance) and
    label}: two detections that do not overlap (else they would be paired) yet score alike are one detection put
    in two places, whatever their rank (an image's lowest, or its only one, moved keeps its score on both sides),
    never a tie at the threshold. Unless the scores crowd there: where a third kept detection scores within the
    tolerance of them, two detections trading places at a top-k or score threshold (each side keeps one and drops
    the other, as runtimes' last bits decide) look exactly so, and are ties."""
    ws, gs = (np.asarray(side[scores], np.float64).reshape(-1) for side in (want, got))
    wl, gl = ((np.asarray(side[labels]).reshape(len(side[scores]), -1) for side in (want, got)) if labels else
              (None, None))
    band = lambda v: tolerance.atol + tolerance.rtol * np.abs(v)  # noqa: E731
    near = lambda values, v: np.abs(values - v) <= band(values) + band(v)  # noqa: E731
    found: dict[int, int] = {}
    for i in missing:
        j = next((j for j in extra if j not in found.values() and near(gs[j], ws[i])
                  and (wl is None or np.array_equal(wl[i], gl[j]))), None)
        if j is not None and int(near(ws, ws[i]).sum()) + int(near(gs, gs[j]).sum()) <= 2:  # the two alone there
            found[i] = j
    return found


def _ties(keeps, other, alone, scores: str, tolerance, whose: str) -> dict[int, str]:
    """{detection: in words} of ``alone`` (detections ``keeps`` kept and ``other`` did not) whose score is
    within the tolerance of ``other``'s lowest kept score: a threshold either side could have drawn."""
    theirs = np.asarray(other[scores], np.float64).reshape(-1)
    if not len(alone) or not theirs.size:
        return {}
    lowest = float(theirs.min())
    mine = np.asarray(keeps[scores], np.float64).reshape(-1)
    band = lambda v: tolerance.atol + tolerance.rtol * abs(v)  # noqa: E731
    return {int(i): f"detection {i} (score {mine[i]:.7g}) kept by {whose} alone, within the tolerance of the other's "
            f"lowest kept score {lowest:.7g}" for i in alone if abs(mine[i] - lowest) <= band(mine[i]) + band(lowest)}


def reduced_evidence(got: Sequence[Mapping[str, object]], want: Sequence[Mapping[str, object]],
                     detections: DetectionOutputs, bound: float, min_share: float) -> tuple[str, list[str]]:
    """A reduced precision's detections against f32's over every case (what the one verdict's tensor
    evidence says of them; a tolerance means nothing at bf16 or int8): (what was measured, the reasons it
    fails). They hold where the detections matched by IoU with the same label are at least ``min_share``
    of all (the reference's, and the reduced side's extra ones), as a classifier's labels must agree,
    and the matched boxes' relative error (||got - want|| / ||want||) is at most ``bound``."""
    labels = detections.role("labels")
    same = total = 0
    error_sq = reference_sq = 0.0
    for g_out, w_out in zip(got, want):
        for g, w in zip(per_image(g_out, detections), per_image(w_out, detections)):
            # the one pairing, by IoU within each label; no tolerance (nor threshold ties) at a reduced precision
            pairs = pair(g, w, detections, EXACT, ties=False).pairs
            total += len(w[detections.boxes]) + len(g[detections.boxes]) - len(pairs)
            same += sum(1 for i, j in pairs if not labels or np.array_equal(g[labels][j], w[labels][i]))
            for i, j in pairs:
                a, b = (np.asarray(side[detections.boxes][k], np.float64) for side, k in ((g, j), (w, i)))
                # NaN with NaN is no error; NaN beside a number is an infinite one (never a NaN that passes)
                diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.nan_to_num(a - b, nan=np.inf))
                error_sq += float(np.square(diff).sum())
                reference_sq += float(np.square(np.nan_to_num(b, nan=0.0)).sum())
    share = same / total if total else 1.0
    rel = (error_sq / reference_sq) ** 0.5 if reference_sq else 0.0 if error_sq == 0 else float("inf")
    measured = (f"{detections.boxes}: detections agree on {100 * share:.1f}% of {total} (IoU >= {MATCH_IOU}"
                f"{', the same label' if labels else ''}), the matched boxes' relative error {rel:.2g}")
    reasons = []
    if share < min_share:
        reasons.append(f"{detections.boxes}: detections agree on {100 * share:.1f}% (< {100 * min_share:.0f}%)")
    if rel > bound:
        reasons.append(f"{detections.boxes}: the matched boxes' relative error {rel:.3g} (> {bound:g})")
    return measured, reasons
