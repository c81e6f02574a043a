"""A user's own model file (or live nn.Module) -> a Model (a runner, no head) on one backend of the registry.

A file ptx did not write is first opened in a child process (``probe=True``): ONNX Runtime,
OpenVINO and torch's loaders have crashed on malformed graphs, and a crash there is one line,
never the end of ptx (pt2 packages are loaded so already: ptx.export.child).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract.names import FULL_PRECISION
from ptx.contract.tensors import TensorSig, parse_declaration
from ptx.errors import PtxError

from . import backends
from .model import Model
from .model_files import ONNX, PT2, TORCHSCRIPT, read_model_file

DEFAULT_FILE_BACKEND = {ONNX: "ort-cpu", TORCHSCRIPT: "torchscript", PT2: "aoti"}
KIND_NAMES = {ONNX: "an ONNX file", TORCHSCRIPT: "a TorchScript file", PT2: "a pt2 package"}


def as_declarations(inputs: Sequence[TensorSig | str] | None) -> tuple[TensorSig, ...]:
    """``inputs=`` as the library takes it: TensorSigs or ``"name=shape:dtype"`` strings."""
    return tuple(t if isinstance(t, TensorSig) else parse_declaration(str(t)) for t in (inputs or ()))


def file_backends(kind: str) -> list[str]:
    """The backend labels that open a file of ``kind`` (ort-cpu, ort-cuda, ...), CPU first."""
    return [b.label(d) for b, d in backends.file_pairs(kind)]


def resolve_backend(kind: str, backend: str | None, device: str | None) -> tuple[object, str]:
    """(Backend, device) for ``backend`` (a name or a label such as ort-cuda / torchscript-cuda) on
    a file of ``kind``; one line naming the ones that fit otherwise."""
    name = backend or DEFAULT_FILE_BACKEND[kind]
    fitting = backends.file_pairs(kind)
    for b, d in fitting:
        if name == b.label(d) or (name == b.name and (device is None or d == device.split(":")[0])):
            return b, (device if device and device.split(":")[0] == d else d)
    offered = ", ".join(dict.fromkeys(b.label(d) for b, d in fitting))
    raise PtxError(f"backend {name}{'' if device is None else f' on {device}'} does not run {KIND_NAMES[kind]}; "
                   f"these do: {offered}")


def open_own_model(path: str | Path, backend: str | None = None, *, device: str | None = None,
                   precision: str | None = None, inputs: Sequence[TensorSig | str] | None = None,
                   batch_axes: Mapping[str, int | None] | None = None, ignore_metadata: bool = False,
                   probe: bool = True):
    """A Model (a runner without a head) for the model file at ``path`` through ``backend`` (default: the file's own
    runtime on the CPU). ``inputs`` declares what a TorchScript or pt2 file takes; ``batch_axes``
    ({name: axis or None}) overrides where ptx reads each input's batch."""
    path = Path(path)
    found = read_model_file(path)
    chosen, device = resolve_backend(found.kind, backend, device)
    declared = as_declarations(inputs)
    options = {"inputs": declared, "batch_axes": dict(batch_axes or {}), "ignore_metadata": ignore_metadata}
    if probe and (ignore_metadata or not found.metadata):
        probe_in_child(path, chosen.label(device), device, declared, batch_axes, ignore_metadata)
    return Model(chosen.open_file(path, device, precision or FULL_PRECISION, **options))


PROBE = """
import json, sys
from ptx.errors import PtxError
from ptx.infer.own_model import open_own_model
args = json.loads(sys.argv[1])
try:
    open_own_model(args["path"], args["backend"], device=args["device"], inputs=args["inputs"],
                   batch_axes=args["batch_axes"], ignore_metadata=args["ignore_metadata"], probe=False)
except PtxError:
    pass  # refused in one line: the parent opens it again and says so
"""


def probe_in_child(path: Path, backend: str, device: str, declared: Sequence[TensorSig],
                   batch_axes: Mapping[str, int | None] | None, ignore_metadata: bool) -> None:
    """Open the file in a fresh interpreter first: a runtime that crashes on it crashes there, and
    ptx says so in one line (ChildCrashError) instead of dying with it."""
    from ptx.export.child import run_child

    args = probe_args(path, backend, device, declared, batch_axes, ignore_metadata)
    run_child(PROBE, json.dumps(args), what=f"{backend} opening {path.name}")


def probe_args(path: Path, backend: str, device: str, declared: Sequence[TensorSig],
               batch_axes: Mapping[str, int | None] | None, ignore_metadata: bool) -> dict:
    """What the child needs to open the file as the parent would (PROBE's argument, as JSON)."""
    return {"path": str(path), "backend": backend, "device": device,
            "inputs": [f"{t.name}={','.join(map(str, t.shape))}:{t.dtype}" if t.shape else f"{t.name}=:{t.dtype}"
                       for t in declared],
            "batch_axes": dict(batch_axes or {}), "ignore_metadata": ignore_metadata}


def is_module(obj) -> bool:
    """An nn.Module, told without importing torch (an app that holds one has imported it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def open_module(module, inputs: Sequence[TensorSig | str] | None, device: str | None = None):
    from .torch_runner import open_module as module_runner

    return Model(module_runner(module, as_declarations(inputs), device or "cpu"))
