"""A user's picture -> an MNIST-like 28x28 uint8 digit, the way MNIST itself was made.

MNIST digits are light on dark, size-normalised into a 20x20 box and centred by their centre of
mass in a 28x28 frame; a photo or scan is usually dark ink on white paper, any size, anywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ptx.errors import InputError

MAX_PIXELS = 40_000_000  # below Pillow's own bomb limit (~89M): nobody draws a digit that large
INK_THRESHOLD = 0.2  # fraction of the darkest-to-lightest range that counts as ink


def open_image(source) -> Image.Image:
    """Open a path or take a PIL image; reject what cannot be a single still digit."""
    if isinstance(source, Image.Image):
        image = source
        name = "image"
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise InputError(f"{name}: no such file")
        if path.is_dir():
            raise InputError(f"{name}: a folder with no image files in it")
        if path.is_file() and path.stat().st_size == 0:
            raise InputError(f"{name}: empty file")
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise InputError(f"{name}: not an image Pillow can read") from None
        except Image.DecompressionBombError:
            raise InputError(f"{name}: image too large (over {MAX_PIXELS:,} pixels)") from None
        except OSError as exc:
            raise InputError(f"{name}: cannot open ({exc})") from None
    if image.width * image.height > MAX_PIXELS:
        raise InputError(f"{name}: image too large ({image.width}x{image.height}, over {MAX_PIXELS:,} pixels)")
    if getattr(image, "n_frames", 1) > 1:
        raise InputError(f"{name}: animated or multi-frame image; save the one frame to predict as a PNG")
    if min(image.size) < 2:
        raise InputError(f"{name}: image is {image.width}x{image.height}; a digit needs at least 2x2 pixels")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: truncated or corrupt image ({exc})") from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> float32 (H, W) in [0, 255]; transparency is composited on white paper."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = values.max()
        return values * (255.0 / top) if top > 0 else values
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def mnistify(gray: np.ndarray) -> np.ndarray:
    """(H, W) float gray -> (28, 28) uint8, light digit on dark, centred by mass in a 20x20 box."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 127:  # light paper: MNIST wants light ink on black
        gray, border = 255.0 - gray, 255.0 - border
    gray = np.clip(gray - np.median(border), 0, None)  # paper that is grey rather than black
    top = gray.max()
    if top <= 0:
        return np.zeros((28, 28), dtype=np.uint8)
    gray = gray * (255.0 / top)
    rows = np.flatnonzero((gray > INK_THRESHOLD * 255).any(axis=1))
    cols = np.flatnonzero((gray > INK_THRESHOLD * 255).any(axis=0))
    ink = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    factor = 20.0 / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    box = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    box = np.clip(box, 0, 255)
    mass = box.sum()
    cy, cx = (np.indices(box.shape) * box).reshape(2, -1).sum(axis=1) / mass
    top_left = (int(round(14 - cy)), int(round(14 - cx)))
    canvas = np.zeros((28, 28), dtype=np.float32)
    y0, x0 = max(0, top_left[0]), max(0, top_left[1])
    y1, x1 = min(28, top_left[0] + box.shape[0]), min(28, top_left[1] + box.shape[1])
    canvas[y0:y1, x0:x1] = box[y0 - top_left[0]:y1 - top_left[0], x0 - top_left[1]:x1 - top_left[1]]
    return np.round(canvas).astype(np.uint8)


def load_image_array(source, raw: bool = False) -> np.ndarray:
    """A path or PIL image -> (28, 28) uint8 MNIST-like digit. ``raw`` trusts a 28x28 as it is."""
    image = open_image(source)
    gray = to_grayscale(image)
    if raw:
        if gray.shape != (28, 28):
            name = source if not isinstance(source, Image.Image) else "image"
            raise InputError(f"{name}: --raw needs a 28x28 image, got {gray.shape[1]}x{gray.shape[0]}")
        return np.round(gray).astype(np.uint8)
    return mnistify(gray)
