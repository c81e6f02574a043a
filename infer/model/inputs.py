"""Command-line inputs -> a list of items: files, every image in a folder, or glob matches."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ptx.errors import InputError
from ptx.files import exists, is_dir, read_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm",
                  ".heic", ".heif", ".avif",  # HEIC/HEIF through pillow-heif, AVIF through Pillow (ptx.contract.decode)
                  ".jfif", ".jpe"}  # JPEGs as Windows browsers save them ("Save image as" gives .jfif)


@dataclass
class Expanded:
    """Picture arguments expanded: the files to predict, the arguments that name none (each with
    why), and each folder's pictures and what was left out of it (subfolders, files that are not
    pictures)."""

    items: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    # (folder argument, its picture-suffixed files, what was skipped): counted once they were read,
    # since a file named .png may still be no picture.
    folders: list[tuple[str, list[str], list[str]]] = field(default_factory=list)

    def folder_notices(self, refused: set[str]) -> list[str]:
        """One line per folder that had files left out: the pictures read, those refused (each named
        in its own error), and what was skipped."""
        lines = []
        for arg, pictures, skipped in self.folders:
            bad = sum(1 for p in pictures if p in refused)
            if not (bad or skipped):
                continue
            line = f"{arg}: {_count(len(pictures) - bad, 'picture')} read"
            line += f", {_count(bad, 'file')} with a picture suffix refused (each in its error)" if bad else ""
            lines.append(line + (f"; skipped {' and '.join(skipped)}" if skipped else ""))
        return lines


def expand_inputs(args: list[str], recursive: bool = False) -> Expanded:
    """Folders give their image files (sorted; with ``recursive``, those of every subfolder too);
    globs their matching files; anything else stays as given, so that a missing file is reported
    by name rather than dropped. A folder's skipped subfolders and other files are counted in a
    notice; a folder without pictures and a pattern without matches are errors."""
    out = Expanded()
    for arg in args:
        path = Path(arg)
        if is_dir(arg):
            _expand_folder(arg, path, recursive, out)
        elif glob.has_magic(arg) and not exists(arg):
            # The shell passes a pattern through as it is when nothing matches it (quoted or not).
            # A match that is no folder is a file the user named, a broken link included (its error says so).
            matches = sorted(m for m in glob.glob(arg, recursive=True) if not Path(m).is_dir())
            out.items += matches
            if not matches:
                out.errors.append((arg, f"no file matches {arg}"))
        else:
            out.items.append(arg)
    return out


def _expand_folder(arg: str, path: Path, recursive: bool, out: Expanded) -> None:
    if recursive:
        entries = [(str(p), p.name, p.is_file(), p.is_dir()) for p in sorted(path.rglob("*"), key=lambda p: p.parts)]
    else:
        # One directory read and no Path per entry: scandir's entries know whether they are files or
        # folders without a stat each (a symbolic link is followed, as Path.is_file does); sorted by
        # name, as Paths of one folder sort. 10,000 files: 0.03 s, where Paths and is_file took 0.4.
        # A picture's path is str(path / name), as iterdir gave it: "x.png" in ".", not "./x.png".
        prefix = "" if str(path) == "." else str(path)
        with os.scandir(path) as scan:
            entries = sorted(((os.path.join(prefix, e.name), e.name, *_kind(e)) for e in scan), key=lambda e: e[1])
    # An entry that is neither a file nor a folder (a link to nothing, a link loop, a pipe) but is
    # named as a picture is still one the user meant: it gets its own error line (and exit status 1)
    # rather than vanishing from the run and from the folder's notice.
    pictures = [full for full, name, _, is_dir in entries if not is_dir and _suffix(name) in IMAGE_SUFFIXES]
    folders = 0 if recursive else sum(1 for *_, is_dir in entries if is_dir)
    others = [name for _, name, is_file, _ in entries if is_file and _suffix(name) not in IMAGE_SUFFIXES]
    skipped = []
    if folders:
        skipped.append(f"{_count(folders, 'subfolder')} (--recursive reads them)")
    if others:
        named = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        skipped.append(f"{_count(len(others), 'file')} without a picture suffix ({named})")
    if not pictures:
        out.errors.append((arg, f"{arg}: a folder with no image files in it" + (f"; it has {', '.join(skipped)}"
                                                                            if skipped else "")))
        return
    out.items += pictures
    out.folders.append((arg, pictures, skipped))


def _kind(entry: os.DirEntry) -> tuple[bool, bool]:
    """(is a file, is a folder), links followed; an entry that cannot be told (a symbolic link loop,
    no permission) is neither, as Path.is_file says of a loop, rather than an error for the folder."""
    try:
        return entry.is_file(), entry.is_dir()
    except OSError:
        return False, False


def _suffix(name: str) -> str:
    """Path(name).suffix.lower() without making a Path (the last dot's part, not a leading dot's)."""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def expand_csv_rows(args: list[str], features: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
    """For models that take feature rows: a CSV file gives its rows (text as ptx.files reads it:
    UTF-8 with or without BOM, UTF-16/32 with BOM; blank lines skipped; a first line with a cell per
    feature and no number in it is a header, skipped); any other argument is itself one row, e.g.
    "6,148,72,35,0,33.6,0.627,50". Columns are taken by position, in ``features`` order. Returns
    (rows, [(file, why)] for files that cannot be read or hold no rows)."""
    rows: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if is_dir(arg):  # a folder of CSV files: its files are what is read, and the shell names them
            unreadable.append((arg, f"{arg}: a folder, not a CSV file; name its files (e.g. {path / '*.csv'})"))
        elif path.suffix.lower() == ".csv" or exists(arg):
            try:
                rows += csv_text_rows(read_text(path, InputError), path, features)
            except InputError as exc:
                unreadable.append((arg, str(exc)))
        else:
            rows.append(arg)
    return rows, unreadable


def csv_text_rows(text: str, path, features: tuple[str, ...] = ()) -> list[str]:
    """The data rows of a CSV file's text (``path`` names it in errors); a file with none is an
    error, not an empty success, and so are a header naming the features in another order than the
    model reads them and rows that all have another width (the training file's outcome column, say)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # A header names columns: a first line with any number in it is a row, even one with a bad cell
    # ("6,,72,..."), which is then refused as that row rather than skipped unsaid as a header.
    if lines and not _has_number(lines[0]) and (not features or len(lines[0].split(",")) == len(features)):
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
        width = widths.pop()
        # A spreadsheet set to a decimal comma writes ';' between cells; a TSV has tabs.
        other = next((sep for sep in (";", "\t") if all(sep in line for line in lines[:10])), None)
        hint = (f": its cells look separated by {'tabs' if other == chr(9) else repr(other)}; save it with commas "
                "between cells and points as decimal marks" if other else "")
        raise InputError(f"{path}: every row has {width} column{'' if width == 1 else 's'}; the model reads "
                         f"{len(features)} ({', '.join(features)}){hint}")
    return lines


def _has_number(line: str) -> bool:
    """Whether any cell of a CSV line reads as a number."""
    for cell in line.split(","):
        try:
            float(cell)
            return True
        except ValueError:
            pass
    return False
