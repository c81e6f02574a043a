"""Reading a user's text files: one clear error for what is not readable UTF-8 text."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ptx.errors import PtxError


def read_text(path: str | Path, error: type[PtxError] = PtxError) -> str:
    """UTF-8 text, with or without a byte-order mark (spreadsheets write one). A special file
    (FIFO, device) is refused without opening it: reading one would block."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    if not path.is_file():
        raise error(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if b"\x00" in data:
        raise error(f"{path}: a binary file, not CSV text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); "
                    "save it as UTF-8") from None


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in blocks (artifacts record their checkpoint's; torch-free, so
    the ONNX Runtime path can check it too)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
