"""The one Predictor protocol every backend implements, and what a prediction returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ptx.errors import ArtifactError, InputError

from .images import load_image_array
from .preprocess import decisions, normalize, softmax, to_layout


# What inference reads from an artifact; everything else in the metadata is for people.
REQUIRED_METADATA = frozenset({"model", "task", "shape", "batch_axis", "output_shape", "kind", "dtype",
                               "preprocessing", "labels", "vocab"})


@dataclass
class Prediction:
    """One sample's answer. Classifiers fill label/label_name/probability; regression fills value."""

    logits: np.ndarray
    label: int | None = None
    label_name: str | None = None
    probability: float | None = None
    probabilities: np.ndarray | None = None
    value: float | None = None
    source: str | None = field(default=None, compare=False)

    def topk(self, k: int, labels: Sequence[str]) -> list[tuple[str, float]]:
        if self.probabilities is None:
            return []
        order = np.argsort(-self.probabilities)[:k]
        return [(labels[i], float(self.probabilities[i])) for i in order]

    def to_dict(self, labels: Sequence[str] = (), k: int = 0) -> dict:
        out = {"input": self.source, "logits": [float(v) for v in self.logits]}
        if self.value is not None:
            out["value"] = self.value
        else:
            out.update(label=self.label, label_name=self.label_name, probability=self.probability)
            if k:
                out["topk"] = [{"label_name": name, "probability": p} for name, p in self.topk(k, labels)]
        return out


class Predictor:
    """A model behind one backend. Subclasses implement ``predict_array``; the rest is shared.

    ``meta`` is the artifact's metadata: input contract, preprocessing and labels.
    """

    backend: str = "?"

    def __init__(self, meta: dict):
        missing = sorted(REQUIRED_METADATA - set(meta))
        if missing:
            raise ArtifactError(f"{meta.get('model', 'this')} artifact lacks metadata {', '.join(missing)} "
                                f"(made by an older ptx?): re-export it with `ptx export {meta.get('model', 'NAME')}`")
        self.meta = meta

    @property
    def labels(self) -> list[str]:
        return self.meta["labels"]

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """An already-preprocessed batch in the model's input layout -> logits (batch, outputs)."""
        raise NotImplementedError

    def prepare_one(self, item, raw: bool = False) -> np.ndarray:
        """One user input (path, PIL image, array, or number) -> one raw sample. Raises InputError."""
        if self.meta["kind"] in ("number", "vector"):
            return self._parse_numbers(item)
        if self.meta["kind"] == "text":
            return tokenize(item, self.meta)
        if isinstance(item, np.ndarray):
            item = Image.fromarray(np.clip(item, 0, 255).astype(np.uint8))
        return load_image_array(item, raw=raw)

    def _parse_numbers(self, item) -> np.ndarray:
        """A number, a CSV row ("6,148,72,...") or a sequence of numbers -> one float32 sample."""
        width = int(np.prod([d for d in self.meta["shape"] if d != "batch"]))
        values = item.split(",") if isinstance(item, str) else np.atleast_1d(item)
        try:
            sample = np.array([float(v) for v in values], dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{item!r}: not {'a number' if width == 1 else f'{width} comma-separated numbers'} "
                             f"({self.meta['model']} takes {'numbers' if width == 1 else 'CSV rows'})") from None
        if sample.size != width:
            raise InputError(f"{item!r}: {sample.size} values, {self.meta['model']} takes {width}")
        return sample

    def predict_raw(self, samples: np.ndarray, sources: Sequence[str] | None = None) -> list[Prediction]:
        """Raw samples (N, ...) as datasets hold them -> predictions, via the artifact's preprocessing."""
        x = to_layout(normalize(samples, self.meta), self.meta)
        logits = np.asarray(self.predict_array(x), dtype=np.float32)
        sources = sources or [None] * len(samples)
        labels = self.labels
        if "seq" in self.meta["output_shape"]:  # a label per position: the answer is a string
            return self._per_position(logits, samples, sources)
        if self.meta["task"] == "regression":
            return [Prediction(logits=row, value=float(row[0]), source=src) for row, src in zip(logits, sources)]
        if self.meta["task"] == "binary":  # the model's output is already P(label 1)
            return [Prediction(logits=row, label=int(d), label_name=labels[int(d)],
                               probability=float(row[0] if d else 1 - row[0]),
                               probabilities=np.array([1 - row[0], row[0]]), source=src)
                    for row, d, src in zip(logits, decisions(logits, self.meta), sources)]
        probs = softmax(logits)
        return [Prediction(logits=row, label=int(d), label_name=labels[int(d)], probability=float(p[d]),
                           probabilities=p, source=src)
                for row, p, d, src in zip(logits, probs, decisions(logits, self.meta), sources)]

    def _per_position(self, logits, samples, sources) -> list[Prediction]:
        probs = softmax(logits)  # (B, T, C)
        out = []
        for row, p, sample, src in zip(logits, probs, samples, sources):
            length = len(src) if isinstance(src, str) and self.meta["kind"] == "text" else len(sample)
            best = p[:length].argmax(-1)
            text = "".join(self.labels[i] for i in best)
            out.append(Prediction(logits=row[:length], label_name=text,
                                  probability=float(p[:length].max(-1).min(initial=1.0)), source=src))
        return out

    def predict(self, inputs, raw: bool = False) -> list[Prediction]:
        """Image paths, PIL images, numpy arrays (one or a batch), numbers, CSV rows or words
        -> one Prediction each."""
        if isinstance(inputs, np.ndarray) and self.meta["kind"] in ("number", "vector"):
            items = list(inputs.reshape(-1, 1) if self.meta["kind"] == "number" else np.atleast_2d(inputs))
        else:
            items = _as_items(inputs)
        samples = collate([self.prepare_one(item, raw=raw) for item in items])
        return self.predict_raw(samples, sources=[_describe(item) for item in items])


def tokenize(text, meta: dict) -> np.ndarray:
    """A string -> int64 token ids: the index in the model's vocab, or the Latin-1 code (0 is
    padding, 1 stands for characters outside Latin-1)."""
    if not isinstance(text, str) or not text:
        raise InputError(f"{text!r}: {meta['model']} takes non-empty strings")
    vocab = meta.get("vocab")
    if vocab:
        unknown = sorted(set(text) - set(vocab))
        if unknown:
            raise InputError(f"{text!r}: characters {''.join(unknown)!r} are not in {meta['model']}'s vocabulary "
                             f"{vocab!r}")
        return np.array([vocab.index(c) for c in text], dtype=np.int64)
    return np.array([ord(c) if 0 < ord(c) < 256 else 1 for c in text], dtype=np.int64)


def collate(samples: list[np.ndarray]) -> np.ndarray:
    """Stack samples; token sequences of different lengths are padded with 0 at the end."""
    if len({s.shape for s in samples}) <= 1:
        return np.stack(samples)
    longest = max(len(s) for s in samples)
    return np.stack([np.pad(s, (0, longest - len(s))) for s in samples])


def _as_items(inputs) -> list:
    if isinstance(inputs, np.ndarray):
        return list(inputs) if inputs.ndim == 3 else [inputs]
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        return [inputs]
    return list(inputs)


def _describe(item) -> str:
    """How a result names its input: the path or text as given, else what kind of object it was."""
    if isinstance(item, np.ndarray):
        return f"array{tuple(item.shape)}"
    if isinstance(item, Image.Image):
        return f"image {item.width}x{item.height}"
    return str(item)
