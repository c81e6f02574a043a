"""Tensors as the Open Inference Protocol (v2) carries them: datatypes, BYTES elements, JSON data and
the binary tensor data extension. No model knowledge here, and no framework: REST and gRPC share it.

BYTES elements travel, in binary form (REST binary extension, gRPC raw contents), as a 4-byte
little-endian length followed by the bytes, element after element (Triton's serialisation).
"""
from __future__ import annotations

import base64
import binascii

import struct
from dataclasses import dataclass, field

import numpy as np

from ptx.contract.protocol import BYTES, V2_TYPES

# BYTES content types in JSON, as MLServer names them: base64-encoded bytes, or UTF-8 strings.
BASE64, UTF8_STRING = "base64", "str"
LENGTH = struct.Struct("<I")


class RequestError(Exception):
    """What was wrong with a request, for the client: HTTP status (gRPC code follows it) and a
    one-line message. The server stays ready."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Tensor:
    """One named tensor of a request or response. ``data`` is a numpy array, or a list of bytes
    for BYTES."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]
    parameters: dict = field(default_factory=dict)


def element_count(shape, name: str) -> int:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise RequestError(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def decode_bytes_elements(raw: bytes | memoryview, count: int, name: str) -> list[bytes]:
    """Length-prefixed BYTES elements -> ``count`` bytes objects; a short or overlong buffer is an error."""
    view = memoryview(raw)
    out, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(view):
            raise RequestError(f"input {name!r}: BYTES data ends inside element {len(out)} (truncated)")
        (length,) = LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise RequestError(f"input {name!r}: BYTES element {len(out)} claims {length} bytes, "
                               f"{len(view) - offset} are left (truncated)")
        out.append(bytes(view[offset:offset + length]))
        offset += length
    if offset != len(view):
        raise RequestError(f"input {name!r}: {len(view) - offset} bytes beyond its {count} BYTES element(s)")
    return out


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> Tensor:
    """A tensor from its binary contents (REST binary extension, gRPC raw_input_contents)."""
    count = element_count(shape, name)
    if datatype == BYTES:
        return Tensor(name, datatype, list(shape), decode_bytes_elements(raw, count, name))
    dtype = _numpy_type(datatype, name)
    expected = count * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise RequestError(f"input {name!r}: {len(raw)} bytes of data, shape {list(shape)} of {datatype} needs "
                           f"{expected}")
    return Tensor(name, datatype, list(shape), np.frombuffer(raw, dtype=dtype).reshape(shape))


def from_json_data(name: str, datatype: str, shape: list[int], data, content_type: str | None = None) -> Tensor:
    """A tensor from the JSON ``data`` field (or gRPC's typed contents): flat or nested lists,
    row-major. BYTES elements are UTF-8 strings, or base64 when the input's parameters say
    ``"content_type": "base64"`` (MLServer's convention: how a picture file travels in plain JSON,
    from curl say); gRPC's are bytes already."""
    count = element_count(shape, name)
    if datatype == BYTES:
        flat = _flatten(data)
        if any(not isinstance(v, (str, bytes)) for v in flat):
            raise RequestError(f"input {name!r}: BYTES data in JSON must be strings")
        if len(flat) != count:
            raise RequestError(f"input {name!r}: {len(flat)} elements of data for shape {list(shape)} ({count})")
        if content_type not in (None, BASE64, UTF8_STRING):
            raise RequestError(f"input {name!r}: content_type {content_type!r}: give base64, or str (the default: "
                               "UTF-8 strings)")
        decode = (lambda v: _base64(v, name)) if content_type == BASE64 else str.encode  # UTF-8
        return Tensor(name, datatype, list(shape), [v if isinstance(v, bytes) else decode(v) for v in flat])
    dtype = _numpy_type(datatype, name)
    try:
        # Overflow raises rather than warns: 1e6 for an FP16 input would become inf and answer NaN
        # (and JSON has no NaN or infinity: one that appears is a number beyond the type's range).
        with np.errstate(over="raise"):
            array = np.asarray(data, dtype=dtype)
    except (FloatingPointError, OverflowError):
        limit = f" (about ±{float(np.finfo(dtype).max):.3g})" if np.dtype(dtype).kind == "f" else ""
        raise RequestError(f"input {name!r}: data holds values outside {datatype}'s range{limit}") from None
    except (TypeError, ValueError):
        raise RequestError(f"input {name!r}: data is not a list of {datatype} numbers") from None
    if array.dtype.kind in "iu" and array.size:
        # numpy truncates 1.5 to 1 for an integer dtype without a word; `ptx predict` refuses a
        # fraction for an integer input too ("round or cast it first"), so the server does as well.
        loose = np.asarray(data)
        if loose.dtype.kind == "f" and not np.array_equal(loose, np.trunc(loose)):
            raise RequestError(f"input {name!r}: {datatype} data holds a fraction; send whole numbers")
    if array.size != count:
        raise RequestError(f"input {name!r}: {array.size} elements of data for shape {list(shape)} ({count})")
    return Tensor(name, datatype, list(shape), array.reshape(shape))


def _base64(text: str, name: str) -> bytes:
    # MIME base64 breaks lines every 76 characters (`base64 FILE` without -w0, Python's encodebytes,
    # Java's MIME encoder): the line breaks are layout, not data, so they are taken out before the
    # strict check that still refuses any other character.
    try:
        return base64.b64decode(text.translate(_LINE_BREAKS), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"input {name!r}: an element is not base64 (its content_type says base64): send "
                           "each file's bytes in standard base64, e.g. `base64 -w0 FILE`") from None


_LINE_BREAKS = str.maketrans("", "", "\r\n")


def _numpy_type(datatype: str, name: str):
    try:
        return V2_TYPES[datatype]
    except (KeyError, TypeError):
        raise RequestError(f"input {name!r}: unknown datatype {datatype!r}; the protocol's are "
                           f"{', '.join([*V2_TYPES, BYTES])}") from None


def _flatten(data) -> list:
    return [value for item in data for value in _flatten(item)] if isinstance(data, list) else [data]


def to_raw(tensor: Tensor) -> bytes:
    """A response tensor's binary contents."""
    if tensor.datatype == BYTES:
        return b"".join(LENGTH.pack(len(item)) + item for item in tensor.data)
    return np.ascontiguousarray(tensor.data).tobytes()


def to_json_data(tensor: Tensor) -> list:
    """A response tensor as JSON ``data``: flat, row-major (what Triton returns)."""
    if tensor.datatype == BYTES:
        return [item.decode("utf-8", errors="replace") for item in tensor.data]
    return np.asarray(tensor.data).reshape(-1).tolist()
