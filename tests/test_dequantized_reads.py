"""export/formats/dequantized_reads.py: NNCF's per-channel 8-bit weights rewritten so that ONNX Runtime reads them in
8 bits (a head's DequantizeLinear blocked, fused into a MatMulNBits; an embedding's gathered before it is
dequantized), the values the same: bit for bit where no runtime fuses anything, and on OpenVINO."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptx.export.formats.dequantized_reads import dequantized_where_read

ort = pytest.importorskip("onnxruntime")

K, N, V, D = 96, 40, 50, 24  # K: blocks of 32 (96 is no multiple of 64 or 128)


def _graph(opset: int = 21, k: int = K) -> onnx.ModelProto:
    """A head (x [b, k] times a uint8 [k, N] weight, a scale and zero point per column) and an embedding (a uint8
    [V, D] table, a scale and zero point per row, gathered by ids), as NNCF writes them."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(0, 256, (k, N), dtype=np.uint8), "w"),
             numpy_helper.from_array((rng.random(N) * 0.02 + 0.001).astype(np.float32), "w_scale"),
             numpy_helper.from_array(rng.integers(100, 156, N, dtype=np.uint8), "w_zero"),
             numpy_helper.from_array(rng.integers(0, 256, (V, D), dtype=np.uint8), "table"),
             numpy_helper.from_array((rng.random(V) * 0.02 + 0.001).astype(np.float32), "table_scale"),
             numpy_helper.from_array(rng.integers(100, 156, V, dtype=np.uint8), "table_zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"], name="w_dq", axis=-1),
             helper.make_node("MatMul", ["x", "wf"], ["logits"], name="head"),
             helper.make_node("DequantizeLinear", ["table", "table_scale", "table_zero"], ["tf"], name="t_dq", axis=0),
             helper.make_node("Gather", ["tf", "ids"], ["embedded"], name="embed", axis=0)]
    graph = helper.make_graph(nodes, "nncf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k]),
                                              helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", N]),
                               helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["b", "s", D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _rewritten(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[int, int]]:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    made = dequantized_where_read(copy, None)
    onnx.checker.check_model(copy, full_check=True)
    return copy, made


def _feeds(k: int = K) -> dict:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((3, k)).astype(np.float32), "ids": rng.integers(0, V, (3, 5))}


def _run(proto, optimized: bool, tmp_path=None):
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if tmp_path is not None:
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, _feeds(proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value))


def test_the_values_are_the_same_bit_for_bit_where_nothing_is_fused():
    proto = _graph()
    rewritten, made = _rewritten(proto)
    assert made == (1, 1)
    for ours, theirs in zip(_run(rewritten, False), _run(proto, False)):
        assert np.array_equal(ours, theirs)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("DequantizeLinear") == 1 and ops.count("Gather") == 3  # the head's; the table, scale, zero
    assert {t.name for t in rewritten.graph.initializer} >= {"w_scale_per_block", "w_zero_per_block"}
    assert "w_scale" not in {t.name for t in rewritten.graph.initializer}  # the per-column scales no longer read


def test_onnx_runtime_reads_the_rewritten_weights_in_8_bits_and_the_written_ones_in_float32(tmp_path):
    """ONNX Runtime's own optimizer: the rewritten head becomes a MatMulNBits and no DequantizeLinear is left to run
    at every run; NNCF's form keeps both DequantizeLinears (a float32 copy of each weight, each run)."""
    def optimized_ops(proto):
        _run(proto, True, tmp_path)
        return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)

    ours, theirs = optimized_ops(_rewritten(_graph())[0]), optimized_ops(_graph())
    assert ours["MatMulNBits"] == 1 and ours["DequantizeLinear"] == 0
    assert theirs["MatMulNBits"] == 0 and theirs["DequantizeLinear"] == 2
    fused, written = _run(_rewritten(_graph())[0], True), _run(_graph(), False)
    np.testing.assert_allclose(fused[0], written[0], rtol=0.02, atol=0.02 * np.abs(written[0]).max())
    assert np.array_equal(fused[1], written[1])


def test_below_opset_21_or_with_no_block_that_divides_k_the_head_is_left_as_nncf_wrote_it():
    _, made = _rewritten(_graph(opset=18))
    assert made == (0, 1)  # no block_size before opset 21: the table is still gathered first
    _, made = _rewritten(_graph(k=24))  # 24: none of 128, 64, 32 or 16 divides it
    assert made == (0, 1)


def test_openvino_reads_the_rewritten_file_as_it_reads_nncf_s():
    ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")
    core = ov.Core()

    def run(proto):
        compiled = core.compile_model(core.read_model(proto.SerializeToString()), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(_feeds())
        return [result[compiled.output(i)] for i in range(2)]

    for ours, theirs in zip(run(_rewritten(_graph())[0]), run(_graph())):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


def test_scales_kept_in_a_data_file_are_read_from_it(tmp_path):
    """NNCF's tensors as an export holds them, in a data file beside the graph: the repeated scales are read from it
    and the file runs as the one written inside."""
    from onnx.external_data_helper import load_external_data_for_model

    onnx.save_model(_graph(), str(tmp_path / "nncf.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="nncf.onnx.data", size_threshold=0)
    proto = onnx.load(str(tmp_path / "nncf.onnx"), load_external_data=False)
    assert all(t.data_location == t.EXTERNAL for t in proto.graph.initializer)
    assert dequantized_where_read(proto, tmp_path) == (1, 1)
    load_external_data_for_model(proto, str(tmp_path))
    for ours, theirs in zip(_run(proto, False), _run(_graph(), False)):
        assert np.array_equal(ours, theirs)


def _with_group_norm(opset: int, inside_a_branch: bool) -> onnx.ModelProto:
    """A graph at ``opset`` holding a GroupNormalization (whose scale and bias meant one per group before opset 21,
    one per channel from it), at its top or inside an If's branch."""
    norm = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)
    inits = [numpy_helper.from_array(np.ones(2, np.float32), "s"), numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    value = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])]
    if inside_a_branch:
        branch = helper.make_graph([norm], "branch", [], value)
        top = [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)]
        inputs = [helper.make_tensor_value_info("c", TensorProto.BOOL, [])]
    else:
        top, inputs = [norm], []
    graph = helper.make_graph(top, "g", [*inputs, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3])],
                              value, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


@pytest.mark.parametrize("inside_a_branch", [False, True])
def test_the_opset_is_raised_to_21_only_where_no_op_changes_its_meaning(inside_a_branch):
    """openvino-int8w's weights are read blocked (opset 21's block_size) where its opset can be raised: not where an
    op of the graph (a subgraph's too) would compute something else at 21; a graph of NNCF's ops alone is raised."""
    from ptx.errors import PtxError
    from ptx.export.formats.weight_only import ops_changed_by, raise_opset

    held = _with_group_norm(18, inside_a_branch)
    assert ops_changed_by(held, 21) == ["GroupNormalization"]
    with pytest.raises(PtxError, match="needs opset 21, where GroupNormalization would change meaning: export the "
                                       "model at opset 21"):
        raise_opset(held, 21)
    assert held.opset_import[0].version == 18
    assert ops_changed_by(_with_group_norm(21, inside_a_branch), 21) == []  # already 21's meaning
    plain = _graph(opset=18)
    assert ops_changed_by(plain, 21) == []
    raise_opset(plain, 21)
    assert plain.opset_import[0].version == 21 and _rewritten(plain)[1] == (1, 1)  # now the head is blocked too


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_group_norm", [False, True])
def test_onnx_int4_keeps_a_table_f32_where_its_int4_form_would_change_an_op_s_meaning(tmp_path, with_group_norm,
                                                                                       symmetric):
    """An asymmetric onnx-int4's embedding table (GatherBlockQuantized's uint4 type) needs opset 21: where a
    GroupNormalization would change meaning there, the table stays f32 and the export says why; elsewhere it is
    quantized, the opset 21. A symmetric file's table is packed bytes (uint8, onnx_tables.py), of any opset: it is
    quantized, the opset left as it was, its rows as the kernel quantizes the same values as a MatMul weight."""
    from ptx.export.formats.onnx_weights import quantize_in_place

    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, 32)).astype(np.float32)
    inits = [numpy_helper.from_array(table, "table"),
             numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0), helper.make_node("MatMul", ["e", "w"], ["y"])]
    model = _with_group_norm(18, inside_a_branch=False) if with_group_norm else _graph(opset=18)
    model.graph.initializer.extend(inits)
    model.graph.node.extend(nodes)
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3]))
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64]))
    kept = quantize_in_place(model, tmp_path, 4, 32, symmetric, 4)
    ops = [n.op_type for n in model.graph.node]
    assert "MatMulNBits" in ops
    if symmetric:
        assert kept == [] and "GatherBlockQuantized" in ops and model.opset_import[0].version == 18
        gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
        data = next(t for t in model.graph.initializer if t.name == gather.input[0])
        assert data.data_type == TensorProto.UINT8 and list(data.dims) == [64, 16]
        # each row: 4-bit codes about zero point 8, two a byte (the first in the low nibble), a scale per block: the
        # codes and scales the quantizer's own Gather path makes (signed int4) of these values (no ties among them)
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

        codes = np.frombuffer(_bytes(data, tmp_path), np.uint8).reshape(64, 16)
        scales = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == gather.input[2]),
                                       str(tmp_path))
        theirs, their_scales, _ = DefaultWeightOnlyQuantizer.quantize_ndarray(table, 1, 32, True)
        assert np.array_equal(codes.reshape(-1) ^ 0x88, theirs) and np.array_equal(scales, their_scales)
    elif with_group_norm:
        assert kept == ["the embedding's table f32 (its int4 form needs opset 21, where GroupNormalization would "
                        "change meaning)"] and "GatherBlockQuantized" not in ops and model.opset_import[0].version == 18
    else:
        assert kept == [] and "GatherBlockQuantized" in ops and model.opset_import[0].version == 21


def _bytes(tensor, folder) -> bytes:
    """An initializer's bytes, inside it or in ``folder``'s data file."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    where = {e.key: e.value for e in tensor.external_data}
    with open(folder / where["location"], "rb") as handle:
        handle.seek(int(where.get("offset", 0)))
        return handle.read(int(where["length"]))


def test_a_graph_below_opset_18_is_not_raised_and_a_function_s_imports_are():
    """Below opset 18 many ops changed meaning on the way (ReduceMean's axes became an input at 18): such a graph is
    not raised (openvino-int8w keeps it; an int4 file is refused); a graph raised from 18 raises its functions'
    own imports with it, or the checker refuses the file."""
    from ptx.errors import PtxError
    from ptx.export.formats.weight_only import ops_changed_by, raise_opset

    old = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])]), opset_imports=[helper.make_opsetid("", 14)],
        ir_version=8)
    assert ops_changed_by(old, 21) == ["its opset-14 ops"]
    with pytest.raises(PtxError, match="its opset-14 ops would change meaning"):
        raise_opset(old, 21)
    assert old.opset_import[0].version == 14
    with_function = _graph(opset=18)
    double = helper.make_function("local", "double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                                  [helper.make_opsetid("", 18)])
    with_function.functions.append(double)
    with_function.opset_import.append(helper.make_opsetid("local", 1))
    with_function.graph.node.append(helper.make_node("double", ["logits"], ["twice"], domain="local"))
    with_function.graph.output.append(helper.make_tensor_value_info("twice", TensorProto.FLOAT, ["b", N]))
    raise_opset(with_function, 21)
    assert [e.version for e in with_function.functions[0].opset_import if e.domain == ""] == [21]
    onnx.checker.check_model(with_function, full_check=True)


def _conv_graph(scale_dims: list[int], axis: int = 0) -> onnx.ModelProto:
    """A convolution's uint8 weight [8, 3, 3, 3] dequantized per output channel with its scale and zero point shaped
    ``scale_dims``, as NNCF writes them ([8, 1, 1]), then the convolution."""
    rng = np.random.default_rng(2)
    count = int(np.prod(scale_dims))
    inits = [numpy_helper.from_array(rng.integers(0, 256, (8, 3, 3, 3), dtype=np.uint8), "w"),
             numpy_helper.from_array((rng.random(count) * 0.02 + 0.001).astype(np.float32).reshape(scale_dims), "s"),
             numpy_helper.from_array(rng.integers(100, 156, count, dtype=np.uint8).reshape(scale_dims), "z")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], axis=axis),
             helper.make_node("Conv", ["x", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_a_convolution_s_per_channel_scales_are_made_1d_and_read_as_before(tmp_path):
    """NNCF's [C, 1, 1] scale of a convolution's weight (which OpenVINO's ONNX reader refused, and opset 21 would read
    as blocks) is made the per-axis [C]: the same weights dequantized, OpenVINO reads the file; a scale whose
    channels lie on another axis than the node's is left as it is."""
    from ptx.export.formats.dequantized_reads import per_channel_scales_made_1d

    model = _conv_graph([8, 1, 1])
    weight, scale, zero = (numpy_helper.to_array(t) for t in model.graph.initializer)
    want = (weight.astype(np.float32) - zero.reshape(8, 1, 1, 1)) * scale.reshape(8, 1, 1, 1)
    assert per_channel_scales_made_1d(model) == 1
    assert [list(t.dims) for t in model.graph.initializer[1:]] == [[8], [8]]
    onnx.checker.check_model(model, full_check=True)
    model.graph.output.append(helper.make_tensor_value_info("wf", TensorProto.FLOAT, [8, 3, 3, 3]))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    expected, dequantized = ort.InferenceSession(model.SerializeToString(), options,
                                                 providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.array_equal(dequantized, want)  # the same weights, bit for bit
    try:
        import openvino as ov
    except ImportError:
        ov = None
    if ov is not None:  # the file OpenVINO's reader refused before
        path = tmp_path / "conv.onnx"
        onnx.save(model, path)
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # not bf16
        assert np.allclose(compiled(feeds)[compiled.output("y")], expected, atol=1e-4)
    elsewhere = _conv_graph([8, 1, 1], axis=1)  # the node's axis is 1, the scale's channels on 0: not that form
    assert per_channel_scales_made_1d(elsewhere) == 0
    assert [list(t.dims) for t in elsewhere.graph.initializer[1:]] == [[8, 1, 1], [8, 1, 1]]


@pytest.mark.parametrize("bits,symmetric,level", [(4, True, 4), (4, False, 0), (8, True, 4), (8, False, 1)])
def test_a_matmul_weight_quantized_from_its_array_is_what_the_quantizer_makes_of_its_initializer(bits, symmetric, level):
    """onnx_weights._matmul_nbits (the quantizer's kernel given the weight as an array, its node made as the quantizer
    makes it) against the quantizer's own quantize() of the same weight as an initializer: the same node (op,
    inputs, attributes, name) and tensors, byte for byte, at K not a whole number of blocks too. A change in
    onnxruntime's node fails here, not in a file."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, DefaultWeightOnlyQuantizer

    from ptx.export.formats.onnx_weights import _matmul_nbits

    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=symmetric, accuracy_level=level, quant_format=QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",), quant_axes=(("MatMul", 0),), bits=bits))
    weight = np.random.default_rng(bits).standard_normal((80, 48)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")
    graph = helper.make_graph([], "alone", [], [], [numpy_helper.from_array(weight, "w")])
    theirs = quantizer.quantize(node, [graph])
    ours, tensors = _matmul_nbits(quantizer, node, "w", weight)
    assert [n.SerializeToString() for n in ours] == [n.SerializeToString() for n in theirs]
    assert [t.SerializeToString() for t in tensors] == [t.SerializeToString() for t in graph.initializer[1:]]


def test_a_table_two_gathers_read_is_packed_once_in_pieces_and_gathers_its_rows_on_onnx_runtime(tmp_path, monkeypatch):
    """A symmetric 4-bit table read by two Gathers: one packed copy both GatherBlockQuantized nodes read, made in
    pieces of rows where the table is past PIECE_BYTES (here lowered to a few rows), joined; ONNX Runtime's rows are
    the table's within half a step (no value of this table lies at the clipped end of its block's range by more)."""
    import onnxruntime

    from ptx.export.formats import onnx_weights

    monkeypatch.setattr(onnx_weights, "PIECE_BYTES", 4 * 32 * 24)  # pieces of 24 rows: 96 rows in 4
    rng = np.random.default_rng(1)
    table = rng.uniform(-1, 1, (96, 32)).astype(np.float32)
    table[:, 0] = 1.0  # each block's largest value positive and at its end: symmetric codes clip nothing else
    nodes = [helper.make_node("Gather", ["table", "ids"], ["a"], name="first"),
             helper.make_node("Gather", ["table", "ids"], ["b"], name="second")]
    graph = helper.make_graph(nodes, "two-gathers", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 32]) for o in "ab"],
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    assert onnx_weights.quantize_in_place(model, None, 4, 32, True, 4) == []
    gathers = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(gathers) == 2 and gathers[0].input[0] == gathers[1].input[0] and gathers[0].name != gathers[1].name
    packed = [t for t in model.graph.initializer if t.data_type == TensorProto.UINT8]
    assert len(packed) == 1 and list(packed[0].dims) == [96, 16]
    ids = np.array([0, 95], dtype=np.int64)
    a, b = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"ids": ids})
    assert np.array_equal(a, b) and np.abs(a - table[ids]).max() <= 1 / 7 / 2 + 1e-6  # scale 1/7: 1.0 is code 7


def test_a_matmul_weight_of_leading_unit_dims_is_quantized_as_its_matrix_is():
    """A [1, K, N] weight (the quantizer squeezes it, and adds a Reshape of its output with shape constants of no
    dims): quantized whole, as its [K, N] matrix is, the same answers on ONNX Runtime (it stopped on an IndexError)."""
    import onnxruntime

    from ptx.export.formats.onnx_weights import quantize_in_place

    weight = np.random.default_rng(0).standard_normal((1, 64, 40)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((1, 3, 64)).astype(np.float32)
    answers = []
    for w in (weight, weight[0]):
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        assert quantize_in_place(model, None, 4, 32, True, 4) == []
        assert "MatMulNBits" in [n.op_type for n in model.graph.node]
        answers.append(onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0])
    assert answers[0].shape == answers[1].shape == (1, 3, 40) and np.array_equal(*answers)
