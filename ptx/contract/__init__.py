"""The torch-free contract every stage imports and that imports no stage.

contract -> models -> trainers -> runtime floor -> export -> infer's commands -> serve -> cli: data
flows one way. Here live the named tensors (tensors.TensorSig) and the contract made of them, its validation, the preprocessing steps
and picture pipelines, the one comparison, and the names (axes, files, formats) every stage shares.

The names below load their module on first use (PEP 562): `ptx predict one.png` reads a contract
but never compares two answers, and every module it imports is start-up time.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "comparison": ("OutputAgreement", "compare"),
    "metadata": ("ArtifactInfo", "from_strings", "to_strings"),
    "names": ("ARTIFACT_FILES", "BATCH", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "DEFAULT_OPSET", "DEFAULT_RUNS_ROOT",
              "SEQ", "SCHEMA_VERSION"),
    "schema": ("Contract", "InputKind", "Task", "Tolerance"),
    "steps": ("EncodeStep", "NormalizeStep", "PadStep", "PictureStep", "ScaleStep"),
    "tensors": ("ContractError", "Signature", "TensorSig"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
