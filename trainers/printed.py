"""Printed digits for training: the digits 0-9 in the fonts matplotlib and Pillow ship, as raw samples.

MNIST is handwriting only, and a model trained on it alone reads a printed "1" with a foot serif as
a 2 and a closed "4" as a 9. --augment mixes these printed digits into the batches (the device
augmentation then varies them like the handwritten ones). matplotlib and Pillow are dependencies of
ptx, so every machine has the same fonts: DejaVu Sans, Sans Mono and Serif, STIX and Computer Modern
(matplotlib), in their weights and slants, and Aileron (Pillow's built-in font, a grotesque whose
"1" has a flag and no foot, which none of matplotlib's fonts has: without it such a "1" reads as a
7), with STIX's mathematical sans-serif and monospace digits; each also condensed and italic.
They go through the artifact's own picture pipeline, so they look to the model exactly as a user's
printed digit will.

scripts/real_pictures.py evaluates on other font families (never these) so that its printed
scores measure fonts the model has not seen.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ptx.contract.pictures import PIPELINES
from ptx.contract.schema import PictureStep

DIGITS = tuple(str(d) for d in range(10))
GLYPH_SIZE = 96
# Math italic and symbol fonts draw old-style figures or no figures at all.
SKIPPED = ("cmmi", "cmsy", "cmex", "STIXNonUni", "STIXSiz", "LastResort", "Display")
# (slant in degrees, width factor) for every face: as drawn, italic, condensed. Type comes in these
# shapes more often than in new designs: a DIN-like condensed "4" or a slanted "1" with a flag.
VARIANTS = ((0.0, 1.0), (12.0, 1.0), (0.0, 0.7))
# Unicode's mathematical digits: the first of each ten (U+1D7E2 is MATHEMATICAL SANS-SERIF DIGIT ZERO).
MATH_DIGITS = {"sans": 0x1D7E2, "sans-bold": 0x1D7EC, "mono": 0x1D7F6}


def font_files() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in folder.glob("*.ttf") if not any(p.name.startswith(s) or s in p.name for s in SKIPPED))


def training_faces() -> list[tuple[str, str, ImageFont.FreeTypeFont, tuple[str, ...]]]:
    """(name, family, font at GLYPH_SIZE, the ten characters that draw 0-9) for every typeface the
    printed digits are drawn in: each font's own digits, and the sans-serif and monospace digits of
    STIX's mathematical alphabets, which are designs of their own (a "1" with a flag and no foot)."""
    fonts = []
    for path in font_files():
        try:
            fonts.append((path.stem, ImageFont.truetype(str(path), GLYPH_SIZE)))
        except OSError:
            continue
    builtin = ImageFont.load_default(GLYPH_SIZE)  # Aileron since Pillow 10.1 (with FreeType)
    if isinstance(builtin, ImageFont.FreeTypeFont):
        fonts.append(("-".join(builtin.getname()), builtin))
    faces = []
    for name, font in fonts:
        family = font.getname()[0]
        faces.append((name, family, font, DIGITS))
        if family == "STIXGeneral":
            faces += [(f"{name}-{alphabet}", f"STIX {alphabet}", font, tuple(chr(first + d) for d in range(10)))
                      for alphabet, first in MATH_DIGITS.items()]
    return faces


def glyph(font: ImageFont.FreeTypeFont, text: str, bold: int = 0) -> Image.Image:
    """``text`` as white ink on black with a margin; ``bold`` widens the strokes by that many pixels
    each way (a heavier print or a thick pen)."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 16, bottom - top + 16), 0)
    ImageDraw.Draw(image).text((8 - left, 8 - top), text, fill=255, font=font)
    if bold:
        image = image.filter(ImageFilter.MaxFilter(2 * bold + 1))
    image = image.crop(image.getbbox() or (0, 0, 1, 1))
    margin = image.height // 3  # paper around the digit, as in a user's picture
    page = Image.new("L", (image.width + 2 * margin, image.height + 2 * margin), 0)
    page.paste(image, (margin, margin))
    return page


def restyle(image: Image.Image, slant: float, width: float) -> Image.Image:
    """``image`` slanted to the right by ``slant`` degrees and its width scaled by ``width``."""
    if width != 1.0:
        image = image.resize((max(1, round(image.width * width)), image.height), Image.Resampling.LANCZOS)
    if slant:
        shift = math.tan(math.radians(slant))
        extra = round(image.height * shift)
        image = image.transform((image.width + extra, image.height), Image.Transform.AFFINE,
                                (1, shift, -extra, 0, 1, 0), resample=Image.Resampling.BICUBIC)
    return image


@functools.lru_cache(maxsize=4)  # a few seconds of drawing: once per process and picture step
def printed_digits(step: PictureStep) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(N, canvas, canvas) uint8 raw samples, their labels 0-9, the faces used and each sample's
    family. Every face that draws ten distinct digits (a font lacking them draws boxes or the same
    blank ten times) is drawn at its own weight and one bolder, each as it is, condensed and (an
    upright face) italic. Families weigh about the same: a family's samples are repeated until it
    has about as many as the largest, so that DejaVu's twelve styles do not drown a design that
    only one face has."""
    by_family: dict[str, list[tuple[int, np.ndarray]]] = {}  # family -> (label, sample)
    used, seen = [], set()
    pipeline = PIPELINES[step.pipeline]
    for name, family, font, characters in training_faces():
        drawn = [glyph(font, c) for c in characters]
        pixels = {np.asarray(g).tobytes() for g in drawn}
        if len(pixels) < len(DIGITS) or pixels & seen:
            continue  # no real digits here, or the same drawings as a face already taken
        seen |= pixels
        used.append(name)
        drawings = by_family.setdefault(family, [])
        upright = not any(word in font.getname()[1] for word in ("Italic", "Oblique"))
        variants = VARIANTS if upright else [v for v in VARIANTS if not v[0]]
        for label, character in enumerate(characters):
            for printed in (drawn[label], glyph(font, character, bold=3)):
                for slant, width in variants:
                    gray = np.asarray(restyle(printed, slant, width), dtype=np.float32)
                    drawings.append((label, pipeline(gray, name=f"{name} {label}", **step.options)))
    largest = max(len(drawings) for drawings in by_family.values())
    balanced = [(family, label, sample) for family, drawings in by_family.items()
                for label, sample in drawings * (largest // len(drawings))]
    samples = np.stack([sample for _, _, sample in balanced])
    labels = np.array([label for _, label, _ in balanced], dtype=np.int64)
    samples.flags.writeable = labels.flags.writeable = False  # cached: shared by every caller
    return samples, labels, tuple(used), tuple(family for family, _, _ in balanced)
