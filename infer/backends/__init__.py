"""Backend registry (the model registry's pattern): a backend is one file in this folder that calls
``register(Backend(...))``, plus its module name in ``_BACKEND_FILES``. The CLI's choices, ``load``,
``ptx verify`` and ``ptx bench`` all iterate this registry.

Importing it imports neither torch nor onnxruntime: each backend imports its runtime when loaded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract.registry import Registry
from ptx.errors import PtxError

BareRunner = Callable[[], object]


@dataclass(frozen=True)
class Backend:
    """``load(path, device)`` -> a Predictor for the artifact at ``path``; ``unavailable(device)``
    -> why this machine cannot run it, or None; ``bare(predictor, x)`` -> (label, call): the same
    model called straight through its runtime, for ``ptx bench``'s overhead column."""

    name: str
    artifact: str  # the artifact format it reads (a key of ptx.contract.names.ARTIFACT_FILES)
    devices: tuple[str, ...]
    load: Callable[[Path, str], "object"]
    unavailable: Callable[[str], str | None]
    bare: Callable[[object, np.ndarray], tuple[str, BareRunner]]
    needs_torch: bool
    description: str = ""

    def label(self, device: str) -> str:
        """How verify and bench name a (backend, device) pair: eager-cuda, ort-cpu."""
        return self.name if len(self.devices) == 1 else f"{self.name}-{device}"


_REGISTRY: Registry[Backend] = Registry("backend")
_BACKEND_FILES = ("eager", "torchscript", "ort_cpu", "ort_cuda", "aoti")
register, get, list_backends = _REGISTRY.register, _REGISTRY.get, _REGISTRY.names


def lazy(module: str, attribute: str, **bound) -> Callable:
    """A callable that imports ``ptx.infer.<module>`` only when called: the registry must load
    without torch or onnxruntime."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(f"ptx.infer.{module}"), attribute)(*args, **bound, **kwargs)
    return call


def pairs() -> list[tuple[Backend, str]]:
    """Every (backend, device) pair, CPU first; each device's first is the eager reference."""
    all_pairs = [(b, d) for b in _REGISTRY.entries.values() for d in b.devices]
    return sorted(all_pairs, key=lambda pair: pair[1] != "cpu")


def select(names: list[str] | None) -> list[tuple[Backend, str]]:
    """The (backend, device) pairs that ``names`` pick (a backend name, or a label such as
    eager-cuda); every pair if None."""
    every = pairs()
    if not names:
        return every
    known = {b.name for b, _ in every} | {b.label(d) for b, d in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PtxError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [(b, d) for b, d in every if b.name in names or b.label(d) in names]


for _file in _BACKEND_FILES:
    importlib.import_module(f"{__name__}.{_file}")
