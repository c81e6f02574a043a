"""Detections as detections (torch-free): a model that returns one dict per image whose tensors are as
long as the detections it kept (torchvision's convention: ``[{"boxes": [K_i, 4], "scores": [K_i],
"labels": [K_i]}, ...]``) is exported as flat tensors, each key's concatenation over the images, plus
``counts`` [images] (how many detections each image kept); the signature records which outputs they
are (``DetectionOutputs``), so every reader gives back one dict per image (``per_image``).

Two answers are compared as detections, never element by element (one extra box would shift every
row after it): per image, the reference's detections in order of falling score each take the unmatched
detection of the other side that overlaps them most (IoU at least ``MATCH_IOU``), the rule the COCO
evaluators match by (greedy by score; pycocotools is no dependency of ptx, and this path stays numpy
only, so it is written here in a few lines); a matched pair then agrees when its box and score are
within the tolerance and its label is the same. A detection left without a partner on either side is
counted and shown. ``comparison.compare_detections`` is what the one comparison (``compare_output``)
calls for an output that holds a ``DetectionSet`` (it lives there, since it calls that comparison for each
matched pair's values); ``grouped`` makes one of a run's flat tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

COUNTS = "counts"  # the output that says how many detections each image kept
ROLES = ("boxes", "scores", "labels")  # the keys whose meaning the comparison knows
MATCH_IOU = 0.5  # COCO's loosest threshold: below it two boxes are not one detection
SHOWN = 3  # coordinates shown per box: 1 decimal is what a reader compares by eye


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


def match(got_boxes, want_boxes, want_scores=None) -> list[tuple[int, int | None, float]]:
    """[(reference detection, its partner in ``got`` or None, their IoU)], greedy by the reference's
    falling score (COCO's rule): each takes the unmatched box that overlaps it most, at MATCH_IOU or
    more."""
    overlaps = iou(want_boxes, got_boxes)
    n = overlaps.shape[0]
    order = np.argsort(-np.asarray(want_scores, np.float64), kind="stable") if want_scores is not None \
        else np.arange(n)
    taken = np.zeros(overlaps.shape[1], bool)
    pairs = []
    for i in order:
        row = np.where(taken, -1.0, overlaps[i]) if overlaps.shape[1] else np.zeros(0)
        j = int(np.argmax(row)) if row.size else -1
        if j >= 0 and row[j] >= MATCH_IOU:
            taken[j] = True
            pairs.append((int(i), j, float(row[j])))
        else:
            best = float(overlaps[i].max()) if overlaps.shape[1] else 0.0
            pairs.append((int(i), None, best))
    return sorted(pairs)


def reduced_evidence(got: Sequence[Mapping[str, object]], want: Sequence[Mapping[str, object]],
                     detections: DetectionOutputs, bound: float, min_share: float) -> tuple[str, list[str]]:
    """A reduced precision's detections against f32's over every case (what the one verdict's tensor
    evidence says of them; a tolerance means nothing at bf16 or int8): (what was measured, the reasons it
    fails). They hold where the detections matched by IoU with the same label are at least ``min_share``
    of all (the reference's, and the reduced side's extra ones), as a classifier's labels must agree,
    and the matched boxes' relative error (||got - want|| / ||want||) is at most ``bound``."""
    scores, labels = detections.role("scores"), detections.role("labels")
    same = total = 0
    error_sq = reference_sq = 0.0
    for g_out, w_out in zip(got, want):
        for g, w in zip(per_image(g_out, detections), per_image(w_out, detections)):
            pairs = [(i, j) for i, j, _ in match(g[detections.boxes], w[detections.boxes], w[scores] if scores else None)
                     if j is not None]
            total += len(w[detections.boxes]) + len(g[detections.boxes]) - len(pairs)
            same += sum(1 for i, j in pairs if not labels or np.array_equal(g[labels][j], w[labels][i]))
            for i, j in pairs:
                diff = np.asarray(g[detections.boxes][j], np.float64) - np.asarray(w[detections.boxes][i], np.float64)
                error_sq += float(np.square(diff).sum())
                reference_sq += float(np.square(np.asarray(w[detections.boxes][i], np.float64)).sum())
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
