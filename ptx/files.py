"""Reading a user's text files: the encoding told by the file itself, or one clear error."""
from __future__ import annotations

import errno
import functools
import hashlib
import os
import time
from pathlib import Path

from ptx.errors import PtxError

# A byte-order mark says the encoding for certain. UTF-32's marks begin with UTF-16's, so they
# are tried first.
BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
CODEC_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}


def _names_a(check, text) -> bool:
    """``check`` (Path.is_file, is_dir, exists) of an argument that may be a word rather than a path:
    one too long to name a file (a 5,000-character word) names none, where pathlib raises."""
    try:
        return check(Path(text))
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise


is_file = functools.partial(_names_a, Path.is_file)
is_dir = functools.partial(_names_a, Path.is_dir)
exists = functools.partial(_names_a, Path.exists)


def read_bytes(path: str | Path, error: type[PtxError] = PtxError) -> bytes:
    """A regular file's bytes. A special file (FIFO, device) is refused without opening it:
    reading one would block."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such file")
    if not path.is_file():
        raise error(f"{path}: not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None


def decode_text(data: bytes, name: str | Path, error: type[PtxError] = PtxError) -> str:
    """Text in the encoding the bytes themselves tell: a byte-order mark (UTF-8, UTF-16, UTF-32;
    spreadsheets write one), else UTF-8.

    Anything else is refused naming the line and the byte, not guessed: Latin-1 decodes every byte
    sequence without complaint, so reading a file as Latin-1 (or Windows-1252, or any other 8-bit
    code page) would silently turn another code page's letters into wrong ones, and the file
    cannot tell which code page it was written in. Real text in those code pages is almost never
    valid UTF-8, so the refusal is reliable."""
    codec = next((codec for bom, codec in BOMS if data.startswith(bom)), "utf-8")
    if codec == "utf-8" and b"\x00" in data:
        raise error(f"{name}: holds NUL bytes: a binary file (or UTF-16 without a byte-order mark), not text")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].decode(codec, errors="replace").count("\n") + 1
        if codec == "utf-8":  # by far the usual case: a spreadsheet's 8-bit code page
            column = exc.start - data.rfind(b"\n", 0, exc.start)
            raise error(f"{name}: line {line}, byte {column} (0x{data[exc.start]:02x}) is not UTF-8 (a Latin-1 or "
                        "Windows-1252 file?); save it as UTF-8 (spreadsheets: 'CSV UTF-8')") from None
        raise error(f"{name}: line {line} (byte {exc.start + 1} of the file) is not {CODEC_NAMES[codec]} as its "
                    "byte-order mark says (truncated?); save it as UTF-8") from None
    if "\x00" in text:
        raise error(f"{name}: holds NUL characters: a binary file, not text")
    return text


def read_text(path: str | Path, error: type[PtxError] = PtxError) -> str:
    """A user's text file, decoded as ``decode_text`` tells."""
    return decode_text(read_bytes(path, error), path, error)


# Digests already read in this process, by the file's identity on disk: an export of a decoder's f32 file to
# three weight-only formats read its 2 GB three times over for the same digest. The inode, size, mtime and
# ctime together change whenever the file's bytes do (ctime cannot be set back, and ptx writes a file beside
# and renames it, which gives a new inode); the few most recent files are kept. A file changed in the last
# seconds is read every time: timestamps move by the kernel's tick, so two writes within one look alike
# (git's "racily clean" entries).
_DIGESTS: dict[tuple, str] = {}
DIGESTS_KEPT = 64
SETTLED_NS = 2_000_000_000


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in blocks (artifacts record their checkpoint's; torch-free, so
    the ONNX Runtime path can check it too); read once per process while the file is unchanged."""
    identity = _identity(path)
    known = _DIGESTS.get(identity)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    settled = time.time_ns() - max(identity[3], identity[4]) > SETTLED_NS
    if settled and _identity(path) == identity:  # unchanged while it was read: the digest is the file's
        if len(_DIGESTS) >= DIGESTS_KEPT:
            _DIGESTS.pop(next(iter(_DIGESTS)))
        _DIGESTS[identity] = digest.hexdigest()
    return digest.hexdigest()


def _identity(path: str | Path) -> tuple:
    held = os.stat(path)
    return (held.st_dev, held.st_ino, held.st_size, held.st_mtime_ns, held.st_ctime_ns)
