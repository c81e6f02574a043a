"""Weight-only export of ONNX files as users' tools write them (a hostile-input probe's cases): a weight two
MatMuls share, a table a Gather and a MatMul both read, unnamed Gemms, a Gemm with alpha and beta, weights
also listed as graph inputs (IR 3), float64 weights, an embedding whose rows the block does not divide, and
block sizes past what onnxruntime's quantizer takes. Each is written and runs as the f32 file does (within
int4's rounding), or is refused in one line; none is a traceback."""
from __future__ import annotations

import numpy as np
import pytest

from ptx_command import ptx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)
AXES = numpy_helper.from_array(np.array([1], np.int64), "axes")  # a sequence's mean (ReduceMean's axes, opset 18)


def weight(name, *shape, dtype=np.float32):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(dtype), name)


def save(tmp_path, name, nodes, initializers, inputs=(("x", 64),), output=("y", 16), elem=TensorProto.FLOAT,
         ir_version=9, weights_as_inputs=False):
    ins = [helper.make_tensor_value_info(n, elem, ["batch", k]) for n, k in inputs]
    if weights_as_inputs:  # as IR 3's exporters wrote them: every initializer a graph input too
        ins += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, name, ins, [helper.make_tensor_value_info(output[0], elem, ["batch", output[1]])],
                              initializers)
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=ir_version), path)
    return path


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def export(path, *options):
    done = ptx("export", path, "--format", "onnx-int4", *options)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def relative_error(path, quantized, feeds):
    want, got = run(path, feeds), run(quantized, feeds)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def x(n=64):
    return {"x": RNG.standard_normal((3, n)).astype(np.float32)}


def test_a_weight_two_matmuls_share_is_quantized_once_and_read_by_both(tmp_path):
    path = save(tmp_path, "shared", [helper.make_node("MatMul", ["x", "w"], ["h"], name="first"),
                                     helper.make_node("Relu", ["h"], ["r"]),
                                     helper.make_node("MatMul", ["r", "w"], ["h2"], name="second"),
                                     helper.make_node("MatMul", ["h2", "out"], ["y"], name="head")],
                [weight("w", 64, 64), weight("out", 64, 16)])
    done = export(path)
    assert done.returncode == 0, done.stdout + done.stderr
    quantized = onnx.load(tmp_path / "shared.int4.onnx")
    readers = [n for n in quantized.graph.node if n.op_type == "MatMulNBits"]
    assert len(readers) == 3 and readers[0].input[1:] == readers[1].input[1:]  # one set of 4-bit tensors, read twice
    assert len({t.name for t in quantized.graph.initializer}) == len(quantized.graph.initializer)
    assert relative_error(path, tmp_path / "shared.int4.onnx", x()) < 0.25  # int4's rounding, not a wrong weight


def test_a_table_a_gather_and_a_matmul_both_read_gets_a_tensor_for_each(tmp_path):
    """The quantizer names its tensors after the weight: the Gather's blocks (along a row) and the MatMul's
    (along a column) were both E_Q4, and the file did not load."""
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("ReduceMean", ["h", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "E"], ["y"], name="scores")]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(nodes, "tied", [ids], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                    ["batch", 64])],
                              [weight("E", 64, 64), AXES])
    path = tmp_path / "tied.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    done = export(path)
    assert done.returncode == 0, done.stdout + done.stderr
    quantized = onnx.load(tmp_path / "tied.int4.onnx")
    assert {n.op_type for n in quantized.graph.node} >= {"GatherBlockQuantized", "MatMulNBits"}
    assert len({t.name for t in quantized.graph.initializer}) == len(quantized.graph.initializer)
    feeds = {"ids": RNG.integers(0, 64, (3, 5))}
    assert relative_error(path, tmp_path / "tied.int4.onnx", feeds) < 0.25
    eight = ptx("export", path, "--format", "onnx-int8w")  # its Gather is not quantized, said; the MatMul is
    assert eight.returncode == 0 and "the embedding's table f32 (a Gather reads one row per token)" in eight.stdout, \
        eight.stdout + eight.stderr
    assert relative_error(path, tmp_path / "tied.int8w.onnx", feeds) < 0.05


def test_unnamed_gemms_and_a_gemm_with_alpha_and_beta_become_matmuls(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),  # no names, as many tools write them
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], alpha=0.5, beta=2.0)]
    path = save(tmp_path, "gemms", nodes, [weight("w1", 64, 64), weight("b1", 64), weight("w2", 64, 16),
                                           weight("b2", 16)])
    done = export(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 MatMuls as MatMulNBits" in done.stdout and "left f32" not in done.stdout, done.stdout
    assert relative_error(path, tmp_path / "gemms.int4.onnx", x()) < 0.25  # alpha and beta kept: a planted drop
    # of either (the f32 file without them) is as far from the file as the scale says
    unscaled = save(tmp_path, "unscaled", [*nodes[:2], helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])],
                    [weight("w1", 64, 64), weight("b1", 64), weight("w2", 64, 16), weight("b2", 16)])
    assert relative_error(unscaled, tmp_path / "gemms.int4.onnx", x()) > 0.25


def test_weights_also_listed_as_graph_inputs_are_not_left_as_inputs(tmp_path):
    path = save(tmp_path, "ir3", [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [weight("w", 64, 16)],
                ir_version=7, weights_as_inputs=True)
    done = export(path)
    assert done.returncode == 0, done.stdout + done.stderr
    quantized = onnx.load(tmp_path / "ir3.int4.onnx")
    assert [i.name for i in quantized.graph.input] == ["x"]
    assert relative_error(path, tmp_path / "ir3.int4.onnx", x()) < 0.25


def test_float64_weights_are_refused_in_one_line_saying_why(tmp_path):
    path = save(tmp_path, "f64", [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
                [weight("w", 64, 16, dtype=np.float64)], elem=TensorProto.DOUBLE)
    done = export(path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "float64 weight left as it is (MatMulNBits takes float32 and float16 weights)" in done.stderr
    assert not (tmp_path / "f64.int4.onnx").exists()


def test_an_embedding_whose_rows_the_block_does_not_divide_stays_f32_and_says_so(tmp_path):
    """GatherBlockQuantized's blocks run along a row: OpenVINO refused a table of 40 columns in blocks of 32
    (onnxruntime read it), so such a table is left f32, said; the MatMuls are quantized."""
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("ReduceMean", ["h", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "s"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
                              [weight("E", 100, 40), weight("w", 40, 16), AXES])
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    done = export(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the embedding's table f32 (its rows of 40 are not a multiple of the block of 32)" in done.stdout
    ops = {n.op_type for n in onnx.load(tmp_path / "odd.int4.onnx").graph.node}
    assert "Gather" in ops and "GatherBlockQuantized" not in ops and "MatMulNBits" in ops


@pytest.mark.parametrize("size, said", [(512, "takes a power of two from 16 to 256"),
                                        (-1, "keeps blocks of 16 to 256 values"),
                                        (8, "takes a power of two from 16 to 256")])
def test_block_sizes_onnxruntime_does_not_take_are_refused_before_any_work(tmp_path, size, said):
    path = save(tmp_path, "mlp", [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [weight("w", 64, 16)])
    done = export(path, "--block-size", str(size))
    assert done.returncode == 2 and said in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "or -1" not in done.stderr  # onnx-int8w and onnx-int4 take no per-channel scale
    assert not (tmp_path / "mlp.int4.onnx").exists()
