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


def expand_csv_rows(args: list[str], features: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """For models that take feature rows: a CSV file gives its rows (text as ptx.files reads it:
    UTF-8 with or without BOM, UTF-16/32 with BOM; blank lines skipped; a first line with a cell per
    feature that is not all numbers is a header, skipped); any other argument is itself one row, e.g.
    "6,148,72,35,0,33.6,0.627,50". Columns are taken by position, in ``features`` order. Returns
    (rows, [(file, why)] for files that cannot be read or hold no rows)."""
    rows: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if path.suffix.lower() == ".csv" or path.exists():
            try:
                rows += csv_file_rows(path, features)
            except InputError as exc:
                unreadable.append((arg, str(exc)))
        else:
            rows.append(arg)
    return rows, unreadable


def csv_file_rows(path: Path, features: tuple[str, ...] = ()) -> list[str]:
    """The data rows of one CSV file of feature rows; a file with none is an error, not an empty
    success, and so are a header naming the features in another order than the model reads them
    and rows that all have another width (the training file's outcome column, say)."""
    lines = [ln.strip() for ln in read_text(path, InputError).splitlines() if ln.strip()]
    if lines and not _is_numeric_row(lines[0]) and (not features or len(lines[0].split(",")) == len(features)):
        names = [name.strip().lower() for name in lines[0].split(",")]
        wanted = [name.lower() for name in features]
        if names != wanted and sorted(names) == sorted(wanted):
            raise InputError(f"{path}: the header names the columns in another order ({', '.join(names)}) than "
                             f"the model reads them ({', '.join(wanted)}); reorder the columns")
        lines = lines[1:]
    if not lines:
        raise InputError(f"{path}: no rows to predict (the file is empty, blank or a header only)")
    widths = {len(line.split(",")) for line in lines}
    if features and len(widths) == 1 and widths != {len(features)}:  # the file's layout, not one row, is wrong
        raise InputError(f"{path}: every row has {widths.pop()} columns; the model reads {len(features)} "
                         f"({', '.join(features)})")
    return lines


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True
