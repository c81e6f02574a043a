"""NNCF's per-channel 8-bit weights written in forms ONNX Runtime runs on their 8 bits; for OpenVINO, the same values.

NNCF writes a weight compressed per channel (openvino-int4's head and embedding, in its int8 backup mode; every
weight of openvino-int8w) as one DequantizeLinear of the whole weight, read by a MatMul or a Gather. ONNX Runtime
fuses a DequantizeLinear into its MatMul (an 8- or 4-bit MatMulNBits) only where it is blocked (opset 21's
block_size), and into a Gather never: it ran those DequantizeLinears at every run, a float32 copy of the head and of
the whole embedding table each step (Qwen2.5-0.5B's openvino-int4 file decoded at 526 ms a token on ort-cpu, its
onnx-int4 twin at 26.5; AMD EPYC, 2 cores, 2026-11-29). So, where the graph's opset has block_size (21:
openvino_weights raises it there, for int4's blocks and int8w's, except where an op's meaning would change on the
way):

- a MatMul's uint8 weight with one scale per output column (axis -1 of [K, N]) is written blocked along K (axis 0,
  blocks of the largest of 128, 64, 32 and 16 that divides K), each column's scale and zero point repeated for each
  of its blocks: the same values (a column's blocks share its scale), which ONNX Runtime fuses into a MatMulNBits;

and in any opset:

- a Gather's table with one scale per row (axis 0) is gathered first, in its 8 bits, with its rows' scales and zero
  points, and the rows dequantized after, ``(q - zero point) * scale`` as DequantizeLinear computes it (the
  difference of two 8-bit integers is exact in float32): the same values, a row's bytes read for each id instead
  of the whole table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..graph_weights import add_constant
from ..onnx_graph import default_opset, readers_of, weight_of
from .weight_only import drop_initializer

BLOCKS = (128, 64, 32, 16)  # MatMulNBits' block sizes (a power of two, 16 or more), the largest that divides K taken
BLOCKED_SINCE = 21


def per_channel_scales_made_1d(proto) -> int:
    """NNCF's per-channel scales written with the weight's other axes kept as ones (a convolution's [C, 1, 1] beside
    its [C, I, kH, kW] weight, axis 0) made the 1-D [C] that DequantizeLinear's per-axis form takes, the zero point's
    too: the same values along the same axis. OpenVINO's ONNX reader converted neither form (its per-axis reader
    takes 1-D), and opset 21 would read a scale of several dimensions as blocks. Only the tensors' dimensions
    change (their bytes, inside the file or in its data file, stay); a scale another node reads too is left.
    Returns how many were made 1-D."""
    initializers = {t.name: t for t in proto.graph.initializer}
    readers = readers_of(proto.graph)
    made = 0
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or any(a.name == "block_size" for a in node.attribute) or \
                len(node.input) < 2 or node.input[0] not in initializers:
            continue
        tensors = [initializers.get(name) for name in node.input[1:3] if name]
        if any(t is None or len(readers[t.name]) > 1 for t in tensors) or len(tensors[0].dims) < 2:
            continue
        weight = initializers[node.input[0]]
        axis = _axis(node) % len(weight.dims)
        wide = [size for size in tensors[0].dims if size != 1]
        if wide != [weight.dims[axis]] or any(list(t.dims) != list(tensors[0].dims) for t in tensors):
            continue
        for tensor in tensors:
            tensor.dims[:] = wide
        made += 1
    return made


def dequantized_where_read(proto, folder: Path | None) -> tuple[int, int]:
    """``proto``'s per-channel DequantizeLinears of a MatMul's weight made blocked, and of a Gather's table moved
    after the Gather (``folder``: where the graph's external initializers lie); (MatMul weights, tables) rewritten."""
    import onnx

    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    readers = readers_of(graph)
    opset = default_opset(proto)
    outputs = {o.name for o in graph.output}
    blocked = tables = 0
    replaced: set[str] = set()
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or any(a.name == "block_size" for a in node.attribute):
            continue
        weight = initializers.get(node.input[0])
        scale = initializers.get(node.input[1]) if len(node.input) > 1 else None
        zero = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if weight is None or scale is None or len(weight.dims) != 2 or len(scale.dims) != 1 or \
                weight.data_type not in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8) or \
                (len(node.input) > 2 and node.input[2] and zero is None):
            continue
        axis = _axis(node) % 2
        used = readers.get(node.output[0], [])
        if not used or node.output[0] in outputs:
            continue
        if opset >= BLOCKED_SINCE and axis == 1 and weight.data_type == onnx.TensorProto.UINT8 and \
                all(r.op_type == "MatMul" and list(r.input).index(node.output[0]) == 1 for r in used):
            if _blocked(graph, node, weight, scale, zero, folder):
                blocked += 1
                replaced |= {t.name for t in (scale, zero) if t is not None}
        elif axis == 0 and all(r.op_type == "Gather" and r.input[0] == node.output[0] and _gather_axis(r) == 0
                               for r in used):
            for reader in used:
                _gathered_first(graph, node, reader, scale.data_type)
            graph.node.remove(node)
            tables += 1
    read = {name for node in graph.node for name in node.input} | outputs
    for name in sorted(replaced - read):  # a blocked weight's per-column scales, no longer read
        drop_initializer(graph, name)
    return blocked, tables


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)  # DequantizeLinear's default axis is 1


def _gather_axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def _blocked(graph, node, weight, scale, zero, folder: Path | None) -> int:
    """``node`` (a MatMul weight's DequantizeLinear, a scale per column) made blocked along K: 1, or 0 where no
    block size divides K."""
    import onnx

    k = int(weight.dims[0])
    block = next((b for b in BLOCKS if k % b == 0), None)
    if block is None:
        return 0
    inputs = [node.input[0]]
    for tensor in (scale, zero):
        if tensor is None:
            continue
        repeated = np.tile(weight_of(tensor, folder)[None, :], (k // block, 1))
        name = f"{tensor.name}_per_block"
        if not any(t.name == name for t in graph.initializer):
            add_constant(graph, name, repeated, None)
        inputs.append(name)
    del node.input[:]
    node.input.extend(inputs)
    del node.attribute[:]
    node.attribute.extend([onnx.helper.make_attribute("axis", 0), onnx.helper.make_attribute("block_size", block)])
    return 1


def _gathered_first(graph, node, reader, dtype: int) -> None:
    """``reader`` (a Gather of ``node``'s table) made a Gather of the 8-bit table, its rows' scales and zero points,
    and the rows dequantized after in ``dtype`` (the scale's, which DequantizeLinear gives), in its place."""
    from onnx import TensorProto, helper

    out, ids = reader.output[0], reader.input[1]
    base = reader.name or out
    last = f"{base}_last_axis"
    made = [helper.make_node("Constant", [], [last], name=last, value=helper.make_tensor(last, TensorProto.INT64,
                                                                                          [1], [-1])),
            helper.make_node("Gather", [node.input[0], ids], [f"{base}_q"], name=f"{base}_q", axis=0),
            helper.make_node("Cast", [f"{base}_q"], [f"{base}_qf"], name=f"{base}_qf", to=dtype)]
    rows = f"{base}_qf"
    if len(node.input) > 2 and node.input[2]:
        made += [helper.make_node("Gather", [node.input[2], ids], [f"{base}_z"], name=f"{base}_z", axis=0),
                 helper.make_node("Cast", [f"{base}_z"], [f"{base}_zf"], name=f"{base}_zf", to=dtype),
                 helper.make_node("Unsqueeze", [f"{base}_zf", last], [f"{base}_zr"], name=f"{base}_zr"),
                 helper.make_node("Sub", [rows, f"{base}_zr"], [f"{base}_d"], name=f"{base}_d")]
        rows = f"{base}_d"
    made += [helper.make_node("Gather", [node.input[1], ids], [f"{base}_s"], name=f"{base}_s", axis=0),
             helper.make_node("Unsqueeze", [f"{base}_s", last], [f"{base}_sr"], name=f"{base}_sr"),
             helper.make_node("Mul", [rows, f"{base}_sr"], [out], name=base)]
    index = list(graph.node).index(reader)
    graph.node.remove(reader)
    for offset, new in enumerate(made):
        graph.node.insert(index + offset, new)
