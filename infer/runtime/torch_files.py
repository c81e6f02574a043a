"""The loaders of ptx's two torch file formats, beside the runner that runs them: a TorchScript
file (torch.jit.load, its ptx.json extra file) and an AOTInductor package (aoti_load_package, its
metadata map). Export writes these files (export/formats/) and never loads them: its validation
opens what it wrote through the opener handed in (ptx.infer.load). These import torch."""
from __future__ import annotations

import torch

from ptx.contract.metadata import from_props
from ptx.contract.names import TORCHSCRIPT_EXTRA_FILE
from ptx.pytree_types import import_recorded
from ptx.torch_quiet import quiet_inductor, quiet_jit

DEVICE_KEY = "AOTI_DEVICE_KEY"  # AOTInductor records the device it compiled for under this key


def load_torchscript(path, device: str = "cpu"):
    """(the module in eval mode, its ptx metadata as JSON text, or None when it has none)."""
    extra = {TORCHSCRIPT_EXTRA_FILE: ""}
    with quiet_jit():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    text = extra[TORCHSCRIPT_EXTRA_FILE]
    return module.eval(), (text.decode() if isinstance(text, bytes) else text) or None


def load_pt2(path):
    """(the callable compiled model, its ptx metadata strings, the device it was compiled for): a
    package runs on that device only. The modules whose types its outputs are built of, recorded
    at export (ptx.pytree_types), are imported first: torch rebuilds those types only where they
    are registered."""
    import_recorded(path)
    with quiet_inductor():
        compiled = torch._inductor.aoti_load_package(str(path))
    metadata = compiled.get_metadata()
    return compiled, from_props(metadata), metadata.get(DEVICE_KEY, "")
