"""What `ptx predict` shows of a detection model's answer (its signature records detections: one dict
per image, exported flat, ptx.contract.detections): each image's detections, one line each, highest
score first as the model kept them; --json gives them as a list per image. numpy only."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.contract.detections import DetectionOutputs, per_image


def _number(value) -> str:
    return f"{float(value):.4g}"


def detection_lines(source: str, outputs: Mapping[str, np.ndarray], detections: DetectionOutputs) -> list[str]:
    """``in.npz: image 0: 3 detections`` then ``  label 1  score 0.6887  box [12.3, 4.51, 22.1, 18]``
    per detection (a key beyond boxes, scores and labels, a mask, by its shape)."""
    lines = []
    scores, labels = detections.role("scores"), detections.role("labels")
    others = [k for k in detections.keys if k not in (detections.boxes, scores, labels)]
    for image, found in enumerate(per_image(outputs, detections)):
        count = len(found[detections.boxes])
        lines.append(f"{source}: image {image}: {count} detection{'s' * (count != 1)}")
        for j in range(count):
            parts = [f"label {np.asarray(found[labels][j]).tolist()}"] if labels else []
            parts += [f"score {_number(found[scores][j])}"] if scores else []
            parts.append(f"box [{', '.join(_number(v) for v in np.asarray(found[detections.boxes][j]).ravel())}]")
            parts += [f"{k} {np.asarray(found[k][j]).dtype} {list(np.asarray(found[k][j]).shape)}" for k in others]
            lines.append("  " + "  ".join(parts))
    return lines


def detections_json(outputs: Mapping[str, np.ndarray], detections: DetectionOutputs) -> list[dict]:
    """One dict per image, each key's values as lists (what the module returned, in JSON)."""
    return [{k: np.asarray(v).tolist() for k, v in found.items()} for found in per_image(outputs, detections)]
