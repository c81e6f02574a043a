"""A model of any signature behind one backend: ``run({name: array}) -> {name: array}``.

This is what ``ptx.infer.load("my.onnx")`` returns for a user's own file, and what verify, bench,
predict and serve drive for it. The tutorial models' Predictors answer the same ``run`` (one input,
one output, with their head above). numpy only here: each runtime's subclass lives in its own module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.tensor_inputs import check_feeds
from ptx.contract.tensors import Signature
from ptx.errors import InputError


class TensorModel:
    """Subclasses set ``backend`` and ``device`` and implement ``_run`` (checked inputs -> every
    output by name). ``run`` is safe to call from several threads at once."""

    backend: str = "?"
    device: str = "cpu"
    precision: str = "f32"
    host = None  # reused host buffers: the tutorial Predictors' GPU path; none here
    stale: str | None = None
    unusable: str | None = None

    def __init__(self, signature: Signature, path: Path | None, name: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        self.signature = signature
        self.path = Path(path) if path is not None else None
        self.name = name or (self.path.name.split(".")[0] if self.path is not None else "model")
        self.metadata = dict(metadata or {})  # the file's ptx.* strings, prefix dropped

    def run(self, feeds: Mapping[str, object], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Inputs by name -> the outputs asked for (all by default), by name. Inputs are checked
        first: a missing or unknown name, a wrong dtype (floats are cast to a float input), rank or
        fixed size is one InputError naming the input."""
        wanted = list(outputs) if outputs is not None else self.signature.output_names
        unknown = [n for n in wanted if n not in self.signature.output_names]
        if unknown:
            raise InputError(f"{self.name} has no output {unknown[0]!r}; its outputs are "
                             f"{', '.join(self.signature.output_names)}")
        result = self._run(check_feeds(self.signature, feeds, self.name))
        return {n: result[n] for n in wanted}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def bare(self, feeds: dict[str, np.ndarray]) -> tuple[str, Callable[[], object]]:
        """(label, call): the same model called straight through its runtime, for bench's peer row."""
        return f"bare {self.backend}", lambda: self._run(feeds)

    def close(self) -> None:
        """Release what the runtime holds (sessions free their memory when collected anyway)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.backend} ({self.device})>"


def outputs_by_name(names: Sequence[str], values: Sequence) -> dict[str, np.ndarray]:
    return {n: np.asarray(v) for n, v in zip(names, values)}


def describe_feeds(feeds: Mapping[str, np.ndarray]) -> str:
    """``x float32 [3, 8], ids int64 [3, 6]``: what a failed run was given."""
    return ", ".join(f"{n} {a.dtype} {list(a.shape)}" for n, a in feeds.items())
