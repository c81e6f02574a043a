"""The digest that binds an artifact's contract to its weights (torch-free, standard library only).

``ptx export`` records it in every file it writes (``ptx.weights_sha256``); loading refuses a file
whose digest no longer matches (``ptx.infer.formats.model_files.check_weights``), so ptx metadata copied
onto another model is never believed (issue 36, item 8). Each digest leaves out exactly the place
the metadata lives, so that writing the digest into the file does not change it:

- ONNX: the graph (nodes and weights) and its external data; the metadata_props sit beside the
  graph in the ModelProto (``ptx.contract.onnx_wire``).
- TorchScript: every member of the zip archive but the extra files (``ptx.json``) and
  ``.data/serialization_id``, which torch.jit.save draws anew on every save.
- pt2 (an AOTInductor package): every member but the ``*_metadata.json`` files AOTInductor keeps
  its metadata map in (ptx's keys among them) and ``.data/serialization_id``; the compiled code
  and the weights (inside the shared object, or beside it) are covered.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from .onnx_wire import read_onnx

WEIGHTS_KEY = "weights_sha256"  # ptx.weights_sha256: the digest below, of the file it is written in
SIGNATURE_KEY = "signature"  # ptx.signature: the tensor layer as JSON (ptx.contract.tensors.Signature)
SERIALIZATION_ID = "/.data/serialization_id"  # random per save (torch's PyTorchFileWriter)
AOTI_METADATA_SUFFIX = "_metadata.json"  # AOTInductor's metadata map, one per compiled object


# What each zip archive kind keeps its metadata in, which its digest leaves out (with torch's per-save id).
METADATA_MEMBERS = {"torchscript": lambda name: "/extra/" in name,
                    "pt2": lambda name: name.endswith(AOTI_METADATA_SUFFIX)}


def archive_digest(path, kind: str) -> str:
    """sha256 of a zip archive's members (names and contents, in archive order) but its metadata; the
    archive at ``path``, or in a file-like object (a writer's archive in memory, before it is written)."""
    sha = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if METADATA_MEMBERS[kind](info.filename) or info.filename.endswith(SERIALIZATION_ID):
                continue
            # Without the archive's top folder, which torch names after the file or buffer it saved to.
            sha.update(info.filename.partition("/")[2].encode())
            with archive.open(info) as member:
                for block in iter(lambda: member.read(1 << 20), b""):
                    sha.update(block)
    return sha.hexdigest()


def digest_of(path: str | Path, kind: str) -> str | None:
    """The weights digest of the model file at ``path`` of ``kind`` (onnx, torchscript, pt2)."""
    if kind == "onnx":
        return read_onnx(path)[1]
    return archive_digest(path, kind) if kind in METADATA_MEMBERS else None
