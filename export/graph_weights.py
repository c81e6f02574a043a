"""Where a graph's weights live while export rewrites it, and where the file it writes keeps them.

A rewrite that makes weights (a quantizer's blocks and scales, a merged projection, a transposed head) puts
each tensor's bytes in a data file of the scratch folder as it is made (``add_constant``, ``spill_file``), and the
graph refers to them there: the graph being built holds no weights, so a 7B model's 4.4 GB of int4 weights are
never in memory at once (a protobuf message keeps what it held until it is freed whole: formats/weight_only.py
says so of the f32 weights). The written file then gets them (``weights_placed``): inside its graph where the
whole fits one file, as a small model's file has always been written, else in its own data file beside it,
copied tensor by tensor, with only the tensors the graph still reads (a projection merged into another left
its bytes behind in the scratch file).

onnx and numpy only.
"""
from __future__ import annotations

from pathlib import Path

CONSTANTS_DATA = "constants.data"  # the tensors made here, beside the graph's own data file
ALIGN = 4096  # a large tensor's bytes start on a page in the written data file, where a runtime may map them
ALIGN_FROM = 1 << 20
# A written file keeps its weights inside its graph up to this many bytes, beside it past them. A file written
# in one piece is held whole three times over (the proto, its serialized bytes, the checker's parse of the file):
# a 0.5B model's int8w file (1.1 GB) took the export from 4.9 to 9.7 GB so; written beside it, a tensor at a time.
INSIDE_BYTES = 256 << 20


def _external(tensor, location: str, offset: int, length: int) -> None:
    import onnx

    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def _append(data: Path, payload: bytes, align: bool = False) -> int:
    """``payload`` appended to the file ``data`` (made where missing): the offset it starts at."""
    with open(data, "ab") as handle:
        offset = handle.tell()
        if align and offset % ALIGN:
            handle.write(b"\0" * (ALIGN - offset % ALIGN))
            offset = handle.tell()
        handle.write(payload)
    return offset


def add_constant(graph, name: str, values, folder: Path | None):
    """``values`` added to ``graph`` as initializer ``name``: written to ``folder``'s CONSTANTS_DATA and
    referred to there (the proto holds no weights), or inside the proto where ``folder`` is None. Made in place,
    its bytes laid out once by tobytes() (a transposed view too): numpy_helper.from_array's tensor appended would
    be copied once more (a 0.5B model's weights quantized: 3.4 s of copies against 1.2 s this way)."""
    import numpy as np
    import onnx

    values = np.asarray(values)
    tensor = graph.initializer.add(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
                                   dims=list(values.shape))
    if folder is None:
        tensor.raw_data = values.tobytes()
        return tensor
    _external(tensor, CONSTANTS_DATA, _append(Path(folder) / CONSTANTS_DATA, values.tobytes()), values.nbytes)
    return tensor


def move_out(tensor, folder: Path) -> None:
    """``tensor``'s values, held inside it, appended to ``folder``'s CONSTANTS_DATA and referred to there (a tensor
    another library made: NNCF's, its 4-bit ones packed in raw_data as it writes them)."""
    from onnx import numpy_helper

    payload = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
    _external(tensor, CONSTANTS_DATA, _append(Path(folder) / CONSTANTS_DATA, payload), len(payload))


def spill_file(tensor, data: Path, folder: Path) -> None:
    """The bytes of file ``data`` (a tensor's values, written in pieces) appended to ``folder``'s CONSTANTS_DATA and
    ``tensor`` referring to them there; ``data`` removed."""
    import shutil

    target = Path(folder) / CONSTANTS_DATA
    with open(target, "ab") as handle, open(data, "rb") as source:
        offset = handle.tell()
        shutil.copyfileobj(source, handle, 16 << 20)
        length = handle.tell() - offset
    Path(data).unlink()
    _external(tensor, CONSTANTS_DATA, offset, length)


def _bytes_of(tensor, folder: Path) -> bytes:
    """An external initializer's bytes: a transformers folder's tensor (read as float32) or a data file's range."""
    from .folder_weights import is_lazy, read_lazy

    if is_lazy(tensor):
        return read_lazy(tensor).tobytes()
    entries = {e.key: e.value for e in tensor.external_data}
    with open(Path(folder) / entries["location"], "rb") as handle:
        handle.seek(int(entries.get("offset", 0)))
        length = entries.get("length")
        return handle.read(int(length)) if length is not None else handle.read()


def stored_bytes(proto) -> int:
    """The bytes ``proto``'s initializers' values take, wherever they are (a folder tensor's in float32)."""
    import math

    from .folder_weights import is_lazy

    total = 0
    for tensor in proto.graph.initializer:
        if is_lazy(tensor):
            total += 4 * math.prod(tensor.dims)
        elif tensor.data_location == tensor.EXTERNAL:
            total += int({e.key: e.value for e in tensor.external_data}.get("length", 0))
        else:
            total += tensor.ByteSize()
    return total


def weights_placed(proto, folder: Path, path: Path) -> None:
    """Every weight of ``proto`` (wherever it is: inside, in ``folder``'s data files, in a transformers folder)
    where the file written at ``path`` keeps it: inside the graph up to INSIDE_BYTES (and
    infer/formats/onnx_files.ONE_FILE_BYTES, which a test lowers), else in ``path``'s data file beside it, one
    tensor at a time (the tensors under onnx's INLINE_BYTES stay inside the graph)."""
    from onnx.external_data_helper import load_external_data_for_model

    from ptx.infer.formats import onnx_files

    from .folder_weights import read_lazy_inside

    if stored_bytes(proto) <= min(INSIDE_BYTES, onnx_files.ONE_FILE_BYTES):
        read_lazy_inside(proto)  # a graph traced without its weights: the norms and biases from their folder
        load_external_data_for_model(proto, str(folder))  # each marked inside as it is read
        return
    data = Path(path).parent / onnx_files.data_name(path)
    data.unlink(missing_ok=True)
    for tensor in proto.graph.initializer:
        if tensor.data_location == tensor.EXTERNAL:
            payload = _bytes_of(tensor, folder)
        elif tensor.HasField("raw_data") and len(tensor.raw_data) >= onnx_files.INLINE_BYTES:
            payload = tensor.raw_data
        else:
            continue
        _external(tensor, data.name, _append(data, payload, align=len(payload) >= ALIGN_FROM), len(payload))
        del payload
