"""Where a runtime fuses across the cut: the smallest run of nodes that departs when the other side
computes it as a model of its own, fed the reference's tensors at the cut before it.

Asking a runtime for an intermediate tensor can change what it computes: OpenVINO fuses an
attention block (Q x K^T, Softmax, x V, Transpose) into one kernel, and a tensor marked inside the
block, or a cut through it, breaks the fusion up, so that the marked run agrees where the whole one
does not. Then no node departs alone, and neither does a piece cut through the block; the block
itself, run alone from the reference's tensors, does. This narrows a window known to depart (a
piece of the sweep, or two neighbouring ones) from its end, then from its start, one small model
at a time: the nodes it names depart together and no smaller window ending there does. That is all
the evidence says, and all that is said. onnx and numpy; the runtimes are the sides'.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ptx.contract.comparison import OutputAgreement

from .sweep import Sweep


@dataclass
class Region:
    """Reference nodes ``first``..``last`` (indices), departing together, computed alone."""

    first: int
    last: int
    nodes: list[int]  # the computed nodes between, in order
    inputs: list[str]  # the tensors at the cut before (fed the reference's)
    outputs: list[str]  # the tensors it hands on after ``last``
    error: OutputAgreement  # its worst output's, alone
    tries: int  # models compiled to narrow it


class Windows:
    """Ask the other side whether windows of the graph depart alone (see the module docstring)."""

    def __init__(self, sweep: Sweep):
        self.sweep, self.order = sweep, sweep.graph.order
        self.tries = 0
        self.want: dict = {}

    def _bounds(self, a: int, b: int) -> tuple[list[str], list[str]]:
        """(tensors at the cut before order[a], tensors made in order[a..b] and read after it)."""
        graph, order = self.sweep.graph, self.order
        before = graph.cut(order[a - 1]) if a > 0 else []
        made = {o for k in order[a:b + 1] for o in graph.nodes[k].output}
        return before, [t for t in graph.cut(order[b]) if t in made]

    def departing(self, windows: Sequence[tuple[int, int]]) -> list[OutputAgreement | None]:
        """For each window (positions in the order), its worst output alone, or None where it cannot
        be asked (a tensor at its cuts without a counterpart): all windows in one model."""
        sweep = self.sweep
        pairs, other = sweep.pairs, sweep.pairs.other
        asked = {t for a, b in windows for side in self._bounds(a, b) for t in side} - set(self.want)
        self.want.update(sweep.reference.values(sorted(asked)))  # none asked: no run
        regions, fed = [], {}
        for n, (a, b) in enumerate(windows):
            before, after = self._bounds(a, b)
            if any(t not in pairs.of for t in before + after) or not after:
                continue
            nodes = other.walk_back([pairs.of[t] for t in after], {pairs.of[t] for t in before})
            if any(other.has_body(k) for k in nodes):
                continue
            regions.append((f"w{n}/", nodes, [pairs.of[t] for t in after], n, after))
            fed.update(sweep.fed(f"w{n}/", before, self.want))
        found: list[OutputAgreement | None] = [None] * len(windows)
        if not regions:
            return found
        got = sweep.other.regions(regions, fed)
        self.tries += 1
        for prefix, _, _, n, after in regions:
            found[n] = max(sweep.errors(got, self.want, after, prefix), key=lambda e: (e.departs, e.excess))
        return found

    def departs(self, a: int, b: int) -> OutputAgreement | None:
        error = self.departing([(a, b)])[0]
        return error if error is not None and error.departs else None

    def narrow(self, a: int, b: int) -> Region | None:
        """The window a..b (known to depart) narrowed from its end, then from its start (the
        reference's tensors of the window asked for once: each try is then one model of the other side)."""
        graph = self.sweep.graph
        inside = {t for k in self.order[max(a - 1, 0):b + 1] for t in graph.cut(k)} - set(self.want)
        self.want.update(self.sweep.reference.values(sorted(inside)))
        start, end = a, b
        while True:  # halve from the end, then from the start, until one node fewer at either end agrees
            end = self._halve(lambda m: self.departs(start, m), start - 1, end)
            start = self._halve(lambda m: not self.departs(m, end), start, end + 1, low=True)
            if start == end or not self.departs(start, end - 1):
                break
        error = self.departs(start, end)
        if error is None:  # a runtime that varies from run to run can leave nothing that departs twice
            return None
        before, after = self._bounds(start, end)
        return Region(self.order[start], self.order[end], self.order[start:end + 1], before, after, error, self.tries)

    @staticmethod
    def _halve(yes, lo: int, hi: int, low: bool = False) -> int:
        """The boundary between lo (where ``yes`` fails) and hi (where it holds), by halves; ``low``:
        the last position where it fails, else the first where it holds."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if yes(mid) else (mid, hi)
        return lo if low else hi


def find_region(sweep: Sweep, progress: Callable[[str], None] = lambda _: None) -> Region | None:
    """The smallest window that departs alone, in the first of the windows of two neighbouring pieces
    of the sweep (a block the cut between them split, or one inside either) that departs alone, else
    in the whole graph; None where none does."""
    windows = Windows(sweep)
    at = {k: i for i, k in enumerate(windows.order)}
    pieces = [(at[first], at[last]) for first, last in sweep.segments]
    candidates = [(pieces[i][0], pieces[i + 1][1]) for i in range(len(pieces) - 1)] or pieces
    progress(f"locating: {sweep.other.label} departs only whole; {len(candidates)} windows of it run alone")
    for group in (candidates, [(pieces[0][0], pieces[-1][1])]):
        first = next((k for k, e in enumerate(windows.departing(group)) if e is not None and e.departs), None)
        if first is not None:
            return windows.narrow(*group[first])
    return None
