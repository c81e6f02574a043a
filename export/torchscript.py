"""TorchScript save and load: the only module of ptx that touches torch.jit.

torch.jit is deprecated in PyTorch 2.13 and warns on every call; the warning is for us (the
maintainers), not for users, so it is silenced here and documented in README.
"""
from __future__ import annotations

import json
import warnings
from contextlib import contextmanager

import torch

from .metadata import TORCHSCRIPT_EXTRA_FILE


@contextmanager
def _quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        yield


def compile_module(model: torch.nn.Module, example: torch.Tensor, prefer: str = "script"):
    """Script the model where it allows it, else trace it; return (module, method used)."""
    with _quiet_jit():
        if prefer == "script":
            try:
                return torch.jit.script(model), "script"
            except Exception:  # scripting rejects some Python; tracing still records the math
                pass
        return torch.jit.trace(model, example, check_trace=False), "trace"


def save(module, path, meta: dict) -> None:
    with _quiet_jit():
        torch.jit.save(module, str(path), _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(meta)})


def load(path, device: str = "cpu"):
    """Load a TorchScript artifact; return (module, metadata dict)."""
    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    meta = json.loads(extra[TORCHSCRIPT_EXTRA_FILE]) if extra[TORCHSCRIPT_EXTRA_FILE] else {}
    return module.eval(), meta
