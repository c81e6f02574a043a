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
            items += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif glob.has_magic(arg) and not path.exists():
            matches = sorted(glob.glob(arg, recursive=True))
            items += matches if matches else [arg]
        else:
            items.append(arg)
    return items
