"""A file's SHA-256, read once per process while the file is unchanged (ptx.files.file_sha256)."""
from __future__ import annotations


def test_a_digest_is_read_again_once_the_file_changes(tmp_path, monkeypatch):
    """file_sha256 reads a settled file once per process; a file rewritten in place, or just written (its
    timestamps cannot tell two writes within the kernel's tick apart), is read again."""
    import hashlib
    import os

    from ptx import files

    monkeypatch.setattr(files, "_DIGESTS", {})
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    assert files.file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest() and not files._DIGESTS  # just written
    old = path.stat().st_mtime_ns - 10_000_000_000
    os.utime(path, ns=(old, old))  # settled (its ctime moves with utime: settle it by the clock instead)
    monkeypatch.setattr(files, "SETTLED_NS", -10**12)
    first = files.file_sha256(path)
    assert len(files._DIGESTS) == 1 and files.file_sha256(path) == first
    with open(path, "r+b") as fh:  # the same size, in place
        fh.write(b"b")
    assert files.file_sha256(path) == hashlib.sha256(b"b" + b"a" * 999).hexdigest()
