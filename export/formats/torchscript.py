"""TorchScript: the only module of ptx that writes torch.jit files.

torch.jit is deprecated in PyTorch 2.13 and warns on every call; the warning is for us (the
maintainers), not for users, so it is silenced (ptx.torch_quiet) and documented in docs/export.md.
The loader is infer's (infer/runtime/torch_files.py), beside the runtime that runs the file.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

from ptx.contract.names import TORCHSCRIPT_EXTRA_FILE
from ptx.contract.weights import WEIGHTS_KEY, archive_digest
from ptx.errors import PtxError, first_line
from ptx.torch_quiet import quiet_jit

from ..refusal import describe_refusal, is_user_file, user_files
from . import ExportFormat, Written, register

MODES = ("trace", "script")
MADE_BY = {"trace": "traced", "script": "scripted"}


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
        # Saved once as it is checked, its digest taken in memory; the digest goes in with what the checks find,
        # in the file's one more save (``finish``): two saves, where binding the digest first made three.
        archive = _archive(compiled, strings)
    except RuntimeError as exc:
        # A scripted forward(self, x, bias=None) compiles, and then torch.jit.save fails with
        # "strides() called on an undefined Tensor" (the None default of a Tensor): a traceback before.
        raise PtxError(f"torchscript: torch.jit.save could not save the {MADE_BY[used]} {name} ({first_line(exc)})"
                       + ("; annotate a forward() parameter that defaults to None as Optional[torch.Tensor], "
                          "or try --torchscript-mode trace" if used == "script" else "")) from None
    digest = archive_digest(archive, "torchscript")
    path.write_bytes(archive.getbuffer())
    del archive

    def hint() -> str:
        return ("tracing warned at " + "; ".join(dict.fromkeys(warned)) + ": give --torchscript-mode script"
                if warned else "")

    def finish(found: dict[str, str]) -> None:  # saved again from the module held, not loaded back
        save_with_metadata(compiled, path, {**strings, **found}, digest)

    return Written(MADE_BY[used], None, hint, finish)


def _archive(module, strings: dict[str, str]) -> io.BytesIO:
    """``module`` saved with ``strings`` as its ptx.json, in memory: torch.jit.save aborts the whole
    process (c10::Error, terminate) when the disk fills, where Python's own write raises ENOSPC, which
    atomic_path turns into one line."""
    import torch

    buffer = io.BytesIO()
    with quiet_jit():
        torch.jit.save(module, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(strings)})
    return buffer


def save_with_metadata(module, path: Path, strings: dict[str, str], digest: str | None = None) -> str:
    """Save the scripted or traced ``module`` to ``path`` with ``strings`` in its ptx.json and the
    digest of its weights (ptx.contract.weights: the archive but its extra files). The digest is
    taken on a first save in memory (or is ``digest``, taken when this module was saved before) and
    checked on the archive that carries it before it is written. Returns the digest."""
    import torch

    strings = {k: v for k, v in strings.items() if k != WEIGHTS_KEY}
    digest = digest or archive_digest(_archive(module, strings), "torchscript")
    archive = _archive(module, {**strings, WEIGHTS_KEY: digest})
    if archive_digest(archive, "torchscript") != digest:
        raise PtxError(f"{path.name}: torch.jit.save wrote the module differently twice (torch {torch.__version__}): "
                       "ptx cannot bind this file's contract to its weights; please report it")
    path.write_bytes(archive.getbuffer())
    return digest


def add_metadata(path: Path, strings: dict[str, str]) -> None:
    """``strings`` added to the ptx metadata of the TorchScript file at ``path`` (saved again whole:
    its extra files are written with the archive)."""
    import torch

    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    with quiet_jit():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    save_with_metadata(module, path, {**json.loads(extra[TORCHSCRIPT_EXTRA_FILE] or "{}"), **strings})


register(ExportFormat(name="torchscript", description="TorchScript (libtorch, Triton's pytorch backend)",
                      serving_backend="torchscript", write=write, raw_pictures=True, add_metadata=add_metadata))
