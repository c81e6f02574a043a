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


def fields(buf, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload) of the message
    in ``buf[start:end]``."""
    pos = start
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


def _bounded_fields(buf, start: int, end: int):
    """``fields``, fixed-size ones too, each with the (start, end) of the whole field, key included:
    what a rewrite copies. (A walk of its own: ``fields`` reads 20,000 nodes on the predict path, and
    is kept one generator.)"""
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == LENGTH_DELIMITED:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise WireError("a field runs past the end of its message")
            value, pos = (pos, pos + length), pos + length
        elif wire in (FIXED64, FIXED32):
            value, pos = None, pos + (8 if wire == FIXED64 else 4)
        else:
            raise WireError(f"wire type {wire}")
        yield number, wire, value, (first, pos)
    if pos != end:
        raise WireError("truncated message")


def _spans(buf, span, number: int) -> list[tuple[int, int]]:
    """The payloads (start, end) of the length-delimited fields ``number`` of the message at ``span``."""
    return [payload for field, wire, payload in fields(buf, *span) if field == number and wire == LENGTH_DELIMITED]


def _string(buf, span, number: int) -> str:
    """The string field ``number`` of the message at ``span`` (the last one, as protobuf reads it), or ''."""
    found = _spans(buf, span, number)
    return bytes(buf[found[-1][0]:found[-1][1]]).decode("utf-8", errors="replace") if found else ""


@contextlib.contextmanager
def _model(path: str | Path):
    """(the ONNX file at ``path`` mapped, its metadata_props, its graph's span: (0, 0) where it holds
    none); a file that cannot be read, or a damaged one, met here or in the caller's walk of the graph,
    is one ArtifactError line."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            if path.stat().st_size == 0:
                raise ArtifactError(f"{path}: empty file, not an ONNX model")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                whole = (0, len(buf))
                metadata = {_string(buf, entry, ENTRY_KEY): _string(buf, entry, ENTRY_VALUE)
                            for entry in _spans(buf, whole, MODEL_METADATA)}
                graphs = _spans(buf, whole, MODEL_GRAPH)
                yield buf, metadata, graphs[-1] if graphs else (0, 0)
    except WireError as exc:
        raise ArtifactError(f"{path}: not an ONNX model, or a truncated one ({exc})") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def read_onnx(path: str | Path, digest: bool = True) -> tuple[dict[str, str], str | None]:
    """(metadata_props, sha256 of the graph and its external data) of the ONNX file at ``path``.
    ArtifactError in one line when the file is not an ONNX model."""
    path = Path(path)
    with _model(path) as (buf, metadata, graph):
        if graph == (0, 0):
            raise ArtifactError(f"{path}: not an ONNX model (it holds no graph)")
        if not digest:
            return metadata, None
        sha = hashlib.sha256()
        with memoryview(buf) as view:  # hashed where it is mapped: a slice of the map would copy the weights first
            sha.update(view[graph[0]:graph[1]])
        for location, needed in _external_files(buf, graph).items():
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


def serialized_digest(data: bytes) -> str | None:
    """read_onnx's digest of a serialized ModelProto held in memory (a writer's bytes, before they are
    written): the sha256 of its graph; None where the graph keeps tensors in external files, which
    read_onnx hashes from beside the file. ArtifactError in one line when the bytes are not a model."""
    try:
        graphs = _spans(data, (0, len(data)), MODEL_GRAPH)
        if not graphs:
            raise ArtifactError("not an ONNX model (it holds no graph)")
        if _external_files(data, graphs[-1]):
            return None
    except WireError as exc:
        raise ArtifactError(f"not an ONNX model ({exc})") from None
    start, end = graphs[-1]
    return hashlib.sha256(memoryview(data)[start:end]).hexdigest()


def _external_files(buf, graph) -> dict[str, int]:
    """The files the graph's initializers keep their data in, in order of first mention, each with
    the bytes the graph reads from it (the largest offset + length its tensors name)."""
    files: dict[str, int] = {}
    for tensor in _spans(buf, graph, GRAPH_INITIALIZER):
        if not any(f == TENSOR_DATA_LOCATION and w == VARINT and v == 1 for f, w, v in fields(buf, *tensor)):
            continue
        entries = {_string(buf, entry, ENTRY_KEY): _string(buf, entry, ENTRY_VALUE)
                   for entry in _spans(buf, tensor, TENSOR_EXTERNAL_DATA)}
        location = entries.get("location")
        if location:
            try:
                end = int(entries.get("offset") or 0) + int(entries.get("length") or 0)
            except ValueError:
                end = 0  # a malformed entry is ONNX Runtime's to refuse
            files[location] = max(files.get(location, 0), end)
    return files


def external_data_files(path: str | Path) -> list[str]:
    """The files (as the graph names them, relative to the model's folder) that hold the ONNX
    model's external data: what must travel with the file when it is copied (a Triton repository)."""
    with _model(path) as (buf, _, graph):
        return list(_external_files(buf, graph))


GRAPH_INPUT, VALUE_INFO_NAME, VALUE_INFO_TYPE, TYPE_TENSOR, TENSOR_TYPE_SHAPE = 11, 1, 2, 1, 2


def shapeless_inputs(path: str | Path) -> set[str]:
    """The graph inputs that are tensors with no shape at all, not even a rank. ONNX Runtime lists
    such an input with the shape [] of a scalar, so only the file itself tells the two apart."""
    found: set[str] = set()
    with _model(path) as (buf, _, graph):
        for value_info in _spans(buf, graph, GRAPH_INPUT):
            kind = _spans(buf, value_info, VALUE_INFO_TYPE)[-1:]
            tensor = _spans(buf, kind[0], TYPE_TENSOR)[:1] if kind else []
            if tensor and not _spans(buf, tensor[0], TENSOR_TYPE_SHAPE):
                found.add(_string(buf, value_info, VALUE_INFO_NAME))
    return found


GRAPH_NODE, NODE_OP_TYPE = 1, 4
# Ops only a quantized graph holds (QDQ, ORT's QOperator and dynamic forms; QLinear* by prefix): a
# file ptx did not write is int8 when its graph has one, whatever its name says.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                           "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QGemm"})
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_ATTRIBUTE, ATTRIBUTE_NAME, ATTRIBUTE_INT = 1, 2, 3, 5, 1, 3
# ONNX Runtime's weight-only ops (com.microsoft), whose ``bits`` attribute says the weights' width (4 by default).
WEIGHT_ONLY_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})
WEIGHT_ONLY_DEFAULT_BITS = 4
TENSOR_DATA_TYPE, UINT4, INT4_TYPE = 2, 21, 22  # TensorProto.data_type; its 4-bit types


def weight_precision(path: str | Path) -> str | None:
    """What a graph's weights are, read from the wire (deciding a file's precision at opening must not import
    onnx): "int4" where a weight-only op is 4 bits wide (ONNX Runtime's MatMulNBits quantizer, onnxruntime-genai's
    builder) or an initializer is of a 4-bit type (a Q/DQ int4 graph); "int8" where a weight-only op is 8 bits
    wide or the graph has quantized ops (Q/DQ, integer MatMuls); None for a float graph."""
    with _model(path) as (buf, _, graph):
        bits: set[int] = set()
        quantized = False
        for node in _spans(buf, graph, GRAPH_NODE):
            op = _string(buf, node, NODE_OP_TYPE)
            if op in WEIGHT_ONLY_OPS:
                said = [v for a in _spans(buf, node, NODE_ATTRIBUTE) if _string(buf, a, ATTRIBUTE_NAME) == "bits"
                        for f, w, v in fields(buf, *a) if f == ATTRIBUTE_INT and w == VARINT]
                bits.add(said[0] if said else WEIGHT_ONLY_DEFAULT_BITS)
            quantized = quantized or op in QUANTIZED_OPS or op.startswith("QLinear")
        if 4 in bits or any(next((v for f, w, v in fields(buf, *t) if f == TENSOR_DATA_TYPE and w == VARINT), 0)
                            in (UINT4, INT4_TYPE) for t in _spans(buf, graph, GRAPH_INITIALIZER)):
            return "int4"
        return "int8" if bits or quantized else None


TENSOR_DIMS, TENSOR_NAME = 1, 8
# The ops an id passes through on its way to a Gather's indices with its value kept (a cast, a new shape).
ID_CARRIERS = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"})


def gathered_rows(path: str | Path, inputs) -> dict[str, tuple[int, str]]:
    """{input: (rows, the Gather's name)} for each graph input of ``inputs`` whose values index the
    rows of an initializer (a Gather along axis 0 of a table: token ids into an embedding), fed
    directly or through ID_CARRIERS; the smallest table where several. Read from the wire: opening a
    file must not import onnx."""
    with _model(path) as (buf, _, graph):
        rows = {}
        for tensor in _spans(buf, graph, GRAPH_INITIALIZER):
            first = next((v for f, w, v in fields(buf, *tensor) if f == TENSOR_DIMS), 0)  # dims: packed, or not
            first = _varint(buf, first[0])[0] if isinstance(first, tuple) and first[0] < first[1] else first
            if isinstance(first, int) and first > 0:
                rows[_string(buf, tensor, TENSOR_NAME)] = first
        consumers: dict[str, list] = {}
        for node in _spans(buf, graph, GRAPH_NODE):
            said: dict[int, list] = {n: [] for n in (NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE)}
            for number, wire, span in fields(buf, *node):  # one pass: 20,000 nodes are read in ~0.1 s
                if wire == LENGTH_DELIMITED and number in said:
                    said[number].append(span if number == NODE_ATTRIBUTE else bytes(buf[span[0]:span[1]]).decode(
                        "utf-8", errors="replace"))
            op_type, ins, outs = "".join(said[NODE_OP_TYPE]), said[NODE_INPUT], said[NODE_OUTPUT]
            if op_type == "Gather" or op_type in ID_CARRIERS:
                axis = next((v - (1 << 64) * (v >= 1 << 63) for a in said[NODE_ATTRIBUTE]
                             if _string(buf, a, ATTRIBUTE_NAME) == "axis"
                             for f, w, v in fields(buf, *a) if f == ATTRIBUTE_INT and w == VARINT), 0)
                op = (op_type, "".join(said[NODE_NAME]) or (outs or [""])[0], ins, outs, axis)
                for position, name in enumerate(ins):
                    consumers.setdefault(name, []).append((op, position))
    found = {}
    for name in inputs:
        reached, seen = [name], set()
        while reached:
            value = reached.pop()
            seen.add(value)
            for (op_type, node, ins, outs, axis), position in consumers.get(value, []):
                if op_type == "Gather" and position == 1 and axis == 0 and ins[0] in rows:
                    if name not in found or rows[ins[0]] < found[name][0]:
                        found[name] = (rows[ins[0]], node)
                elif op_type in ID_CARRIERS and position == 0:
                    reached += [o for o in outs if o not in seen]
    return found


# -- the file without what a reader of its structure does not need --------------------------------

# TensorProto's value fields (float_data, int32_data, string_data, int64_data, raw_data, double_data,
# uint64_data): the weights themselves.
TENSOR_VALUES = frozenset({4, 5, 6, 7, 9, 10, 11})
# Values smaller than this stay (onnx's own external-data threshold): shape constants and scalars, which
# onnx's shape inference reads (a Reshape's target shape), cost nothing to hold.
KEPT_VALUE_BYTES = 1024


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _without(buf, span, drop) -> bytes:
    """The message at ``span`` re-encoded without the fields ``drop(number, payload span)`` says to
    drop, and with each field ``drop`` returns bytes for replaced by a length-delimited one of them."""
    out = bytearray()
    for number, wire, value, (start, end) in _bounded_fields(buf, *span):
        said = drop(number, value) if wire == LENGTH_DELIMITED else False
        if said is False:
            out += buf[start:end]
        elif said is not True:
            out += _delimited(number, said)
    return bytes(out)


def without_weights(path: str | Path) -> bytes:
    """The ONNX file at ``path`` serialized again without its initializers' values where they hold
    KEPT_VALUE_BYTES or more (their names, types and shapes kept): what a reader of the graph's
    structure parses (its inputs, outputs, nodes, initializers' shapes) without holding the weights a
    second time, whatever the file's size. ArtifactError in one line when the file is not an ONNX model."""
    def tensor(span):
        values = sum(v[1] - v[0] for n, w, v in fields(buf, *span) if w == LENGTH_DELIMITED and n in TENSOR_VALUES)
        return False if values < KEPT_VALUE_BYTES else _without(buf, span, lambda m, _: m in TENSOR_VALUES)

    def graph(number, span):
        if number != MODEL_GRAPH:
            return False
        return _without(buf, span, lambda n, s: False if n != GRAPH_INITIALIZER else tensor(s))

    with _model(path) as (buf, _, _graph):
        try:
            return _without(buf, (0, len(buf)), graph)
        except WireError as exc:
            raise ArtifactError(f"{path}: not an ONNX model, or a truncated one ({exc})") from None


def write_without_metadata(path: str | Path, handle) -> None:
    """The ONNX file at ``path`` written to ``handle`` without its metadata_props, every other field
    copied as its bytes are (its graph unchanged, and so its digest): a rewrite of the metadata that
    never parses the weights."""
    with _model(path) as (buf, _, _graph), memoryview(buf) as view:
        for number, _, _, (start, end) in _bounded_fields(buf, 0, len(buf)):
            if number != MODEL_METADATA:
                handle.write(view[start:end])
