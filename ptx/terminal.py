"""Tables that fit the terminal: columns narrow and long cells wrap to its width (rich's layout), so a
listing such as `ptx models` reads in an 80- or 100-column window instead of running off its edge.

Imported only by the commands that print such a table (never on `ptx predict`'s path: rich costs
about 30 ms to import)."""
from __future__ import annotations

import shutil
from typing import Sequence

# Where there is no terminal (a pipe, CI's log) and COLUMNS is unset: wide enough for the tables,
# and the same on every machine.
DEFAULT_WIDTH = 100


def terminal_width() -> int:
    """The terminal's columns (COLUMNS when set, as click's help uses), else DEFAULT_WIDTH."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[str] = (),
          no_wrap: Sequence[str] = (), width: int | None = None) -> str:
    """``rows`` under ``headers`` as plain text at most ``width`` columns wide (default: the terminal's).

    Columns named in ``right`` are right-aligned (numbers); those in ``no_wrap`` never break (names a
    user types); the others wrap within their cell when the table would not fit."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, expand=False)
    for header in headers:
        grid.add_column(header, justify="right" if header in right else "left", no_wrap=header in no_wrap,
                        overflow="fold")
    for row in rows:
        grid.add_row(*(Text(str(cell)) for cell in row))  # Text: a "[" in a cell is text, never markup
    console = Console(width=width or terminal_width(), color_system=None, highlight=False, emoji=False,
                      markup=False, force_terminal=False, legacy_windows=False)
    with console.capture() as captured:
        console.print(grid)
    return "\n".join(line.rstrip() for line in captured.get().rstrip("\n").split("\n"))
