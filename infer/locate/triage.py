"""Reduced precision, triaged: which nodes of a graph give most of the error an int8, bf16 or tf32
run adds, so that keeping them in f32 costs least.

A reduced-precision row is judged by labels, not by atol, and every tensor of it differs from f32:
``locate``'s question (the first node that departs beyond atol) has no answer worth giving there.
The question is how much error each node *adds*. For a tensor t the error is relative,

    rel(t) = ||t_reduced - t_f32||_2 / ||t_f32||_2

(relative, because int8 and bf16 noise scales with a tensor's range, and a layer that only rescales
its input, Relu, MaxPool, a Reshape, carries a relative error through unchanged whatever the
magnitudes). A node's **born** error is the excess of its output's relative error over the largest
its computed inputs carry in:

    born(n) = rel(output of n) - max(rel(input) for the computed inputs of n)

The largest, not a sum: a node is not blamed for noise any one input brought, and a node that adds
none scores about 0 (below 0 where it averages noise away). Weights are not inputs here: their
quantization is the node's own, and is born at it, as is the quantization of the activations it
reads in a QDQ graph (the node reads DequantizeLinear(QuantizeLinear(x)), x compared before it is
quantized). Those are exactly what ``nodes_to_exclude`` takes back, so the ranking is a keep-in-f32
list.

Tensors are matched by name between the f32 graph and the reduced one (bf16: the same graph).
onnxruntime's quantizer keeps the names of the outputs of the nodes it replaces, renames a graph
output to ``NAME_QuantizeLinear_Input`` where it quantizes it, and its pre-processing fuses short
chains (Gemm+Relu, MaxPool and Relu swapped) under the chain's last name. torch's exporter numbers
some tensors afresh on each export (lstm's ``val_66`` is the LSTM's output in one file and a
Transpose's in the next), so a name is trusted only where both producers are the same kind of node
(``_same_kind``) and the shapes agree; the rest are not compared, and the report counts them.

Bounded memory as locate's search: at most ``FRONTIER`` tensors a question, one run of each side,
and only the scalar errors are kept. onnx and numpy here; the runtimes are the sides'.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ptx.contract.comparison import relative_error

from .origin import FRONTIER
from .graph import LocateGraph
from .names import module_of
from .sides import Side

TOP = 5  # nodes in the printed keep-in-f32 list
# Nodes that only move or cast quantized values: never a node to keep in f32.
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"}
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM",
               "DynamicQuantizeMatMul", "QGemm"}
FLOAT_TYPES = {1, 10, 11, 16}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
FUSED_DEPTH = 2  # how far back a fused or reordered chain may reach (Gemm+Relu; MaxPool and Relu swapped)


@dataclass
class Blame:
    """One node of the reduced graph: the error it adds."""

    node: str  # the name ``--keep-f32`` takes (the quantizer's input graph's node)
    op: str
    output: str
    error: float  # rel of its output
    carried: float  # the largest rel among its computed inputs
    module: str | None
    quantized: bool  # it runs in reduced precision (int8: the quantizer replaced it or feeds it DequantizeLinear)

    @property
    def born(self) -> float:
        return self.error - self.carried

    def to_dict(self) -> dict:
        return {**asdict(self), "born": self.born}


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

    def keep(self, top: int = TOP) -> list[Blame]:
        """The nodes to keep in f32 first: reduced ones that add error, worst first."""
        return [b for b in self.blames if b.quantized and b.born > 0][:top]

    def to_dict(self, top: int = TOP) -> dict:
        return {"row": self.row, "reference": self.reference, "file": self.file, "case": self.case,
                "compared": self.compared, "unmatched": self.unmatched, "questions": self.questions,
                "keep_f32": [b.node for b in self.keep(top)], "nodes": [b.to_dict() for b in self.blames]}

    def text(self, top: int = TOP) -> str:
        lines = [f"triage: {self.row} against {self.reference}, {self.file}, on {self.case} ({self.compared} tensors "
                 f"compared in {self.questions} questions"
                 + (f"; {self.unmatched} not matched by name and kind, not compared" if self.unmatched else "") + ")",
                 "where the error is born (born = relative error of the node's output - the largest its inputs carry in):"]
        kept = self.keep(top)
        if not kept:
            lines.append("  no node adds error: nothing to keep in f32")
            return "\n".join(lines)
        width = max(len(b.node) for b in kept)
        ops = max(len(b.op) for b in kept)
        for b in kept:
            where = f"  {b.module}" if b.module else ""
            lines.append(f"  {b.node:<{width}}  {b.op:<{ops}}  born {b.born:.2e}  (output {b.error:.2e}, inputs "
                         f"{b.carried:.2e}){where}")
        lines.append(f"keep in f32: {','.join(b.node for b in kept)}")
        return "\n".join(lines)


def _is_float(graph: LocateGraph, name: str) -> bool:
    kind = graph.types.get(name)
    return kind is None or kind.tensor_type.elem_type in FLOAT_TYPES  # untyped: checked on the values


def _shape(graph: LocateGraph, name: str):
    kind = graph.types.get(name)
    if kind is None or not kind.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in kind.tensor_type.shape.dim]


def _kinds_behind(graph: LocateGraph, k: int, depth: int) -> set[str]:
    """Op types of node ``k`` and of the computed nodes it reads, ``depth`` steps back."""
    kinds, frontier = {graph.nodes[k].op_type}, [k]
    for _ in range(depth):
        frontier = [graph.produced_at[i] for j in frontier for i in graph.activations_of(j)]
        kinds |= {graph.nodes[j].op_type for j in frontier}
    return kinds


def _same_kind(ref: LocateGraph, other: LocateGraph, name: str, other_name: str) -> bool:
    """Whether ``other_name`` in the reduced graph is the value ``name`` is in the f32 graph: made
    by the same kind of node, or by a node of the short chain an optimizer fused or reordered, or by
    what a dynamic quantizer put in a node's place (named after it), with the same shape."""
    p, q = ref.nodes[ref.produced_at[name]], other.nodes[other.produced_at[other_name]]
    shapes = _shape(ref, name), _shape(other, other_name)
    if None not in shapes and len(shapes[0]) != len(shapes[1]):
        return False
    if q.op_type == p.op_type or (p.name and q.name.startswith(p.name + "_")):
        return True
    return q.op_type in _kinds_behind(ref, ref.produced_at[name], FUSED_DEPTH)


def _pre_quantized(other: LocateGraph, name: str) -> str:
    """The f32 value a DequantizeLinear(QuantizeLinear(x)) pair quantizes: x (else ``name``)."""
    for _ in range(2):
        at = other.produced_at.get(name)
        if at is None or other.nodes[at].op_type not in ("QuantizeLinear", "DequantizeLinear"):
            break
        name = other.nodes[at].input[0]
    return name


def _other_name(ref: LocateGraph, other: LocateGraph, name: str) -> tuple[str, str] | None:
    """(the tensor to compare, the compute node's output behind it) in the reduced graph for the
    f32 graph's ``name``, or None. The value compared is the one its readers get: in a QDQ graph
    DequantizeLinear's output, since onnxruntime folds a Relu after a quantized node into the uint8
    quantization (the tensor still called ``relu`` then holds the negatives the Relu removed)."""
    for candidate in (name + "_DequantizeLinear_Output", name):
        at = other.produced_at.get(candidate)
        if at is None or other.nodes[at].op_type in QUANT_OPS - {"DequantizeLinear"}:
            continue
        made = _pre_quantized(other, candidate)
        if made in other.produced_at \
                and other.nodes[other.produced_at[made]].op_type not in QUANT_OPS \
                and _same_kind(ref, other, name, made):
            return candidate, made
    return None


def _reduced(other: LocateGraph, k: int, same_graph: bool, ref_names: set[str]) -> bool:
    node = other.nodes[k]
    if same_graph:  # bf16, tf32: every node runs at the reduced precision
        return True
    readers = {other.nodes[other.produced_at[i]].op_type for i in node.input if i in other.produced_at}
    return (node.op_type in INTEGER_OPS or "DequantizeLinear" in readers or bool(readers & INTEGER_OPS)
            or node.name not in ref_names)


def triage(ref_graph: LocateGraph, other_graph: LocateGraph, reference: Side, other: Side, row: str, case: str,
           progress: Callable[[str], None] = lambda _: None) -> Triage:
    """Rank the nodes of ``other_graph`` by the error they add (the module docstring says how)."""
    same = ref_graph is other_graph
    pairs = []  # (f32 tensor, the same value in the reduced graph, its compute node's output there), in order
    unmatched = 0
    for k, node in enumerate(ref_graph.nodes):
        for name in node.output:
            if not name or not ref_graph.comparable(name) or not _is_float(ref_graph, name):
                continue
            theirs = (name, name) if same else _other_name(ref_graph, other_graph, name)
            if theirs is None:
                unmatched += 1
            else:
                pairs.append((name, *theirs))
    result = Triage(row, reference.label, other_graph.path.name, case, unmatched=unmatched)
    progress(f"triage: {row} against {reference.label}, {len(pairs)} tensors, {FRONTIER} a question")
    rel: dict[str, float] = {}
    for start in range(0, len(pairs), FRONTIER):
        chunk = pairs[start:start + FRONTIER]
        want = reference.values([r for r, _, _ in chunk])
        got = other.values([o for _, o, _ in chunk])
        result.questions += 1
        for r, o, _ in chunk:
            if r in want and o in got and np.shape(want[r]) == np.shape(got[o]) \
                    and np.asarray(want[r]).dtype.kind == "f":
                rel[r] = relative_error(got[o], want[r])
            else:
                result.unmatched += 1
    result.compared = len(rel)
    # What each tensor carries, in graph order: its own error where compared, else the largest of
    # what its node read (a tensor fused away in the reduced graph passes its inputs' error on).
    carried: dict[str, float] = {}
    for k, node in enumerate(ref_graph.nodes):
        into = max((carried.get(i, 0.0) for i in ref_graph.activations_of(k)), default=0.0)
        for name in node.output:
            carried[name] = rel.get(name, into)
    ref_names = {n.name for n in ref_graph.nodes}
    best: dict[str, Blame] = {}
    for name, _, made_name in pairs:
        if name not in rel:
            continue
        k = ref_graph.produced_at[name]
        q = other_graph.produced_at[made_name]
        into = max((carried.get(i, 0.0) for i in ref_graph.activations_of(k)), default=0.0)
        mine, made = ref_graph.nodes[k], other_graph.nodes[q]
        # The quantizer's input graph names a node: the reduced graph's own name where the f32 graph
        # knows it (a fused Gemm+Relu is the Gemm), else the f32 node it replaced (dynamic quantization).
        keeper = made if made.name in ref_names else mine
        named = module_of(made) or module_of(mine) or {}
        blame = Blame(keeper.name or f"#{k}", keeper.op_type, name, rel[name], into, named.get("module"),
                      _reduced(other_graph, q, same, ref_names))
        if blame.node not in best or blame.born > best[blame.node].born:
            best[blame.node] = blame
    result.blames = sorted(best.values(), key=lambda b: -b.born)
    return result
