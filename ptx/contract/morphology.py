"""The grey opening both mnist-digit versions estimate the paper's light with (numpy only).

Hand written: Pillow's rank filters cost O(k^2) a pixel and replicate the edge, which turns light
rising towards an edge into a band of false ink (the odd reflection here continues the slope);
OpenCV's erosion is faster but would make OpenCV a dependency of the torch-free install (see
mnist_digit_v2's notes).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def opening(a: np.ndarray, k: int) -> np.ndarray:
    """Grey opening of the 2-D array ``a`` with a k x k square (k odd): ``a`` padded by 2 * (k // 2)
    on every side with ``np.pad(..., mode="reflect", reflect_type="odd")``, then the minimum over
    every k-long window along axis 0 and then axis 1, then the maximum the same way; each pass trims
    k // 2 from both ends, so the result has ``a``'s shape. Min and max are exact: the result is
    the sliding windows' to the bit, for integers and floats alike."""
    r = k // 2
    padded = np.ascontiguousarray(_reflect_odd(_reflect_odd(a, 2 * r, 0), 2 * r, 1))
    width = padded.shape[1]
    # Every pass runs on the flattened array, rows ``width`` apart: a window along axis 0 is a shift
    # by whole rows, one along axis 1 a shift by one element, so each step is one contiguous
    # operation (about 1 us) where slices of a 2-D array cost several. The windows that run over a
    # row's end land in columns the passes trim anyway.
    flat = padded.reshape(-1)
    for rank in (np.minimum, np.maximum):
        flat = window_rank(window_rank(flat, k, rank, width), k, rank, 1)
    h, w = a.shape
    return as_strided(flat, (h, w), (width * flat.itemsize, flat.itemsize), writeable=False)


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


def _reflect_odd(a: np.ndarray, p: int, axis: int) -> np.ndarray:
    """``np.pad(a, p, mode="reflect", reflect_type="odd")`` along ``axis`` (0 or 1): the same values
    (2 * edge - mirrored, in the array's dtype) from three slices where the axis is long enough,
    since np.pad's own bookkeeping cost 36 us a call."""
    n = a.shape[axis]
    if p > n - 1:  # reflected more than once: np.pad's own chunks
        return np.pad(a, [(p, p) if i == axis else (0, 0) for i in range(a.ndim)], mode="reflect", reflect_type="odd")
    if axis == 1:
        return _reflect_odd(a.T, p, 0).T
    return np.concatenate([2 * a[:1] - a[p:0:-1], a, 2 * a[-1:] - a[-2:-p - 2:-1]])
