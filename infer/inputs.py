"""Command-line inputs -> a list of items: files, every image in a folder, or glob matches."""
from __future__ import annotations

import glob
from pathlib import Path

from ptx.errors import InputError
from ptx.files import read_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}


def expand_inputs(args: list[str]) -> list[str]:
    """Folders give their image files (sorted); globs their matches; anything else stays as given,
    so that a missing file is reported by name rather than dropped."""
    items: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            items += found or [arg]  # an empty folder is reported, not silently skipped
        elif glob.has_magic(arg) and not path.exists():
            matches = sorted(glob.glob(arg, recursive=True))
            items += matches if matches else [arg]
        else:
            items.append(arg)
    return items


def expand_csv_rows(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """For models that take feature rows: a CSV file gives its rows (UTF-8, with or without BOM;
    a header line is skipped); any other argument is itself one row, e.g.
    "6,148,72,35,0,33.6,0.627,50". Returns (rows, [(file, why)] for files that cannot be read)."""
    rows: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if path.suffix.lower() == ".csv" or path.exists():
            try:
                text = read_text(path, InputError)
            except InputError as exc:
                unreadable.append((arg, str(exc)))
                continue
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines and not _is_numeric_row(lines[0]):
                lines = lines[1:]
            rows += lines
        else:
            rows.append(arg)
    return rows, unreadable


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True
