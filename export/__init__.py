"""Export: checkpoint -> TorchScript and ONNX files, validated against eager before they are kept;
and a user's own nn.Module -> validated files (``export_module``, ``ptx export --module``).

Importing this package imports neither torch nor onnx (the CLI reads the format names through it):
``export_module`` is imported on first use.
"""
import importlib

_LAZY = {"export_module": "module", "load_factory": "factory"}  # their modules import torch


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
