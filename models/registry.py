"""Strict name -> ModelSpec registry (timm's register_model, torchvision's duplicate check)."""
from __future__ import annotations

from ptx.contract.registry import Registry
from ptx.errors import UnknownModelError

from .spec import ModelSpec

_REGISTRY: Registry[ModelSpec] = Registry("model", UnknownModelError, hint=" (see `ptx models`)")
register, get, list_models = _REGISTRY.register, _REGISTRY.get, _REGISTRY.names
