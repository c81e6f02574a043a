"""The grey opening both mnist-digit versions estimate the paper's light with (numpy only).

Hand written: Pillow's rank filters cost O(k^2) a pixel and replicate the edge, which turns light
rising towards an edge into a band of false ink (the odd reflection here continues the slope);
OpenCV's erosion is faster but would make OpenCV a dependency of the torch-free install (see
mnist_digit_v2's notes).
"""
from __future__ import annotations

import numpy as np


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Grey opening of the 2-D array ``a`` with a k x k square (k odd): ``a`` padded by 2 * (k // 2)
    on every side with ``np.pad(..., mode="reflect", reflect_type="odd")``, then the minimum over
    every k-long window along axis 0 and then axis 1, then the maximum the same way; each pass trims
    k // 2 from both ends, so the result has ``a``'s shape. Min and max are exact: the result is
    the sliding windows' to the bit, for integers and floats alike.

    ``a`` may also be a stack (N, h, w) of pictures of one size: each is opened on its own, with the
    same values as one at a time (a folder's pictures are opened a chunk at a time, so that numpy's
    cost per call is paid once per chunk rather than once per picture)."""
    r = k // 2
    padded = _padded_odd(a, 2 * r)
    height, width = padded.shape[-2:]
    # Every pass runs on the flattened array, rows ``width`` apart: a window along axis 0 is a shift
    # by whole rows, one along axis 1 a shift by one element, so each step is one contiguous
    # operation (about 1 us) where slices of a 2-D array cost several. The windows that run over a
    # row's end (or a picture's, in a stack) land in rows and columns the passes trim anyway.
    flat = padded.reshape(-1)
    for rank in (np.minimum, np.maximum):
        flat = window_rank(window_rank(flat, k, rank, width), k, rank, 1)
    item = flat.itemsize
    # A strided view of the kept corner of each padded picture (np.ndarray over the buffer: as_strided
    # costs 25 us of argument handling for the same view).
    view = np.ndarray(a.shape, flat.dtype, flat, 0, ((height * width * item,) if a.ndim == 3 else ()) + (width * item, item))
    view.flags.writeable = False
    return view


def window_rank(flat: np.ndarray, k: int, rank, step: int) -> np.ndarray:
    """The min (``rank`` = np.minimum) or max of every window of k elements ``step`` apart in the
    1-D ``flat``: element i of the result is the rank of flat[i], flat[i + step], ...,
    flat[i + (k - 1) * step] (the result is (k - 1) * step shorter). Doubling: windows of 1, 2, 4,
    ... are combined from shifted copies, so the work is log2(k) whole-array operations, where a
    reduction over sliding_window_view's strided axis cost a Python-speed inner loop per pixel."""
    out, span = flat, 1  # out[i] = rank of the span elements from flat[i]
    while span * 2 <= k:
        out = rank(out[:-span * step], out[span * step:])
        span *= 2
    if span < k:  # the rest: two overlapping windows of ``span`` cover k
        shift = (k - span) * step
        out = rank(out[:len(out) - shift], out[shift:])
    return out


def _padded_odd(a: np.ndarray, p: int) -> np.ndarray:
    """``np.pad(a, p, mode="reflect", reflect_type="odd")`` over the last two axes (rows, then
    columns, corners included), as one new contiguous array: the same values (2 * edge - mirrored, in
    the array's dtype) written into place by slices, since np.pad's own bookkeeping cost 36 us a
    call and concatenating mirrored copies another copy of the whole."""
    h, w = a.shape[-2:]
    if p > h - 1 or p > w - 1:  # reflected more than once: np.pad's own chunks
        return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(p, p), (p, p)], mode="reflect", reflect_type="odd")
    out = np.empty(a.shape[:-2] + (h + 2 * p, w + 2 * p), a.dtype)
    middle = out[..., p:p + h, :]
    middle[..., p:p + w] = a
    np.subtract(2 * a[..., :1], a[..., p:0:-1], out=middle[..., :p])
    np.subtract(2 * a[..., -1:], a[..., -2:-p - 2:-1], out=middle[..., p + w:])
    # The rows above and below mirror the padded rows, corners too: padding the rows first and then
    # the columns gives the same corners as np.pad of both at once.
    np.subtract(2 * middle[..., :1, :], middle[..., p:0:-1, :], out=out[..., :p, :])
    np.subtract(2 * middle[..., -1:, :], middle[..., -2:-p - 2:-1, :], out=out[..., p + h:, :])
    return out
