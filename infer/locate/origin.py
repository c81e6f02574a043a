"""Where two sides of one ONNX graph part: the node where the difference is born, and how it grows.

The **origin** is a node whose output departs beyond the tolerance while every tensor it reads
agrees: the error is born there, not carried in. The search never asks for every intermediate
tensor at once (marking them all runs out of memory on real models): it asks for the tensors alive
between nodes (a cut of the graph in its order) at a few points, and narrows to the two points
where the cut goes from agreeing to departing. A cut that agrees means whatever departs later is
born later; the cut just after a node that departs while the one just before agrees differs only by
that node's outputs, so that node is an origin. Each question holds at most ``FRONTIER`` tensors
(more only where one cut alone is wider) and is one run of each side.

The **path** is the shortest chain of nodes from the origin to the output that departs most, with
the error at each step, asked ``FRONTIER`` tensors at a time: amplification shows as growth, and
a second birth as a jump.

onnx and numpy only here; the runtimes are the sides' (locate_sides.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.schema import Tolerance
from ptx.errors import PtxError

from .graph import LocateGraph
from .names import module_of
from .sides import Side

FRONTIER = 16  # tensors one question asks of each side, at most (unless one cut is wider)
POINTS = 8  # cuts one question asks about: each round narrows the span to 1/(POINTS+1)
ToleranceOf = Callable[[str, str], Tolerance]  # (tensor name, dtype) -> its tolerance


class NothingToLocate(PtxError):
    """The sides agree on the case asked about: there is no disagreement to trace."""


@dataclass
class TensorError:
    """One tensor of the other side against the reference side's."""

    name: str
    shape: list[int]
    dtype: str
    max_abs: float
    magnitude: float  # the reference's largest |value|: how big the numbers are that differ
    excess: float  # the largest |got - want| - (atol + rtol * |want|): > 0 departs
    tolerance: Tolerance
    problem: str | None = None  # shapes or dtypes differ: no value comparison

    @property
    def departs(self) -> bool:
        return self.problem is not None or self.excess > 0

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": self.shape, "dtype": self.dtype, "max_abs": self.max_abs,
                "magnitude": self.magnitude, "departs": self.departs, "problem": self.problem,
                "atol": self.tolerance.atol, "rtol": self.tolerance.rtol}


def tensor_error(name: str, got, want, tolerance_of: ToleranceOf) -> TensorError:
    got, want = np.asarray(got), np.asarray(want)
    tol = tolerance_of(name, str(want.dtype))
    error = TensorError(name, list(want.shape), str(want.dtype), 0.0, 0.0, 0.0, tol)
    if got.shape != want.shape:
        error.problem = f"shape {list(got.shape)} where the reference's is {list(want.shape)}"
        return error
    if want.dtype.kind not in "biufc" or got.dtype.kind not in "biufc":
        error.problem = None if np.array_equal(got, want) else "values differ"
        return error
    a, b = got.astype(np.float64), want.astype(np.float64)
    if b.size == 0:
        return error
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isnan(a), np.isnan(b)) or not np.array_equal(a[~finite & ~np.isnan(a)],
                                                                          b[~finite & ~np.isnan(b)]):
        error.problem = "NaN or infinity where the reference has none (or the other way round)"
    diff = np.abs(a[finite] - b[finite])
    if diff.size:
        error.max_abs = float(diff.max())
        exact = want.dtype.kind in "biu"
        allowed = 0.0 if exact else tol.atol + tol.rtol * np.abs(b[finite])
        error.excess = float((diff - allowed).max())
        error.magnitude = float(np.abs(b[finite]).max())
    return error


class Comparison:
    """Asks both sides for the same tensors and compares them; counts its questions."""

    def __init__(self, reference: Side, other: Side, tolerance_of: ToleranceOf):
        self.reference, self.other, self.tolerance_of = reference, other, tolerance_of
        self.questions = 0
        self.widest = 0
        self.not_compared: set[str] = set()  # tensors the other side does not have (another graph)

    def errors(self, names: Sequence[str], keep: bool = False):
        """{name: TensorError} over ``names`` both sides have; with ``keep``, the values too."""
        names = [n for n in dict.fromkeys(names) if self.other.has(n)]
        self.not_compared |= {n for n in names if not self.other.has(n)}
        if not names:
            return ({}, {}, {}) if keep else {}
        self.questions += 1
        self.widest = max(self.widest, len(names))
        want = self.reference.values(names)
        got = self.other.values(names)
        errors = {n: tensor_error(n, got[n], want[n], self.tolerance_of) for n in names if n in got and n in want}
        self.not_compared |= {n for n in names if n not in got}
        return (errors, want, got) if keep else errors


def _points(graph: LocateGraph, lo: int, hi: int) -> list[int]:
    """Up to POINTS nodes strictly between lo and hi, evenly spaced, whose cuts fit FRONTIER
    tensors together (fewer points where the cuts are wide; one point at least)."""
    k = min(POINTS, hi - lo - 1)
    while True:
        points = sorted({lo + max(1, round((hi - lo) * j / (k + 1))) for j in range(1, k + 1)} - {hi})
        points = [p for p in points if lo < p < hi]
        if k == 1 or len({t for p in points for t in graph.cut(p)}) <= FRONTIER:
            return points
        k = max(1, k // 2)


def find_origin(graph: LocateGraph, comparison: Comparison) -> tuple[int, dict[str, TensorError]]:
    """(the origin's node index, the graph outputs' errors). Raises NothingToLocate where the
    outputs agree."""
    last = len(graph.nodes) - 1
    outputs = comparison.errors(graph.cut(last))
    if not any(e.departs for e in outputs.values()):
        raise NothingToLocate("nothing to locate: on this case every output agrees within the tolerance once "
                              "intermediate tensors are asked for too")
    lo, hi = -1, last
    while hi - lo > 1:
        points = _points(graph, lo, hi)
        errors = comparison.errors([t for p in points for t in graph.cut(p)])
        first = next((p for p in points if any(errors[t].departs for t in graph.cut(p) if t in errors)), None)
        if first is None:
            lo = points[-1]
        else:
            lo, hi = max([p for p in points if p < first], default=lo), first
    return hi, outputs


@dataclass
class Step:
    node: str
    op: str
    output: str
    max_abs: float
    departs: bool
    module: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Located:
    """Where ``other`` parts from ``reference`` on one case of one file."""

    file: str
    reference: str  # side labels
    other: str
    case: str
    origin: dict
    path: list[Step] = field(default_factory=list)
    questions: int = 0
    widest: int = 0
    nodes: int = 0
    notes: list[str] = field(default_factory=list)
    repro: dict | None = None
    # kept for --repro: the origin's inputs' and outputs' values on both sides
    values: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"file": self.file, "reference": self.reference, "other": self.other, "case": self.case,
                "origin": self.origin, "path": [s.to_dict() for s in self.path], "questions": self.questions,
                "widest_question": self.widest, "graph_nodes": self.nodes, "notes": self.notes, "repro": self.repro}

    def text(self) -> str:
        o = self.origin
        lines = [f"where it is born: {self.other} vs {self.reference}, {self.file}, on {self.case} "
                 f"({self.questions} questions to each side, at most {self.widest} tensors each, of {self.nodes} "
                 "nodes)",
                 f"origin: node {o['node']} ({o['op']}), output {o['output']}: max abs {o['max_abs']:.2e} "
                 f"(atol {o['atol']:g} + rtol {o['rtol']:g} x |value|), {o['born']}"]
        if o.get("module"):
            cls = f" ({o['class']})" if o.get("class") else ""
            rule = (f"; {o['folded']} folded into it by the exporter's {o['rule']}" if o.get("folded") else
                    f"; the exporter's {o['rule']} rule made this node" if o.get("rule") else "")
            lines.append(f"  module {o['module']}{cls}{rule}")
            if o.get("source"):
                lines.append(f"  at {o['source']}: {o['code']}")
        for i in o["inputs"]:
            error = "" if i.get("max_abs") is None else f"max abs {i['max_abs']:.2e}  "
            lines.append(f"  reads {i['name']} ({i['kind']}, {i['shape']}): {error}max |value| {i['magnitude']:.2e}")
        if self.path:
            lines.append(f"path to output {self.path[-1].output} (max abs where each step's output leaves it):")
            width, ops = max(len(s.node) for s in self.path), max(len(s.op) for s in self.path)
            for s in self.path:
                where = f"  {s.module}" if s.module else ""
                lines.append(f"  {s.node:<{width}}  {s.op:<{ops}}  {s.max_abs:.2e}  "
                             f"{'beyond' if s.departs else 'within'}{where}")
        lines += self.notes
        return "\n".join(lines)


def _input_rows(graph: LocateGraph, k: int, errors: Mapping[str, TensorError], want, other_graph) -> list[dict]:
    rows = []
    for name in graph.nodes[k].input:
        if not name:
            continue
        if name in errors:
            e = errors[name]
            rows.append({"name": name, "kind": "graph input" if name not in graph.produced_at else "computed",
                         "shape": e.shape, "max_abs": e.max_abs, "magnitude": e.magnitude, "departs": e.departs})
            continue
        value = graph.weight(name)
        if value is None:
            if name in want:  # a graph input both sides were fed
                value = np.asarray(want[name])
                rows.append({"name": name, "kind": "graph input", "shape": list(value.shape), "max_abs": 0.0,
                             "magnitude": float(np.abs(value).max()) if value.size else 0.0, "departs": False})
            continue
        theirs = other_graph.weight(name) if other_graph is not None else None
        diff = None
        if theirs is not None and theirs.shape == value.shape:  # two files: their weights compared too
            diff = float(np.abs(theirs.astype(np.float64) - value.astype(np.float64)).max()) if value.size else 0.0
        rows.append({"name": name, "kind": "weight", "shape": list(value.shape), "max_abs": diff,
                     "magnitude": float(np.abs(value.astype(np.float64)).max()) if value.size else 0.0,
                     "departs": bool(diff)})
    return rows


def locate(graph: LocateGraph, reference: Side, other: Side, tolerance_of: ToleranceOf, case: str,
           other_graph: LocateGraph | None = None, progress: Callable[[str], None] = lambda _: None) -> Located:
    """Trace where ``other`` parts from ``reference`` on their feeds (see the module's docstring)."""
    comparison = Comparison(reference, other, tolerance_of)
    progress(f"locating: {other.label} against {reference.label} on {case}, {len(graph.nodes)} nodes")
    k, outputs = find_origin(graph, comparison)
    node = graph.nodes[k]
    # The origin with what it reads, then the path, FRONTIER tensors at a time.
    own = [o for o in node.output if o]
    asked = list(dict.fromkeys([*graph.activations_of(k), *own, *[i for i in node.input if i in reference.feeds]]))
    errors, want, got = comparison.errors(asked, keep=True)
    worst = max((e for e in outputs.values() if e.departs), key=lambda e: (e.problem is not None, e.excess))
    chain = graph.chain(k, [worst.name])
    path_errors = dict(errors)
    for start in range(0, len(chain), FRONTIER):
        path_errors.update(comparison.errors([t for _, t in chain[start:start + FRONTIER] if t not in path_errors]))
    path = []
    for j, tensor in chain:
        e = path_errors.get(tensor)
        if e is None:
            continue
        named = module_of(graph.nodes[j])
        path.append(Step(graph.nodes[j].name or f"#{j}", graph.nodes[j].op_type, tensor, e.max_abs, e.departs,
                         named["module"] if named else None))
    born = max((errors[o] for o in own if o in errors), key=lambda e: (e.departs, e.excess))
    inputs = _input_rows(graph, k, errors, want, other_graph)
    computed = [i for i in inputs if i["kind"] != "weight"]
    carried = [i["name"] for i in computed if i.get("departs")]
    changed = [i["name"] for i in inputs if i["kind"] == "weight" and i.get("departs")]
    if carried:  # a wide cut that agreed within tolerance at a point, yet an input departs here
        how = f"one of its inputs departs too ({', '.join(carried)}): born or carried in, by a hair"
    elif changed:
        how = f"its computed inputs agree; its weight {', '.join(changed)} differs between the two files"
    else:
        how = "its inputs agree: born here"
    named = module_of(node) or {}
    origin = {"node": node.name or f"#{k}", "index": k, "op": node.op_type, "output": born.name,
              "max_abs": born.max_abs, "magnitude": born.magnitude, "atol": born.tolerance.atol,
              "rtol": born.tolerance.rtol, "born": how, "inputs": inputs, "module": named.get("module"),
              "class": named.get("class"), "source": named.get("source"), "code": named.get("code"),
              "rule": named.get("rule"), "folded": named.get("folded")}
    located = Located(str(graph.path.name), reference.label, other.label, case, origin, path, comparison.questions,
                      comparison.widest, len(graph.nodes))
    missing = sorted(comparison.not_compared)
    if missing:
        located.notes.append(f"note: {len(missing)} tensor{'s' * (len(missing) != 1)} of {graph.path.name} "
                             f"{'are' if len(missing) != 1 else 'is'} not in {other.label} by name "
                             f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): not compared")
    located.values = {"inputs": {n: want[n] for n in graph.activations_of(k) + [i for i in node.input
                                                                             if i in reference.feeds] if n in want},
                      "reference": {o: want[o] for o in own if o in want},
                      "other": {o: got[o] for o in own if o in got}, "node": k, "outputs": own}
    return located
