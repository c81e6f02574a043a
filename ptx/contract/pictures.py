"""A user's picture -> one raw sample, by the picture pipeline the artifact names (numpy + Pillow).

Pipelines follow how each training set was made, so that a photo or scan lands where the model
learned:

- ``mnist-digit`` (MNIST, its sample, folders of digits): light ink on dark, the ink's bounding box
  scaled to fit a 20x20 box and centred by its centre of mass in a 28x28 canvas.
- ``fashion-product`` (Fashion-MNIST, whose README lists its conversion): trim the edges close to
  the corner colour (5% of full intensity), resize the longest edge to 28 (averaging the area under
  each pixel), extend the shortest edge to 28 around the centre, background to black and the
  product light (products are shot on white).

docs/artifact-format.md gives each step precisely enough to re-implement it. Files are decoded by
``decode.open_image``: a large JPEG at a reduced size (docs/photos.md).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from ptx.errors import InputError

from . import mnist_digit_v2
from .decode import MAX_PIXELS, open_image  # noqa: F401 (MAX_PIXELS: the bound, where callers look for it)
from .morphology import opening
from .schema import PictureStep

CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: a last array axis of this size is colour, not width


def to_grayscale(image: Image.Image, name: str = "image") -> np.ndarray:
    """Any Pillow mode -> float32 (H, W) in [0, 255]; transparency is composited on white paper."""
    gray = _grayscale(image, name)
    return gray if isinstance(gray, np.ndarray) else np.asarray(gray, dtype=np.float32)


def to_gray8(image: Image.Image, name: str = "image") -> Image.Image:
    """``to_grayscale`` rounded to 8 bits, as a mode L image: the same numbers, with no float copy of
    a picture that is 8-bit already (almost every one), for the pipelines that read 8-bit pictures."""
    if image.mode == "L" and "transparency" not in image.info:
        return image  # the common case, spared _grayscale's checks
    gray = _grayscale(image, name)
    return gray if isinstance(gray, Image.Image) else Image.fromarray(np.round(gray).astype(np.uint8))


def _grayscale(image: Image.Image, name: str):
    """A mode L image, or for 16-bit, 32-bit and float pictures a float32 array scaled to [0, 255]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise InputError(f"{name}: the image holds NaN or infinite values")
        low, top = float(values.min()), float(values.max())
        if low < 0:
            raise InputError(f"{name}: the image holds negative values ({low:g})")
        if image.mode == "F" and top <= 1.0:
            return values * 255.0  # a float image in [0, 1]
        return values * (255.0 / top) if top > 0 else values
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if np.asarray(rgba)[..., 3].max() == 0:
            raise InputError(f"{name}: the image is fully transparent: there is nothing to predict")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba).convert("L")
        low, high = image.getextrema()
        if low == high:
            # Light ink on a clear background (a white brush on a drawing app's transparent canvas)
            # vanishes on white paper; on black it is the digit. Only a picture white paper leaves
            # blank is read this way, so every picture that had an answer keeps it.
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("L")
    if image.mode == "LAB":
        # A CIELab TIFF: Pillow converts LAB to nothing else, and its L band is the lightness.
        return image.getchannel("L")
    try:
        return image if image.mode == "L" else image.convert("L")
    except ValueError:  # a mode Pillow cannot make grey (La, ...): one line, not the folder's end
        raise InputError(f"{name}: Pillow cannot make a {image.mode} picture grey; save it as an RGB PNG "
                         "or JPEG") from None


def array_to_image(array: np.ndarray, name: str = "array") -> Image.Image:
    """One picture as a numpy array -> a PIL image. (H, W) is grey; (H, W, C) with C in 1/3/4 is
    grey/RGB/RGBA. uint8 and other integers in 0-255 are taken as they are, uint16 as 16-bit,
    bool as black/white, floats must lie in [0, 1]."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in CHANNELS:
        a = a[..., 0] if a.shape[-1] == 1 else a
    elif a.ndim != 2:
        raise InputError(f"{name}: shape {a.shape} is not one picture: give (H, W) or (H, W, C) with C in 1, 3, 4")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer):
        low, high = int(a.min()), int(a.max())
        if a.dtype == np.uint16 and high > 255:
            a = np.round(a / 257.0)
        elif low < 0 or high > 255:
            raise InputError(f"{name}: integer pixel values {low}..{high} lie outside 0..255")
        a = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f"{name}: the picture holds NaN or infinite values")
        low, high = float(a.min()), float(a.max())
        if low < 0 or high > 1:
            raise InputError(f"{name}: float pixel values {low:g}..{high:g} lie outside [0, 1]; "
                             "give floats in [0, 1] or uint8 in 0..255")
        a = np.round(a * 255.0).astype(np.uint8)
    else:
        raise InputError(f"{name}: dtype {a.dtype} is not a picture")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.shape[-1] if a.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(a), mode=mode)


def split_array_batch(array: np.ndarray) -> list[np.ndarray]:
    """A numpy array of pictures by its shape: (H, W) and (H, W, C) with C in 1/3/4 are one
    picture; (N, H, W) and (N, H, W, C) are N."""
    a = np.asarray(array)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in CHANNELS):
        return [a]
    if a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in CHANNELS):
        return list(a)
    raise InputError(f"array of shape {a.shape}: give (H, W), (H, W, C), (N, H, W) or (N, H, W, C) with C in 1, 3, 4")


def picture_sample(item, step: PictureStep, raw: bool = False, name: str | None = None) -> np.ndarray:
    """A path, PIL image or one array picture -> (canvas, canvas) uint8 raw sample by ``step``.
    ``raw`` takes a picture that is already canvas x canvas as it is (dataset-like)."""
    name, image = _opened(item, name)
    if raw:
        return _raw_sample(image, step.canvas, name)
    return PIPELINES[step.pipeline](_gray_for(image, step, name), name=name, **step.options)


def picture_samples(items: Sequence, step: PictureStep, raw: bool = False,
                    names: Sequence[str | None] | None = None) -> list[np.ndarray | InputError]:
    """``picture_sample`` of many pictures: each one's sample, or the InputError that says why it has
    none, the same numbers as one at a time. A pipeline with a form for many pictures at once
    (``BATCHED``) runs it over them: a worker's chunk of a folder costs numpy's per-call price once."""
    names = list(names) if names is not None else [None] * len(items)
    batched = None if raw else BATCHED.get((step.pipeline, step.options.get("version", 1)))
    if batched is None:
        return [_or_error(picture_sample, item, step, raw, name) for item, name in zip(items, names)]
    out: list = [None] * len(items)
    pending: list[tuple[int, str, Image.Image]] = []  # decoded (8-bit, as BATCHED reads), not yet through it
    held = 0
    for i, (item, name) in enumerate(zip(items, names)):
        name = _name_of(item, name)
        try:
            gray = _gray_for(_opened(item, name)[1], step, name)
            pending.append((i, name, gray))
            held += gray.width * gray.height
        except InputError as exc:
            out[i] = exc
        if pending and (held >= BATCH_PIXELS or i == len(items) - 1):
            samples = batched([gray for _, _, gray in pending], names=[name for _, name, _ in pending], **step.options)
            for (j, _, _), sample in zip(pending, samples):
                out[j] = sample
            pending, held = [], 0
    return out


def _or_error(make, *args):
    """``make(*args)``, or the InputError it raised: one picture's failure is its own, never its batch's."""
    try:
        return make(*args)
    except InputError as exc:
        return exc


def _name_of(item, name: str | None) -> str:
    return name or (str(item) if isinstance(item, (str, Path)) else "image")


def _opened(item, name: str | None) -> tuple[str, Image.Image]:
    """(the name errors give it, the decoded picture) of a path, bytes, PIL image or one array."""
    name = _name_of(item, name)
    return name, array_to_image(item, name) if isinstance(item, np.ndarray) else open_image(item, name)


def _raw_sample(image: Image.Image, canvas: int, name: str) -> np.ndarray:
    gray = to_grayscale(image, name)
    if gray.shape != (canvas, canvas):
        raise InputError(f"{name}: --raw needs a {canvas}x{canvas} image, got {gray.shape[1]}x{gray.shape[0]}")
    return np.round(gray).astype(np.uint8)


def _gray_for(image: Image.Image, step: PictureStep, name: str):
    """The grey picture ``step``'s pipeline reads: to_gray8's 8-bit image or to_grayscale's floats."""
    if step.options.get("version", 1) in EIGHT_BIT.get(step.pipeline, ()):
        return to_gray8(image, name)
    return to_grayscale(image, name)


def _resize(gray: np.ndarray, width: int, height: int, resample, box=None) -> np.ndarray:
    # frombuffer and tobytes: the same float32 values as fromarray and asarray, with less bookkeeping
    # (a few microseconds a call, which a folder of small pictures pays twice a picture).
    gray = np.ascontiguousarray(gray, dtype=np.float32)
    image = Image.frombuffer("F", gray.shape[::-1], gray, "raw", "F", 0, 1).resize((width, height), resample, box=box)
    return np.clip(np.frombuffer(image.tobytes(), dtype=np.float32).reshape(height, width), 0, 255)


PAPER_SIDE = 64  # the paper's light is estimated on a copy this small: it varies slowly
MAX_LIGHT_GAIN = 4.0  # paper in shadow is brightened at most this much (at a quarter of white)


def flatten_paper(gray: np.ndarray, window: float, lit_paper: bool = False) -> np.ndarray:
    """Light ink on dark paper -> the same with the paper's own brightness taken away at every
    pixel, so that a shadow or uneven light is not mistaken for ink. The paper is what a grey
    opening (a min filter, then a max filter) with a square window of ``window`` x the longer side
    leaves (``morphology.opening``): strokes narrower than the window vanish from it, slow changes
    of light stay."""
    h, w = gray.shape
    scale = min(1.0, PAPER_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))
    k = max(3, 2 * int(window * max(size) / 2) + 1)  # the longer side: a narrow "1" keeps its stroke
    paper = opening(small, k)
    paper = Image.fromarray(np.ascontiguousarray(paper, dtype=np.float32), mode="F")
    paper = np.asarray(paper.resize((w, h), Image.Resampling.BILINEAR))
    ink = np.clip(gray - paper, 0, None)
    if lit_paper:
        # Dark ink on light paper that was inverted: light falls on ink and paper alike, so in a
        # shadow the ink's contrast shrinks with the paper's brightness (255 - paper here).
        # Dividing by it gives the digit one contrast across the shadow; the gain is capped so
        # that sensor noise in a deep shadow is not blown up into ink.
        ink = ink * (255.0 / np.clip(255.0 - paper, 255.0 / MAX_LIGHT_GAIN, None))
    return ink


def mnist_digit(gray, *, version: int = 1, canvas: int = 28, box: int = 20, ink_threshold: float = 0.2,
                paper_window: float = 0.34, name: str = "image") -> np.ndarray:
    """(H, W) grey -> (canvas, canvas) uint8, light digit on dark, centred by mass in a box x box.
    ``gray``: to_grayscale's float32 array (either version), or to_gray8's L image (version 2)."""
    if version == 2:
        if not isinstance(gray, Image.Image):
            gray = Image.fromarray(np.round(gray).astype(np.uint8))
        sample = mnist_digits_v2([gray], names=[name], canvas=canvas, box=box, ink_threshold=ink_threshold,
                                 paper_window=paper_window)[0]
        if isinstance(sample, InputError):
            raise sample
        return sample
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    lit_paper = np.median(border) > 127
    if lit_paper:  # light paper: MNIST wants light ink on black
        gray, border = 255.0 - gray, 255.0 - border
    if paper_window > 0:
        gray = flatten_paper(gray, paper_window, lit_paper)
    else:
        gray = np.clip(gray - np.median(border), 0, None)  # paper that is grey rather than black
    top = gray.max()
    if top <= 0:
        raise InputError(f"{name}: no ink found: the picture is one flat colour")
    gray = gray * (255.0 / top)
    rows = np.flatnonzero((gray > ink_threshold * 255).any(axis=1))
    cols = np.flatnonzero((gray > ink_threshold * 255).any(axis=0))
    return _fit_in_canvas(gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], canvas, box, name)


def mnist_digits_v2(grays: Sequence[Image.Image], *, names: Sequence[str], version: int = 2, canvas: int = 28,
                    box: int = 20, ink_threshold: float = 0.2, paper_window: float = 0.34) -> list[np.ndarray | InputError]:
    """``mnist_digit`` (version 2) of many 8-bit pictures: each one's sample or why it has none."""
    inks = mnist_digit_v2.mnist_digits(grays, canvas=canvas, box=box, ink_threshold=ink_threshold,
                                       paper_window=paper_window, names=names)
    return [ink if isinstance(ink, InputError) else _or_error(_fit_in_canvas, ink, canvas, box, name)
            for ink, name in zip(inks, names)]


def _fit_in_canvas(ink: np.ndarray, canvas: int, box: int, name: str) -> np.ndarray:
    """The ink's crop (0-255 float) scaled so that its longer side is ``box`` (Lanczos) and pasted
    into a canvas x canvas black square with its centre of mass in the middle, rounded to uint8."""
    h, w = ink.shape
    factor = box / max(h, w)
    fitted = _resize(ink, max(1, round(w * factor)), max(1, round(h * factor)), Image.Resampling.LANCZOS)
    mass = fitted.sum()
    if mass <= 0:
        raise InputError(f"{name}: no ink found after scaling")
    cy, cx = (_indices(fitted.shape) * fitted).reshape(2, -1).sum(axis=1) / mass
    centre = canvas / 2
    top_left = (int(round(centre - cy)), int(round(centre - cx)))
    out = np.zeros((canvas, canvas), dtype=np.float32)
    y0, x0 = max(0, top_left[0]), max(0, top_left[1])
    y1, x1 = min(canvas, top_left[0] + fitted.shape[0]), min(canvas, top_left[1] + fitted.shape[1])
    out[y0:y1, x0:x1] = fitted[y0 - top_left[0]:y1 - top_left[0], x0 - top_left[1]:x1 - top_left[1]]
    return np.round(out).astype(np.uint8)


@functools.lru_cache(maxsize=1024)
def _indices(shape: tuple[int, int]) -> np.ndarray:
    """np.indices(shape), made once per shape (a fitted digit has at most box x box of them)."""
    grid = np.indices(shape)
    grid.flags.writeable = False
    return grid


def fashion_product(gray: np.ndarray, *, version: int = 1, canvas: int = 28, trim_threshold: float = 0.05,
                    sharpen_radius: float = 0.0, name: str = "image") -> np.ndarray:
    """(H, W) grey -> (canvas, canvas) uint8 the way Fashion-MNIST was made from product photos,
    resampled so that a product picture at any size (an enlarged thumbnail, a large photo) lands on
    the dataset's own pixels (docs/models.md measures each choice)."""
    corners = np.array([gray[0, 0], gray[0, -1], gray[-1, 0], gray[-1, -1]])
    background = float(np.median(corners))
    content = np.abs(gray - background) > trim_threshold * 255
    if not content.any():
        raise InputError(f"{name}: nothing but background: the picture is one flat colour")
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    product = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = product.shape
    if max(h, w) != canvas:
        factor = canvas / max(h, w)
        size = (max(1, min(canvas, round(w * factor))), max(1, min(canvas, round(h * factor))))
        # One scale for both sides, about the product's centre: the shorter side's rounding to whole
        # pixels takes in a little background instead of stretching the product. The margin of
        # background covers that and the filter's reach.
        margin = math.ceil(0.5 / factor) + 3
        region = np.pad(product, margin, constant_values=background)
        half_w, half_h = size[0] / (2 * factor), size[1] / (2 * factor)
        box = (margin + w / 2 - half_w, margin + h / 2 - half_h, margin + w / 2 + half_w, margin + h / 2 + half_h)
        # Reducing averages the area under each pixel (subsampling, as Fashion-MNIST did from its
        # photos, aliases a picture that was itself enlarged); enlarging interpolates.
        resample = Image.Resampling.BOX if factor < 1 else Image.Resampling.LANCZOS
        product = _resize(region, *size, resample, box=box)
        if factor < 1 and sharpen_radius > 0:
            sharpened = Image.fromarray(np.round(product).astype(np.uint8)).filter(
                ImageFilter.UnsharpMask(radius=sharpen_radius, percent=100, threshold=0))
            product = np.asarray(sharpened, dtype=np.float32)
    out = np.full((canvas, canvas), background, dtype=np.float32)
    h, w = product.shape
    y0, x0 = (canvas - h + 1) // 2, (canvas - w + 1) // 2  # an odd margin's extra pixel goes first, as in the dataset
    out[y0:y0 + h, x0:x0 + w] = product
    # The background becomes black and the level farthest from it full intensity: Fashion-MNIST is a
    # light product on black, and a product shot on light grey must not keep a grey background.
    if background > 127:
        out = (background - out) * (255.0 / background)
    else:
        out = (out - background) * (255.0 / (255.0 - background))
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


PIPELINES = {"mnist-digit": mnist_digit, "fashion-product": fashion_product}
# The versions of each pipeline that read to_gray8's 8-bit picture rather than a float copy.
EIGHT_BIT = {"mnist-digit": (2,)}
# Decoded pixels picture_samples holds before it runs the pipeline on them: a chunk of 64 small scans
# is one run, while 64 large PNGs (up to MAX_PIXELS each, decoded whole) are never held at once.
BATCH_PIXELS = 16_000_000
# (pipeline, version) -> its form for many pictures at once (picture_samples); the others go one by one.
BATCHED = {("mnist-digit", 2): mnist_digits_v2}
