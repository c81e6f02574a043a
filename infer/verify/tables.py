"""verify's and bench's tables of numbers: aligned plain text, or Markdown (bench --markdown), with no
wrapping (their cells are numbers and names), so nothing is imported for them."""
from __future__ import annotations

from typing import Container


def text_table(cells: list[list[str]], right: Container[int]) -> list[str]:
    """Rows of cells (the heading first) as aligned text, underlined below the heading: the columns
    numbered in ``right`` right-aligned, the others left-aligned (the last one unpadded). verify's
    table and bench's two."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.rjust(w) if i in right else c if i == len(widths) - 1 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def markdown_table(cells: list[list[str]], right: Container[int]) -> list[str]:
    """The same rows as a Markdown table, the columns numbered in ``right`` right-aligned."""
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return [lines[0], "|" + "".join(" ---: |" if i in right else " --- |" for i in range(len(cells[0]))), *lines[1:]]
