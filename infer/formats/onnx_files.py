"""ONNX files of any size, as ptx writes and reads them: one file while the model is small, the graph
in model.onnx and every weight in model.onnx.data (ONNX external data) once it is not.

A protobuf message cannot pass 2 GiB, so nothing here serializes a whole model at once where its
weights might: a large model is saved by onnx's own external-data writer, checked by onnx's checker
on its path, and read for its structure without its weights (ptx.contract.onnx_wire.without_weights).

onnx and the standard library only: never torch, and no runtime.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ptx.contract.onnx_wire import external_data_files, without_weights
from ptx.errors import ArtifactError, first_line

# Weights past this size go to model.onnx.data. torch.onnx's own threshold (its _LARGE_MODEL_THRESHOLD):
# it leaves the graph and the protobuf's framing half a GiB below the 2 GiB a message may hold, and a file
# ptx writes is split where torch's own save would split it. Tests lower it (monkeypatch) to split a tiny model.
ONE_FILE_BYTES = 1536 << 20
# Tensors smaller than this stay inside the graph file (shape constants, scalars): onnx's own default.
INLINE_BYTES = 1024


def data_name(path: str | Path) -> str:
    """The name of the file beside ``path`` that holds its weights where they are external
    (model.onnx -> model.onnx.data: torch's and onnxruntime's own choice)."""
    return f"{Path(path).name}.data"


def holds_external(proto) -> bool:
    """Whether the ModelProto ``proto`` keeps any initializer's values in an external file."""
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def too_big(proto) -> bool:
    """Whether ``proto``, weights inside, is past what ptx keeps in one file (ONE_FILE_BYTES)."""
    return proto.ByteSize() > ONE_FILE_BYTES


def save_model(proto, path: str | Path) -> None:
    """``proto`` saved at ``path``: as it is where its weights are inside and it is small, or already
    external (only its graph is written); else with every weight of INLINE_BYTES or more moved to
    ``data_name(path)`` beside it (the proto is changed so: its tensors then refer to that file)."""
    import onnx

    path = Path(path)
    if not holds_external(proto) and too_big(proto):
        # onnx appends to the data file: one left from an earlier write would hold both
        (path.parent / data_name(path)).unlink(missing_ok=True)
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name(path), size_threshold=INLINE_BYTES)
    else:
        onnx.save_model(proto, str(path))


def load_structure(path: str | Path):
    """The ModelProto of the ONNX file at ``path`` without its initializers' values (names, types and
    shapes kept), whatever its size: for readers of its inputs, outputs, nodes and weights' shapes.
    ArtifactError in one line when it is not a readable model."""
    import onnx

    try:
        return onnx.ModelProto.FromString(without_weights(path))
    except ArtifactError:
        raise
    except Exception as exc:  # protobuf's DecodeError: one line
        raise ArtifactError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None


def companions(path: str | Path) -> list[str]:
    """The files beside the ONNX file at ``path`` that hold its external data (names relative to its
    folder); none for a one-file model, or where ``path`` is not a readable ONNX file."""
    try:
        return external_data_files(path) if Path(path).is_file() else []
    except ArtifactError:
        return []


def move_with_data(source: str | Path, target: str | Path) -> None:
    """The ONNX file ``source`` moved to ``target`` with the external data files it names, each kept
    at the same place relative to the model (the names inside the graph stay true)."""
    source, target = Path(source), Path(target)
    for location in companions(source):
        (target.parent / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source.parent / location), target.parent / location)
    shutil.move(str(source), target)


def copy_data(source: str | Path, folder: str | Path) -> None:
    """The external data files of the ONNX file ``source`` copied into ``folder`` under the names its
    graph gives them, for a graph saved in ``folder`` that refers to the same weights. A copy, not a
    link: onnx's loader refuses a data file with several hard links ("a potential hardlink attack")
    and NNCF a symbolic one."""
    source, folder = Path(source), Path(folder)
    for location in companions(source):
        (folder / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / location, folder / location)
