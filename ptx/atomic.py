"""Write files so that an interrupted run never leaves a half file under the final name."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds.

    The temporary file sits in the same folder so that the rename is atomic on POSIX, and it is
    fsynced first so that a power cut cannot leave a renamed but empty file.
    """
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a model file should read like any other
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_json(final: str | os.PathLike, obj) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable, with an error that says what to do."""
    from ptx.errors import PtxError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".ptx-write-probe.", delete=True)
        probe.close()
    except OSError as exc:
        raise PtxError(f"cannot write to {path}: {exc.strerror or exc}; pass a writable folder with --out") from None
    return path
