"""Strict name -> ModelSpec registry (timm's register_model, torchvision's duplicate check)."""
from __future__ import annotations

from ptx.errors import UnknownModelError

from .spec import ModelSpec

_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise UnknownModelError(f"unknown model {name!r}; known models: {known} (see `ptx models`)") from None


def list_models() -> list[str]:
    return list(_REGISTRY)
