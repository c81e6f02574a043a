"""ort-cuda without a GPU: every registry model's ONNX export is placeable on ONNX Runtime's CUDA
provider, by ORT's own rules (infer/runtime/cuda_placement.py), and those rules are tested on graphs whose
answer is known. Torch-free: onnx, onnxruntime and numpy only (the runs fixture trains with torch)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptx.infer.runtime.cuda_placement import (NO_KERNEL, SHAPE_HEURISTIC, cuda_placement, kernel_registry,
                                      placement_of_graph)
from ptx.infer.model.target import Target
from ptx.models import get

RECURRENT_MODELS = ("lstm", "rnn-hello", "gru-classifier")


def make_model(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def tensor(name, elem=TensorProto.FLOAT, shape=("batch", 4)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def cpu_nodes(model) -> dict[str, str]:
    return {n.name: n.reason for n in placement_of_graph(model).on_cpu}


def test_the_kernel_table_names_the_onnxruntime_it_was_read_from():
    doc = kernel_registry()
    assert doc["generated_by"] == "scripts/ort_cuda_kernels.py" and doc["file"] == "docs/OperatorKernels.md"
    assert len(doc["onnxruntime_commit"]) == 40 and doc["onnxruntime_version"]
    reduce_prod = doc["ops"]["ai.onnx"]["ReduceProd"]["kernels"][0]["types"]["T"]
    assert "tensor(int32)" in reduce_prod and "tensor(int64)" not in reduce_prod  # the example


def test_the_shape_chain_goes_to_the_cpu_up_to_reshape():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape: Shape writes CPU memory; Gather, Unsqueeze
    and Concat read only it and small constants, so they follow it to the CPU; Reshape reads the
    shape from CPU memory by design and its data from the GPU, so it stays on CUDA. Shape itself has
    a CUDA kernel (its output lives on the CPU) and is not moved."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["b"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"], name="unsqueeze"),
             helper.make_node("Concat", ["b1", "minus_one"], ["new_shape"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "new_shape"], ["y"], name="reshape")]
    model = make_model(nodes, [tensor("x")], [tensor("y", shape=("batch", 4))],
                       [const("zero", 0), const("axes", [0]), const("minus_one", [-1])])
    assert cpu_nodes(model) == {"gather": SHAPE_HEURISTIC, "unsqueeze": SHAPE_HEURISTIC, "concat": SHAPE_HEURISTIC}


def test_an_expand_of_zeros_by_the_inputs_shape_puts_the_concat_on_the_cpu():
    """lstm's old h0: Shape -> Concat -> Expand. Expand reads its shape on the CPU, so only Concat moves."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Concat", ["one", "s"], ["shape3"], name="concat", axis=0),
             helper.make_node("Expand", ["zero", "shape3"], ["h0"], name="expand")]
    model = make_model(nodes, [tensor("x")], [tensor("h0", shape=(1, "batch", 4))],
                       [const("one", [1]), numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    assert cpu_nodes(model) == {"concat": SHAPE_HEURISTIC}


def test_a_node_without_a_cuda_kernel_is_named_with_its_types():
    nodes = [helper.make_node("ReduceProd", ["x", "axes"], ["p"], name="prod", keepdims=0),
             helper.make_node("Cast", ["p"], ["y"], name="cast", to=TensorProto.FLOAT)]
    model = make_model(nodes, [tensor("x", TensorProto.INT64)], [tensor("y", shape=("batch",))], [const("axes", [1])])
    placement = placement_of_graph(model)
    assert cpu_nodes(model) == {"prod": f"{NO_KERNEL} for ReduceProd(int64)"}
    assert placement.describe() == "1 of 2 nodes would run on the CPU: prod (ReduceProd): no CUDA kernel for ReduceProd(int64)"
    # The same graph in int32 has its kernel.
    int32 = make_model([nodes[0], nodes[1]], [tensor("x", TensorProto.INT32)], [tensor("y", shape=("batch",))],
                       [const("axes", [1])])
    assert placement_of_graph(int32).describe() == "all 2 nodes on CUDA"


@pytest.fixture(scope="module")
def decoder(tiny_decoders):
    """A Llama-shaped decoder exported with its cache (tests/tiny_decoders.py's, exported once for the run's
    workers): a dynamic past, and the shape arithmetic that comes with it."""
    return tiny_decoders["llama"][0]


def test_a_decoders_cpu_nodes_are_all_shape_arithmetic(decoder):
    """The static check explains every CPU node of a decoder exported with its cache as the shape
    heuristic's: no node without a CUDA kernel, so a plain ort-cuda session may open it (below)."""
    placed = cuda_placement(decoder)
    assert placed.on_cpu, "a decoder with a dynamic past has shape arithmetic"
    assert {n.reason for n in placed.on_cpu} == {SHAPE_HEURISTIC}, placed.describe(limit=20)


def test_shape_arithmetic_on_the_cpu_opens_a_plain_ort_cuda_session_and_nothing_else_does(decoder, monkeypatch):
    """A decoder keeps its shape arithmetic on the CPU, as ORT's heuristic wants (Qwen2-0.5B: 131
    nodes, refused on an H100 for them, 2026-11-26): a plain ort-cuda session opens as ORT places it;
    a CUDA-graph session, which cannot hold a CPU node, still refuses; a node the static check does not
    explain as shape arithmetic refuses both, named alone. ORT's placement is stood in for (no CUDA here)."""
    import onnxruntime as ort

    from ptx.infer.runtime import cuda_placement as placement

    shape_nodes = [f"{n.name} ({n.op_type})" for n in cuda_placement(decoder).on_cpu]

    def ort_places(extra=()):
        monkeypatch.setattr(placement, "node_placement", lambda ort, path, providers: {
            "CUDAExecutionProvider": ["matmul (MatMul)"], "CPUExecutionProvider": shape_nodes + list(extra)})

    ort_places()
    assert placement.cuda_placement_error(ort, decoder, [], [], shape_arithmetic_allowed=True) is None
    graph_refusal = placement.cuda_placement_error(ort, decoder, [], [], shape_arithmetic_allowed=False)
    assert graph_refusal.startswith(f"ort-cuda: {len(shape_nodes)} node(s) of model.onnx would run on the CPU")
    assert f"{shape_nodes[0]}: {SHAPE_HEURISTIC}" in graph_refusal and graph_refusal.endswith("use --backend ort-cpu")

    ort_places(extra=["mystery (Relu)"])
    refusal = placement.cuda_placement_error(ort, decoder, [], [], shape_arithmetic_allowed=True)
    assert refusal.startswith("ort-cuda: 1 node(s) of model.onnx would run on the CPU")
    assert "mystery (Relu): left on the CPU by ONNX Runtime" in refusal and SHAPE_HEURISTIC not in refusal


def test_a_kernel_less_node_spreads_to_the_cpu_only_when_it_is_reached_from_a_cpu_tensor():
    """As in fallback_cpu_capability.cc: a node without a CUDA kernel passes the CPU on to its
    consumers only when the walk from the CPU tensors reaches it. ReduceProd(int64) over the graph
    input stays a lone CPU node; over Shape's output (gru-classifier's old length computation) its
    consumer follows it, unless that consumer also reads a GPU tensor (Mul with Neg's output)."""
    def graph(source):
        nodes = [*source, helper.make_node("ReduceProd", ["v", "axes"], ["p"], name="prod", keepdims=0),
                 helper.make_node("Add", ["p", "one"], ["q"], name="add"),
                 helper.make_node("Neg", ["z"], ["n"], name="neg"),
                 helper.make_node("Mul", ["q", "n"], ["y"], name="mul")]
        return make_model(nodes, [tensor("x", TensorProto.INT64), tensor("z", TensorProto.INT64, ())],
                          [tensor("y", TensorProto.INT64, ())], [const("axes", [0]), const("one", 1)])

    over_input = graph([helper.make_node("Identity", ["x"], ["v"], name="identity")])
    assert cpu_nodes(over_input) == {"prod": f"{NO_KERNEL} for ReduceProd(int64)"}
    over_shape = graph([helper.make_node("Shape", ["x"], ["v"], name="shape")])
    assert cpu_nodes(over_shape) == {"prod": f"{NO_KERNEL} for ReduceProd(int64)", "add": SHAPE_HEURISTIC}


def test_a_gru_cudnn_cannot_run_and_a_cpu_sequence_lens_are_told_apart():
    x = tensor("x", shape=(5, "batch", 3))
    w, r, b = (numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in
               (("w", (1, 6, 3)), ("r", (1, 6, 2)), ("b", (1, 12))))
    plain = helper.make_node("GRU", ["x", "w", "r", "b"], ["y"], name="gru", hidden_size=2, linear_before_reset=1)
    y = tensor("y", shape=(5, 1, "batch", 2))
    assert placement_of_graph(make_model([plain], [x], [y], [w, r, b])).all_on_cuda
    unlike_cudnn = helper.make_node("GRU", ["x", "w", "r", "b"], ["y"], name="gru", hidden_size=2)
    assert "linear_before_reset" in cpu_nodes(make_model([unlike_cudnn], [x], [y], [w, r, b]))["gru"]


@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_recurrent_exports_have_no_shape_arithmetic(runs, name):
    graph = onnx.load(str(runs.trained(name) / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Shape", "Size", "TopK", "ConstantOfShape", "ReduceProd"}, ops
    recurrent = [n for n in graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert recurrent and all(len(n.input) <= 4 for n in recurrent)  # no sequence_lens, no initial state


def test_every_registry_model_is_placed_on_cuda_whole(runs, model_name):
    """The static CUDA-readiness check: ORT's basic-optimised graph of the model's export, every
    node with a CUDA kernel and none moved to the CPU by the shape heuristic. A model added to the
    registry inherits it."""
    placement = cuda_placement(runs.trained(model_name) / "model.onnx")
    assert placement.all_on_cuda, placement.describe()
    assert placement.nodes > 0


def test_gru_classifier_agrees_on_every_runtime_for_1000_test_words(runs):
    """No sequence_lens, so OpenVINO with dynamic shapes, onnx's reference evaluator and tract (each
    of which ignores or refuses a run-time one) give ONNX Runtime's answers."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from ptx.contract.transforms import to_model_input

    root = runs.ready("gru-classifier")
    path = root / "gru-classifier" / "model.onnx"
    spec = get("gru-classifier")
    words, _ = runs.test_samples("gru-classifier", 1000)
    x = to_model_input(words, spec.contract("words"))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = {"reference": ReferenceEvaluator(onnx.load(str(path))).run(None, {"input": x})[0]}
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        assert compiled.input(0).get_partial_shape().is_dynamic
        got["openvino"] = compiled({"input": x})[0]
    except ImportError:
        pass
    try:
        import tract

        model = tract.onnx().load(str(path))
        model.set_input_fact(0, f"{x.shape[0]},{x.shape[1]},i64")
        got["tract"] = model.into_model().into_runnable().run([x])[0].to_numpy()
    except ImportError:
        pass
    for runtime, out in got.items():
        assert (out.argmax(1) == want.argmax(1)).all(), runtime
        np.testing.assert_allclose(out, want, atol=1e-4, rtol=1e-3, err_msg=runtime)


def test_verify_shows_ort_cudas_static_placement_where_it_cannot_run(runs):
    from ptx.infer.runtime.ort_session import cuda_unavailable
    from ptx.infer.verify.verify import verify

    why = cuda_unavailable()
    if why is None:
        pytest.skip("ort-cuda runs here: verify compares it instead")
    report = verify(Target.of("lstm", root=runs.ready("lstm"), verifying=True),
                    backends=["ort-cpu", "ort-cuda"], samples=20, notice=lambda _: None)
    placed = cuda_placement(runs.trained("lstm") / "model.onnx").describe()
    assert placed.startswith("all ") and " nodes on CUDA" in placed
    # The f32 row and the tf32 row read the same file: both show its placement.
    assert report.static == {label: f"static placement: {placed}" for label in ("ort-cuda", "ort-cuda-tf32")}
    why = report.skipped["ort-cuda"]  # "no GPU on this machine", or ORT's own reason where a GPU is there
    assert f"ort-cuda: not run: {why}; static placement: {placed}" in report.table(all_rows=True).splitlines()
    # ort-cuda-int4 is the third: lstm has no int4 file, so its row has no placement to disagree with the others'
    assert f"3 CUDA rows: not run: {why}; static placement: {placed}; --all-rows lists them" in \
        report.table().splitlines()
    assert report.ok and report.exit_status == 0  # ort-cpu was compared; a row that did not run decides nothing
    from ptx.errors import NothingToCompareError

    with pytest.raises(NothingToCompareError):  # a static placement alone is not a comparison
        verify(Target.of("lstm", root=runs.ready("lstm"), verifying=True),
               backends=["ort-cuda"], samples=20, notice=lambda _: None)


def test_the_nodes_inside_if_bodies_are_counted_and_checked(tmp_path):
    """Issue 43: a graph whose real work sits inside If bodies was "all 2 nodes on CUDA"; the bodies'
    nodes are counted, and one without a CUDA kernel there is named with the node that holds it."""
    then_body = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                                   helper.make_node("Neg", ["r"], ["t"], name="neg")],
                                  "then", [], [tensor("t")])
    else_body = helper.make_graph([helper.make_node("Det", ["x"], ["d"], name="det_in_else"),
                                  helper.make_node("Identity", ["x"], ["e"], name="same")],
                                 "else", [], [tensor("e")])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="greater"),
             helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_body, else_branch=else_body)]
    model = make_model(nodes, [tensor("x", shape=(4, 4))], [tensor("y", shape=(4, 4))],
                       [const("zero", 0.0, np.float32)])
    placement = placement_of_graph(model)
    assert (placement.nodes, placement.inside) == (7, 4)
    assert [(n.name, n.op_type) for n in placement.on_cpu] == [("det_in_else in branch", "Det")]
    assert placement.describe().startswith("1 of 7 nodes would run on the CPU (4 of them inside If/Loop/Scan bodies): "
                                        "det_in_else in branch (Det): ")


def test_placement_says_when_onnx_runtimes_optimisations_changed_the_count(tmp_path):
    """Issue 43: inspect counted 134 nodes in its operators line and 132 in the placement line (read
    after ORT's basic optimisations, which fold constants): the placement says so."""
    nodes = [helper.make_node("Add", ["one", "one"], ["two"], name="folded"),  # constant-folded away
             helper.make_node("Mul", ["x", "two"], ["y"], name="mul")]
    path = tmp_path / "fold.onnx"
    onnx.save(make_model(nodes, [tensor("x")], [tensor("y")], [const("one", [1.0] * 4, np.float32)]), path)
    described = cuda_placement(path).describe()
    assert described == "all 1 nodes on CUDA (of the file's 2, after ONNX Runtime's basic optimisations)"
