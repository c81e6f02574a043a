"""Command-line inputs -> a list of items: files, every image in a folder, or glob matches."""
from __future__ import annotations

import glob
from pathlib import Path

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


def expand_csv_rows(args: list[str]) -> list[str]:
    """For models that take feature rows: a CSV file gives its rows (a header line is skipped);
    any other argument is itself one row, e.g. "6,148,72,35,0,33.6,0.627,50"."""
    rows: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.suffix.lower() == ".csv" or path.is_file():
            if not path.is_file():
                rows.append(arg)  # reported as a bad row that names the missing file
                continue
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            if lines and not _is_numeric_row(lines[0]):
                lines = lines[1:]
            rows += lines
        else:
            rows.append(arg)
    return rows


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True
