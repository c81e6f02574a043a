"""Printed digits for training: the digits 0-9 in the fonts matplotlib ships, as raw samples.

MNIST is handwriting only, and a model trained on it alone reads a printed "1" with a foot serif as
a 2 and a closed "4" as a 9. --augment mixes these printed digits into the batches (the device
augmentation then varies them like the handwritten ones). matplotlib is a dependency of ptx, so
every machine has the same fonts: DejaVu Sans, Sans Mono and Serif, STIX and Computer Modern, in
their weights and slants. They go through the artifact's own picture pipeline, so they look to the
model exactly as a user's printed digit will.

scripts/real_pictures.py evaluates on other font families (never these) so that its printed
scores measure fonts the model has not seen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ptx.contract.pictures import PIPELINES
from ptx.contract.schema import PictureStep

DIGITS = tuple(str(d) for d in range(10))
GLYPH_SIZE = 96
# Math italic and symbol fonts draw old-style figures or no figures at all.
SKIPPED = ("cmmi", "cmsy", "cmex", "STIXNonUni", "STIXSiz", "LastResort", "Display")


def font_files() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in folder.glob("*.ttf") if not any(p.name.startswith(s) or s in p.name for s in SKIPPED))


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


def printed_digits(step: PictureStep) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, canvas, canvas) uint8 raw samples, their labels 0-9, and the fonts used: every font
    that draws ten distinct digits, each at its own weight and one bolder."""
    samples, labels, used = [], [], []
    pipeline = PIPELINES[step.pipeline]
    for path in font_files():
        try:
            font = ImageFont.truetype(str(path), GLYPH_SIZE)
        except OSError:
            continue
        drawn = [glyph(font, d) for d in DIGITS]
        if len({np.asarray(g).tobytes() for g in drawn}) < len(DIGITS):
            continue  # a font without real digits draws boxes or the same blank ten times
        used.append(path.stem)
        for label, digit in enumerate(DIGITS):
            for image in (drawn[label], glyph(font, digit, bold=3)):
                gray = np.asarray(image, dtype=np.float32)
                samples.append(pipeline(gray, name=f"{path.stem} {digit}", **step.options))
                labels.append(label)
    return np.stack(samples), np.array(labels, dtype=np.int64), used
