"""``mnist-digit`` version 2: the same steps as version 1, each computed at the size it needs.

Version 1 works at the picture's full resolution for a 28x28 answer: a dozen whole-size float32
passes (the paper's light resampled back to full size, subtracted, normalised, thresholded) over
40,000 pixels of a 200x200 scan, where the ink box it keeps is fitted into 20x20. Version 2 looks
for the paper and the ink on an area-reduced copy of at most ``SEARCH_SIDE`` pixels a side, and
goes back to finer pixels only where the digit spans fewer than ``box`` pixels of that copy: then
the ink's region alone is reduced less. One final Lanczos fit, as in version 1.

Every reduction is Pillow's ``Image.reduce`` (the mean of each f x f block, in C on the 8-bit
picture): on a 200x200 picture it took 14 us where ``resize(..., BOX)`` to 64 px took 73 us, and
it keeps block edges on one grid, so the paper and the ink of a region line up with the search
copy's pixels exactly. OpenCV (opencv-python-headless 5.0) was measured and not taken: its PNG
decode and INTER_AREA resize saved under 10% next to Pillow's, its erosion was 6 us where the numpy
opening (morphology.py) takes about 40, but ``import cv2`` alone took 134 ms, most of what one `ptx predict
photo.png` may spend, and a stranger re-implementing the pipeline from docs/artifact-format.md
would need it too.

docs/artifact-format.md defines each step; its reference implementation gives these samples byte
for byte.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from ptx.errors import InputError

from .morphology import opening

SEARCH_SIDE = 64  # the paper and the ink are first found on a copy at most this many pixels a side
FIT_SPAN = 1  # the ink is fitted from a copy on which it spans at least FIT_SPAN x box pixels
REGION_MARGIN = 0.25  # around the ink found on the search copy, a quarter of its extent (faint ends)
MAX_LIGHT_GAIN = 4.0  # as version 1: paper in shadow is brightened at most this much
MIN_PAPER = np.float32(255.0 / MAX_LIGHT_GAIN)
STACK = 16  # pictures searched at once (mnist_digits): measured 7.7 us a picture's opening, 31 alone, 37 at 64
# Lit paper: ink on paper of (inverted) level p gets the gain 255 / max(255 - p, 255 / 4), the contrast
# a shadow took away given back (version 1's step 3). On the search grid the paper's levels are
# integers, so the gain is read from this table, index p + 255, each entry computed in float32 as
# the formula is where the paper is interpolated.
GAIN = np.float32(255.0) / np.maximum(np.float32(255.0) - np.arange(-255, 256, dtype=np.float32), MIN_PAPER)


def mnist_digits(grays: Sequence[Image.Image], *, canvas: int, box: int, ink_threshold: float, paper_window: float,
                 names: Sequence[str]) -> list[np.ndarray | InputError]:
    """8-bit grey pictures (mode L) -> each one's ink, light on black, cropped to the ink's bounding box
    and scaled so that the strongest ink is 255 (float32): what version 1 fits into the box; or the
    InputError that says why it has none. Pictures whose search copies have one size (a folder from
    one scanner or camera) are searched as one stack: the same operations on (N, h, w) arrays, so
    each picture's numbers are those it gets alone, while numpy's cost per call (most of a small
    picture's search) is paid once per stack."""
    searches = []
    for gray in grays:
        width, height = gray.size
        fs = max(1, math.ceil(max(width, height) / SEARCH_SIDE))
        searches.append((fs, gray.reduce(fs) if fs > 1 else gray))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (_, small) in enumerate(searches):
        groups.setdefault(small.size, []).append(i)
    out: list = [None] * len(grays)
    # Stacks of at most STACK pictures: the opening's passes over (16, 82, 82) int16 stay in the
    # core's cache; over 64 such pictures each pass went to memory and cost 4x as much a picture.
    stacks = [members[i:i + STACK] for members in groups.values() for i in range(0, len(members), STACK)]
    for members in stacks:
        if len(members) == 1:  # a picture alone (`ptx predict photo.png`): no stacking to pay for
            smalls = np.asarray(searches[members[0]][1], dtype=np.int16)[None]
        else:
            smalls = np.stack([np.asarray(searches[i][1]) for i in members]).astype(np.int16)  # (N, h, w)
        border = np.concatenate([smalls[:, 0], smalls[:, -1], smalls[:, :, 0], smalls[:, :, -1]], axis=1)
        lit = (np.count_nonzero(border > 127, axis=1) * 2 > border.shape[1]).tolist()
        # Light and dark paper apart: their ink has another dtype (float32 after the gain, int16
        # without), and each keeps the arithmetic it has alone.
        for lit_paper in (True, False):
            chosen = [j for j, light in enumerate(lit) if light == lit_paper]
            if not chosen:
                continue
            small, edge = (smalls, border) if len(chosen) == len(lit) else (smalls[chosen], border[chosen])
            if lit_paper:  # light paper: MNIST wants light ink on black
                small, edge = 255 - small, 255 - edge
            found = _search(small, edge, lit_paper, ink_threshold, paper_window)
            for j, (ink, top, ink_box, paper, level) in enumerate(found):
                i = members[chosen[j]]
                fs, _ = searches[i]
                out[i] = _crop(grays[i], fs, ink, top, ink_box, paper, level, lit_paper, box, ink_threshold, names[i])
    return out


def _search(small: np.ndarray, border: np.ndarray, lit_paper: bool, ink_threshold: float, paper_window: float):
    """(N, h, w) search copies (light ink on dark) -> per picture: its ink on the search grid, the
    ink's top level, the box of the ink above ``ink_threshold`` x top, the paper (or None) and the
    paper's level (or None)."""
    paper = level = None
    if paper_window > 0:
        k = max(3, 2 * int(paper_window * max(small.shape[1:]) / 2) + 1)
        paper = opening(small, k)
        ink = small - paper  # >= 0: an opening never exceeds what it opens
        if lit_paper:
            ink = ink * GAIN.take(paper + 255)  # the paper's integer levels (-255..255: odd reflection) looked up
    else:
        level = np.median(border, axis=1)  # paper that is grey rather than black
        ink = np.maximum(small - level[:, None, None], 0)
    top = ink.max(axis=(1, 2))
    thresholds = ink_threshold * top
    # The same boxes either way: Pillow's getbbox is one call for one picture, numpy's any/argmax
    # over the stack a few calls for all of them.
    boxes = [_ink_box(ink[0], thresholds[0])] if len(ink) == 1 else _ink_boxes(ink, thresholds)
    for j in range(len(ink)):
        yield ink[j], top[j], boxes[j], None if paper is None else paper[j], None if level is None else level[j]


def _crop(gray: Image.Image, fs: int, ink: np.ndarray, top, ink_box: tuple[int, int, int, int], paper, level,
          lit_paper: bool, box: int, ink_threshold: float, name: str) -> np.ndarray | InputError:
    """One picture's ink on the search grid -> its ink crop, scaled so that its top is 255, from a
    finer copy of the ink's region where the digit is small on the search copy."""
    if top <= 0:
        return InputError(f"{name}: no ink found: the picture is one flat colour")
    left, upper, right, lower = ink_box
    side = max(lower - upper, right - left)  # the ink's extent in search pixels
    # The ink is fitted from the most reduced copy on which it spans at least ``box`` pixels: the
    # search copy itself when it does (a digit over a third of the picture), else the ink's region
    # alone (with a margin for faint ends the search copy averaged away), reduced by fw only.
    # Fitting from a copy where the ink spans 1.5, 2 or 3 x box gave the same accuracy on the
    # real-picture sets (docs/artifact-format.md) at up to twice the cost.
    fw = min(fs, max(1, side * fs // (FIT_SPAN * box)))
    if fw < fs:
        width, height = gray.size
        m = math.ceil(REGION_MARGIN * side) + 1
        rows = _on_grid(max(0, upper - m) * fs, min(height, (lower + m) * fs), fw)
        cols = _on_grid(max(0, left - m) * fs, min(width, (right + m) * fs), fw)
        region = gray.crop((cols[0] * fw, rows[0] * fw, min(width, cols[1] * fw), min(height, rows[1] * fw)))
        work = np.asarray(region.reduce(fw) if fw > 1 else region, dtype=np.int16)
        if lit_paper:
            work = 255 - work
        if paper is not None:
            paper = _paper_on_blocks(paper, rows, cols, fw / fs)
            ink = np.maximum(work - paper, 0)
            if lit_paper:
                ink = ink * (np.float32(255.0) / np.maximum(np.float32(255.0) - paper, MIN_PAPER))
        else:
            ink = np.maximum(work - level, 0)
        top = ink.max()
        if top <= 0:
            return InputError(f"{name}: no ink found: the picture is one flat colour")
        left, upper, right, lower = _ink_box(ink, ink_threshold * top)
    return ink[upper:lower, left:right] * np.float32(255.0 / top)


def _ink_box(ink: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(left, upper, right, lower) of the pixels above ``threshold``, right and lower exclusive
    (Pillow's getbbox of the mask, one call where numpy takes five)."""
    above = np.ascontiguousarray(ink > threshold).view(np.uint8)
    return Image.frombuffer("L", above.shape[::-1], above, "raw", "L", 0, 1).getbbox()


def _ink_boxes(ink: np.ndarray, thresholds: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``_ink_box`` of each picture of the stack ``ink`` (N, h, w), each above its own threshold;
    a picture with no pixel above it gets (0, 0, 0, 0) (it has no ink: top <= 0)."""
    above = ink > thresholds[:, None, None]
    rows, cols = above.any(axis=2), above.any(axis=1)  # (N, h), (N, w)
    h, w = rows.shape[1], cols.shape[1]
    upper, lower = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    left, right = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    empty = ~rows.any(axis=1)
    return [(0, 0, 0, 0) if e else (int(a), int(b), int(c), int(d))
            for a, b, c, d, e in zip(left, upper, right, lower, empty)]


def _on_grid(start: int, stop: int, f: int) -> tuple[int, int]:
    """Full-resolution [start, stop) -> the blocks of the f-grid that cover it."""
    return start // f, -(-stop // f)


def _paper_on_blocks(paper: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], ratio: float) -> np.ndarray:
    """The paper (on the search grid) at the centres of the blocks rows x cols of the finer grid,
    a block being ``ratio`` search pixels: Pillow's bilinear resize of the region, the picture's
    edges held (as version 1 resizes its paper back to full size). The last search pixel of each
    row and column is repeated once more: a region at the picture's right or bottom edge ends
    inside the partial last block, up to a search pixel past the paper, where Pillow takes no box."""
    paper = np.concatenate([paper, paper[:, -1:]], axis=1, dtype=np.float32)
    paper = np.concatenate([paper, paper[-1:]])
    size = (cols[1] - cols[0], rows[1] - rows[0])
    box = (cols[0] * ratio, rows[0] * ratio, cols[1] * ratio, rows[1] * ratio)
    image = Image.frombuffer("F", paper.shape[::-1], paper, "raw", "F", 0, 1).resize(size, Image.Resampling.BILINEAR,
                                                                                     box=box)
    return np.frombuffer(image.tobytes(), dtype=np.float32).reshape(size[1], size[0])
