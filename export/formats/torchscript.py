"""TorchScript: the only module of ptx that writes torch.jit files.

torch.jit is deprecated in PyTorch 2.13 and warns on every call; the warning is for us (the
maintainers), not for users, so it is silenced here and documented in docs/export.md.
"""
from __future__ import annotations

import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path

from ptx.contract import Contract
from ptx.contract.names import TORCHSCRIPT_EXTRA_FILE
from ptx.contract.weights import WEIGHTS_KEY, digest_of
from ptx.errors import PtxError

from . import ExportFormat, register


@contextmanager
def quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        yield


def compile_module(model, example, prefer: str = "script"):
    """Script the model where it allows it, else trace it; return (module, method used)."""
    import torch

    with quiet_jit():
        if prefer == "script":
            try:
                return torch.jit.script(model), "script"
            except Exception:  # scripting rejects some Python; tracing still records the math
                pass
        return torch.jit.trace(model, example, check_trace=False), "trace"


def write(model, example, path: Path, contract: Contract, strings: dict[str, str], *,
          method: str = "script", graph_input=None) -> dict[str, str]:
    """``graph_input`` (raw pictures) needs nothing here: the module takes what ``example`` is."""
    module, used = compile_module(model, example, prefer=method)
    extra = {"torchscript_method": used}
    save_with_metadata(module, path, {**strings, **extra})
    return extra


def _save(module, path: Path, strings: dict[str, str]) -> None:
    import torch

    # Into memory first: torch.jit.save aborts the whole process (c10::Error, terminate) when the
    # disk fills; Python's own write raises ENOSPC, which atomic_path turns into one line.
    buffer = io.BytesIO()
    with quiet_jit():
        torch.jit.save(module, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(strings)})
    path.write_bytes(buffer.getbuffer())


def save_with_metadata(module, path: Path, strings: dict[str, str]) -> str:
    """Save the scripted or traced ``module`` to ``path`` with ``strings`` in its ptx.json and the
    digest of its weights (ptx.contract.weights: the archive but its extra files). The digest is
    taken on a first save and checked on the second, which carries it. Returns the digest."""
    import torch

    strings = {k: v for k, v in strings.items() if k != WEIGHTS_KEY}
    _save(module, path, strings)
    digest = digest_of(path, "torchscript")
    _save(module, path, {**strings, WEIGHTS_KEY: digest})
    if digest_of(path, "torchscript") != digest:  # torch.jit.save wrote something else the second time
        raise PtxError(f"{path.name}: torch.jit.save wrote the module differently twice (torch {torch.__version__}): "
                       "ptx cannot bind this file's contract to its weights; please report it")
    return digest


def load(path, device: str = "cpu"):
    """Load a TorchScript artifact; return (module, metadata strings or None when it has none)."""
    import torch

    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    with quiet_jit():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    text = extra[TORCHSCRIPT_EXTRA_FILE]
    return module.eval(), (text.decode() if isinstance(text, bytes) else text) or None


register(ExportFormat(name="torchscript", description="TorchScript (libtorch, Triton's pytorch backend)",
                      serving_backend="torchscript", write=write, raw_pictures=True))
