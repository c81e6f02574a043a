"""The error model of ptx's one rule (torch-free): what noise two runtimes' f32 answers carry, and so what a
value may move by before the move is a fault. docs/error-model.md derives it and measures it.

A dot product of depth K rounds each product and each partial sum at the size of its terms: two runtimes
that order or block the sum differently (ONNX Runtime's kernels beside PyTorch's) part by about
c x sqrt(K) x u x M for terms of magnitude M (u = 2^-24 in float32; c of 20 to 40 for the largest of 16,000
values, measured), the same for every output that shares those terms: every value of a row of logits or
hidden features. The row's largest value is a few times sqrt(K) x M too, so the noise is a fixed share of
the row's scale (7 to 125 units of u in the models measured), whatever the value's own size, and the tolerance's rtol multiplies the row's scale, not the
value: a logit near 0 in a row of logits near 100 is held to 0.1, not to atol. A value without a row (one
number per sample) is its own scale, numpy's allclose rule.
"""
from __future__ import annotations

import numpy as np

# How the rule's scale is said beside a tolerance, in every line and heading that states it.
SCALE_WORDS = "the largest |reference| in its row"


def row_scale(want: np.ndarray, batch_axis: int | None = None) -> np.ndarray:
    """Each value's scale, which the tolerance's rtol multiplies: the largest finite |value| of its row (the
    last axis), where the rounding of the dot products that made the row's values is of that size; its own
    |value| where it has no row: a 0-d value, a last axis of one, or a last axis that is the batch (one number
    per sample: its scale is never another sample's)."""
    magnitude = np.abs(want)
    finite = np.isfinite(magnitude)
    if not finite.all():
        magnitude = np.where(finite, magnitude, 0)
    if want.ndim == 0 or want.shape[-1] <= 1 or (batch_axis is not None and batch_axis % want.ndim == want.ndim - 1):
        return magnitude
    return np.broadcast_to(magnitude.max(-1, keepdims=True, initial=0), want.shape)


def allowance(want: np.ndarray, tolerance, batch_axis: int | None = None) -> np.ndarray:
    """What each value of ``want`` may move by, the one rule: atol + rtol x its row's scale (``row_scale``);
    ``tolerance``: an atol/rtol pair."""
    return tolerance.atol + tolerance.rtol * row_scale(want, batch_axis)
