"""Raw samples -> model input, from the artifact's metadata alone (numpy only, no torch).

Training uses the same functions, so a model sees identical numbers in training and in serving.
"""
from __future__ import annotations

import numpy as np


def normalize(raw: np.ndarray, contract: dict) -> np.ndarray:
    """(N, *raw sample) raw values -> (N, *sample_shape) float32 (int64 tokens as they are), batch first."""
    sample_shape = [d if isinstance(d, int) else -1 for d in contract["shape"] if d != "batch"]
    if contract["dtype"] == "int64":
        return np.ascontiguousarray(raw.astype(np.int64).reshape(len(raw), *sample_shape))
    prep = contract["preprocessing"]
    x = raw.astype(np.float32) * np.float32(prep["scale"])
    x = (x - np.asarray(prep["mean"], dtype=np.float32)) / np.asarray(prep["std"], dtype=np.float32)
    if prep.get("pad"):
        p = prep["pad"]
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
    return np.ascontiguousarray(x.reshape(len(x), *sample_shape))


def to_layout(batch_first: np.ndarray, contract: dict) -> np.ndarray:
    """Move the batch axis where the model wants it: (B, 28, 28) -> (28, B, 28) for seq-first."""
    axis = contract["batch_axis"]
    return batch_first if axis == 0 else np.ascontiguousarray(np.moveaxis(batch_first, 0, axis))


def from_layout(x: np.ndarray, contract: dict) -> np.ndarray:
    axis = contract["batch_axis"]
    return x if axis == 0 else np.ascontiguousarray(np.moveaxis(x, axis, 0))


def batch_size_of(x, contract: dict) -> int:
    return x.shape[contract["batch_axis"]]


def expected_output_shape(contract: dict, x: np.ndarray) -> tuple[int, ...]:
    """The output shape the contract promises for input ``x`` (batch and seq read from ``x``)."""
    sizes = {"batch": x.shape[contract["batch_axis"]]}
    if "seq" in contract["shape"]:
        sizes["seq"] = x.shape[contract["shape"].index("seq")]
    return tuple(sizes.get(d, d) for d in contract["output_shape"])


def decisions(outputs: np.ndarray, contract: dict) -> np.ndarray | None:
    """The label each output row stands for: argmax for classifiers, p >= 0.5 for binary models
    (whose output is a probability), none for regression."""
    if contract["task"] == "classification":
        return outputs.argmax(-1)  # (B,) or, for per-position outputs, (B, T)
    if contract["task"] == "binary":
        return (outputs[:, 0] >= 0.5).astype(np.int64)
    return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
