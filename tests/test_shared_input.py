"""export/onnx_shared_input.py: MatMulNBits nodes that read one input (a layer's query, key and value; its
MLP's gate and up), as onnxruntime's quantizer writes them, merged into one and a Split that computes
what they did, bit for bit, symmetric or with zero points, 4 or 8 bits, with a bias; every node that cannot
share the merge (another block size, a weight computed in the graph, a g_idx, a graph with subgraphs) left
as written. tests/test_weight_only.py judges a decoder's files made so, and fails one whose Split is wrong."""
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


def layer_graph(computed_weight: bool = False) -> onnx.ModelProto:
    """x -> q, k, v; h = Relu(q) -> gate, up: five MatMuls with constant weights (``computed_weight``: v's weight
    the Transpose of an initializer, a weight the graph computes)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for name, width in {**WIDTHS, **MLP}.items():
        inits.append(numpy_helper.from_array(rng.standard_normal((HIDDEN, width)).astype(np.float32), f"w_{name}"))
        source = "x" if name in WIDTHS else "h"
        weight = f"w_{name}"
        if computed_weight and name == "v":
            inits[-1] = numpy_helper.from_array(rng.standard_normal((width, HIDDEN)).astype(np.float32), "w_v_t")
            nodes.append(helper.make_node("Transpose", ["w_v_t"], [weight], perm=[1, 0]))
        nodes.append(helper.make_node("MatMul", [source, weight], [name], name=f"node_{name}"))
        if name == "q":
            nodes.append(helper.make_node("Relu", ["q"], ["h"]))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "s", width])
               for name, width in {**WIDTHS, **MLP}.items()]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", HIDDEN])],
                              outputs, inits)
    return helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 18)])


def quantized(bits: int = 4, symmetric: bool = True, block: int = 32, computed_weight: bool = False):
    model = layer_graph(computed_weight)
    quantize_in_place(model, None, bits, block, symmetric, 4)
    return model


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


def test_a_bias_joins_its_columns():
    model = quantized()
    rng = np.random.default_rng(2)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            width = next(a.i for a in node.attribute if a.name == "N")
            bias = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), f"{node.name}.bias")
            model.graph.initializer.append(bias)
            node.input.extend([""] * (5 - len(node.input)) + [bias.name])
    x = rng.standard_normal((1, 2, HIDDEN)).astype(np.float32)
    before = run(model, x)
    assert merge_shared_input_matmuls(model) == (5, 2)
    for a, b in zip(before, run(model, x)):
        np.testing.assert_array_equal(a, b)


def test_nodes_that_cannot_share_a_merge_are_left_as_written():
    """Planted: k quantized in blocks of 16 where q and v are in 32 (q and v still merge); v's weight computed
    in the graph (q and k merge); a g_idx on every node (none merges); a graph with an If (none merges)."""
    model = quantized()
    small = quantized(block=16)
    for node, other in zip(model.graph.node, small.graph.node):
        if node.output[0] == "k":
            kept = [t for t in model.graph.initializer if t.name not in node.input]
            del model.graph.initializer[:]
            model.graph.initializer.extend(kept + [t for t in small.graph.initializer if t.name in other.input])
            node.CopyFrom(other)
    x = np.random.default_rng(3).standard_normal((1, 2, HIDDEN)).astype(np.float32)
    before = run(model, x)
    assert merge_shared_input_matmuls(model) == (4, 2)  # q with v; gate with up
    assert ops(model).count("MatMulNBits") == 3
    for a, b in zip(before, run(model, x)):
        np.testing.assert_array_equal(a, b)

    computed = quantized(computed_weight=True)
    assert "Transpose" in ops(computed) and merge_shared_input_matmuls(computed) == (4, 2)  # q with k; gate with up
    assert any(n.op_type == "MatMul" and n.output[0] == "v" for n in computed.graph.node)

    reordered = quantized()
    for node in reordered.graph.node:
        if node.op_type == "MatMulNBits":
            node.input.extend([""] * (4 - len(node.input)) + ["g_idx"])
    assert merge_shared_input_matmuls(reordered) == (0, 0)

    branched = quantized()
    branch = helper.make_graph([helper.make_node("Identity", ["q"], ["picked"])], "branch", [],
                               [helper.make_tensor_value_info("picked", TensorProto.FLOAT, None)])
    branched.graph.initializer.append(numpy_helper.from_array(np.array(True), "flag"))
    branched.graph.node.append(helper.make_node("If", ["flag"], ["chosen"], then_branch=branch, else_branch=branch))
    kept = branched.SerializeToString()
    assert merge_shared_input_matmuls(branched) == (0, 0) and branched.SerializeToString() == kept
