"""Weight-only MatMuls that read the same input merged into one MatMulNBits and a Split.

A decoder layer multiplies one normed input by three weights (query, key, value) and its MLP's by two
(gate, up). At one token each MatMulNBits is a matrix-vector product of a few hundred KB, and ONNX Runtime
spends some 10 us dispatching it before its bytes are read: measured on 2 cores (AMD EPYC Zen 4, int4
blocks of 32, weights read from memory), a 576x192 product takes 15 us, 576x576 19 us, their 576x960 merge
28 us where the three took 49. onnxruntime-genai's model builder writes a packed QKV MatMul for the same
reason. The merged weight holds the same bytes, column for column (MatMulNBits quantizes each output column
on its own, in blocks along K), and the Split hands each consumer its own columns. The sums are the same
bits where each part starts on a multiple of 16 columns: MLAS computes columns in tiles of 4 and a column
left over by a tile on its own, so a part at another offset would round its last bits otherwise (a few ulps);
groups whose widths are not so are left as written. A bias a member's output is added to (Qwen2's query,
key and value) goes into the merged node's bias input: ONNX Runtime folds such an Add into the MatMulNBits
(its MatMulNBitsFusion), which it cannot do once the Add reads a Split.

Done on the quantized graph, after onnxruntime's quantizer: the merged tensors are the packed bytes (an
eighth of f32's at 4 bits), so no f32 weight is read or copied again. No library does it for the CPU:
ONNX Runtime merges query, key and value MatMulNBits only inside its GroupQueryAttention fusion for CUDA
in float16; onnxslim and onnxsim fold constants.
"""
from __future__ import annotations

from collections import defaultdict

from .graph_weights import add_constant
from .onnx_graph import MICROSOFT, default_opset, has_subgraphs, readers_of, unused_name, weight_of

_SCALES, _G_IDX, _BIAS = 2, 4, 5  # MatMulNBits' inputs: A, B, scales, zero points, g_idx, bias
COLUMN_TILE = 16  # a part starting on a multiple of it sums as it did alone (MLAS's x86 tiles are 4 columns; 16
# leaves room for wider tiles on other machines, and every projection of a published config is a multiple of 64)


def merge_shared_input_matmuls(model, folder=None) -> tuple[int, int]:
    """Each set of MatMulNBits nodes of ``model``'s main graph that read the same input, with the same K,
    bits, block size and accuracy level and constant weights, made one MatMulNBits (its weights, scales,
    zero points and bias concatenated along N) followed by a Split into the nodes' own outputs. Returns (how
    many nodes were merged, into how many): (0, 0) is the graph as it was. A graph with subgraphs is left as
    written (its nodes' names may be read inside them)."""
    graph = model.graph
    if has_subgraphs(graph):
        return 0, 0
    initializers = {t.name: t for t in graph.initializer}
    groups = defaultdict(list)
    for node in graph.node:
        key = _merge_key(node, initializers)
        if key is not None:
            groups[key].append(node)
    readers = readers_of(graph)
    outputs = {o.name for o in graph.output}
    split_as_input = default_opset(model) >= 13  # Split's sizes: an input from opset 13, an attribute before
    merged, into, replaced, dropped, freed = 0, 0, {}, set(), set()
    for nodes in groups.values():
        widths = [_width(n) for n in nodes]
        if len(nodes) < 2 or any(w % COLUMN_TILE for w in widths[:-1]):
            continue
        biases = _bias_adds(nodes, readers, initializers, outputs)
        fused, split = _merged(graph, nodes, widths, biases, initializers, folder, split_as_input)
        replaced[id(nodes[0])] = (fused, split)
        dropped.update(id(n) for n in nodes[1:])
        dropped.update(id(add) for add, _ in biases.values())
        freed.update(name for n in nodes for name in n.input[1:] if name)
        freed.update(bias for _, bias in biases.values())
        merged, into = merged + len(nodes), into + 1
    if not merged:
        return 0, 0
    order = []
    for node in graph.node:  # the merge where its first member was: every member's input is ready there
        if id(node) in replaced:
            order.extend(replaced[id(node)])
        elif id(node) not in dropped:
            order.append(node)
    del graph.node[:]
    graph.node.extend(order)
    still_read = {i for n in graph.node for i in n.input} | outputs
    for index in reversed(range(len(graph.initializer))):  # by index: rebuilding the field copies every tensor
        if graph.initializer[index].name in freed - still_read:
            del graph.initializer[index]
    return merged, into



def _width(node) -> int:
    return next(a.i for a in node.attribute if a.name == "N")


def _merge_key(node, initializers: dict):
    """What MatMulNBits nodes must share to be merged, or None where ``node`` cannot be."""
    if node.op_type != "MatMulNBits" or node.domain != MICROSOFT or len(node.input) < 3:
        return None
    inputs = list(node.input) + [""] * (6 - len(node.input))
    if inputs[_G_IDX] or not all(name in initializers for name in inputs[1:] if name):
        return None  # a g_idx reorders K per column's block; a computed weight is not ours to copy
    attributes = {a.name: a for a in node.attribute if a.name != "N"}
    if not {"K", "bits", "block_size"} <= attributes.keys() or not any(a.name == "N" for a in node.attribute):
        return None
    present = tuple((bool(name), initializers[name].data_type if name else None) for name in inputs[1:])
    return (inputs[0], present, tuple(sorted((k, a.SerializeToString()) for k, a in attributes.items())))


def _bias_adds(nodes: list, readers: dict, initializers: dict, outputs: set) -> dict:
    """{member's id: (the Add that adds a constant [N] bias to its output alone, that bias's name)}; empty
    where a member has a bias input of its own already."""
    if any(len(n.input) > _BIAS and n.input[_BIAS] for n in nodes):
        return {}
    scales_type = initializers[nodes[0].input[_SCALES]].data_type
    found = {}
    for node in nodes:
        out = node.output[0]
        after = readers.get(out, [])
        if out in outputs or len(after) != 1 or after[0].op_type != "Add":
            continue
        add = after[0]
        other = add.input[1] if add.input[0] == out else add.input[0]
        bias = initializers.get(other)
        if other != out and bias is not None and list(bias.dims) == [_width(node)] and bias.data_type == scales_type:
            found[id(node)] = (add, other)
    return found


def _merged(graph, nodes: list, widths: list[int], biases: dict, initializers: dict, folder, split_as_input: bool):
    """(the one MatMulNBits, the Split after it) standing for ``nodes``, the Adds of ``biases`` folded in."""
    import numpy as np
    from onnx import helper

    first = nodes[0]
    inputs = [first.input[0]]
    for index in range(1, len(first.input)):
        if not first.input[index]:
            inputs.append("")
            continue
        parts = [weight_of(initializers[n.input[index]], folder) for n in nodes]
        # every input after A is laid out with N first ([N, blocks, bytes], [N * blocks], [N]): rows per column
        rows = [p.reshape(width, -1) for p, width in zip(parts, widths)]
        joined = np.concatenate(rows)
        joined = joined.reshape(-1) if parts[0].ndim == 1 else joined.reshape((sum(widths), *parts[0].shape[1:]))
        inputs.append(_added(graph, initializers, f"{first.input[index]}.merged", joined, folder))
    if biases:  # each folded Add's bias in its member's columns, zeros in the others'
        parts = []
        for node, width in zip(nodes, widths):
            bias = biases.get(id(node))
            parts.append(weight_of(initializers[bias[1]], folder) if bias else None)
        dtype = next(p.dtype for p in parts if p is not None)
        joined = np.concatenate([p if p is not None else np.zeros(w, dtype) for p, w in zip(parts, widths)])
        inputs += [""] * (_BIAS - len(inputs)) + [_added(graph, initializers, f"{first.output[0]}.merged_bias", joined,
                                                         folder)]
    while inputs and not inputs[-1]:
        inputs.pop()
    output = unused_name(graph, f"{first.output[0]}.merged")
    fused = helper.make_node("MatMulNBits", inputs, [output], name=f"{first.name or output}_merged", domain=MICROSOFT)
    fused.attribute.extend(a for a in first.attribute if a.name != "N")
    fused.attribute.append(helper.make_attribute("N", sum(widths)))
    ends = [biases[id(n)][0].output[0] if id(n) in biases else n.output[0] for n in nodes]
    if split_as_input:
        sizes = _added(graph, initializers, f"{output}.widths", np.array(widths, np.int64))
        split = helper.make_node("Split", [output, sizes], ends, name=f"{fused.name}_split", axis=-1)
    else:
        split = helper.make_node("Split", [output], ends, name=f"{fused.name}_split", axis=-1, split=widths)
    return fused, split


def _added(graph, initializers: dict, name: str, values, folder=None) -> str:
    """The name of a new initializer of ``graph`` holding ``values`` (in ``folder``'s data file where given:
    graph_weights.add_constant)."""
    name = unused_name(graph, name)
    initializers[name] = add_constant(graph, name, values, folder)
    return name
