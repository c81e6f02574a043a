"""Reduced precision, triaged: which nodes add most of the error an int8, float16, bf16 or tf32 run
carries, so that keeping them in f32 costs least; and whether keeping them does lower it, measured.

A reduced-precision row is judged by labels, not by atol, and every tensor of it differs from f32:
the first node to depart is nearly always the first layer, and says nothing. What each node *adds*
does: sweep.py computes every node of the reference alone on the reduced side, fed the f32 side's
tensors at its inputs (quantized or cast as the reduced file holds them), so that its error is its
own and none is carried in (teacher-forced, as onnx-diagnostic's side-by-side; ORT's qdq_loss_debug
pairs float and quantized activations as they run, which lets the first layers' noise ride along).
The error is relative, rel = ||reduced - f32|| / ||f32|| (SQNR = -20 log10 rel), since int8 and
bf16 noise scale with a tensor's range. Tensors are paired by what made them (pairs.py): a Relu the
quantizer folded into its quantization, a batch norm folded into its convolution, float16 Casts.

Keeping the worst in f32 is then tried on the reduced file itself: their f32 nodes and weights put
back in place, reading the reduced tensors dequantized or cast, their outputs quantized or cast back
as the reduced file had them; the whole file runs again and the output's error is measured before
and after. onnx and numpy here; the runtimes are the sides'.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from ptx.contract.comparison import default_tolerance, sqnr_db

from .graph import LocateGraph
from ptx.infer.formats.onnx_names import module_of
from .pairs import Counterparts
from .sweep import Side, Sweep

TOP = 5  # nodes shown by the error they add (the keep-in-f32 list), kept in f32 to measure what that does
INTEGER = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
           "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "QGemm", "DynamicQuantizeLSTM"}


@dataclass
class Blame:
    """One node of the reference: the error it adds, computed alone on the reduced side."""

    node: str  # the name ``--keep-f32`` takes (the f32 graph's, which the quantizer keeps)
    op: str
    output: str
    error: float  # rel of its output, alone
    carried: float  # rel its inputs bring in as the reduced side holds them (their own quantization)
    max_abs: float
    magnitude: float
    module: str | None
    quantized: bool  # it runs at the reduced precision (int8 nodes around it, float16 tensors, a bf16 row)
    nodes: list[str] = field(default_factory=list)  # the unit: with what was folded into it
    departs: bool = True  # beyond the tolerance
    index: int = -1  # the node's in the reference's graph

    @property
    def born(self) -> float:
        """The error it adds itself, alone, beyond what its inputs bring in: what ``ptx export
        --keep-f32 auto`` ranks by."""
        return self.error - self.carried

    def to_dict(self) -> dict:
        return {**asdict(self), "born": self.born, "rel": self.error, "sqnr_db": sqnr_db(self.error)}


@dataclass
class Triage:
    row: str  # the verify row (ort-cpu-int8, openvino-bf16)
    reference: str
    file: str
    case: str
    blames: list[Blame] = field(default_factory=list)  # worst first
    compared: int = 0
    unmatched: int = 0
    questions: int = 0
    kept: dict | None = None  # keep_f32's measurement

    @classmethod
    def of(cls, sweep: Sweep, row: str, case: str, kept: dict | None = None) -> "Triage":
        """What ``sweep`` computed alone, ranked: a locate's sweep of a reduced pair is its triage too."""
        return cls(row, sweep.reference.label, sweep.pairs.other.path.name, case, blames(sweep), len(sweep.alone),
                   len(sweep.pairs.none), sweep.questions, kept)

    def keep(self) -> list[Blame]:
        """The nodes to keep in f32 first: reduced ones that add error, worst first."""
        return [b for b in self.blames if b.quantized and b.departs and b.born > 0][:TOP]

    def to_dict(self) -> dict:
        return {"row": self.row, "reference": self.reference, "file": self.file, "case": self.case,
                "compared": self.compared, "unmatched": self.unmatched, "questions": self.questions,
                "keep_f32": [b.node for b in self.keep()], "kept_measured": self.kept,
                "nodes": [b.to_dict() for b in self.blames]}

    def text(self) -> str:
        lines = [f"triage: {self.row} against {self.reference}, {self.file}, on {self.case} ({self.compared} nodes "
                 f"computed alone in {self.questions} pieces"
                 + (f"; {self.unmatched} tensors without a counterpart, not compared" if self.unmatched else "") + ")",
                 "error each node adds alone (fed the f32 side's tensors as it holds them; rel = ||diff|| / ||f32||, "
                 "SQNR = -20 log10 rel; adds = rel - what its inputs' own rounding brings):"]
        kept = self.keep()
        if not kept:
            lines.append("  no node adds error: nothing to keep in f32")
            return "\n".join(lines)
        lines += ranked([b.to_dict() for b in kept], 2, [f"  {b.module}" if b.module else "" for b in kept])
        lines.append(f"keep in f32: {','.join(b.node for b in kept)}")
        if self.kept:
            lines.append(keep_line(self.kept))
        return "\n".join(lines)


def ranked(rows: list[dict], digits: int, tails: list[str]) -> list[str]:
    """Nodes by the error each adds alone (Blame.to_dict), a line each in aligned columns: what it adds
    and its rel error to ``digits`` places, its SQNR, what its inputs carry, its max abs and scale."""
    width, ops = max(len(r["node"]) for r in rows), max(len(r["op"]) for r in rows)
    return [f"  {r['node']:<{width}}  {r['op']:<{ops}}  adds {r['born']:.{digits}e}  (rel {r['rel']:.{digits}e}, SQNR "
            f"{r['sqnr_db']:5.1f} dB; inputs as held {r['carried']:.1e})  max abs {r['max_abs']:.1e} on values up to "
            f"{r['magnitude']:.1e}{tail}" for r, tail in zip(rows, tails)]


def keep_line(k: dict) -> str:
    if k.get("failed"):
        return f"keeping {', '.join(k['nodes'])} in f32 could not be measured ({k['failed']})"
    lower = k["after"] < k["before"]
    return (f"keeping {', '.join(k['nodes'])} in f32 ({k['how']}), measured: output rel error {k['before']:.2e} -> "
            f"{k['after']:.2e}, max abs {k['before_max_abs']:.2e} -> {k['after_max_abs']:.2e}: "
            + ("lower" if lower else "not lower: these nodes are not where the output's error comes from"))


def _reduced(pairs: Counterparts, nodes: Sequence[int] | None) -> bool:
    other = pairs.other
    if other is pairs.ref:
        return True  # one graph at a reduced precision (bf16, tf32): every node
    return bool(nodes) and any(other.nodes[k].op_type in INTEGER or any(map(other.narrow_float, other.nodes[k].output))
                               for k in nodes)


def blames(sweep: Sweep) -> list[Blame]:
    """Every unit the sweep computed alone, worst first."""
    pairs, graph, found = sweep.pairs, sweep.graph, []
    for alone in sweep.alone.values():
        k = pairs.named(alone.unit)
        named = module_of(graph.nodes[k]) or {}
        e = alone.error
        found.append(Blame(graph.label(k), graph.nodes[k].op_type, e.name, e.rel, alone.carried, e.max_abs,
                           e.magnitude, named.get("module"), _reduced(pairs, pairs.region(alone.unit)),
                           [graph.label(i) for i in alone.unit.nodes], e.departs, k))
    return sorted(found, key=lambda b: (not b.departs, -b.born))


def triage(ref_graph: LocateGraph, other_graph: LocateGraph, reference: Side, other: Side, row: str, case: str,
           progress: Callable[[str], None] = lambda _: None, measure: bool = True) -> Triage:
    """Rank the nodes by the error they add alone (the module docstring says how); where the reduced
    side is another file, measure what keeping the worst in f32 does (``measure``)."""
    pairs = Counterparts.match(ref_graph, other_graph)
    sweep = Sweep(pairs, reference, other, lambda name, dtype: default_tolerance(dtype)).run(progress, as_it_runs=False)
    result = Triage.of(sweep, row, case)
    keep = [b.node for b in result.keep()]
    if measure and keep and other_graph is not ref_graph:
        result.kept = keep_f32(sweep, keep)
    return result


def keep_f32(sweep: Sweep, names: Sequence[str]) -> dict | None:
    """Run the reduced file with the units named ``names`` put back in f32 (the module docstring):
    {nodes, how, before, after} (the outputs' worst rel error against the reference), or None where
    it cannot be built."""
    import onnx
    from onnx import helper, numpy_helper

    pairs, ref, other = sweep.pairs, sweep.graph, sweep.pairs.other
    units = [a.unit for a in sweep.alone.values() if (ref.nodes[pairs.named(a.unit)].name or "") in names
             and not any(ref.has_body(k) for k in a.unit.nodes)]
    model = onnx.ModelProto()
    model.CopyFrom(other.proto)
    renamed: dict[str, str] = {}
    kept: dict[str, str] = {}  # reference tensor -> its f32 value where a kept unit writes it
    for unit in sorted(units, key=lambda u: u.node):
        prefix = f"f32/{unit.node}/"
        for i in unit.inputs:
            model.graph.node.append(helper.make_node("Identity", [kept[i]], [prefix + i]) if i in kept
                                    else pairs.converter(i, pairs.of[i], prefix + i, encode=False))
        kept.update({o: prefix + o for o in unit.outputs})
        constants = ref.walk_back([w for k in unit.nodes for w in ref.inputs_of[k] if w in ref.constant], set(), 64)
        for k in sorted(set(constants or []) | set(unit.nodes)):
            ref.copy_node(model.graph, k, prefix, lambda n: prefix + n if n else n)
            for w in ref.inputs_of[k]:
                if w in ref.initializer:
                    model.graph.initializer.append(numpy_helper.from_array(ref.weight(w), prefix + w))
        for o in unit.outputs:
            # kept in f32, its output is not quantized (onnxruntime's nodes_to_exclude): where the reduced
            # file dequantizes it for its readers, they read the f32 value itself
            readers = [k for k in other.readers.get(pairs.of[o], ()) if other.nodes[k].op_type == "DequantizeLinear"]
            if o in pairs.coded and readers and len(readers) == len(other.readers[pairs.of[o]]):
                renamed.update({other.nodes[k].output[0]: prefix + o for k in readers})
                continue
            model.graph.node.append(pairs.converter(o, prefix + o, prefix + o + ":back", encode=True))
            renamed[pairs.of[o]] = prefix + o + ":back"
    for node in model.graph.node:
        if not node.name.startswith("f32/"):
            node.input[:] = [renamed.get(n, n) for n in node.input]
    for out in model.graph.output:  # an output the kept node wrote: now written from its f32 twin
        if out.name in renamed:
            for node in model.graph.node:
                node.output[:] = [n + ":was" if n == out.name and not node.name.startswith("f32/") else n
                                  for n in node.output]
            model.graph.node.append(helper.make_node("Identity", [renamed[out.name]], [out.name]))
    done = {"nodes": list(names), "how": "their f32 nodes and weights put back into the reduced file"}
    try:
        _sort(model.graph)
        mine, theirs = map(list, zip(*sweep.output_pairs()))
        # a sweep as it runs ran both whole already (a locate's): not again
        want = sweep.whole or sweep.reference.values(mine)
        before = (sweep.outputs or sweep.output_errors(want, sweep.other.values(theirs))).values()
        after = sweep.output_errors(want, sweep.other.run(other.save(model), sweep.other.feeds, theirs)).values()
    except Exception as exc:  # noqa: BLE001 - the measurement is a check: said where it cannot be made
        return {**done, "failed": " ".join(str(exc).split())[:400]}  # the reason is at its end: never cut before it
    return {**done, "before": max(e.rel for e in before), "after": max(e.rel for e in after),
            "before_max_abs": max(e.max_abs for e in before), "after_max_abs": max(e.max_abs for e in after)}


def _sort(graph) -> None:
    """The graph's nodes put in an order where each reads only what is made before it (ONNX asks for it)."""
    nodes = graph.node
    # Kahn's order, each node once its computed inputs are made (rescanning every waiting node per
    # round was quadratic: seconds on a 1,800-node QDQ file)
    producer = {o: k for k, node in enumerate(nodes) for o in node.output if o}
    needs = [{producer[i] for i in node.input if i in producer} for node in nodes]
    readers: dict[int, list[int]] = {}
    for k, before in enumerate(needs):
        for j in before:
            readers.setdefault(j, []).append(k)
    left = [len(before) for before in needs]
    ready, done = deque(k for k in range(len(nodes)) if not left[k]), []
    while ready:
        k = ready.popleft()
        done.append(k)
        for r in readers.get(k, ()):
            left[r] -= 1
            if not left[r]:
                ready.append(r)
    waiting = [k for k in range(len(nodes)) if left[k]]  # stuck (a cycle, an input nothing makes): kept last
    rank = {tuple(nodes[k].output): r for r, k in enumerate(done + waiting)}  # SSA: outputs name one node
    nodes.sort(key=lambda node: rank[tuple(node.output)])
