"""Facts of an ONNX file read straight from its protobuf encoding: the ``metadata_props``, a digest
of the graph (its nodes and weights), and whether its graph is quantized (its precision).

Written here rather than with the ``onnx`` package because both are read on the ONNX Runtime
path, whose cold start is measured against importing onnxruntime, numpy and Pillow alone
(importing onnx and parsing a 25 MB model costs more than the prediction); the protobuf wire
format these few fields need is stable and small (https://protobuf.dev/programming-guides/encoding/).

The digest ties a contract to its weights (issue 36): ``ptx export`` records it, and ptx refuses a
file whose graph no longer matches, so ptx metadata copied onto another model is never believed.
Tensors kept as external data are hashed by their files' contents too.
"""
from __future__ import annotations

import contextlib
import hashlib
import mmap
from pathlib import Path

from ptx.errors import ArtifactError

# Field numbers of onnx.proto (ModelProto, GraphProto, TensorProto, StringStringEntryProto).
MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_INITIALIZER = 5
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14
ENTRY_KEY, ENTRY_VALUE = 1, 2
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def fields(buf, start: int = 0, end: int | None = None):
    """(field number, wire type, value or (start, end) of a length-delimited payload) of a message."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == LENGTH_DELIMITED:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise WireError("a field runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == FIXED64:
            pos += 8
        elif wire == FIXED32:
            pos += 4
        else:
            raise WireError(f"wire type {wire}")
    if pos != end:
        raise WireError("truncated message")


def _entries(buf, span) -> tuple[str, str]:
    key = value = ""
    for number, wire, payload in fields(buf, *span):
        if wire == LENGTH_DELIMITED and number in (ENTRY_KEY, ENTRY_VALUE):
            text = bytes(buf[payload[0]:payload[1]]).decode("utf-8", errors="replace")
            key, value = (text, value) if number == ENTRY_KEY else (key, text)
    return key, value


def read_onnx(path: str | Path, digest: bool = True) -> tuple[dict[str, str], str | None]:
    """(metadata_props, sha256 of the graph and its external data) of the ONNX file at ``path``.
    ArtifactError in one line when the file is not an ONNX model."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = path.stat().st_size
            if size == 0:
                raise ArtifactError(f"{path}: empty file, not an ONNX model")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _read(buf, path, digest)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _read(buf, path: Path, digest: bool) -> tuple[dict[str, str], str | None]:
    metadata: dict[str, str] = {}
    graph = None
    try:
        for number, wire, payload in fields(buf):
            if number == MODEL_METADATA and wire == LENGTH_DELIMITED:
                key, value = _entries(buf, payload)
                metadata[key] = value
            elif number == MODEL_GRAPH and wire == LENGTH_DELIMITED:
                graph = payload
    except WireError as exc:
        raise ArtifactError(f"{path}: not an ONNX model, or a truncated one ({exc})") from None
    if graph is None:
        raise ArtifactError(f"{path}: not an ONNX model (it holds no graph)")
    if not digest:
        return metadata, None
    sha = hashlib.sha256()
    sha.update(buf[graph[0]:graph[1]])
    for location, needed in _external_files(buf, graph, path).items():
        target = (path.parent / location).resolve()
        if path.parent.resolve() not in target.parents or not target.is_file():
            raise ArtifactError(f"{path}: its weights live in {location!r}, which is missing beside it: copy the "
                                "external data file(s) with the model")
        # A partly copied data file is refused here in words, not by ONNX Runtime's "GetExtDataFromTensorProto
        # ... out of bounds" at load, with a digest of the short file printed by `ptx inspect` before it.
        if (size := target.stat().st_size) < needed:
            raise ArtifactError(f"{path}: its weights live in {location!r}, which holds {size:,} bytes where the "
                                f"graph reads {needed:,}: the file is truncated; copy it whole with the model")
        with open(target, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return metadata, sha.hexdigest()


def _external_files(buf, graph, path: Path) -> dict[str, int]:
    """The files the graph's initializers keep their data in, in order of first mention, each with
    the bytes the graph reads from it (the largest offset + length its tensors name)."""
    files: dict[str, int] = {}
    try:
        for number, wire, payload in fields(buf, *graph):
            if number != GRAPH_INITIALIZER or wire != LENGTH_DELIMITED:
                continue
            external, entries = False, {}
            for tensor_field, tensor_wire, value in fields(buf, *payload):
                if tensor_field == TENSOR_DATA_LOCATION and tensor_wire == VARINT:
                    external = value == 1
                elif tensor_field == TENSOR_EXTERNAL_DATA and tensor_wire == LENGTH_DELIMITED:
                    key, text = _entries(buf, value)
                    entries[key] = text
            location = entries.get("location")
            if external and location:
                try:
                    end = int(entries.get("offset") or 0) + int(entries.get("length") or 0)
                except ValueError:
                    end = 0  # a malformed entry is ONNX Runtime's to refuse
                files[location] = max(files.get(location, 0), end)
    except WireError as exc:
        raise ArtifactError(f"{path}: a damaged ONNX graph ({exc})") from None
    return files


@contextlib.contextmanager
def _graph_of(path: Path):
    """The ONNX file at ``path`` mapped, and its graph field's span (None when it holds none); a
    damaged file, met here or in the caller's walk of the graph, is one ArtifactError line."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            yield buf, next((payload for number, wire, payload in fields(buf)
                             if number == MODEL_GRAPH and wire == LENGTH_DELIMITED), None)
        except WireError as exc:
            raise ArtifactError(f"{path}: not an ONNX model, or a truncated one ({exc})") from None


def external_data_files(path: str | Path) -> list[str]:
    """The files (as the graph names them, relative to the model's folder) that hold the ONNX
    model's external data: what must travel with the file when it is copied (a Triton repository)."""
    path = Path(path)
    with _graph_of(path) as (buf, graph):
        return list(_external_files(buf, graph, path)) if graph is not None else []


GRAPH_INPUT, VALUE_INFO_NAME, VALUE_INFO_TYPE, TYPE_TENSOR, TENSOR_TYPE_SHAPE = 11, 1, 2, 1, 2


def shapeless_inputs(path: str | Path) -> set[str]:
    """The graph inputs that are tensors with no shape at all, not even a rank. ONNX Runtime lists
    such an input with the shape [] of a scalar, so only the file itself tells the two apart."""
    found: set[str] = set()
    with _graph_of(Path(path)) as (buf, graph):
        for number, wire, payload in fields(buf, *graph) if graph else ():
            if number != GRAPH_INPUT or wire != LENGTH_DELIMITED:
                continue
            name, tensor = "", None
            for field, field_wire, value in fields(buf, *payload):
                if field == VALUE_INFO_NAME and field_wire == LENGTH_DELIMITED:
                    name = bytes(buf[value[0]:value[1]]).decode("utf-8", errors="replace")
                elif field == VALUE_INFO_TYPE and field_wire == LENGTH_DELIMITED:
                    tensor = next((v for f, w, v in fields(buf, *value) if f == TYPE_TENSOR and w == LENGTH_DELIMITED),
                                  None)
            if tensor is not None and not any(f == TENSOR_TYPE_SHAPE for f, _, _ in fields(buf, *tensor)):
                found.add(name)
    return found


GRAPH_NODE, NODE_OP_TYPE = 1, 4
# Ops only a quantized graph holds (QDQ, ORT's QOperator and dynamic forms; QLinear* by prefix): a
# file ptx did not write is int8 when its graph has one, whatever its name says.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                           "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QGemm"})


def is_quantized_op(op_type: str) -> bool:
    return op_type in QUANTIZED_OPS or op_type.startswith("QLinear")


def quantized_ops(path: str | Path) -> set[str]:
    """The quantized op types among the main graph's nodes (empty for an f32 graph). Read from the
    wire like the metadata: deciding a file's precision at opening must not import onnx."""
    found: set[str] = set()
    with _graph_of(Path(path)) as (buf, graph):
        for number, wire, payload in fields(buf, *graph) if graph else ():
            if number != GRAPH_NODE or wire != LENGTH_DELIMITED:
                continue
            for field, field_wire, value in fields(buf, *payload):
                if field == NODE_OP_TYPE and field_wire == LENGTH_DELIMITED:
                    op_type = bytes(buf[value[0]:value[1]]).decode("utf-8", errors="replace")
                    if is_quantized_op(op_type):
                        found.add(op_type)
    return found
