"""export/slice_pairs.py: onnxscript's SlicesSplit rewrite, its second Slice sought among the first one's siblings.
The optimized graph is the one onnxscript's own matcher makes, and the search no longer grows with the graph's
Slices times its nodes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ptx.export.slice_pairs import sibling_slices

onnx_ir = pytest.importorskip("onnx_ir")
onnxscript = pytest.importorskip("onnxscript")


def _halves_graph(pairs: int) -> onnx.ModelProto:
    """``pairs`` tensors of 16 on the last axis, each read as its two halves and the halves added; beside each, a
    Slice of another range of the same tensor and another tensor's first half alone. onnxscript's search takes the
    first Slice of the tensor in the graph's order as the second one and tries no other: where the upper half
    comes first (even pairs) the two become one Split, where the lower half does (odd pairs), nothing changes."""
    nodes, inputs, outputs, inits = [], [], [], []

    def const(name, values):
        inits.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    axes = const("axes", [-1])
    for i in range(pairs):
        x, y = f"x{i}", f"y{i}"
        inputs += [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, 16]),
                   helper.make_tensor_value_info(y, TensorProto.FLOAT, [2, 16])]
        lower = helper.make_node("Slice", [x, const(f"b0_{i}", [0]), const(f"e0_{i}", [8]), axes], [f"lo{i}"])
        upper = helper.make_node("Slice", [x, const(f"b2_{i}", [8]), const(f"e2_{i}", [16]), axes], [f"hi{i}"])
        nodes += [*((upper, lower) if i % 2 == 0 else (lower, upper)),
                  helper.make_node("Slice", [x, const(f"b1_{i}", [2]), const(f"e1_{i}", [6]), axes], [f"mid{i}"]),
                  helper.make_node("Slice", [y, f"b0_{i}", f"e0_{i}", axes], [f"alone{i}"]),
                  helper.make_node("Add", [f"lo{i}", f"hi{i}"], [f"sum{i}"])]
        outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                    for name in (f"sum{i}", f"mid{i}", f"alone{i}")]
    graph = helper.make_graph(nodes, "halves", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _optimized(proto: onnx.ModelProto, siblings: bool) -> onnx.ModelProto:
    model = onnx_ir.serde.deserialize_model(proto)
    if siblings:
        with sibling_slices():
            onnxscript.optimizer.optimize_ir(model)
    else:
        onnxscript.optimizer.optimize_ir(model)
    return onnx_ir.serde.serialize_model(model)


def test_the_graph_is_the_one_onnxscript_s_own_matcher_makes():
    proto = _halves_graph(4)
    ours, theirs = _optimized(proto, True), _optimized(proto, False)
    assert ours.SerializeToString() == theirs.SerializeToString()
    ops = [node.op_type for node in ours.graph.node]
    assert ops.count("Split") == 2 and ops.count("Slice") == 12  # the even pairs' halves one Split each
    feeds = {i.name: np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32) for i in proto.graph.input}
    import onnxruntime as ort

    def run(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)

    for a, b in zip(run(ours), run(proto)):
        np.testing.assert_array_equal(a, b)


def _model(nodes, inputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


HALVES = [helper.make_tensor(name, TensorProto.INT64, [1], value)
          for name, value in (("axes", [-1]), ("b0", [0]), ("e0", [8]), ("b1", [8]), ("e1", [16]))]
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])


def test_a_reader_attached_late_is_met_where_the_graph_has_it():
    """The upper half reads x through an Identity the optimizer folds away: it becomes x's reader after the lower
    half did, but comes first in the graph, where onnxscript meets it (and makes the Split)."""
    proto = _model([helper.make_node("Identity", ["x"], ["y"]),
                    helper.make_node("Slice", ["y", "b1", "e1", "axes"], ["hi"]),
                    helper.make_node("Slice", ["x", "b0", "e0", "axes"], ["lo"]),
                    helper.make_node("Add", ["lo", "hi"], ["s"])], [X], HALVES)
    ours, theirs = _optimized(proto, True), _optimized(proto, False)
    assert [n.op_type for n in theirs.graph.node] == ["Split", "Add"]
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_a_reader_inside_a_branch_is_not_the_graph_s():
    """x's upper half read inside an If's branch is no pair for the lower half outside it (onnxscript looks at one
    graph at a time; pairing them failed the optimizer)."""
    then = helper.make_graph([helper.make_node("Slice", ["x", "b1", "e1", "axes"], ["hi"])], "then", [],
                             [helper.make_tensor_value_info("hi", TensorProto.FLOAT, [2, 8])])
    other = helper.make_graph([helper.make_node("Neg", ["x8"], ["n"])], "else", [],
                              [helper.make_tensor_value_info("n", TensorProto.FLOAT, [2, 8])])
    proto = _model([helper.make_node("If", ["c"], ["branch"], then_branch=then, else_branch=other),
                    helper.make_node("Slice", ["x", "b0", "e0", "axes"], ["lo"]),
                    helper.make_node("Add", ["lo", "branch"], ["s"])],
                   [X, helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("x8", TensorProto.FLOAT, [2, 8])], HALVES)
    ours, theirs = _optimized(proto, True), _optimized(proto, False)
    assert [n.op_type for n in ours.graph.node] == ["If", "Slice", "Add"]
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_the_search_grows_with_the_graph_not_with_its_square(monkeypatch):
    """The nodes the matcher looks at (op_identifier calls) for 8 and 32 pairs: onnxscript's brute force lists the
    graph for each node it starts from (4x the pairs: 16x the calls); the siblings' search grows as the graph does."""
    calls = {"n": 0}
    original = onnx_ir.Node.op_identifier

    def counted(node):
        calls["n"] += 1
        return original(node)

    monkeypatch.setattr(onnx_ir.Node, "op_identifier", counted)

    def looked_at(pairs: int, siblings: bool) -> int:
        calls["n"] = 0
        _optimized(_halves_graph(pairs), siblings)
        return calls["n"]

    assert looked_at(32, False) > 10 * looked_at(8, False)  # the quadratic search this replaces (so the count sees it)
    assert looked_at(32, True) < 5 * looked_at(8, True)


def test_outside_ptx_s_exports_onnxscript_s_matcher_runs_as_it_is(monkeypatch):
    from onnxscript import rewriter
    from onnxscript.rewriter import _matcher

    with sibling_slices():
        pass  # installed for good; what it does depends on the block
    rule = next(r for r in rewriter._DEFAULT_REWRITE_RULES if r.name == "SlicesSplit")
    assert type(rule._matcher).__name__ == "SiblingSlices"
    searched = []
    brute_force = _matcher.SimplePatternMatcher.match

    def spied(self, *args, **kwargs):
        searched.append(self)
        return brute_force(self, *args, **kwargs)

    monkeypatch.setattr(_matcher.SimplePatternMatcher, "match", spied)
    proto = _halves_graph(2)
    outside = _optimized(proto, False)
    assert rule._matcher in searched  # onnxscript's own search, outside the block
    searched.clear()
    inside = _optimized(proto, True)
    assert rule._matcher not in searched and inside.SerializeToString() == outside.SerializeToString()
