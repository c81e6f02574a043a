"""Which tensor of another graph is the counterpart of a tensor of the reference's: matched by what
made it, not by its name alone.

Two files of one model seldom keep every tensor name meaning the same value. onnxruntime's QDQ
quantizer drops a Relu or Clip after a Conv into the quantization that follows (the uint8 zero
point clamps) and gives the Conv the Relu's output name, so that the tensor called ``relu`` in the
int8 file holds the negatives the Relu removed (where it keeps the Relu, the quantization before it
clamps them: that tensor is compared after the Relu, as a folded one is); its pre-processing folds
a batch norm into the convolution before it under the batch norm's output name (the same value);
the dynamic quantizer puts ConvInteger/MatMulInteger chains in a node's place; a float16 converter
inserts Casts and renames an output it casts back. torch's exporter numbers some tensors afresh on each export, so a
name may be another node's output in the next file. A tensor is the counterpart of another where
the node that made it is of the same kind, looking through the representation-only nodes a tool
inserts (Cast, QuantizeLinear/DequantizeLinear, reshapes, the dynamic quantizer's scale and bias
nodes), or where the difference is a fold that keeps the value; otherwise it has none, and is said
to have none: never compared with a different value that happens to share its name.

A **unit** is what error is measured over: a node of the reference, with the nodes before it whose
outputs have no counterpart (a convolution whose batch norm was folded into it in the other file),
read from counterpart tensors and writing counterpart tensors. onnx and numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph import LocateGraph, along, dequantize

# Nodes a quantizer or a float16 converter inserts that change a value's representation, not what it
# is; looked through to the node that computed it.
REPRESENTATION = {"Cast", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Identity", "Reshape",
                  "Flatten", "Squeeze", "Unsqueeze"}
KIND = {"ConvInteger": "Conv", "QLinearConv": "Conv", "FusedConv": "Conv", "MatMulInteger": "MatMul",
        "QLinearMatMul": "MatMul", "DynamicQuantizeMatMul": "MatMul", "FusedMatMul": "MatMul", "QGemm": "MatMul",
        "FusedGemm": "MatMul", "Gemm": "MatMul",  # the dynamic quantizer writes a Gemm as MatMul
        "QAttention": "Attention"}
# Folded exactly into the Conv/Gemm/MatMul before them by onnxruntime's optimizer (ConvBNFusion,
# ConvAddFusion, ConvMulFusion): the fused node's output is the same value.
FOLDS = {"BatchNormalization", "Add", "Sub", "Mul", "Div"}
# Dropped by a QDQ quantizer into the quantization after the node before: that node's output is
# the value before the activation, and the activation's is the dequantized one.
ACTIVATIONS = {"Relu", "Clip"}
UNIT_DEPTH = 4  # how many nodes back a unit reaches for inputs that have a counterpart


def kind(op: str) -> str:
    return KIND.get(op, op)


def _maker(graph: LocateGraph, name: str, named: dict):
    """The node of ``graph`` that computed ``name``, looking through representation-only nodes and
    the scale and bias nodes a tool inserted (Mul/Add named what ``named`` does not name)."""
    for _ in range(8):
        at = graph.produced_at.get(name)
        if at is None:
            return None
        node = graph.nodes[at]
        inserted = node.name and node.name not in named and node.op_type in ("Mul", "Add")
        if node.op_type not in REPRESENTATION and not inserted:
            return node
        name = next((i for i in node.input if i), "")
    return None


def _floor(graph: LocateGraph, node) -> float:
    """The lowest value an activation lets through: 0 for a Relu, a Clip's min; -inf for any other node."""
    if node.op_type == "Relu":
        return 0.0
    low = None
    if node.op_type == "Clip":  # min: an input from opset 11, an attribute before
        low = graph.weight_as_read(node.input[1]) if len(node.input) > 1 and node.input[1] else \
            next((a.f for a in node.attribute if a.name == "min"), None)
    return -np.inf if low is None else float(np.asarray(low))


def _stands_for(theirs, node) -> bool:
    """Whether a node of the other graph is ``node`` of the reference's, or what a quantizer put in its
    place (named after it: ``p2o.Conv.0_quant``); by kind where nodes have no names."""
    if node.name and theirs.name:
        return theirs.name == node.name or theirs.name.startswith(node.name + "_")
    return kind(theirs.op_type) == kind(node.op_type)


AXES_INPUT = {"Squeeze", "Unsqueeze", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
              "ReduceL2", "Split"}  # 'axes' (or split) an attribute before opset 13/18, an input after


def _rank(graph: LocateGraph, node) -> int | None:
    kind_ = graph.types.get(node.input[0]) if node.input else None
    return len(kind_.tensor_type.shape.dim) if kind_ is not None and kind_.tensor_type.HasField("shape") else None


def _params(graph: LocateGraph, node, rank: int | None) -> dict:
    """What a node computes with besides its data: its attributes, and its integer constant inputs
    (Slice's starts/ends/axes, Reshape's shape), an older opset's attribute and a newer one's input
    under one name."""
    from onnx import helper

    found = {a.name: helper.get_attribute_value(a) for a in node.attribute
             if a.type in (1, 2, 3, 6, 7, 8)}  # FLOAT, INT, STRING and their lists: no graphs or tensors
    for p, name in enumerate(node.input[1:], 1):
        value = graph.weight_as_read(name) if name else None
        if value is not None and value.dtype.kind in "iu":
            found["axes" if p == 1 and node.op_type in AXES_INPUT else f"input {p}"] = value.tolist()
    for key in ("axis", "axes"):  # -1 and rank - 1 are one axis
        if key in found and rank:
            found[key] = [v % rank for v in found[key]] if isinstance(found[key], (list, tuple)) else found[key] % rank
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in found.items()}


def _differs(ref: LocateGraph, mine, other: LocateGraph, theirs) -> str | None:
    """Why two nodes of one kind do not compute the same (a transpose optimizer moved a Transpose and
    changed the perm and Slice axes around it), or None."""
    if mine.op_type != theirs.op_type:
        return None  # a quantized or fused kind: its parameters are of another form
    rank = _rank(ref, mine) or _rank(other, theirs)
    a, b = _params(ref, mine, rank), _params(other, theirs, rank)
    for key in sorted(a.keys() & b.keys()):
        if a[key] != b[key]:
            return (f"{other.path.name}'s {theirs.name or theirs.op_type} computes it otherwise ({key} {b[key]}, here "
                    f"{a[key]}): another value under the same name")
    return None


@dataclass
class Unit:
    """Reference nodes measured together, from counterpart inputs to counterpart outputs."""

    nodes: list[int]  # indices in the reference graph, in order; the last is the one named
    inputs: list[str]  # computed tensors (or graph inputs) read from outside, each with a counterpart
    outputs: list[str]  # the last node's outputs that have a counterpart

    @property
    def node(self) -> int:
        return self.nodes[-1]


@dataclass
class Counterparts:
    """For each tensor of ``ref``, the tensor of ``other`` that holds the same value, or why none does."""

    ref: LocateGraph
    other: LocateGraph
    of: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)  # tensor -> a fold that matched it ("Relu folded into ...")
    none: dict[str, str] = field(default_factory=dict)  # tensor -> why it has no counterpart
    coded: dict[str, int] = field(default_factory=dict)  # tensor -> the QuantizeLinear whose int8 output is it

    @classmethod
    def match(cls, ref: LocateGraph, other: LocateGraph) -> "Counterparts":
        found = cls(ref, other)
        inputs = {i.name for i in other.proto.graph.input}
        found.of = {i.name: i.name for i in ref.proto.graph.input if i.name in inputs}
        for k, node in enumerate(ref.nodes):
            for j, name in enumerate(node.output):
                if name and ref.comparable(name) and name not in found.of:
                    why = found._match(k, j, name)
                    if why:
                        found.none[name] = why
        return found

    def _match(self, k: int, j: int, name: str) -> str | None:
        """Match ``name``, the output ``j`` of node ``k``, to its counterpart; why it has none, or None."""
        ref, other = self.ref, self.other
        if ref is other:
            self.of[name] = name
            return None
        node = ref.nodes[k]
        theirs = _maker(other, name, ref.by_name)  # None where the other graph computes no ``name``
        if theirs is not None:
            mine = _maker(ref, name, ref.by_name)
            if mine is not None and kind(theirs.op_type) == kind(mine.op_type):
                differs = _differs(ref, mine, other, theirs)
                if not differs:
                    self._set(name, name)
                return differs
            chain = self._folded(k, theirs)
            ops = [ref.nodes[i].op_type for i in chain or ()]
            if chain and set(ops) <= FOLDS:
                self._set(name, name, f"{', '.join(ops)} folded into {theirs.op_type} {theirs.name}")
                return None
            if chain and ops[-1] in ACTIVATIONS and set(ops[:-1]) <= FOLDS:
                before = next(i for i in node.input if i)  # the activation's input: the value before it
                if self._quantizer(name) is not None:  # the activation is the quantization's clamp
                    self._set(name, name, f"{node.op_type} {node.name} folded into the quantization of {name}")
                    if ref.comparable(before) and before not in self.of:
                        self.none[before] = (f"{other.path.name} never holds it: the {node.op_type} after it is "
                                             f"folded into the quantization of {name}")
                    return None
                self.none.pop(before, None)
                self.of[before] = name
                return f"{other.path.name} computes {name} without the {node.op_type}"
            return (f"{other.path.name}'s {name} is made by a {theirs.op_type} (here a {node.op_type}): "
                    "another value under the same name")
        twin = other.by_name.get(node.name) if node.name else None
        if twin is not None and kind(other.nodes[twin].op_type) == kind(node.op_type) \
                and j < len(other.nodes[twin].output):
            renamed = other.nodes[twin].output[j]
            differs = _differs(ref, node, other, other.nodes[twin])
            if differs:
                return differs
            if renamed and renamed not in ref.produced_at:  # renamed (a float16 converter's cast output)
                self._set(name, renamed)
                return None
            if renamed:
                return f"{node.name} writes {renamed} in {other.path.name}: a node after it was folded in"
        return f"not in {other.path.name}"

    def _set(self, name: str, theirs: str, how: str | None = None) -> None:
        """``theirs`` is ``name``'s counterpart: held as the int8 tensor its QuantizeLinear writes where it
        has one (a QDQ file), so that a piece of the other graph cut there keeps onnxruntime's
        DequantizeLinear-op-QuantizeLinear fusion into integer kernels on both sides of the cut."""
        q = self._quantizer(theirs)
        zeroed = self._zeroed(name, q) if q is not None else None
        if zeroed:  # as in a folded Relu: compared after the activation, where the clamp is gone
            self.none[name] = (f"{self.other.path.name}'s quantization of it clamps its negatives to 0, which the "
                               f"{zeroed} after it removes anyway: compared after the {zeroed}")
            return
        self.of[name] = self.other.nodes[q].output[0] if q is not None else theirs
        if q is not None:
            self.coded[name] = q
        if how:
            self.how[name] = how

    def _quantizer(self, name: str) -> int | None:
        return next((q for q in self.other.readers.get(name, ()) if self.other.nodes[q].op_type == "QuantizeLinear"),
                    None)

    def _zeroed(self, name: str, q: int) -> str | None:
        """The activation that every reader of ``name`` is (a Relu, a Clip from 0 up), where the other
        side's quantization ``q`` of it holds no negative (its zero point is its type's lowest:
        onnxruntime's uint8 before a Relu it keeps), or None: that clamp is no error any output sees."""
        ref, zero = self.ref, self._qparams(q)[1]
        if zero is not None and (zero.dtype.kind not in "iu" or np.any(zero != np.iinfo(zero.dtype).min)):
            return None
        readers = [ref.nodes[k] for k in ref.readers.get(name, ())]
        if not readers or name in ref.output_names or not all(_floor(ref, r) >= 0 for r in readers):
            return None
        return readers[0].op_type

    def _qparams(self, q: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(scale, zero point or None, axis) of the other side's QuantizeLinear ``q``."""
        node, other = self.other.nodes[q], self.other
        zero = other.weight_as_read(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        return other.weight_as_read(node.input[1]), zero, next((a.i for a in node.attribute if a.name == "axis"), 1)

    def decode(self, name: str, value) -> np.ndarray:
        """The other side's value of ``name``'s counterpart as floats (dequantized where it is int8)."""
        q = self.coded.get(name)
        return np.asarray(value) if q is None else dequantize(np.asarray(value), *self._qparams(q))

    def encode(self, name: str, value) -> np.ndarray:
        """The reference's value of ``name`` as the other side holds its counterpart: quantized by its
        QuantizeLinear's scale and zero point (round half to even, saturated), cast to its float16."""
        value, q = np.asarray(value), self.coded.get(name)
        if q is None:
            dtype = self.other.dtype_of(self.of[name])
            return value.astype(dtype) if dtype is not None and value.dtype != dtype else value
        scale, zero, axis = self._qparams(q)
        # in float32, as QuantizeLinear computes (and no float64 copies of a large tensor); a zero
        # point and the saturation bounds are exact in float32
        scale, zero = along(axis, value.ndim, np.asarray(scale, np.float32),
                            np.asarray(np.uint8(0) if zero is None else zero))
        info = np.iinfo(zero.dtype)
        q = np.rint(value.astype(np.float32, copy=False) / scale)
        q += zero.astype(np.float32)
        return np.clip(q, info.min, info.max, out=q).astype(zero.dtype)

    def converter(self, name: str, source: str, target: str, *, encode: bool, extra: set | None = None):
        """The ONNX node that does in a graph what ``encode``/``decode`` do here: float32 ``source``
        written as the other side holds ``name``'s counterpart (encode: QuantizeLinear, or Cast to its
        float16), or that counterpart read back as float32 (DequantizeLinear, Cast); Identity where
        they are alike. ``extra`` collects the scale and zero point a (De)QuantizeLinear reads."""
        from onnx import TensorProto, helper

        q = self.coded.get(name)
        if q is not None:
            node = self.other.nodes[q]
            if extra is not None:
                extra.update(i for i in node.input[1:] if i)
            return helper.make_node("QuantizeLinear" if encode else "DequantizeLinear", [source, *node.input[1:]],
                                    [target], **{a.name: a.i for a in node.attribute if a.name == "axis"})
        dtype = self.other.dtype_of(self.of[name])
        if dtype is not None and dtype.kind == "f" and dtype.itemsize != 4:
            to = helper.np_dtype_to_tensor_dtype(dtype) if encode else TensorProto.FLOAT
            return helper.make_node("Cast", [source], [target], to=to)
        return helper.make_node("Identity", [source], [target])

    def _folded(self, k: int, theirs) -> list[int] | None:
        """The reference's nodes from just after the one ``theirs`` stands for up to ``k``, where
        ``k`` reads it through a chain of single computed inputs (what a tool folded into it)."""
        ref, chain = self.ref, [k]
        for _ in range(UNIT_DEPTH):
            computed = ref.activations_of(chain[-1])
            if len(computed) != 1:
                return None
            at = ref.produced_at[computed[0]]
            found = ref.nodes[at]
            if _stands_for(theirs, found):
                return chain[::-1]
            chain.append(at)
        return None

    # -- units -----------------------------------------------------------------------------------

    def unit(self, k: int) -> Unit | None:
        """Node ``k`` with the nodes before it whose outputs have no counterpart (up to UNIT_DEPTH
        back), or None where it writes nothing with a counterpart or reaches too far."""
        ref = self.ref
        outputs = [o for o in ref.nodes[k].output if o in self.of]
        if not outputs:
            return None
        nodes, inputs, frontier = {k}, [], [k]
        for _ in range(UNIT_DEPTH + 1):
            nxt = []
            for j in frontier:
                for name in ref.activations_of(j) + [i for i in ref.inputs_of[j] if i in ref.graph_inputs]:
                    if name in self.of:
                        inputs.append(name)
                    elif name in ref.produced_at:
                        nxt.append(ref.produced_at[name])
                    else:
                        return None
            if not nxt:
                return Unit(sorted(nodes), list(dict.fromkeys(inputs)), outputs)
            nodes |= set(nxt)
            frontier = nxt
        return None

    def named(self, unit: Unit) -> int:
        """The node a unit is named by: the one the other file kept under its name (the Conv a batch
        norm or Relu was folded into: what onnxruntime's nodes_to_exclude takes), else its last."""
        return next((k for k in unit.nodes if self.ref.nodes[k].name in self.other.by_name), unit.node)

    def region(self, unit: Unit, limit: int = 64) -> list[int] | None:
        """The nodes of ``other`` computing the unit's outputs' counterparts from its inputs'."""
        return self.other.walk_back([self.of[o] for o in unit.outputs], {self.of[i] for i in unit.inputs}, limit)

    def folded_weight(self, k: int, position: int, value: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
        """The f32 weight at input ``position`` of Conv ``k`` as the other file's node of the same name
        holds it, where the batch norms after ``k`` were folded into that node (onnxruntime's
        pre-processing, ConvBnFusion: the node then writes what the last folded node wrote): the weight
        scaled per output channel by gamma / sqrt(var + eps), the bias (b - mean) x that + beta.
        (value, the batch norms folded in); (None, ...) where another fold (an Add, a Mul) went in too."""
        ref, node = self.ref, self.ref.nodes[k]
        twin = self.other.by_name.get(node.name) if node.name else None
        if twin is None or node.op_type != "Conv" or position not in (1, 2):
            return value, []
        written, chain = self.other.nodes[twin].output[0], [k]  # k, then the nodes after it folded in
        for _ in range(UNIT_DEPTH):
            if ref.nodes[chain[-1]].output[0] == written:
                break
            readers = ref.readers.get(ref.nodes[chain[-1]].output[0], ())
            if len(readers) != 1 or ref.nodes[readers[0]].op_type not in FOLDS | ACTIVATIONS:
                return value, []
            chain.append(readers[0])
        else:
            return value, []
        norms = [j for j in chain if ref.nodes[j].op_type == "BatchNormalization"]
        if any(ref.nodes[j].op_type in FOLDS - {"BatchNormalization"} for j in chain):  # (k is a Conv: neither)
            return None, [ref.label(j) for j in chain[1:]]
        folded = np.asarray(value, np.float64)
        for j in norms:
            bn = ref.nodes[j]
            gamma, beta, mean, var = (np.asarray(ref.weight_as_read(n), np.float64) for n in bn.input[1:5])
            eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            scale = gamma / np.sqrt(var + eps)
            folded = folded * scale.reshape(-1, *[1] * (folded.ndim - 1)) if position == 1 else \
                (folded - mean) * scale + beta
        return folded.astype(np.asarray(value).dtype), [ref.label(j) for j in norms]

    def missing_note(self) -> str | None:
        """One line on the tensors without a counterpart (never compared), or None."""
        if not self.none:
            return None
        names = list(self.none)
        many = len(names) != 1
        return (f"note: {len(names)} tensor{'s' * many} of {self.ref.path.name} ha{'ve' if many else 's'}"
                f" no counterpart in {self.other.path.name} (not compared): {names[0]}: {self.none[names[0]]}"
                + (f"; {', '.join(names[1:4])}{', ...' if len(names) > 4 else ''}" if names[1:] else ""))
