"""Replace a few small members of a zip archive (a TorchScript file's ptx.json, a pt2 package's
metadata map) without writing the rest again: what export learns of a file after writing it (its
weights digest, its certificate) goes in without saving the model a second time (3 s of a
ViT-B/16's export, issue 67).

Python's zipfile writes the new versions; it has no way to delete a member (CPython gh-51067), so
the old entries are dropped from the archive's list here, and their bytes stay in the file unread:
a zip reader (torch's miniz, Python's zipfile) finds every member through the central directory,
which zipfile writes anew after the members it appends. The members' data before it are not moved,
so their offsets, the archive's alignment (torch aligns tensor data to 64 bytes) and a digest over
them stay as they were; ``replace_members`` checks that they did.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping

from ptx.errors import PtxError


def replace_members(path: Path, members: Mapping[str, bytes]) -> None:
    """Each of ``members`` ({name: data}) written into the zip archive at ``path`` in place of the
    member of that name (added where there is none), stored uncompressed as torch stores its own,
    every other member left where and as it was."""

    def others(archive: zipfile.ZipFile) -> list[tuple]:
        return [(i.filename, i.header_offset, i.CRC, i.compress_size, i.file_size) for i in archive.infolist()
                if i.filename not in members]

    with zipfile.ZipFile(path, "a") as archive:
        kept = others(archive)
        for name, data in members.items():
            old = archive.NameToInfo.pop(name, None)
            if old is not None:
                archive.filelist.remove(old)
            info = zipfile.ZipInfo(name, date_time=old.date_time if old is not None else (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, data)
    with zipfile.ZipFile(path) as archive:
        if others(archive) != kept or any(archive.read(n) != d for n, d in members.items()):
            raise PtxError(f"{path.name}: Python's zipfile (in {zipfile.__file__}) moved the archive's members while "
                           "ptx replaced its metadata; please report it")
