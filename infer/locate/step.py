"""One step of a located path, and how many of them the words show: apart from origin.py, so that
render.py (which Located.text calls) reads them without importing the search."""
from __future__ import annotations

from dataclasses import dataclass

TOP = 5  # nodes shown by the error they add
JUMPS = 3  # the largest jumps a folded path keeps
FOLD = 12  # a path longer than this is folded


@dataclass
class Step:
    """One node on the path from the inputs to the output that departs most, and its error there."""

    node: str
    op: str
    output: str
    max_abs: float
    departs: bool
    module: str | None
    rel: float | None = None
    magnitude: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)
