"""A transformers folder's weights as its safetensors files hold them (``model.safetensors``, or the shards a
``model.safetensors.index.json`` names), known before any is read and read one tensor at a time.

What each tensor is (its dtype, shape and where its bytes lie) comes from the files' headers alone, so the
memory plan knows the weights' size, the largest tensor and the folder's dtype before the first weight is
read (``FolderWeights.of``). A tensor is read by a plain read of its bytes into a fresh array, and converted
to float32 there: not through a memory map (safetensors' own reader maps the file), because the pages a
process touches through a map count in its resident memory until it is unmapped, and a 15 GB folder read
once through would look like 15 GB held; a plain read leaves them in the kernel's page cache, which is given
back under pressure. Why the header is parsed here: safetensors' API gives a tensor, never where its bytes
are, and numpy has no bfloat16 (safetensors' numpy reader refuses such a file); the format is an 8-byte
length, a JSON header, then the tensors' bytes (https://github.com/huggingface/safetensors#format).

A graph traced without its weights (export/weightless.py) names, for each initializer, the folder tensor it
is: an ONNX TensorProto whose external data is that tensor's bytes in its shard, marked with the stored dtype
and whether the graph reads it transposed (``lazy_initializer``). ptx's own readers of a graph's weights
(export/onnx_graph.weight_of) read such a tensor from the folder as float32; such a graph is an export's
scratch and never a file a runtime opens: a writer puts the values themselves in every file it keeps.

Torch-free: numpy and the standard library.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptx.errors import PtxError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# safetensors' dtype names -> (bytes per value, numpy dtype read as; bfloat16 is read as its 16 bits)
DTYPES = {"F32": (4, np.float32), "F16": (2, np.float16), "BF16": (2, np.uint16), "F64": (8, np.float64)}
WORDS = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}

# The keys of a lazy initializer's external data beside ONNX's location/offset/length: what its bytes are.
STORED_KEY = "ptx_stored_dtype"  # the safetensors dtype of the bytes (the graph reads float32)
TRANSPOSED_KEY = "ptx_transposed"  # "1": the graph reads the stored matrix transposed
STORED_SHAPE_KEY = "ptx_stored_shape"  # the stored shape, comma-separated
FOLDER_KEY = "ptx_folder_tensor"  # the tensor's name in the folder (model.layers.0.mlp.up_proj.weight)


@dataclass(frozen=True)
class Stored:
    """One tensor of a folder: its name, the file holding it, its safetensors dtype and shape, and where its
    bytes lie in that file (from the start of the file)."""

    key: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def f32_bytes(self) -> int:
        return 4 * self.count


def read_header(path: Path) -> dict[str, Stored]:
    """The tensors a safetensors file holds, from its header: one line of PtxError where it is not one."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > 100 << 20:  # safetensors' own bound on a header
                raise ValueError(f"a header of {size:,} bytes")
            header = json.loads(handle.read(size))
        total = path.stat().st_size
    except (OSError, ValueError, struct.error) as exc:
        raise PtxError(f"{path}: not a readable safetensors file ({exc})") from None
    start, found = 8 + size, {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        dtype, shape, (begin, end) = entry.get("dtype"), tuple(entry.get("shape", ())), entry.get("data_offsets", (0, 0))
        if dtype not in DTYPES:
            raise PtxError(f"{path}: {key} is {dtype}; ptx reads float32, float16 and bfloat16 weights")
        if end - begin != DTYPES[dtype][0] * math.prod(shape) or start + end > total:
            raise PtxError(f"{path}: {key}'s bytes ({begin} to {end}) do not hold a {dtype} {list(shape)} tensor inside "
                           f"the file ({total:,} bytes): the file is damaged or cut short; download it again")
        found[key] = Stored(key, path, dtype, shape, start + begin, end - begin)
    return found


class FolderWeights:
    """The tensors of a transformers folder's safetensors files, by name, none of them read yet."""

    def __init__(self, folder: Path, tensors: dict[str, Stored]):
        self.folder, self.tensors = folder, tensors

    @classmethod
    def of(cls, folder: str | Path) -> "FolderWeights | None":
        """The folder's weights as its index (or its one model.safetensors) names them; None where it holds no
        safetensors file (an older pytorch_model.bin folder: transformers reads it whole)."""
        folder = Path(folder)
        if (folder / INDEX).is_file():
            try:
                shards = sorted(set(json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise PtxError(f"{folder / INDEX}: not a safetensors index ({exc})") from None
        elif (folder / SINGLE).is_file():
            shards = [SINGLE]
        else:
            return None
        tensors: dict[str, Stored] = {}
        for shard in shards:
            if not (folder / shard).is_file():
                raise PtxError(f"{folder}: {INDEX} names {shard}, which is not in the folder: download it too")
            tensors.update(read_header(folder / shard))
        return cls(folder, tensors)

    @property
    def stored_bytes(self) -> int:
        return sum(t.length for t in self.tensors.values())

    @property
    def f32_bytes(self) -> int:
        return sum(t.f32_bytes for t in self.tensors.values())

    @property
    def largest_f32(self) -> int:
        return max((t.f32_bytes for t in self.tensors.values()), default=0)

    @property
    def dtype(self) -> str:
        """The dtype most of the weights' bytes are stored in, as a word (bfloat16)."""
        by: dict[str, int] = {}
        for t in self.tensors.values():
            by[t.dtype] = by.get(t.dtype, 0) + t.length
        return WORDS[max(by, key=by.get)] if by else "float32"

    def read(self, key: str) -> np.ndarray:
        """Tensor ``key`` as a float32 array of its stored shape."""
        return read_stored(self.tensors[key])


def read_stored(stored: Stored, rows: tuple[int, int] | None = None) -> np.ndarray:
    """``stored``'s values (its ``rows`` [start, stop) of the first axis alone where given: a contiguous range of its
    bytes) as a new float32 array: its bytes read (not mapped: see the module's docstring) and widened in place.
    bfloat16 is a float32's upper 16 bits, so widening is exact."""
    size, kind = DTYPES[stored.dtype]
    shape = stored.shape
    per_row = math.prod(shape[1:]) if shape else 1
    start, stop = rows if rows is not None else (0, shape[0] if shape else 1)
    raw = np.fromfile(stored.path, dtype=kind, count=(stop - start) * per_row,
                      offset=stored.offset + start * per_row * size)
    if stored.dtype == "BF16":
        values = raw.astype(np.uint32)
        del raw
        np.left_shift(values, 16, out=values)
        values = values.view(np.float32)
    else:
        values = raw.astype(np.float32, copy=False)
    return values.reshape((stop - start, *shape[1:]) if shape else ())


def lazy_initializer(name: str, stored: Stored, transposed: bool = False):
    """An ONNX float32 initializer ``name`` whose values are folder tensor ``stored`` (transposed where the graph
    reads it so): its external data is the tensor's bytes in its shard, marked with what they are."""
    import onnx

    shape = stored.shape[::-1] if transposed else stored.shape
    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(shape),
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", str(stored.path.resolve())), ("offset", str(stored.offset)),
                       ("length", str(stored.length)), (STORED_KEY, stored.dtype), (FOLDER_KEY, stored.key),
                       (STORED_SHAPE_KEY, ",".join(map(str, stored.shape))), (TRANSPOSED_KEY, "1" if transposed else "0")):
        tensor.external_data.add(key=key, value=value)
    return tensor


def is_lazy(tensor) -> bool:
    """Whether the initializer ``tensor`` is a folder tensor by reference (``lazy_initializer``)."""
    return tensor.data_location == tensor.EXTERNAL and any(e.key == STORED_KEY for e in tensor.external_data)


def stored_of(tensor) -> tuple[Stored, bool]:
    """(the folder tensor a lazy initializer names, whether the graph reads it transposed)."""
    entries = {e.key: e.value for e in tensor.external_data}
    shape = tuple(int(d) for d in entries[STORED_SHAPE_KEY].split(",") if d)
    stored = Stored(entries.get(FOLDER_KEY, tensor.name), Path(entries["location"]), entries[STORED_KEY], shape,
                    int(entries["offset"]), int(entries["length"]))
    return stored, entries.get(TRANSPOSED_KEY) == "1"


def read_lazy(tensor, part: tuple[int, int, int] | None = None) -> np.ndarray:
    """A lazy initializer's float32 values, a new contiguous array in the shape the graph reads; ``part`` (axis,
    start, stop): only that range along the graph's ``axis`` of a matrix, read alone where it is the stored tensor's
    rows (a transposed matrix's columns are), else cut from the whole."""
    stored, transposed = stored_of(tensor)
    if part is None:
        values = read_stored(stored)
    elif (1 - part[0] if transposed else part[0]) == 0:  # the stored tensor's rows: read alone
        values = read_stored(stored, part[1:])
    else:
        values = read_stored(stored)[:, part[1]:part[2]]
    return transposed_copy(values) if transposed else np.ascontiguousarray(values)


# The stored rows a transposed copy takes at once: [64, in] is read whole and written as 64 values per row of the
# copy, so both sides stay within cache. numpy's own copy of a transposed view walks one side a value at a time
# across rows: a 0.5B model's [151936, 896] table took 0.67 s that way and 0.14 s in blocks of 64, a 7B model's
# [152064, 3584] 4.4 s against 0.74 s, its [18944, 3584] MLP weights 0.25 against 0.08 s (AMD EPYC, 2026-11-30;
# 64 was best or near it at every shape tried, 128-512 up to 0.86x numpy's on some).
TRANSPOSE_ROWS = 64


def transposed_copy(values: np.ndarray) -> np.ndarray:
    """``values`` [rows, columns] transposed into a new contiguous [columns, rows] array, block by block of rows:
    a folder's [out, in] weight as the [in, out] a MatMul reads."""
    rows = values.shape[0]
    out = np.empty(values.shape[::-1], dtype=values.dtype)
    for start in range(0, rows, TRANSPOSE_ROWS):
        out[:, start:start + TRANSPOSE_ROWS] = values[start:start + TRANSPOSE_ROWS].T
    return out


def lazy_transposed(tensor, name: str):
    """A lazy initializer ``name`` reading ``tensor``'s folder tensor transposed the other way (a head tied to the
    embedding: the table, read as the head's [hidden, vocab] weight), no value read."""
    stored, transposed = stored_of(tensor)
    return lazy_initializer(name, stored, not transposed)


def resolve_lazy(proto, folder: Path, data: str) -> int:
    """Every lazy initializer of ``proto`` made an ordinary one: its float32 values written, one tensor at a time,
    to the file ``data`` in ``folder`` (appended), and the tensor referring to them there, as ONNX external data
    that any reader takes (onnx's checker, ONNX Runtime, NNCF). Returns the bytes written."""
    written = 0
    target = Path(folder) / data
    offset = target.stat().st_size if target.exists() else 0
    with open(target, "ab") as handle:
        for tensor in proto.graph.initializer:
            if not is_lazy(tensor):
                continue
            values = read_lazy(tensor)
            values.tofile(handle)
            del tensor.external_data[:]
            for key, value in (("location", data), ("offset", str(offset)), ("length", str(values.nbytes))):
                tensor.external_data.add(key=key, value=value)
            offset += values.nbytes
            written += values.nbytes
    return written


def read_lazy_inside(proto) -> None:
    """Every lazy initializer of ``proto`` given its float32 values inside the proto (a small model's file holds
    its weights in one file)."""
    for tensor in proto.graph.initializer:
        if is_lazy(tensor):
            values = read_lazy(tensor)
            del tensor.external_data[:]
            tensor.data_location = tensor.DEFAULT
            tensor.raw_data = values.tobytes()


def lazy_bytes(proto) -> int:
    """The float32 bytes of ``proto``'s lazy initializers."""
    return sum(4 * math.prod(t.dims) for t in proto.graph.initializer if is_lazy(t))
