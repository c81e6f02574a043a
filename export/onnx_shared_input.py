"""Weight-only MatMuls that read the same input merged into one MatMulNBits and a Split.

A decoder layer multiplies one normed input by three weights (query, key, value) and its MLP's by two
(gate, up). At one token each MatMulNBits is a matrix-vector product of a few hundred KB, and ONNX Runtime
spends some 10 us dispatching it before its bytes are read: measured on 2 cores (AMD EPYC Zen 4, int4
blocks of 32, weights read from memory), a 576x192 product takes 15 us, 576x576 19 us, their 576x960 merge
28 us where the three took 49. onnxruntime-genai's model builder writes a packed QKV MatMul for the same
reason. Merging is exact: MatMulNBits quantizes each output column on its own (blocks along K), so the
merged weight holds the same bytes, column for column, and the Split hands each consumer its own columns.

Done on the quantized graph, after onnxruntime's quantizer: the merged tensors are the packed bytes (an
eighth of f32's at 4 bits), so no f32 weight is read or copied again. No library does it for
MatMulNBits (onnxruntime's own fusions merge none; onnxslim and onnxsim fold constants only).
"""
from __future__ import annotations

from collections import defaultdict

from .onnx_graph import has_subgraphs, unused_name, weight_of

MICROSOFT = "com.microsoft"
_B, _SCALES, _ZERO_POINTS, _G_IDX, _BIAS = 1, 2, 3, 4, 5  # MatMulNBits' inputs after A


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
    merged, into, replaced, dropped = 0, 0, {}, set()
    for nodes in groups.values():
        if len(nodes) < 2:
            continue
        fused, split = _merged(graph, nodes, initializers, folder)
        replaced[id(nodes[0])] = (fused, split)
        dropped.update(id(n) for n in nodes[1:])
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
    readers = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in readers]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return merged, into


def _merge_key(node, initializers: dict):
    """What MatMulNBits nodes must share to be merged, or None where ``node`` cannot be."""
    if node.op_type != "MatMulNBits" or node.domain != MICROSOFT or len(node.input) < 3:
        return None
    inputs = list(node.input) + [""] * (6 - len(node.input))
    if inputs[_G_IDX] or not all(name in initializers for name in inputs[1:] if name):
        return None  # a g_idx reorders K per column's block; a computed weight is not ours to copy
    attributes = {a.name: a for a in node.attribute if a.name != "N"}
    if not {"K", "bits", "block_size"} <= attributes.keys():
        return None
    present = tuple((bool(name), initializers[name].data_type if name else None) for name in inputs[1:])
    return (inputs[0], present, tuple(sorted((k, a.SerializeToString()) for k, a in attributes.items())))


def _merged(graph, nodes: list, initializers: dict, folder):
    """(the one MatMulNBits, the Split after it) standing for ``nodes``."""
    import numpy as np
    from onnx import helper, numpy_helper

    widths = [next(a.i for a in n.attribute if a.name == "N") for n in nodes]
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
        name = unused_name(graph, f"{first.input[index]}.merged")
        graph.initializer.append(numpy_helper.from_array(joined, name))
        initializers[name] = graph.initializer[-1]
        inputs.append(name)
    while inputs and not inputs[-1]:
        inputs.pop()
    output = unused_name(graph, f"{first.output[0]}.merged")
    fused = helper.make_node("MatMulNBits", inputs, [output], name=f"{first.name or output}_merged", domain=MICROSOFT)
    fused.attribute.extend(a for a in first.attribute if a.name != "N")
    fused.attribute.append(helper.make_attribute("N", sum(widths)))
    fused.metadata_props.extend(first.metadata_props)  # the exporter's record of the first one's code line
    sizes = unused_name(graph, f"{output}.widths")
    graph.initializer.append(numpy_helper.from_array(np.array(widths, np.int64), sizes))
    split = helper.make_node("Split", [output, sizes], [n.output[0] for n in nodes], name=f"{fused.name}_split",
                             axis=-1)
    return fused, split
