"""The torch-free contract every stage imports and that imports no stage.

contract -> models -> trainers -> export -> infer -> cli: data flows one way. Here live the named
tensors (tensors.TensorSig) and the contract made of them, its validation, the preprocessing steps
and picture pipelines, the one comparison, and the names (axes, files, formats) every stage shares.
"""
from .comparison import OutputAgreement, compare
from .metadata import ArtifactInfo, from_strings, to_strings
from .names import (ARTIFACT_FILES, BATCH, CHECKPOINT_FILE, CHECKPOINT_FORMAT, DEFAULT_OPSET, DEFAULT_RUNS_ROOT, SEQ,
                    SCHEMA_VERSION)
from .schema import (Contract, ContractError, EncodeStep, InputKind, NormalizeStep, PadStep, PictureStep, ScaleStep,
                     Task, Tolerance)
from .tensors import Signature, TensorSig

__all__ = [
    "ARTIFACT_FILES", "ArtifactInfo", "BATCH", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "Contract",
    "ContractError", "DEFAULT_OPSET", "DEFAULT_RUNS_ROOT", "EncodeStep", "InputKind", "NormalizeStep",
    "OutputAgreement", "PadStep", "PictureStep", "SCHEMA_VERSION", "SEQ", "ScaleStep", "Signature", "Task",
    "TensorSig", "Tolerance", "compare", "from_strings", "to_strings",
]
