"""Raw samples -> model input, and model output -> decisions, from a contract alone (numpy only).

Training, export validation and every backend call these same functions, so a model sees the
same numbers in training and in serving.
"""
from __future__ import annotations

import unicodedata

import numpy as np

from ptx.errors import InputError, quoted

from .names import BATCH
from .schema import BINARY_THRESHOLD, Contract, EncodeStep, NormalizeStep, PadStep, ScaleStep, Task
from .tensors import TensorSig

PICTURE_INPUT = "picture"  # the graph input of an artifact exported with --input uint8


def to_model_input(raw: np.ndarray, contract: Contract) -> np.ndarray:
    """(N, *raw sample) batch-first raw samples -> the model's input tensor, in its layout."""
    return to_layout(normalize(raw, contract), contract)


def normalize(raw: np.ndarray, contract: Contract) -> np.ndarray:
    """The contract's tensor steps on a batch-first array: (N, *raw sample) -> (N, *sample_shape)."""
    sample_shape = [d if isinstance(d, int) else -1 for d in contract.input.sample_shape]
    if contract.encoding is not None:  # token ids are already the tensor
        return np.ascontiguousarray(np.asarray(raw, dtype=np.int64).reshape(len(raw), *sample_shape))
    x = np.asarray(raw, dtype=np.float32)
    for step in contract.tensor_steps:
        if isinstance(step, ScaleStep):
            x = x * np.float32(step.factor)
        elif isinstance(step, NormalizeStep):
            x = (x - np.asarray(step.mean, dtype=np.float32)) / np.asarray(step.std, dtype=np.float32)
        elif isinstance(step, PadStep):
            p = step.pixels
            x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
    return np.ascontiguousarray(x.reshape(len(x), *sample_shape), dtype=np.float32)


def picture_input(contract: Contract) -> TensorSig:
    """The raw-picture input of a ``--input uint8`` export: (batch, canvas, canvas) uint8, the picture
    pipeline's output before any tensor step; the graph does the tensor steps itself."""
    canvas = contract.picture.canvas
    return TensorSig(PICTURE_INPUT, "uint8", (BATCH, canvas, canvas), 0, axes=(BATCH, "row", "column"))


def pictures_from_model_input(x: np.ndarray, contract: Contract) -> np.ndarray:
    """The uint8 pictures a model-layout float batch was made from (the inverse of to_model_input),
    so float callers (verify, export's validation) can drive a uint8-input artifact. Refused unless
    re-normalising the recovered pictures gives ``x`` back exactly: other floats are no pictures."""
    given = np.asarray(x, dtype=np.float32)
    x = np.moveaxis(given, contract.input.batch_axis, 0)  # batch first
    canvas = contract.picture.canvas
    pad = sum(s.pixels for s in contract.tensor_steps if isinstance(s, PadStep))
    side = canvas + 2 * pad
    values = x.reshape(len(x), side, side)[:, pad:side - pad, pad:side - pad].astype(np.float64)
    for step in reversed(contract.tensor_steps):
        if isinstance(step, NormalizeStep):
            values = values * np.asarray(step.std, dtype=np.float64) + np.asarray(step.mean, dtype=np.float64)
        elif isinstance(step, ScaleStep):
            values = values / step.factor
    pictures = np.clip(np.round(np.nan_to_num(values)), 0, 255).astype(np.uint8)
    if not np.array_equal(to_model_input(pictures, contract), given):
        raise InputError(f"{contract.model}'s artifact takes uint8 pictures (exported with --input uint8), and "
                         "this float input is not the normalised form of any: give raw pictures, or use a float export")
    return pictures


def to_layout(batch_first: np.ndarray, contract: Contract) -> np.ndarray:
    """Move the batch axis where the model wants it: (B, 28, 28) -> (28, B, 28) for lstm."""
    axis = contract.input.batch_axis
    return batch_first if axis == 0 else np.ascontiguousarray(np.moveaxis(batch_first, 0, axis))


def decisions(outputs: np.ndarray, contract: Contract) -> np.ndarray | None:
    """The label each output row stands for: argmax of logits, P >= 0.5 for binary models, none
    for regression."""
    if contract.task is Task.CLASSIFICATION:
        return outputs.argmax(-1)  # (B,) or, per position, (B, T)
    if contract.task is Task.BINARY:
        return (outputs[:, 0] >= BINARY_THRESHOLD).astype(np.int64)
    return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def encode_text(text, step: EncodeStep, model: str = "this model") -> np.ndarray:
    """A string -> int64 token ids, as the contract's encode step says, after composing it (NFC):
    "café" typed as e + a combining accent is the same word as with the one character é, which is
    how word lists hold it."""
    if not isinstance(text, str) or not text:
        raise InputError(f"{quoted(text)}: {model} takes non-empty strings")
    undecoded = [c for c in text if 0xD800 <= ord(c) <= 0xDFFF]
    if undecoded:  # how Python keeps command-line bytes that are not UTF-8 (surrogateescape)
        code = ord(undecoded[0])
        what = f"byte 0x{code - 0xDC00:02x}, which is not UTF-8" if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}"
        raise InputError(f"{quoted(text)}: holds {what}; give the text as UTF-8 (is the terminal set to another encoding?)")
    text = unicodedata.normalize("NFC", text)
    if step.encoding == "vocab":
        unknown = sorted(set(text) - set(step.vocab))
        if unknown:
            raise InputError(f"{quoted(text)}: characters {quoted(''.join(unknown))} are not in {model}'s vocabulary {step.vocab!r}")
        return np.array([step.vocab.index(c) for c in text], dtype=np.int64)
    outside = sorted({c for c in text if ord(c) >= 256})
    if outside and step.unknown_id is None:
        raise InputError(f"{quoted(text)}: characters {quoted(''.join(outside))} are outside Latin-1, which {model} reads")
    codes = [ord(c) if ord(c) < 256 else step.unknown_id for c in text]
    if step.pad_id is not None and step.pad_id in codes:
        raise InputError(f"{quoted(text)}: contains the padding character {chr(step.pad_id)!r}")
    return np.array(codes, dtype=np.int64)


def length_groups(samples: list[np.ndarray], contract: Contract) -> list[list[int]]:
    """Indices of samples that may share one batch. Token sequences of different lengths share one
    only when the contract has a pad id; otherwise (rnn-hello) each length is its own batch."""
    step = contract.encoding
    if step is None or step.pad_id is not None or len({len(s) for s in samples}) <= 1:
        return [list(range(len(samples)))]
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(len(s), []).append(i)
    return list(groups.values())


def collate(samples: list[np.ndarray], contract: Contract) -> np.ndarray:
    """Stack samples of one group; token sequences are padded at the end with the pad id."""
    if len({s.shape for s in samples}) <= 1:
        return np.stack(samples)
    pad = contract.encoding.pad_id
    longest = max(len(s) for s in samples)
    return np.stack([np.pad(s, (0, longest - len(s)), constant_values=pad) for s in samples])


def run_in_batches(run, x: np.ndarray, batch_axis: int, chunk: int) -> np.ndarray:
    """``run`` (model-layout input -> batch-first outputs) over ``x`` in chunks of ``chunk`` samples
    along the input's ``batch_axis`` (1 for a seq-first model); the outputs joined on axis 0."""
    n = x.shape[batch_axis]
    return np.concatenate([np.asarray(run(np.take(x, range(s, min(s + chunk, n)), axis=batch_axis)))
                           for s in range(0, n, chunk)])
