"""The one Predictor protocol every backend implements, and what a prediction returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ptx.contract import Contract, InputKind, Task
from ptx.contract import ContractError
from ptx.contract.metadata import ArtifactInfo, from_strings
from ptx.contract.pictures import picture_sample, split_array_batch
from ptx.contract.transforms import collate, decisions, encode_text, length_groups, softmax, to_model_input
from ptx.errors import ArtifactError, InputError


def artifact_info(path: Path, strings, *, missing: str = "no ptx.* metadata", export_args: str = "") -> ArtifactInfo:
    """The ptx metadata an artifact carries, checked: none, or a contract that does not validate, is
    an ArtifactError naming the export command that makes a good one (``export_args``: its options)."""
    if not strings:
        raise ArtifactError(f"{path}: not a ptx export ({missing}); export it with `ptx export NAME{export_args}`")
    try:
        return from_strings(strings)
    except ContractError as exc:
        raise ArtifactError(f"{path}: {exc}; re-export with `ptx export {strings.get('model', 'NAME')}{export_args}`") from None


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
        out = {"input": self.source, "logits": np.asarray(self.logits, dtype=float).tolist()}
        if self.value is not None:
            out["value"] = self.value
        else:
            out.update(label=self.label, label_name=self.label_name, probability=self.probability)
            if k:
                out["topk"] = [{"label_name": name, "probability": p} for name, p in self.topk(k, labels)]
        return out


class Predictor:
    """A model behind one backend. Subclasses set ``backend`` and implement ``predict_array``;
    preprocessing, batching and decisions are shared, driven by the artifact's contract."""

    backend: str = "?"
    device: str = "cpu"
    precision: str = "f32"  # f32, or the reduced precision it runs at (bf16, int8)
    stale: str | None = None  # why the artifact is not the run's current weights (set by open_model)

    def __init__(self, info: ArtifactInfo, path: Path | None = None):
        self.info = info
        self.contract: Contract = info.contract
        self.path = path

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """An already-preprocessed batch in the model's input layout -> outputs (batch, ...)."""
        raise NotImplementedError

    def check_input(self, x) -> None:
        """A preprocessed batch must have the contract's rank and fixed sizes: the runtimes' own
        errors for a wrong shape are multi-line C++ messages."""
        want = self.contract.input.shape
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != len(want) or any(isinstance(w, int) and w != s for w, s in zip(want, shape)) \
                or 0 in shape:
            raise InputError(f"input of shape {shape} does not fit {self.contract.model}'s input {list(want)} "
                             "(use predict() for pictures, numbers or text)")

    # -- user inputs -> raw samples --------------------------------------------------------------
    def prepare_one(self, item, raw: bool = False, name: str | None = None) -> np.ndarray:
        """One user input (path, PIL image, one array picture, number, CSV row or string) -> one
        raw sample as the training data holds it. Raises InputError."""
        kind = self.contract.kind
        if kind in (InputKind.NUMBER, InputKind.VECTOR):
            return self._parse_numbers(item)
        if kind is InputKind.TEXT:
            return encode_text(item, self.contract.encoding, self.contract.model)
        if not isinstance(item, (str, Path, Image.Image, np.ndarray)):
            raise InputError(f"{_describe(item)}: not a picture (give a path, a PIL image or a numpy array)")
        return picture_sample(item, self.contract.picture, raw=raw, name=name)

    def _parse_numbers(self, item) -> np.ndarray:
        """A number, a CSV row ("6,148,72,...") or a sequence of numbers -> one float32 sample."""
        width = self.contract.sample_size
        features = ", ".join(self.contract.features)
        values = item.split(",") if isinstance(item, str) else np.atleast_1d(np.asarray(item, dtype=object))
        try:
            sample = np.array([float(v) for v in values], dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{item!r}: not {'a number' if width == 1 else f'{width} comma-separated numbers'} "
                             f"({self.contract.model} takes {features})") from None
        if sample.size != width:
            raise InputError(f"{item!r}: {sample.size} values, {self.contract.model} takes {width} ({features})")
        if not np.isfinite(sample).all():
            raise InputError(f"{item!r}: NaN or infinite values; {self.contract.model} needs finite numbers")
        return sample

    # -- raw samples -> predictions --------------------------------------------------------------
    def predict_samples(self, samples: list[np.ndarray], sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """Raw samples of possibly different lengths (tokens) -> predictions, in order."""
        sources = list(sources) if sources is not None else [None] * len(samples)
        results: list[Prediction | None] = [None] * len(samples)
        for group in length_groups(samples, self.contract):
            batch = collate([samples[i] for i in group], self.contract)
            for i, result in zip(group, self.predict_raw(batch, [sources[i] for i in group])):
                results[i] = result
        return results

    def predict_raw(self, samples: np.ndarray, sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """Raw samples (N, ...) as datasets hold them -> predictions, via the artifact's steps."""
        return self.interpret(self.predict_array(to_model_input(samples, self.contract)), samples, sources)

    def interpret(self, outputs: np.ndarray, samples: np.ndarray,
                  sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """The model's outputs for raw ``samples`` -> predictions: labels, probabilities, values
        (``ptx serve`` runs batches itself and answers through this, as predict does)."""
        contract = self.contract
        logits = np.asarray(outputs, dtype=np.float32)
        sources = list(sources) if sources is not None else [None] * len(samples)
        labels = self.labels
        if contract.per_position:  # a label per position: the answer is a string
            return self._per_position(logits, samples, sources)
        if contract.task is Task.REGRESSION:
            return [Prediction(logits=row, value=float(row[0]), source=src) for row, src in zip(logits, sources)]
        if contract.task is Task.BINARY:  # the model's output is already P(label 1)
            return [Prediction(logits=row, label=int(d), label_name=labels[int(d)],
                               probability=float(row[0] if d else 1 - row[0]),
                               probabilities=np.array([1 - row[0], row[0]]), source=src)
                    for row, d, src in zip(logits, decisions(logits, contract), sources)]
        probs = softmax(logits)
        return [Prediction(logits=row, label=int(d), label_name=labels[int(d)], probability=float(p[d]),
                           probabilities=p, source=src)
                for row, p, d, src in zip(logits, probs, decisions(logits, contract), sources)]

    def _per_position(self, logits, samples, sources) -> list[Prediction]:
        probs = softmax(logits)  # (B, T, C)
        pad = self.contract.encoding.pad_id
        out = []
        for row, p, sample, src in zip(logits, probs, samples, sources):
            length = int((sample != pad).sum()) if pad is not None else len(sample)
            best = p[:length].argmax(-1)
            out.append(Prediction(logits=row[:length], label_name="".join(self.labels[i] for i in best),
                                  probability=float(p[:length].max(-1).min(initial=1.0)), source=src))
        return out

    def predict(self, inputs, raw: bool = False) -> list[Prediction]:
        """Pictures (paths, PIL images, numpy arrays: one picture or a batch, by shape), numbers,
        CSV rows or strings -> one Prediction each. See README "Library input semantics"."""
        items = self._items(inputs)
        samples = [self.prepare_one(item, raw=raw) for item in items]
        return self.predict_samples(samples, [_describe(item) for item in items])

    def _items(self, inputs) -> list:
        kind = self.contract.kind
        if inputs is None:
            raise InputError(f"nothing to predict: give {self.contract.model} {kind.value} inputs, not None")
        if isinstance(inputs, np.ndarray):
            if kind is InputKind.IMAGE:
                items = split_array_batch(inputs)
            elif kind is InputKind.NUMBER:
                items = list(inputs.reshape(-1, 1))
            elif kind is InputKind.VECTOR:
                items = list(np.atleast_2d(inputs))
            else:
                items = list(inputs.reshape(-1))
        elif isinstance(inputs, (str, bytes, Path, Image.Image)) or not isinstance(inputs, Iterable):
            items = [inputs]
        else:
            items = list(inputs)
        if not items:
            raise InputError("nothing to predict: the input is empty")
        return items


def _describe(item) -> str:
    """How a result names its input: the path or text as given, else what kind of object it was."""
    if isinstance(item, np.ndarray):
        return f"array{tuple(item.shape)}"
    if isinstance(item, Image.Image):
        return f"image {item.width}x{item.height}"
    return str(item)
