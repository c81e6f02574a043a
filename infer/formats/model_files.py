"""A model file as ptx finds it: which kind it is (ONNX, TorchScript, pt2), what ptx metadata it
carries, whether that metadata belongs to its weights, and its tensor signature.

numpy and the standard library only: the ONNX Runtime path reads ONNX files through
``ptx.contract.onnx_wire`` (no onnx import), TorchScript and pt2 files are zip archives whose
listing tells their kind without torch.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ptx.contract.metadata import CONTRACT, from_props
from ptx.contract.names import FULL_PRECISION, TORCHSCRIPT_EXTRA_FILE, model_name
from ptx.contract.onnx_wire import read_onnx, weight_precision
from ptx.contract.weights import AOTI_METADATA_SUFFIX, WEIGHTS_KEY, digest_of
from ptx.errors import ArtifactError

ONNX, TORCHSCRIPT, PT2 = "onnx", "torchscript", "pt2"
SAVED = "torch.save"  # an archive torch.save wrote: no model ptx runs
IGNORE_HINT = "--ignore-metadata"  # how a user runs a file whose ptx metadata is not its own
# What a file whose weights are not the ones its metadata was written for is told.
FOREIGN = ("its weights are not the ones its ptx.* metadata was written for (metadata copied from another model, "
           "or the file changed after export), so ptx does not believe that contract; to use the file as your own "
           f"model, give {IGNORE_HINT} (library: load(path, ignore_metadata=True))")
SAVED_NOT_MODEL = ("a torch.save file (a state_dict or a pickled module), not a model ptx can run: export your "
                   "nn.Module with `ptx export --module FILE.py:FACTORY --checkpoint {path}`")


@dataclass
class ModelFile:
    """What ptx learned from a file before any runtime opened it."""

    path: Path
    kind: str
    metadata: dict[str, str]  # ptx.* strings, prefix dropped (empty: a foreign file)
    digest: str | None = None  # of the ONNX graph and its external data (ONNX only, here)

    @property
    def has_contract(self) -> bool:
        """A tutorial model's artifact (a head above the tensors), as ptx export writes them."""
        return CONTRACT in self.metadata

    @property
    def name(self) -> str:
        return self.metadata.get("model") or model_name(self.path)

    @cached_property
    def weights(self) -> str | None:
        """What ``ptx.weights_sha256`` records for the file (ptx.contract.weights says what each kind's
        digest covers: everything but the place its metadata lives)."""
        return self.digest or digest_of(self.path, self.kind)

    @property
    def foreign(self) -> bool:
        """Whether the weights digest its ptx metadata records is not its own (metadata copied from
        another model, or the file changed after export)."""
        recorded = self.metadata.get(WEIGHTS_KEY)
        return bool(recorded) and self.weights is not None and recorded != self.weights

    @cached_property
    def precision(self) -> str:
        """What the file is (int4, int8 or f32): what ptx recorded in it, else, for an ONNX file, what its
        graph is (a user's own quantized file, or one another tool made of a ptx export, says nothing:
        onnx_wire.weight_precision). bf16 and tf32 are modes a runtime runs an f32 file in, never a file's."""
        recorded = self.metadata.get("precision")
        if recorded:
            return recorded
        if self.kind == ONNX and self.path is not None:
            return weight_precision(self.path) or FULL_PRECISION
        return FULL_PRECISION


def file_kind(path: Path) -> str:
    """onnx, torchscript or pt2, from the file's content (its name may say anything); ArtifactError
    in one line for everything else."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: a folder; give the model file inside it (a .onnx, TorchScript .pt or .pt2), "
                            "or a run folder to the tutorial models' commands with --run")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PK\x03\x04":
        return _zip_kind(path)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:  # a pickle stream: torch.save's legacy format
        raise ArtifactError(f"{path}: {SAVED_NOT_MODEL.format(path=path)}")
    try:
        read_onnx(path, digest=False)  # not a protobuf ModelProto: one line saying so
    except ArtifactError as exc:
        if path.suffix.lower() in (".py", *TENSOR_SUFFIXES):  # the wire error means nothing for these
            raise ArtifactError(f"{path}: not a model file{_what_to_do(path)}") from None
        raise ArtifactError(f"{exc}{_what_to_do(path)}") from None
    return ONNX


TENSOR_SUFFIXES = (".npz", ".npy", ".json")  # what a model's inputs come in


def _what_to_do(path: Path) -> str:
    """The end of the line refusing a file that is no model: what ptx can do with it instead, told by
    its name (a user's model code, tensors meant as inputs), else what to bring."""
    suffix = path.suffix.lower()
    if suffix == ".py":
        return f"; export the nn.Module it builds: `ptx export --module {path}:FACTORY --out DIR`"
    if suffix in TENSOR_SUFFIXES:
        return f"; tensors are a model's inputs: `ptx predict --model MODEL_FILE {path}` (or verify/bench --inputs)"
    if suffix == ".onnx":
        return "; export it again, or copy it whole"
    return "; ptx reads an ONNX file, a TorchScript .pt (torch.jit.save) or a .pt2 package"


def is_torch_save(path: Path) -> bool:
    """A torch.save file (a ptx checkpoint, a state_dict, a pickled module), told by its layout."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        if head[:1] == b"\x80":
            return True
        with zipfile.ZipFile(path) as archive:
            return _archive_kind(archive.namelist()) == SAVED
    except (OSError, zipfile.BadZipFile):
        return False


def _archive_kind(names: list[str]) -> str | None:
    """What a zip archive's member names say it is: a pt2 package, a TorchScript file, a torch.save
    file (SAVED), or None."""
    if any("/aotinductor/" in n or n.endswith("archive_format") for n in names):
        return PT2
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return TORCHSCRIPT
    return SAVED if any(n.endswith("data.pkl") for n in names) else None


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            kind = _archive_kind(archive.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{path}: a damaged or truncated archive ({exc}); not a model file ptx can read") from None
    if kind == SAVED:
        raise ArtifactError(f"{path}: {SAVED_NOT_MODEL.format(path=path)}")
    if kind is not None:
        return kind
    if path.suffix.lower() in TENSOR_SUFFIXES:  # numpy.savez's archive
        raise ArtifactError(f"{path}: not a model file{_what_to_do(path)}")
    raise ArtifactError(f"{path}: a zip archive, but neither a TorchScript file nor a pt2 package{_what_to_do(path)}")


def read_model_file(path: str | Path, digest: bool = True) -> ModelFile:
    """The file's kind and ptx metadata (and, for ONNX, the digest of its graph unless ``digest`` is
    False). Cheap: no runtime."""
    path = Path(path)
    kind = file_kind(path)
    if kind == ONNX:
        props, digest = read_onnx(path, digest)
        return ModelFile(path, kind, from_props(props), digest)
    if kind == TORCHSCRIPT:
        strings = _archive_json(path, f"/extra/{TORCHSCRIPT_EXTRA_FILE}", TORCHSCRIPT_EXTRA_FILE)
        if not isinstance(strings, dict) or not all(isinstance(v, str) for v in strings.values()):
            raise ArtifactError(f"{path}: its {TORCHSCRIPT_EXTRA_FILE} is not a JSON object of strings; re-export it")
        return ModelFile(path, kind, strings)
    # A pt2 package's ptx.* strings are in AOTInductor's metadata map (what ``get_metadata()`` answers
    # once torch has loaded the package's native code; read here without loading it, so that its
    # weights digest is checked first).
    doc = _archive_json(path, AOTI_METADATA_SUFFIX, "AOTInductor metadata")
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: its AOTInductor metadata is not a JSON object")
    return ModelFile(path, kind, from_props({k: v for k, v in doc.items() if isinstance(v, str)}))


def _archive_json(path: Path, suffix: str, what: str):
    """The JSON an archive's first member named ``...suffix`` holds ({} where it has none, or an empty one)."""
    with zipfile.ZipFile(path) as archive:
        found = [n for n in archive.namelist() if n.endswith(suffix)]
        text = archive.read(found[0]).decode("utf-8", errors="replace") if found else ""
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: its {what} is not valid JSON ({exc})") from None


def check_weights(found: ModelFile) -> None:
    """Refuse a file whose recorded weights digest is not its own. Files exported before digests
    were recorded carry none and are believed as before."""
    if found.foreign:
        raise ArtifactError(f"{found.path}: {FOREIGN}")
