"""NNCF's compress_weights given a graph's weights a group at a time: data-free openvino-int4 and openvino-int8w
in the memory of one group of weights, not of the whole model.

Why: compress_weights holds every weight of the graph it is given, about 3.1x the float32 weights at its peak (a 3B
model's would be 38 GB). Data-free, with every MatMul in the primary precision (ratio 1), it decides each weight's
compression from that weight alone. The decision is its mode and its group. Where ``all_layers`` is off (NNCF's
default), the embeddings and the last MatMul (the head) take the backup mode, int8 asymmetric per channel. So the
weights are given to it a few at a time, each group in a graph of its own, where every weight is read by its own
MatMul or Gather from an input of its own. The head and the embeddings go in groups of their own, in the backup
mode, as the whole call gives them. Each group's weights are written to a scratch data file that NNCF reads
(a weight of 2 GiB is no protobuf message). What NNCF writes for each weight (a DequantizeLinear, and the
quantized weight, scale and zero point it reads) is moved into the graph, the bytes into the scratch folder's data
file (export/graph_weights.py). The result is the whole call's, tensor for tensor; tests/test_weight_only.py
holds the two equal on a tiny decoder.

Not for --ratio below 1 or --data-aware: those rank or calibrate the weights across the whole model, and keep the
whole call (export/formats/openvino_weights.py).
"""
from __future__ import annotations

from pathlib import Path

from ptx.atomic import scratch_folder

# The float32 bytes of the weights NNCF is given at once (a layer's MatMuls of a 7B model are 0.9 GB): it holds
# about 3.1x them at its peak. A weight past it is given alone.
GROUP_BYTES = 256 << 20
# NNCF's backup mode where all_layers is off: int8 asymmetric, one scale per output channel
BACKUP = ("INT8_ASYM", -1)
COMPRESSED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather")  # ops whose constant weights NNCF compresses
FLOATS = (1, 10, 16)  # onnx.TensorProto.FLOAT, FLOAT16, BFLOAT16: the weights NNCF compresses


def weights_to_compress(graph) -> tuple[list[tuple[str, str]], list[str]]:
    """([(weight, 'MatMul' or 'Gather'), ...] in the graph's order, each weight once: a 2-D float initializer a MatMul
    reads as its second input or a Gather (along axis 0) as its table; the nodes NNCF would compress that are not
    of that kind (a group at a time cannot stand for the whole call there), in words)."""
    initializers = {t.name: t for t in graph.initializer}

    def matrix(name: str) -> bool:
        tensor = initializers.get(name)
        return tensor is not None and tensor.data_type in FLOATS and len(tensor.dims) == 2

    found, other = {}, []
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and matrix(node.input[1]) and node.input[0] not in \
                initializers:
            found.setdefault(node.input[1], "MatMul")
        elif node.op_type == "Gather" and node.input and matrix(node.input[0]) and not any(
                a.name == "axis" and a.i != 0 for a in node.attribute):
            found.setdefault(node.input[0], "Gather")
        elif node.op_type in COMPRESSED_OPS and any(i in initializers and initializers[i].data_type in FLOATS
                                                    and len(initializers[i].dims) > 1 for i in node.input):
            other.append(f"{node.op_type} {node.name or node.output[0]}")
    return list(found.items()), other


def modes(found: list[tuple[str, str]], primary: tuple[str, int]) -> dict[str, tuple]:
    """Each weight's (NNCF mode, group size) as NNCF's whole call would choose it, data-free at ratio 1 and
    ``all_layers`` off (its default): ``primary`` for all; for a 4-bit ``primary``, the backup for the embeddings
    and the last MatMul."""
    chosen = {name: primary for name, _ in found}
    if primary[0].startswith("INT4"):
        matmuls = [name for name, op in found if op == "MatMul"]
        for name in [name for name, op in found if op == "Gather"] + matmuls[-1:]:
            chosen[name] = BACKUP
    return chosen


def compress_in_groups(proto, folder: Path, primary: tuple[str, int], advanced: dict) -> int:
    """Every weight of ``weights_to_compress`` in ``proto`` (its data in ``folder``, or in a transformers folder)
    replaced by NNCF's DequantizeLinear of its compressed form, a group of weights at a time (a bar on the terminal
    counts them: a 7B model's take minutes); returns how many."""
    import sys

    from tqdm import tqdm

    from ..onnx_graph import value_names
    from .openvino_int8 import imported_nncf, quiet_nncf
    from .weight_only import drop_initializer

    nncf = imported_nncf()
    from nncf.onnx.quantization.backend_parameters import BackendParameters

    graph = proto.graph
    found, _ = weights_to_compress(graph)
    chosen, ops = modes(found, primary), dict(found)
    initializers = {t.name: t for t in graph.initializer}
    taken, node_names = value_names(graph), {n.name for n in graph.node}  # the names a new tensor or node avoids
    made: dict[str, object] = {}  # weight -> the DequantizeLinear that now stands for it
    bar = tqdm(total=len(found), desc="NNCF", unit="weight", file=sys.stderr, dynamic_ncols=True, leave=False,
               disable=not sys.stderr.isatty())
    for (mode, group), names in _by_mode(found, chosen).items():
        for batch in _batches(names, initializers):
            with scratch_folder("ptx-nncf-", dir=folder) as scratch:
                alone = _alone(batch, ops, initializers, Path(scratch), folder)
                options = dict(mode=getattr(nncf.CompressWeightsMode, mode), group_size=group)
                if mode.startswith("INT4"):  # every weight given in the primary mode (an int8 mode takes all alike)
                    options.update(ratio=1.0, all_layers=True)
                parameters = nncf.AdvancedCompressionParameters(
                    **advanced, backend_params={BackendParameters.EXTERNAL_DATA_DIR: scratch})
                with quiet_nncf():
                    compressed = nncf.compress_weights(alone, advanced_parameters=parameters, **options)
                made.update(_taken_in(compressed, batch, graph, folder, taken, node_names))
                del compressed, alone
            _forget_compiled()
            bar.update(len(batch))
    bar.close()
    _placed(graph, made)
    for name in made:
        drop_initializer(graph, name)
    return len(made)


def _forget_compiled() -> None:
    """NNCF's compiled OpenVINO models of the last group let go. NNCF compresses with OpenVINO models compiled for
    each weight's shape and keeps them, with their buffers, for the whole process: a 0.5B model's embedding and
    head (545 MB each in f32) left 1.4 GB each behind them, and a 3B model's export held 8.2 GB once its file was
    written."""
    try:
        from nncf.openvino.optimized_functions.models import clear_ov_model_cache
    except ImportError:  # an NNCF without it compresses with numpy alone
        return
    clear_ov_model_cache()


def _by_mode(found, chosen) -> dict[tuple, list[str]]:
    grouped: dict[tuple, list[str]] = {}
    for name, _ in found:
        grouped.setdefault(chosen[name], []).append(name)
    return grouped


def _batches(names: list[str], initializers: dict):
    """``names`` in runs whose float32 bytes stay within GROUP_BYTES (a weight past it alone)."""
    import math

    batch, held = [], 0
    for name in names:
        size = 4 * math.prod(initializers[name].dims)
        if batch and held + size > GROUP_BYTES:
            yield batch
            batch, held = [], 0
        batch.append(name)
        held += size
    if batch:
        yield batch


def _alone(batch: list[str], ops: dict, initializers: dict, scratch: Path, folder: Path):
    """A graph holding ``batch``'s weights (as w0, w1, ..., their float32 values in ``scratch``'s data file), each
    read by its own op from an input of its own, as NNCF finds a weight to compress."""
    import numpy as np
    from onnx import TensorProto, helper

    from ..graph_weights import add_constant
    from ..onnx_graph import weight_of

    nodes, inputs, outputs = [], [], []
    graph = helper.make_graph([], "weights", [], [])
    for k, name in enumerate(batch):
        values = np.asarray(weight_of(initializers[name], folder), dtype=np.float32)
        tensor = add_constant(graph, f"w{k}", values, scratch)
        rows, cols = values.shape
        del values
        if ops[name] == "MatMul":
            inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, ["batch", rows]))
            nodes.append(helper.make_node("MatMul", [f"x{k}", tensor.name], [f"y{k}"], name=f"matmul{k}"))
            outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["batch", cols]))
        else:
            inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.INT64, ["batch"]))
            nodes.append(helper.make_node("Gather", [tensor.name, f"x{k}"], [f"y{k}"], name=f"gather{k}", axis=0))
            outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["batch", cols]))
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _taken_in(compressed, batch: list[str], graph, folder: Path, taken: set[str], node_names: set[str]
              ) -> dict[str, object]:
    """For each weight of ``batch``, the DequantizeLinear NNCF wrote for it in ``compressed``, renamed for ``graph``
    (away from ``taken`` and ``node_names``, which gain the new names) and added to it with its tensors, their bytes
    moved to ``folder``'s data file first: a tensor copied into the graph with its bytes would leave them in the
    graph's memory (formats/weight_only.py says why)."""
    from ..graph_weights import move_out
    from ..onnx_graph import name_not_in

    tensors = {t.name: t for t in compressed.graph.initializer}
    dequantizers = {n.input[0]: n for n in compressed.graph.node if n.op_type == "DequantizeLinear"}
    made = {}
    for k, name in enumerate(batch):
        node = dequantizers.get(f"w{k}_quantized")
        if node is None:
            continue  # NNCF left it as it is
        renamed = {}
        for old in [*node.input, *node.output]:
            renamed[old] = name_not_in(name + old[len(f"w{k}"):], taken)
            taken.add(renamed[old])
        for old in node.input:
            tensor = tensors[old]
            tensor.name = renamed[old]
            move_out(tensor, folder)
            graph.initializer.append(tensor)
        node.input[:] = [renamed[i] for i in node.input]
        node.output[:] = [renamed[o] for o in node.output]
        node.name = name_not_in(f"{name}_DequantizeLinear", node_names)
        node_names.add(node.name)
        made[name] = node
    return made


def _placed(graph, made: dict[str, object]) -> None:
    """Each DequantizeLinear of ``made`` put just before the first node reading its weight, and every reader made to
    read its output instead."""
    nodes = []
    placed = set()
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in made:
                if name not in placed:
                    nodes.append(made[name])
                    placed.add(name)
                node.input[index] = made[name].output[0]
        nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
