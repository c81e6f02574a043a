"""What an ONNX file's graph says of itself, read with the ``onnx`` package and never run: opsets,
operator counts, parameters, external data, and the tensor signature (``ptx inspect``; the
OpenVINO model, whose own reader drops the names of symbolic dimensions, takes its signature here).

numpy, onnx and the standard library only: never torch, and no runtime.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping

from ptx.contract.schema import ContractError
from ptx.contract.tensors import DTYPES, UNSUPPORTED_ONNX, Signature, TensorSig, dtype_of_ort, infer_batch_axes
from ptx.errors import ArtifactError

ONNX_DOMAIN = "ai.onnx"


@dataclass
class GraphFacts:
    """The countable facts of an ONNX graph."""

    opsets: dict[str, int]  # domain -> version ("ai.onnx" for the default domain)
    operators: Counter  # op type -> nodes, subgraphs' nodes included
    nodes: int  # nodes of the main graph
    subgraph_nodes: int  # nodes inside If/Loop/Scan bodies
    parameters: int  # values held by initializers and Constant nodes (the weights)
    initializers: int
    external: list[tuple[str, int | None]] = field(default_factory=list)  # (file, bytes or None: missing)
    producer: str = ""  # "pytorch 2.13.0"
    ir_version: int = 0
    # Constant nodes holding a value, subgraphs' included: exporters that keep weights there (the
    # dynamo exporter's lifted constants, paddle2onnx, float16 converters) have few initializers or none
    constants: int = 0

    def to_dict(self) -> dict:
        return {"opsets": self.opsets, "operators": dict(self.operators.most_common()), "nodes": self.nodes,
                "subgraph_nodes": self.subgraph_nodes, "parameters": self.parameters,
                "initializers": self.initializers, "constant_nodes": self.constants, "producer": self.producer, "ir_version": self.ir_version,
                "external_data": [{"file": f, "bytes": b, "present": b is not None} for f, b in self.external]}


def read_graph(path: str | Path):
    """The file's ModelProto without its weights' values (their names, types and shapes kept; the
    external data files only named): its structure, all that is read here, so that opening a large
    file for its signature does not hold its weights a second time (onnx_files.load_structure)."""
    from .onnx_files import load_structure

    return load_structure(path)


def subgraphs(node):
    """The bodies of an If/Loop/Scan node (none for any other): their nodes are counted too, and said
    to be inside them."""
    import onnx

    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def all_nodes(graph):
    """``graph``'s nodes, each followed by its subgraphs' (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for body in subgraphs(node):
            yield from all_nodes(body)


def count_nodes(graph, operators: Counter) -> int:
    """Count ``graph``'s nodes, and its subgraphs', into ``operators``; returns how many lie inside
    subgraphs."""
    nodes = [node.op_type for node in all_nodes(graph)]
    operators.update(nodes)
    return len(nodes) - len(graph.node)


def graph_facts(model, path: str | Path) -> GraphFacts:
    """Opsets, operator counts (subgraphs included), parameters and external data of ``model``."""
    import onnx

    path = Path(path)
    graph = model.graph
    operators: Counter = Counter()
    inside = count_nodes(graph, operators)
    opsets = {(o.domain or ONNX_DOMAIN): o.version for o in model.opset_import}
    # Constant nodes holding a value, subgraphs' included: the scripting exporter keeps a GRU's weights there
    held = [a.t for node in all_nodes(graph) if node.op_type == "Constant" for a in node.attribute if a.name == "value"]
    parameters = sum(math.prod(t.dims) for t in (*held, *graph.initializer))
    external: dict[str, int | None] = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location and location not in external:
                target = path.parent / location
                external[location] = target.stat().st_size if target.is_file() else None
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return GraphFacts(opsets, operators, len(graph.node), inside, parameters, len(graph.initializer),
                      list(external.items()), producer, model.ir_version, len(held))


def _as_node_arg(value_info) -> SimpleNamespace:
    """A graph input/output as ONNX Runtime's NodeArg describes it (name, type string, shape with
    None for an unnamed dynamic size), so that ort_runner's rules name its dimensions."""
    tensor = value_info.type.tensor_type
    kind = _ort_type(value_info.type)
    shape = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return SimpleNamespace(name=value_info.name, type=kind, shape=shape)


def _ort_type(type_proto) -> str:
    """A type as ONNX Runtime spells it: `tensor(float)`, `seq(map(int64,tensor(float)))`. A
    sequence or map (a scikit-learn ZipMap's output) was called `tensor(0)` before, which no user
    could read."""
    which = type_proto.WhichOneof("value")
    if which == "sequence_type":
        return f"seq({_ort_type(type_proto.sequence_type.elem_type)})"
    if which == "optional_type":
        return f"optional({_ort_type(type_proto.optional_type.elem_type)})"
    if which == "map_type":
        key = next((d.ort for d in DTYPES.values() if d.onnx == type_proto.map_type.key_type), None)
        key = key[len("tensor("):-1] if key else UNSUPPORTED_ONNX.get(type_proto.map_type.key_type, "?")
        return f"map({key},{_ort_type(type_proto.map_type.value_type)})"
    elem = type_proto.tensor_type.elem_type if which == "tensor_type" else type_proto.sparse_tensor_type.elem_type
    info = next((d for d in DTYPES.values() if d.onnx == elem), None)
    kind = info.ort if info else f"tensor({UNSUPPORTED_ONNX.get(elem, elem)})"
    return kind if which == "tensor_type" else "sparse_" + kind


def graph_tensors(args, kind: str, path: Path) -> tuple[TensorSig, ...]:
    """ORT's NodeArgs -> TensorSigs (no batch axes yet). An unnamed dynamic size is a symbol of its
    own, except a leading one, which is called N (a batch, unless --batch-axis says otherwise). A
    size named ``?`` is unnamed too: paddle2onnx writes every unknown size so, and one symbol for
    them all would bind a picture's height to its width."""
    out = []
    for arg in args:
        try:
            dtype = dtype_of_ort(arg.type, f"{path.name}: {kind} {arg.name!r}")
        except ContractError as exc:
            raise ArtifactError(str(exc)) from None
        shape = []
        for axis, d in enumerate(arg.shape or []):
            if isinstance(d, int) and d >= 0 or isinstance(d, str) and d not in ("", "?") and not d.startswith("unk__"):
                shape.append(d)
            else:  # None, -1, ?, or ORT's made-up unk__N: a dynamic size with no name
                shape.append("N" if axis == 0 else f"{arg.name}_{axis}")
        out.append(TensorSig(arg.name, dtype, tuple(shape)))
    return tuple(out)


def session_signature(session, path: Path, batch_axes: Mapping[str, int | None] | None = None) -> Signature:
    return _signature(session.get_inputs(), session.get_outputs(), path, batch_axes)


def graph_signature(model, path: str | Path, batch_axes: Mapping[str, int | None] | None = None) -> Signature:
    """The signature ONNX Runtime would give the file (same names for unnamed dimensions, same
    batch axes), read from the graph alone: its inputs (initializers excepted, as ORT lists them)
    and outputs."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [_as_node_arg(v) for v in model.graph.input if v.name not in weights]
    return _signature(inputs, [_as_node_arg(v) for v in model.graph.output], Path(path), batch_axes)


def _signature(inputs, outputs, path: Path, batch_axes: Mapping[str, int | None] | None) -> Signature:
    inputs, outputs = infer_batch_axes(graph_tensors(inputs, "input", path), graph_tensors(outputs, "output", path),
                                       batch_axes)
    return Signature(inputs, outputs)


def lookup_tables(path: str | Path) -> list[tuple[str, int]]:
    """(initializer, rows) of each table the graph looks values up in (Gather's data, Slice's data),
    rows along the looked-up axis: a position embedding of 512 rows is what limits a sequence to
    512, and ONNX Runtime's message on a longer one names an Expand or Gather node, never the limit."""
    import onnx

    graph = read_graph(path).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    tables = []
    for node in graph.node:
        if node.op_type not in ("Gather", "Slice") or not node.input or node.input[0] not in shapes:
            continue
        dims = shapes[node.input[0]]
        if node.op_type == "Gather":
            axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
            rows = dims[axis] if -len(dims) <= axis < len(dims) else None
        else:  # a buffer of positions sliced to the sequence's length: its longest axis
            rows = max(dims, default=None)
        if rows:
            tables.append((node.input[0], int(rows)))
    return tables
