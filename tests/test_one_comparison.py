"""Issue 57's "one comparison": verify, locate and a reduced precision's verdict measure a tensor with
ptx.contract.comparison.compare_output alone, and it gives max abs, relative error and SQNR alike."""
import math

import numpy as np
import pytest

from ptx.contract.comparison import compare_output
from ptx.contract.schema import Tolerance
from ptx.contract.verdict import judge_tensors

TOL = Tolerance(1e-4, 1e-3)


def test_relative_error_and_sqnr_are_measured_and_merge_over_cases():
    want = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    got = want * np.float32(1.01)  # 1% everywhere: rel 0.01, SQNR 40 dB
    one = compare_output("y", got, want, TOL, 0)
    assert one.rel == pytest.approx(0.01, rel=1e-4) and one.sqnr_db == pytest.approx(40.0, abs=0.01)
    assert one.departs and one.magnitude == pytest.approx(float(np.abs(want).max()))
    # over two cases: the same as one comparison of both together, not the worse of the two
    other = np.ones((2, 10), np.float32)
    merged = compare_output("y", got, want, TOL, 0).merge(compare_output("y", other, other, TOL, 0))
    together = compare_output("y", np.concatenate([got, other]), np.concatenate([want, other]), TOL, 0)
    assert merged.rel == pytest.approx(together.rel) and merged.rel < one.rel
    exact = compare_output("y", want, want, TOL)
    assert exact.rel == 0 and math.isinf(exact.sqnr_db) and not exact.departs
    doc = one.to_dict()
    assert doc["sqnr_db"] == pytest.approx(40.0, abs=0.01) and exact.to_dict()["sqnr_db"] == "inf"


def test_locate_and_verify_measure_a_tensor_alike():
    from ptx.infer.locate.sweep import tensor_error

    want = np.linspace(-3, 3, 60, dtype=np.float32).reshape(6, 10)
    got = want + np.float32(2e-3)
    verify = compare_output("t", got, want, TOL)
    locate = tensor_error("t", got, want, lambda name, dtype: TOL)
    assert (locate.max_abs, locate.rel, locate.excess, locate.departs) == \
        (verify.max_abs, verify.rel, verify.excess, verify.departs)
    assert locate.histogram == [] and verify.histogram  # locate skips what it never shows


def test_squares_that_overflow_float32_still_give_a_finite_relative_error():
    want = np.full((3, 4), 1e20, np.float32)
    assert compare_output("y", want * np.float32(1.1), want, TOL).rel == pytest.approx(0.1, rel=1e-5)


def test_a_reduced_output_with_nan_where_f32_has_none_is_not_usable():
    want = [{"h": np.ones((2, 8), np.float32)}]
    got = [{"h": np.where(np.eye(2, 8) > 0, np.nan, 1.0).astype(np.float32)}]
    judged = judge_tensors(got, want, [("h", 0)], "int8", "generated")
    assert judged.status == "NOT USABLE" and "NaN" in judged.reasons[0], judged.reasons
    fine = judge_tensors(want, want, [("h", 0)], "int8", "generated")
    assert fine.status == "PASS" and "SQNR inf dB" in fine.describe(), fine.describe()


def test_locate_shows_the_sqnr_of_the_tensor_it_names(tmp_path):
    """Two files of one graph whose weight differs: locate, through the rows' runners, names the Mul
    and says its error as max abs, rel and SQNR, the numbers verify's comparison gives."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ptx.infer.locate.graph import LocateGraph
    from ptx.infer.locate.origin import locate
    from ptx.infer.locate.sweep import Side

    def net(w: float, path):
        nodes = [helper.make_node("Abs", ["x"], ["a"], name="abs"), helper.make_node("Mul", ["a", "w"], ["m"], name="mul"),
                 helper.make_node("Relu", ["m"], ["y"], name="relu")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                                  [numpy_helper.from_array(np.array(w, np.float32), "w")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))

    net(2.0, tmp_path / "a.onnx")
    net(2.02, tmp_path / "b.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    with LocateGraph.open(tmp_path / "a.onnx") as a, LocateGraph.open(tmp_path / "b.onnx") as b:
        found = locate(a, Side(a, feeds), Side(b, feeds, "ort-cpu", "b.onnx (ort-cpu)"), lambda n, d: TOL, "case", b)
    assert found.origin["node"] == "mul" and found.origin["sqnr_db"] == pytest.approx(40.0, abs=0.1), found.origin
    assert "rel 1.0e-02 (SQNR 40.0 dB)" in found.text(), found.text()
