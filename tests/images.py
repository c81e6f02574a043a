"""Test pictures made from real MNIST digits, the way users have them."""
from __future__ import annotations

import numpy as np
from PIL import Image


def paper_digit(digit28: np.ndarray, size: int = 200, scale: int = 5, offset=(50, 12)) -> Image.Image:
    """A dark digit on white paper, enlarged and off-centre, as a phone photo or scan would be."""
    ink = Image.fromarray(255 - digit28).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    page = Image.new("L", (size, size), 255)
    page.paste(ink, offset)
    return page
