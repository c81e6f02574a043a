"""export/onnx_shared_input.py: MatMulNBits nodes that read one input (a layer's query, key and value; its
MLP's gate and up), as onnxruntime's quantizer writes them, merged into one and a Split that computes
what they did, bit for bit, symmetric or with zero points, 4 or 8 bits, with a bias input or a bias Add folded
in, at opset 12 (Split's sizes an attribute) as at 18; every node that cannot share the merge (another block
size, a weight computed in the graph, a g_idx, a part at a column the kernel's tiles would sum otherwise, a
graph with subgraphs) left as written, and no tensor but the members' dropped. tests/test_weight_only.py
judges a decoder's files made so, and fails one whose Split is wrong."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ptx.export.formats.onnx_weights import quantize_in_place  # noqa: E402
from ptx.export.onnx_shared_input import merge_shared_input_matmuls  # noqa: E402

HIDDEN = 64
WIDTHS = {"q": 64, "k": 32, "v": 32}  # read "x"
MLP = {"gate": 96, "up": 96}  # read "h", the Relu of the query's


def layer_graph(widths: dict | None = None, opset: int = 18) -> onnx.ModelProto:
    """x -> q, k, v; h = Relu(q) -> gate, up: five MatMuls with constant weights (``widths``: q, k and v's)."""
    widths = widths or WIDTHS
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for name, width in {**widths, **MLP}.items():
        inits.append(numpy_helper.from_array(rng.standard_normal((HIDDEN, width)).astype(np.float32), f"w_{name}"))
        source = "x" if name in widths else "h"
        nodes.append(helper.make_node("MatMul", [source, f"w_{name}"], [name], name=f"node_{name}"))
        if name == "q":
            nodes.append(helper.make_node("Relu", ["q"], ["h"]))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "s", width])
               for name, width in {**widths, **MLP}.items()]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", HIDDEN])],
                              outputs, inits)
    return helper.make_model(graph, ir_version=7 if opset < 13 else 9, opset_imports=[helper.make_opsetid("", opset)])


def quantized(bits: int = 4, symmetric: bool = True, block: int = 32, widths: dict | None = None, opset: int = 18):
    model = layer_graph(widths, opset)
    quantize_in_place(model, None, bits, block, symmetric, 4)
    return model


def unchanged(model, x) -> None:
    """Merge ``model`` in place, checked, and assert its outputs are the same bits as before."""
    before = run(model, x)
    merged = merge_shared_input_matmuls(model)
    onnx.checker.check_model(model)
    for name, a, b in zip([o.name for o in model.graph.output], before, run(model, x)):
        np.testing.assert_array_equal(a, b, err_msg=name)
    return merged


def run(model, x) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([o.name for o in model.graph.output], {"x": x})


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True), (8, False)])
def test_matmuls_reading_one_input_are_one_and_compute_the_same_bits(bits, symmetric):
    separate = quantized(bits, symmetric)
    assert ops(separate).count("MatMulNBits") == 5
    x = np.random.default_rng(1).standard_normal((1, 3, HIDDEN)).astype(np.float32)
    before = run(separate, x)
    merged = onnx.ModelProto()
    merged.CopyFrom(separate)
    assert merge_shared_input_matmuls(merged) == (5, 2)
    onnx.checker.check_model(merged)
    assert ops(merged).count("MatMulNBits") == 2 and ops(merged).count("Split") == 2
    widths = sorted(next(a.i for a in n.attribute if a.name == "N")
                    for n in merged.graph.node if n.op_type == "MatMulNBits")
    assert widths == [sum(WIDTHS.values()), sum(MLP.values())]
    for name, a, b in zip(WIDTHS | MLP, before, run(merged, x)):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # the separate nodes' weights are gone from the file, not kept beside the merged ones
    assert sum(t.name.startswith("w_") for t in merged.graph.initializer) == 2 * (2 + (not symmetric))


def _with_biases(model, rng, how: str, names=("q", "k", "v", "gate", "up")) -> None:
    """A bias for each MatMulNBits named: its bias input (``how`` "input") or an Add after it ("add")."""
    for node in list(model.graph.node):
        if node.op_type == "MatMulNBits" and node.output[0] in names:
            bias = numpy_helper.from_array(rng.standard_normal(_width(node)).astype(np.float32), f"b_{node.output[0]}")
            model.graph.initializer.append(bias)
            if how == "input":
                node.input.extend([""] * (5 - len(node.input)) + [bias.name])
                continue
            out = node.output[0]  # its readers read the Add's sum under the name they read before
            node.output[0] = f"{out}.before_bias"
            at = list(model.graph.node).index(node) + 1
            model.graph.node.insert(at, helper.make_node("Add", [node.output[0], bias.name], [out]))


def _width(node) -> int:
    return next(a.i for a in node.attribute if a.name == "N")


def test_a_bias_joins_its_columns_as_an_input_or_folded_from_its_add():
    """Qwen2's query, key and value carry a bias: an Add after each MatMulNBits, which ONNX Runtime folds into
    the node when it loads a graph and could not once the Add read a Split. Folded into the merged node's bias
    (zeros for v, which has none here); the Adds are gone and the outputs the same bits."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, HIDDEN)).astype(np.float32)
    model = quantized()
    _with_biases(model, rng, "input")
    assert unchanged(model, x) == (5, 2)
    model = quantized()
    _with_biases(model, rng, "add", names=("q", "k", "gate", "up"))
    assert ops(model).count("Add") == 4
    assert unchanged(model, x) == (5, 2)
    assert "Add" not in ops(model) and not [t for t in model.graph.initializer if t.name.startswith("b_")]
    merged_biases = [n.input[5] for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(merged_biases) == 2 and all(merged_biases)


def test_opset_12_s_split_takes_its_sizes_as_an_attribute():
    model = quantized(opset=12)
    x = np.random.default_rng(4).standard_normal((1, 2, HIDDEN)).astype(np.float32)
    assert unchanged(model, x) == (5, 2)
    assert all(len(n.input) == 1 and n.attribute[-1].name == "split" for n in model.graph.node if n.op_type == "Split")


def test_nodes_that_cannot_share_a_merge_are_left_as_written():
    """Planted: k quantized in blocks of 16 where q and v are in 32 (q and v still merge); v's weight computed
    in the graph (q and k merge); a g_idx on every node (none merges); widths that would start a part off the
    kernel's column tiles (q, k and v left; gate and up merge); a graph with an If (none merges). A tensor of
    the graph that no node reads (a graph output) stays."""
    x = np.random.default_rng(3).standard_normal((1, 2, HIDDEN)).astype(np.float32)
    model = quantized()
    small = quantized(block=16)
    for node, other in zip(model.graph.node, small.graph.node):
        if node.output[0] == "k":
            kept = [t for t in model.graph.initializer if t.name not in node.input]
            del model.graph.initializer[:]
            model.graph.initializer.extend(kept + [t for t in small.graph.initializer if t.name in other.input])
            node.CopyFrom(other)
    assert unchanged(model, x) == (4, 2)  # q with v; gate with up
    assert ops(model).count("MatMulNBits") == 3

    computed = quantized()
    v = next(n for n in computed.graph.node if n.output[0] == "v")
    computed.graph.node.insert(0, helper.make_node("Identity", [v.input[1]], ["v_weight_computed"]))
    v.input[1] = "v_weight_computed"
    assert unchanged(computed, x) == (4, 2)  # q with k; gate with up
    assert any(n.op_type == "MatMulNBits" and n.output[0] == "v" for n in computed.graph.node)

    reordered = quantized()
    reordered.graph.initializer.append(numpy_helper.from_array(np.arange(HIDDEN, dtype=np.int32) // 32, "g_idx"))
    for node in reordered.graph.node:
        if node.op_type == "MatMulNBits":
            node.input.extend([""] * (4 - len(node.input)) + ["g_idx"])
    kept = reordered.SerializeToString()
    assert merge_shared_input_matmuls(reordered) == (0, 0) and reordered.SerializeToString() == kept

    off_tiles = quantized(widths={"q": 64, "k": 30, "v": 34})
    off_tiles.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "kept_constant"))
    off_tiles.graph.output.append(helper.make_tensor_value_info("kept_constant", TensorProto.FLOAT, [3]))
    assert unchanged(off_tiles, x) == (2, 1)  # gate with up only
    assert ops(off_tiles).count("MatMulNBits") == 4 and "kept_constant" in {t.name for t in off_tiles.graph.initializer}

    branched = quantized()
    branch = helper.make_graph([helper.make_node("Identity", ["q"], ["picked"])], "branch", [],
                               [helper.make_tensor_value_info("picked", TensorProto.FLOAT, None)])
    branched.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    branched.graph.node.append(helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch))
    kept = branched.SerializeToString()
    assert merge_shared_input_matmuls(branched) == (0, 0) and branched.SerializeToString() == kept
