"""Reader for IDX files (MNIST's format, raw or .gz), as the seed's data_util.py reads them.

Written here because the format is 20 lines and the libraries that read it (torchvision, mlxtend)
do not import on every machine ptx runs on.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ptx.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc}); replace it with a good copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number); replace it with a good copy")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: IDX header is truncated or has no dimensions; replace it with a good copy")
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX file is truncated ({len(data) - header} bytes of data, {expected} expected)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
