"""TorchScript: the only module of ptx that writes torch.jit files.

torch.jit is deprecated in PyTorch 2.13 and warns on every call; the warning is for us (the
maintainers), not for users, so it is silenced (ptx.torch_quiet) and documented in docs/export.md.
The loader is infer's (infer/runtime/torch_files.py), beside the runtime that runs the file.
"""
from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from pathlib import Path

from ptx.contract.names import TORCHSCRIPT_EXTRA_FILE
from ptx.contract.weights import WEIGHTS_KEY, archive_digest
from ptx.errors import PtxError, first_line
from ptx.infer.formats.model_files import read_model_file
from ptx.torch_quiet import quiet_jit

from ..refusal import describe_refusal, is_user_file, user_files
from . import ExportFormat, Written, register
from .zip_members import replace_members

MODES = ("trace", "script")
MADE_BY = {"trace": "traced", "script": "scripted"}
EXTRA_MEMBER = f"/extra/{TORCHSCRIPT_EXTRA_FILE}"  # torch.jit.save's _extra_files go under extra/


def _compile(model, example: tuple, mode: str, fallback: bool):
    """(the scripted or traced module, the mode used)."""
    import torch

    if mode == "script":
        try:
            return torch.jit.script(model), "script"
        except Exception:  # noqa: BLE001 - scripting rejects some Python; tracing still records the math
            if not fallback:
                raise
    return torch.jit.trace(model, example, check_trace=False, strict=False), "trace"


def write(model, example: tuple, path: Path, signature, strings: dict[str, str], *, mode: str = "trace",
          fallback: bool = False) -> Written:
    """torch.jit.trace ``model`` on ``example``, or torch.jit.script it (``mode``); with ``fallback``,
    a module scripting rejects is traced instead (a tutorial spec's "script where it can")."""
    import torch

    name, files = strings["model"], user_files(model)
    with quiet_jit(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            compiled, used = _compile(model, example, mode, fallback)
        except Exception as exc:  # noqa: BLE001 - torch.jit raises many types; described in one line
            how = "torch.jit.script refused" if mode == "script" and not fallback else "torch.jit.trace failed on"
            raise PtxError(f"torchscript: {how} {name} ({describe_refusal(exc, files)})"
                           + ("; try --torchscript-mode trace" if mode == "script" else "")) from None
    warned = [f"{Path(w.filename).name}:{w.lineno}: {str(w.message).split('.')[0]}" for w in caught
              if issubclass(w.category, torch.jit.TracerWarning) and is_user_file(w.filename, files)]
    strings = {**strings, "torchscript_method": used}
    try:
        _save(compiled, path)
    except RuntimeError as exc:
        # A scripted forward(self, x, bias=None) compiles, and then torch.jit.save fails with
        # "strides() called on an undefined Tensor" (the None default of a Tensor): a traceback before.
        raise PtxError(f"torchscript: torch.jit.save could not save the {MADE_BY[used]} {name} ({first_line(exc)})"
                       + ("; annotate a forward() parameter that defaults to None as Optional[torch.Tensor], "
                          "or try --torchscript-mode trace" if used == "script" else "")) from None
    # Saved once, to the file: the digest is taken on it and written with the strings as its ptx.json, which
    # what the checks find later joins (add_metadata), without saving the module again.
    _write_strings(path, {**strings, WEIGHTS_KEY: archive_digest(path, "torchscript")})

    hint = ("tracing warned at " + "; ".join(dict.fromkeys(warned)) + ": give --torchscript-mode script"
            if warned else "")
    return Written(MADE_BY[used], None, hint)


# Room left on the disk beyond the weights: the archive's code, constants and zip records.
ARCHIVE_SLACK = 1.02, 16 << 20


def _save(module, path: Path) -> None:
    """``module`` saved to ``path``, without ptx.json (written once the digest of the archive is known),
    straight to the file: saved into a buffer first, a model's weights were in memory once more.
    torch.jit.save aborts the whole process (c10::Error, terminate) when the disk fills, where Python's
    own write raises ENOSPC: so the disk's room for the weights is checked first, in one line."""
    import torch

    weights = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    need = int(weights * ARCHIVE_SLACK[0]) + ARCHIVE_SLACK[1]
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise PtxError(f"torchscript: No space left on device for {path.name}: it needs about {need / 1e6:,.1f} MB and "
                       f"{path.parent} has {free / 1e6:,.1f} MB free; free some space or export with --out elsewhere")
    with quiet_jit():
        torch.jit.save(module, str(path))


def _write_strings(path: Path, strings: dict[str, str]) -> None:
    """``strings`` as the ptx.json of the TorchScript file at ``path``, in place of the one it holds, or
    added (zip_members: the module and its weights are not written again, so their digest stays true)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    # where torch.jit.save puts it: extra/ under the one top folder it names every member under
    name = next((n for n in names if n.endswith(EXTRA_MEMBER)), names[0].partition("/")[0] + EXTRA_MEMBER)
    replace_members(path, {name: json.dumps(strings).encode()})


def add_metadata(path: Path, strings: dict[str, str]) -> None:
    """``strings`` added to the ptx metadata of the TorchScript file at ``path`` (its weights digest
    kept: the weights are not written again)."""
    held = read_model_file(path, digest=False).metadata
    _write_strings(path, {**held, **{k: v for k, v in strings.items() if k != WEIGHTS_KEY}})


register(ExportFormat(name="torchscript", description="TorchScript (libtorch, Triton's pytorch backend)",
                      serving_backend="torchscript", write=write, raw_pictures=True, add_metadata=add_metadata,
                      writes_quickly=True))
