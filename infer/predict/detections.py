"""What `ptx predict` shows of a detection model's answer (its signature records detections: one dict
per image, exported flat, ptx.contract.detections): each image's detections, one line each, highest
score first as the model kept them; --json gives them as a list per image. numpy only."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.contract.detections import DetectionOutputs, from_images, per_image


def _number(value) -> str:
    return f"{float(value):.4g}"


def detection_lines(source: str, outputs: Mapping[str, np.ndarray], detections: DetectionOutputs,
                    names: list[str] | None = None) -> list[str]:
    """``in.npz: image 0: 3 detections`` (``photo.png: 3 detections`` where ``names`` names each image:
    pictures given as files) then ``  label 1  score 0.6887  box [12.3, 4.51, 22.1, 18]`` per detection
    (a key beyond boxes, scores and labels, a mask, by its shape)."""
    lines = []
    scores, labels = detections.role("scores"), detections.role("labels")
    others = [k for k in detections.keys if k not in (detections.boxes, scores, labels)]
    for image, found in enumerate(per_image(outputs, detections)):
        if names is not None and image >= len(names):
            break  # the copies that filled a fixed batch
        count = len(found[detections.boxes])
        where = names[image] if names is not None else f"{source}: image {image}"
        lines.append(f"{where}: {count} detection{'s' * (count != 1)}")
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


# -- pictures in, boxes drawn ----------------------------------------------------------------------

# One colour per label (cycled), readable on photos and on grey.
COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


PIL_BILINEAR = 2  # PIL.Image.BILINEAR, without importing PIL for a model that takes no picture


def open_picture(path):
    """The picture at ``path`` in RGB at its full size, turned as its EXIF orientation says (the
    tutorial models' decoder may shrink a JPEG while decoding, and boxes are drawn at full size)."""
    from PIL import Image, ImageOps

    from ptx.errors import InputError

    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a picture PIL reads ({exc})") from None


def picture_input(signature, model: str):
    """The one input a detection model takes pictures by: float [1, 3, H, W] (torchvision's convention:
    RGB in [0, 1], a picture per call); a one-line refusal naming what it takes otherwise."""
    from ptx.errors import PtxError

    t = signature.inputs[0] if len(signature.inputs) == 1 else None
    fits = t is not None and t.dtype_info.is_float and len(t.shape) == 4 and isinstance(t.shape[0], int) \
        and (t.shape[1] == 3 or isinstance(t.shape[1], str))
    if not fits or (t.shape[0] > 1 and not all(isinstance(d, int) for d in t.shape[2:])):
        takes = ", ".join(f"{s.name} {s.dtype} {s.dims_text()}" for s in signature.inputs)
        raise PtxError(f"pictures: {model} takes {takes}; pictures go in where it takes one float input [B, 3, HEIGHT, "
                       "WIDTH] (a fixed batch; with B > 1, a fixed height and width too), else give .npz files of "
                       "its inputs")
    return t


def picture_cases(paths, signature, model: str):
    """(one Case per batch of pictures, {case label: [(path, the factor from the model's pixels to the
    picture's), ...] per image}): each picture RGB in [0, 1], resized to the height and width the model
    fixes (its own where they are symbols, one picture per call); a fixed batch of B takes B pictures at
    a time, the last batch filled with copies of its last picture (their answers left out)."""
    from ptx.contract.cases import Case

    t = picture_input(signature, model)
    batch = t.shape[0]
    cases, where = [], {}
    for start in range(0, len(paths), batch):
        chunk = list(paths[start:start + batch])
        tensors, scales = [], []
        for path in chunk:
            picture = open_picture(path)
            width, height = picture.size
            size = (t.shape[3] if isinstance(t.shape[3], int) else width,
                    t.shape[2] if isinstance(t.shape[2], int) else height)
            resized = picture.resize(size, PIL_BILINEAR) if size != picture.size else picture
            tensors.append(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)  # [3, H, W]
            scales.append((path, (width / size[0], height / size[1])))
        tensors += [tensors[-1]] * (batch - len(chunk))
        label = ", ".join(map(str, chunk))
        cases.append(Case(label, {t.name: np.stack(tensors).astype(t.dtype)}))
        where[label] = scales
    return cases, where


def draw(path, scale: tuple[float, float], found: Mapping[str, np.ndarray], detections: DetectionOutputs, folder):
    """The picture at ``path`` with its detections drawn (a box per detection in its label's colour,
    ``label score`` above it), written to FOLDER/NAME.detections.png; returns that path."""
    from pathlib import Path

    from PIL import ImageDraw

    from ptx.atomic import atomic_path

    picture = open_picture(path)
    pen = ImageDraw.Draw(picture)
    scores, labels = detections.role("scores"), detections.role("labels")
    for j, box in enumerate(np.asarray(found[detections.boxes], np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]
        label = int(np.asarray(found[labels][j]).ravel()[0]) if labels else 0
        colour = COLOURS[label % len(COLOURS)]
        pen.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour, width=2)
        text = " ".join(filter(None, [str(label) if labels else "", f"{float(found[scores][j]):.2f}" if scores else ""]))
        if text:
            pen.text((min(x1, x2) + 2, max(min(y1, y2) - 11, 0)), text, fill=colour)
    out = Path(folder) / f"{Path(path).stem}.detections.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        picture.save(tmp, "PNG")
    return out


def split_pictures(inputs, signature, model: str, draw: str | None):
    """(the inputs that are no pictures, a Case per picture, {case label: (path, scale)}) for a detection
    model; ``draw`` given for a model that answers no detections, or without a picture, is refused in
    one line."""
    from pathlib import Path

    from ptx.errors import PtxError

    from ..model.inputs import IMAGE_SUFFIXES

    if signature.detections is None:
        raise PtxError(f"--draw: {model} answers no detections (its outputs are {', '.join(signature.output_names)}); "
                       "--draw is for a detection model's file (one dict of boxes per picture)")
    pictures = [p for p in inputs if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    if draw is not None and not pictures:
        raise PtxError("--draw: no picture among the inputs; give PNG or JPEG files to draw the boxes on")
    others = [p for p in inputs if p not in pictures]
    cases, where = picture_cases(pictures, signature, model) if pictures else ([], {})
    return others, cases, where


def in_picture_pixels(outputs: Mapping[str, np.ndarray], detections: DetectionOutputs, scales) -> dict:
    """A picture case's flat outputs with each image's boxes in its picture's pixels (the model saw it
    resized): what a user who gave a picture reads, and draws."""
    images = per_image(outputs, detections)
    for found, (_, (sx, sy)) in zip(images, scales):
        found[detections.boxes] = (np.asarray(found[detections.boxes]) * np.array([sx, sy, sx, sy])).astype(
            np.asarray(found[detections.boxes]).dtype)
    return {**outputs, **from_images(images, detections)}


def draw_cases(cases, pictures, detections: DetectionOutputs, folder) -> list[str]:
    """Each picture case's detections (boxes in its picture's pixels) drawn into ``folder``: a line per
    picture written."""
    lines = []
    for case in cases:
        for (path, _), found in zip(pictures.get(case.label, ()), per_image(case.outputs, detections)):
            out = draw(path, (1.0, 1.0), found, detections, folder)
            lines.append(f"drew {len(found[detections.boxes])} boxes on {path}: {out}")
    return lines
