"""A rotary position embedding written as ONNX Runtime's one RotaryEmbedding op (com.microsoft), in the files
made for ONNX Runtime (the int4 and int8 weight-only files: MatMulNBits is its op too; OpenVINO's reader
takes both ops as well).

transformers' Llama, Qwen2, Mistral, Phi-3, Gemma and their kin rotate each layer's queries and keys as
``x * cos + rotate_half(x) * sin``, ``rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])``; torch's exporter
writes that as eight small ops for the queries and eight for the keys (two Slices, a Neg, a Concat, two Muls
and an Add), plus the cos and sin computed from the positions. A step of an int4 decoder is a few
milliseconds: SmolLM2-135M's (30 layers) runs some 1,100 nodes, and ONNX Runtime spends most of the step
that is not MatMulNBits on such nodes (docs/benchmarks/generation.md, "The rotary embedding as one op").
onnxruntime-genai's model builder writes the rotation into its attention op; ONNX Runtime's load-time
fusions have none for it, and its offline transformer optimizer (onnxruntime.transformers.optimizer, tried
on SmolLM2's file) fused none of these: hence this pass.

What is rewritten is found by value, not by the names of the nodes that made it: the pattern's Slices must
cut the last axis at its half, and the cos and sin it multiplies by must be functions of the ``position_ids``
input alone, each position's row its own whatever else the batch holds (checked by running that part of the
graph with ONNX Runtime: all the positions the model has, then a few positions alone, the last alone and a
batch of scattered ones, each against the table's rows), their two halves equal, laid out [batch, 1,
positions, head size] as the op reads a [batch, heads, positions, head size] input. The tables are those
values, so the file rotates by what the graph computed (scalings, attention factors included). Left as
written: a rotation whose angles depend on the batch (Phi-3's longrope picks its short or long factors by the
largest position), interleaved pairs (GPT-J, Cohere), and Slice bounds computed at run time (the TorchScript
exporter's), tables past MAX_TABLES_BYTES, and a graph with subgraphs (If, Loop: their reads of outer values
are not in the node lists a rewrite follows). The op reads position_ids as ptx's decoding feeds them, one row per
batch entry, each position in [0, max_position_embeddings) (the tables' rows): ONNX Runtime's op refuses one
past them, or a single row for a batch (the graph as written computes any position and broadcasts a row), and
OpenVINO's reads past the table and rotates wrongly. The file is judged against the model as any export is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .onnx_graph import (MICROSOFT, has_subgraphs, inferred_shapes, readers_of, remove_dead_nodes, unused_name,
                         weight_of, with_microsoft_ops)

POSITIONS_INPUT = "position_ids"
# The cos and sin tables of one rotation, at most: a token reads one row of each, but the file and the session
# hold them whole (Llama 3.1's 131,072 positions of a head of 128 take 64 MiB in f32; a million positions, 512).
MAX_TABLES_BYTES = 128 << 20


@dataclass
class _Rotation:
    add: object  # the Add that makes the rotated tensor (its output is kept: the new op writes it)
    rotated: str  # the tensor rotated, [batch, heads, positions, head size]
    cos: str
    sin: str
    half: int  # head size / 2


def rotary_as_one_op(model, folder, max_positions: int | None, shapes: dict[str, list] | None = None) -> int:
    """Rewrite each rotate_half rotation of ``model``'s main graph (module docstring) as one RotaryEmbedding
    reading cos and sin tables of ``max_positions`` rows computed from the graph itself. ``folder``: where
    the graph's external data is (its small constants are read from there). Changes ``model`` in place;
    returns how many rotations it rewrote (0 where the graph has no ``position_ids`` input, the number of
    positions is not known, or the pattern is not there as the op computes it). ``shapes``: inferred_shapes of
    the graph as it is before this rewrite (made here where not given)."""
    graph = model.graph
    if not max_positions or POSITIONS_INPUT not in {i.name for i in graph.input} or has_subgraphs(graph):
        return 0
    shapes = inferred_shapes(model) if shapes is None else shapes
    producers = {out: node for node in graph.node for out in node.output}
    constants = _Constants(graph, folder)
    rotations = [r for r in (_rotation(node, producers, constants, shapes) for node in graph.node
                             if node.op_type == "Add") if r is not None]
    pairs = {(r.cos, r.sin, r.half) for r in rotations}
    tables = {pair: _tables(model, folder, *pair, max_positions) for pair in pairs}
    rotations = [r for r in rotations if tables[(r.cos, r.sin, r.half)][0] is not None]
    if not rotations:
        return 0
    import numpy as np
    from onnx import helper

    names, made = {}, []  # made: (cos, sin, their names), one pair for each distinct pair of tables
    for pair, (cos, sin) in tables.items():
        if cos is None:
            continue
        same = next((n for c, s_, n in made if c.dtype == cos.dtype and np.array_equal(c, cos) and np.array_equal(
            s_, sin)), None)  # an exporter that computes each layer's cos and sin apart: one pair all the same
        if same is None:
            same = (unused_name(graph, "ptx_rotary_cos"), unused_name(graph, "ptx_rotary_sin"))
            graph.initializer.extend([_tensor(same[0], cos), _tensor(same[1], sin)])
            made.append((cos, sin, same))
        names[pair] = same
    replaced = {}
    for r in rotations:
        cos, sin = names[(r.cos, r.sin, r.half)]
        node = helper.make_node("RotaryEmbedding", [r.rotated, POSITIONS_INPUT, cos, sin], list(r.add.output),
                                name=f"{r.add.name or r.add.output[0]}_rotary", domain=MICROSOFT, interleaved=0)
        node.metadata_props.extend(r.add.metadata_props)  # the exporter's record of the code line it came from
        replaced[id(r.add)] = node
    nodes = [replaced.get(id(n), n) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    with_microsoft_ops(model)
    remove_dead_nodes(model)
    written = {n.output[0] for n in replaced.values()}
    _on_three_axes(model, [n for n in graph.node if n.op_type == "RotaryEmbedding" and n.output[0] in written],
                   shapes)
    return len(rotations)


def _on_three_axes(model, rotary_nodes: list, shapes: dict[str, list]) -> None:
    """Each of ``rotary_nodes`` (the graph's own) that reads [batch, positions, heads x head size] split into
    heads and transposed, and whose output is only transposed back and merged into that same shape (what an
    attention op taking [batch, positions, hidden] is fed: ONNX Runtime's GroupQueryAttention in
    --ort-attention's file), made to read and write the [batch, positions, hidden] tensors themselves: the op
    rotates that layout as it is, and the four Reshapes and Transposes around it go. Where ``shapes``
    (onnx_graph.inferred_shapes of the graph before the rewrite) does not hold the split and the merge to be
    of the last axis alone, the node stays as it is."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    readers = readers_of(graph)
    outputs = {o.name for o in graph.output}
    changed = False
    for node in rotary_nodes:
        split = _swapped_axes_of(node.input[0], "Reshape", producers)
        after = readers.get(node.output[0], [])
        back = after[0] if len(after) == 1 and _is_axes_swap(after[0]) else None
        merged = readers.get(back.output[0], []) if back is not None else []
        if (split is None or len(merged) != 1 or merged[0].op_type != "Reshape"
                or {node.output[0], back.output[0]} & outputs):
            continue
        source, target = split.input[0], merged[0].output[0]
        whole = shapes.get(source)
        if not whole or len(whole) != 3 or None in whole or shapes.get(target) != whole:
            continue
        heads = [shapes.get(split.output[0]), shapes.get(back.output[0])]  # [batch, positions, heads, head size]
        if any(not h or len(h) != 4 or h[:2] != whole[:2] or h != heads[0] for h in heads):
            continue
        node.input[0], node.output[0] = source, target
        merged[0].output[0] = f"{target}_unread"  # the merge's result now comes from the rotation itself
        changed = True
    if changed:
        remove_dead_nodes(model)


def _is_axes_swap(node) -> bool:
    perms = [list(a.ints) for a in node.attribute if a.name == "perm"]
    return node.op_type == "Transpose" and perms == [[0, 2, 1, 3]]


def _swapped_axes_of(name: str, source_op: str, producers: dict):
    """The ``source_op`` node whose output ``name`` is a Transpose(perm 0,2,1,3) of, else None."""
    swap = producers.get(name)
    if swap is None or not _is_axes_swap(swap):
        return None
    source = producers.get(swap.input[0])
    return source if source is not None and source.op_type == source_op else None


def _tensor(name, values):
    from onnx import numpy_helper

    return numpy_helper.from_array(values, name)


class _Constants:
    """The values of a graph's small constant tensors (Slice's bounds), by name; None for any other."""

    def __init__(self, graph, folder):
        self.initializers = {t.name: t for t in graph.initializer}
        self.nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
        self.folder = folder

    def __call__(self, name: str):
        from onnx import helper, numpy_helper

        if name in self.initializers:
            tensor = self.initializers[name]
            if math.prod(tensor.dims) > 16 or tensor.data_location == tensor.EXTERNAL and self.folder is None:
                return None  # a bound is a value or a few; anything larger is no Slice bound of this pattern
            return weight_of(tensor, self.folder)
        node = self.nodes.get(name)
        if node is not None:
            for attribute in node.attribute:
                if attribute.name == "value":
                    return numpy_helper.to_array(helper.get_attribute_value(attribute))
        return None


def _four_axes(name: str, producers: dict, shapes: dict) -> bool:
    """Whether ``name`` is known to have four axes (the op's [batch, heads, positions, head size])."""
    node = producers.get(name)
    return len(shapes.get(name) or ()) == 4 or node is not None and node.op_type == "Transpose" and any(
        a.name == "perm" and len(a.ints) == 4 for a in node.attribute)


def _rotation(add, producers: dict, constants: _Constants, shapes: dict) -> _Rotation | None:
    """``add`` as ``x * cos + rotate_half(x) * sin`` (either order of each product and of the sum), or None."""
    products = [producers.get(i) for i in add.input]
    if len(products) != 2 or any(p is None or p.op_type != "Mul" for p in products):
        return None
    for straight, turned in (products, products[::-1]):
        for factor in (0, 1):
            x, cos = straight.input[factor], straight.input[1 - factor]
            for half_factor in (0, 1):
                half_turn, sin = turned.input[half_factor], turned.input[1 - half_factor]
                half = _rotate_half_of(half_turn, x, producers, constants)
                if half is not None and _four_axes(x, producers, shapes):
                    return _Rotation(add, x, cos, sin, half)
    return None


def _rotate_half_of(name: str, x: str, producers: dict, constants: _Constants) -> int | None:
    """d/2 where ``name`` is ``cat(-x[..., d/2:], x[..., :d/2])`` along the last axis, else None."""
    concat = producers.get(name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
    if axis not in (-1, 3):
        return None
    neg = producers.get(concat.input[0])
    if neg is None or neg.op_type != "Neg":
        return None
    upper, lower = _slice_of(neg.input[0], x, producers, constants), _slice_of(concat.input[1], x, producers,
                                                                               constants)
    if upper is None or lower is None or lower[0] != 0 or upper[0] != lower[1] or upper[0] <= 0:
        return None
    half = upper[0]
    if upper[1] < 2 * half or (upper[1] < 2 ** 62 and upper[1] != 2 * half):
        return None  # the upper half ends where the axis does (its length, or the exporters' "to the end")
    return half


def _slice_of(name: str, x: str, producers: dict, constants: _Constants) -> tuple[int, int] | None:
    """(start, end) where ``name`` is ``x`` sliced along its last axis with step 1, else None."""
    node = producers.get(name)
    if node is None or node.op_type != "Slice" or node.input[0] != x or len(node.input) < 4:
        return None
    values = [constants(i) if i else None for i in node.input[1:5]]
    starts, ends, axes = values[0], values[1], values[2]
    steps = values[3] if len(values) > 3 else None
    if any(v is None or v.size != 1 for v in (starts, ends, axes)) or int(axes.ravel()[0]) not in (-1, 3):
        return None
    if len(node.input) > 4 and node.input[4] and (steps is None or int(steps.ravel()[0]) != 1):
        return None
    start, end = int(starts.ravel()[0]), int(ends.ravel()[0])
    return (start, end) if start >= 0 and end >= 0 else None


def _tables(model, folder, cos: str, sin: str, half: int, max_positions: int):
    """(cos table, sin table), each [max_positions, half], where the graph's ``cos`` and ``sin`` are functions
    of position_ids alone, row by row, laid out [batch, 1, positions, 2 * half] with equal halves; else
    (None, None)."""
    import numpy as np

    if 2 * max_positions * half * 4 > MAX_TABLES_BYTES:
        return None, None
    last = max_positions - 1
    probes = [np.array(p, np.int64) for p in ([[0, 1, 2]], [[last]], [[last, 0, min(7, last)], [min(3, last), 1, 2]])]
    try:
        run = _part_run(model, folder, [cos, sin])
        if run is None:
            return None, None
        cos_all, sin_all = run(np.arange(max_positions, dtype=np.int64)[None, :])
        probed = [run(positions) for positions in probes]
    except Exception:  # noqa: BLE001 - a part the runtime cannot run alone is left as written
        return None, None
    tables = []
    for k, whole in enumerate((cos_all, sin_all)):
        if whole.shape != (1, 1, max_positions, 2 * half):
            return None, None
        table = whole[0, 0, :, :half]
        if not np.array_equal(whole[0, 0, :, half:], table):
            return None, None
        for positions, outputs in zip(probes, probed):  # each row the same whatever else the batch holds
            some = outputs[k]
            if some.shape != (*positions.shape[:1], 1, positions.shape[1], 2 * half) or not np.array_equal(
                    some[:, 0, :, :half], table[positions]) or not np.array_equal(some[:, 0, :, half:],
                                                                                  table[positions]):
                return None, None
        tables.append(np.ascontiguousarray(table))
    if tables[0].dtype != tables[1].dtype:
        return None, None
    return tables[0], tables[1]


def _part_run(model, folder, outputs: list[str]):
    """A function of position_ids giving ``outputs`` of ``model``'s main graph, where they are computed from
    position_ids and constants alone; else None. The part runs in ONNX Runtime, whose kernels computed them."""
    import onnx
    from onnx import helper, numpy_helper

    from ptx.infer.runtime.ort_session import part_session

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {t.name: t for t in graph.initializer}
    inputs = {i.name: i for i in graph.input}
    needed, nodes, seen = list(outputs), [], set()
    used_initializers = set()
    while needed:
        name = needed.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in initializers:
            used_initializers.add(name)
        elif name in inputs:
            if name != POSITIONS_INPUT:
                return None
        elif name in producers:
            node = producers[name]
            if node.op_type in ("If", "Loop", "Scan") or node.domain not in ("", "ai.onnx"):
                return None
            if all(n is not node for n in nodes):
                nodes.append(node)
            needed.extend(node.input)
        else:
            return None
    if POSITIONS_INPUT not in seen:
        return None
    order = {id(n): k for k, n in enumerate(graph.node)}
    nodes.sort(key=lambda n: order[id(n)])
    values = []
    for name in sorted(used_initializers):
        tensor = initializers[name]
        if math.prod(tensor.dims) > 1 << 18:  # the positions' part reads small constants (inv_freq), no weight
            return None
        values.append(numpy_helper.from_array(weight_of(tensor, folder), name))
    given = inputs[POSITIONS_INPUT].type.tensor_type  # any batch and length: the table asks for all positions
    positions = helper.make_tensor_value_info(POSITIONS_INPUT, given.elem_type,
                                              [f"axis{k}" for k in range(len(given.shape.dim))])
    untyped = [onnx.ValueInfoProto(name=o) for o in outputs]  # the runtime infers them (float16 graphs' too)
    part = helper.make_graph(nodes, "rotary_tables", [positions], untyped, values)
    proto = helper.make_model(part, opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")],
                              ir_version=model.ir_version)
    session = part_session(proto.SerializeToString())
    return lambda positions: session.run(outputs, {POSITIONS_INPUT: positions})
