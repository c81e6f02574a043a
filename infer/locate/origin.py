"""Where two sides of one ONNX model part, and only what the evidence supports.

One sweep (sweep.py) measures every tensor as each side runs, and every node alone, computed by the
other side from the reference's tensors at its inputs. From it:

- an **origin**, only where a node departs as it runs while its inputs agree *and* departs alone,
  fed the reference's inputs: born there, shown twice;
- where marking (cutting) moves the other side's answer, or the first node to depart agrees alone, no
  node is named: the smallest **region** that departs alone is (fused.py), with one line saying so;
- a reduced precision (int8, float16, bf16) departs from the first layer on, so its origin (where its
  error starts) is nearly always the first layer and says little more; **where the error is added**
  is the ranking of the nodes by the error each adds alone (relative: ||diff|| / ||reference||, and
  SQNR), with, where the other is a reduced file, what keeping the worst in f32 does to the output
  (triage.py, measured);
- the **path** from the first departure to the output, read by a person: max abs beside the
  relative error and the values' scale, long paths folded (--json holds every step).

onnx and numpy only here; the runtimes are the sides'.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ptx.contract.comparison import OutputAgreement
from ptx.errors import PtxError

from .fused import Region, find_region
from .graph import LocateGraph
from ptx.infer.formats.onnx_names import module_of
from .pairs import Counterparts
from .render import Step, located_text
from .sweep import Side, Sweep, ToleranceOf, tensor_error
from .triage import TOP, blames, keep_f32


class NothingToLocate(PtxError):
    """The sides agree on the case asked about: there is no disagreement to trace."""


@dataclass
class Located:
    """Where ``other`` parts from ``reference`` on one case of one file."""

    file: str
    reference: str  # side labels
    other: str
    case: str
    origin: dict | None  # a node born there (departs as it runs and alone), or None
    path: list[Step] = field(default_factory=list)
    questions: int = 0
    widest: int = 0  # tensors (TorchScript) or bytes (a sweep) of the largest question to a side
    nodes: int = 0
    notes: list[str] = field(default_factory=list)
    repro: dict | None = None
    first: dict | None = None  # the first departure as it runs, where it is no origin
    region: dict | None = None  # the smallest region that departs alone, where no node does
    added: list[dict] = field(default_factory=list)  # every node by the error it adds alone, worst first
    keep: dict | None = None  # keeping the worst in f32, measured
    reduced: bool = False  # the other side computes at a reduced precision
    searched: bool = False  # a region that departs alone was looked for
    triage: object | None = field(default=None, repr=False)  # a reduced pair's Triage, read from the same sweep
    # kept for --repro: what to cut out and both sides' values
    values: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"file": self.file, "reference": self.reference, "other": self.other, "case": self.case,
                "origin": self.origin, "first_departure": self.first, "region": self.region, "added": self.added,
                "keep_f32": self.keep, "path": [asdict(s) for s in self.path], "questions": self.questions,
                "widest_question": self.widest, "graph_nodes": self.nodes, "notes": self.notes, "repro": self.repro}

    def text(self) -> str:
        return located_text(self)


def _inputs(sweep: Sweep, k: int) -> list[dict]:
    """What node ``k`` reads: each computed input's error as it runs; each weight (initializer or
    Constant node) against the other file's, its rounding where that one is stored at a reduced precision."""
    graph, pairs = sweep.graph, sweep.pairs
    other = pairs.other
    node = graph.nodes[k]
    twin = other.nodes[other.by_name[node.name]] if node.name in other.by_name else None
    rows = []
    for p, name in enumerate(node.input):
        if not name:
            continue
        if name in sweep.free or name in graph.graph_inputs:
            e = sweep.free.get(name)
            fed = sweep.reference.feeds.get(name)
            rows.append({"name": name, "kind": "computed" if name in graph.produced_at else "graph input",
                         "shape": e.shape if e else list(getattr(fed, "shape", [])), "max_abs": e.max_abs if e else 0.0,
                         "rel": e.rel if e else 0.0, "magnitude": e.magnitude if e else None,
                         "departs": bool(e and e.departs)})
            continue
        if graph.comparable(name):
            rows.append({"name": name, "kind": "computed", "shape": None, "max_abs": None, "rel": None,
                         "magnitude": None, "departs": False, "unmatched": pairs.none.get(name, "not compared")})
            continue
        value = graph.weight_as_read(name)
        if value is None:
            continue
        row = {"name": name, "kind": "weight" if name in graph.initializer else "weight (Constant node)",
               "shape": list(value.shape), "max_abs": None, "rel": None, "departs": False,
               "magnitude": float(abs(value.astype("float64")).max()) if value.size else 0.0}
        theirs_name = twin.input[p] if twin is not None and p < len(twin.input) else None
        theirs = other.weight_as_read(theirs_name) if theirs_name and other is not graph else None
        # held to the f32 weight the other file's came from: a batch norm folded into the node is folded in
        mine, folded = pairs.folded_weight(k, p, value) if theirs is not None and value.dtype.kind == "f" else (value, [])
        if mine is None:
            row.update(not_compared=f"{', '.join(folded)} folded into {node.name} in {other.path.name}, not only "
                                    "batch norms")
        elif theirs is not None and theirs.shape == value.shape and value.dtype.kind == "f":
            diff = tensor_error(name, theirs, mine, sweep.tolerance_of)
            if folded:
                row.update(folded=folded, magnitude=float(abs(mine.astype("float64")).max()) if mine.size else 0.0)
            stored = other.stored_dtype(theirs_name)
            # values float16 cannot hold: stored as infinity, or clamped to 65504 by a converter
            beyond = int((np.abs(value) > np.finfo(np.float16).max).sum()) if stored == "float16" else 0
            row.update(max_abs=diff.max_abs, rel=diff.rel, departs=diff.max_abs > 0 or diff.problem is not None,
                       stored=stored, overflow=beyond)
        rows.append(row)
    return rows


def node_doc(graph: LocateGraph, k: int, error: OutputAgreement, inputs: list[dict]) -> dict:
    """Node ``k``, its output's error and what it reads, named in its author's code where the exporter says."""
    named = module_of(graph.nodes[k]) or {}
    return {"node": graph.label(k), "index": k, "op": graph.nodes[k].op_type, "output": error.name,
            "max_abs": error.max_abs, "rel": error.rel, "sqnr_db": error.sqnr_db, "magnitude": error.magnitude,
            "atol": error.tolerance.atol, "rtol": error.tolerance.rtol, "inputs": inputs,
            **{key: named.get(key) for key in ("module", "class", "source", "code", "rule", "folded")}}


def _path(sweep: Sweep, k: int, worst: str) -> list[Step]:
    graph, steps = sweep.graph, []
    for j, tensor in graph.chain(k, [worst]):
        e = sweep.free.get(tensor)
        if e is not None:
            named = module_of(graph.nodes[j])
            steps.append(Step(graph.label(j), graph.nodes[j].op_type, tensor, e.max_abs, e.departs,
                              named["module"] if named else None, e.rel, e.magnitude))
    return steps


def reduced(pairs: Counterparts, other: Side) -> bool:
    """Whether the other side computes at a reduced precision: a bf16/int8/tf32 runtime row, or a file
    that holds integer or float16 tensors where the reference's are float."""
    if getattr(other, "precision", "f32") != "f32":
        return True
    return pairs.other is not pairs.ref and bool(pairs.coded or any(map(pairs.other.narrow_float, pairs.of.values())))


def locate(graph: LocateGraph, reference: Side, other: Side, tolerance_of: ToleranceOf, case: str,
           other_graph: LocateGraph | None = None, progress: Callable[[str], None] = lambda _: None) -> Located:
    """Trace where ``other`` parts from ``reference`` on their feeds (see the module's docstring)."""
    pairs = Counterparts.match(graph, other_graph if other_graph is not None else graph)
    sweep = Sweep(pairs, reference, other, tolerance_of).run(progress)
    if not any(e.departs for e in sweep.outputs.values()):
        raise NothingToLocate("nothing to locate: on this case every output agrees within the tolerance")
    located = Located(graph.path.name, reference.label, other.label, case, None, questions=sweep.questions,
                      widest=sweep.widest, nodes=len(graph.nodes), reduced=reduced(pairs, other))
    ranked = blames(sweep)
    located.added = [b.to_dict() for b in ranked]
    if located.reduced and pairs.other is not pairs.ref:
        names = [b.node for b in ranked if b.quantized and b.departs and b.born > 0][:TOP]  # Triage.keep's
        located.keep = keep_f32(sweep, names) if names else None
    worst = max((e for e in sweep.outputs.values() if e.departs), key=lambda e: (e.problem is not None, e.excess))
    # as it runs (sweep.free is filled in graph order), where pieces answer as the whole does; a reduced
    # precision's, read with the note
    trusted = sweep.untrusted is None or located.reduced
    first = next((n for n, e in sweep.free.items() if e.departs), None) if trusted else None
    if first is not None:
        k = graph.produced_at[first]
        alone = sweep.alone.get(k)
        # named as the ranking names its unit (the Conv a Relu was folded into, not the Relu), reading
        # what the unit reads from outside
        named = pairs.named(alone.unit) if alone is not None else k
        doc = {**node_doc(graph, named, sweep.free[first], _inputs(sweep, named)),
               "nodes": [graph.label(j) for j in (alone.unit.nodes if alone is not None else [k])],
               "in_pieces": sweep.untrusted is not None,
               "alone": alone.error.to_dict(float) if alone is not None else None}
        located.path = _path(sweep, k, worst.name)
        # born there: its inputs agree (it is the first to depart) and alone, fed them, it departs. A
        # reduced precision's is nearly always its first layer, and says where its error starts, not
        # where most of it is added (the ranking, below)
        if alone is not None and alone.error.departs and not any(i["departs"] for i in doc["inputs"]
                                                                  if not i["kind"].startswith("weight")):
            located.origin = doc
        else:
            located.first = doc
            located.searched = not located.reduced and alone is not None
    else:
        located.searched = not located.reduced
    region = find_region(sweep, progress) if located.searched else None
    if located.added:
        located.added[0]["inputs"] = _inputs(sweep, located.added[0]["index"])
    if region is not None:
        located.region = _region_doc(sweep, region)
    located.notes += sweep.notes + [n for n in (sweep.untrusted and f"note: {sweep.untrusted}", sweep.moved,
                                  pairs.missing_note(), _unmeasured(sweep), _bodies(graph, located)) if n]
    located.values = {"sweep": sweep, "region": region}
    return located


def _region_doc(sweep: Sweep, region: Region) -> dict:
    graph = sweep.graph
    reads = {i for k in region.nodes for i in graph.inputs_of[k]}
    alone = [sweep.alone[k].error for k in region.nodes if k in sweep.alone]
    return {"first": graph.label(region.first), "last": graph.label(region.last),
            "nodes": [graph.label(k) for k in region.nodes],
            "ops": [graph.nodes[k].op_type for k in region.nodes], "inputs": [t for t in region.inputs if t in reads],
            "outputs": region.outputs, "error": region.error.to_dict(float), "tries": region.tries,
            "alone_departs": sum(e.departs for e in alone), "alone_worst": max((e.max_abs for e in alone), default=0.0)}


def _unmeasured(sweep: Sweep) -> str | None:
    if not sweep.unmeasured:
        return None
    names = [sweep.graph.label(k) for k in sweep.unmeasured]
    why = f" ({sweep.refused})" if sweep.refused else " (an If/Loop/Scan body inside, or reaching too far back)"
    return (f"note: {len(names)} node{'s' * (len(names) != 1)} not computed alone{why}: {', '.join(names[:4])}"
            + (", ..." if len(names) > 4 else ""))


def _bodies(graph: LocateGraph, located: Located) -> str | None:
    """Subgraph bodies are not searched: said, and where the difference is born in one, said there."""
    bodies = [n.name or n.op_type for k, n in enumerate(graph.nodes) if graph.has_body(k)]
    if not bodies:
        return None
    named = (located.origin or located.first or {}).get("node")
    inside = f" {named} holds a body: the difference may be born inside it." if named in bodies else ""
    return (f"note: the bodies of {len(bodies)} If/Loop/Scan node{'s' * (len(bodies) != 1)} "
            f"({', '.join(bodies[:3])}{', ...' if len(bodies) > 3 else ''}) are not searched, only their outputs "
            f"compared.{inside}")
