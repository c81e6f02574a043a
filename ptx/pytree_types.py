"""The Python types a pt2 package's input and output structure names (torch's pytree spec: a
transformers ModelOutput, a user's registered class), recorded in the package at export and
imported before it is loaded.

A package keeps its outputs' structure by the types' registered names, and torch can rebuild it only
where each type is registered again, which happens when the module that defines it is imported:
``aoti_load_package`` of a GPT-2 package failed with "Deserializing
transformers.modeling_outputs.CausalLMOutputWithCrossAttentions in pytree is not registered" in a
process that had not imported transformers (issue 58). So export records those modules
(``ptx.pytree_modules``) and every load imports them first. Export (export/formats/pt2.py) and infer
(infer/runtime/torch_files.py) both come here; torch is imported only inside the functions.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

from ptx.contract.names import METADATA_PREFIX
from ptx.contract.weights import AOTI_METADATA_SUFFIX
from ptx.errors import BackendUnavailableError, PtxError

KEY = "pytree_modules"  # in the package's ptx metadata: the modules to import, comma separated
_BUILT_IN = ("builtins", "collections", "torch")  # registered by torch itself wherever it runs


def named_types(program) -> list[type]:
    """The types an ExportedProgram's input and output specs are built of, beyond torch's own."""
    found: list[type] = []

    def walk(spec) -> None:
        if spec is None or spec.is_leaf():
            return
        for kind in (spec.type, spec.context if isinstance(spec.context, type) else None):  # a namedtuple's class
            if kind is not None and kind.__module__.split(".")[0] not in _BUILT_IN and kind not in found:
                found.append(kind)
        for child in spec.children_specs:
            walk(child)

    call = program.call_spec
    walk(call.in_spec)
    walk(call.out_spec)
    return found


def modules_to_record(program, model: str) -> list[str]:
    """The modules a load must import for ``program``'s types; a type from a module that cannot be
    imported by name (the user's FILE.py, ``__main__``) is refused in one line."""
    modules = []
    for kind in named_types(program):
        module = kind.__module__
        importable = module != "__main__" and not module.startswith("ptx_user_")
        try:
            importable = importable and importlib.util.find_spec(module.split(".")[0]) is not None
        except (ImportError, ValueError):
            importable = False
        if not importable:
            raise PtxError(f"pt2: {model} returns a {kind.__name__} (from {module}), and loading a pt2 package needs "
                           "that type registered again, from a module it can import by name: return a tuple or dict "
                           "of tensors, or define the type in an installed package (--format onnx or torchscript "
                           "work as it is)")
        if module not in modules:
            modules.append(module)
    return modules


def recorded_modules(path: str | Path) -> list[str]:
    """The modules recorded in the pt2 package at ``path`` (none for a package made before ptx
    recorded them, or whose structure is torch's own)."""
    from torch.export.pt2_archive import PT2ArchiveReader

    with PT2ArchiveReader(str(path)) as reader:
        for name in reader.get_file_names():
            if name.endswith(AOTI_METADATA_SUFFIX):
                text = json.loads(reader.read_bytes(name)).get(f"{METADATA_PREFIX}{KEY}", "")
                return [m for m in text.split(",") if m]
    return []


def import_recorded(path: str | Path) -> list[str]:
    """Import the modules the package at ``path`` recorded, so that torch can rebuild its outputs;
    one line naming the module where one is missing here. Returns them."""
    modules = recorded_modules(path)
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - an import may fail in any way
            raise BackendUnavailableError(
                f"{Path(path).name}: its outputs are types from {module}, recorded at export, and importing it here "
                f"failed ({type(exc).__name__}: {exc}): install what the exporting environment had "
                f"(pip install {module.split('.')[0]}), or use the model.onnx of the same export") from None
    return modules
