"""Issue 58's smaller items and issue 59's export line, each reproduced as the user met it first:
bench's batch sizes with --inputs, --topk for a file of scores, a module's served name, inspect's
Constant-node weights, an answer whose shape contradicts the declared one, and the `ptx verify URL`
line a Triton or KServe export prints."""
from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import serving
from ptx_command import ptx

TIMEOUT = 240


def save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def matmul(path: Path, x_shape=("batch", 8)) -> Path:
    """y = x @ w, w 8x5: five scores per row."""
    w = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(8, 5) / 40, "w")
    return save(path, [helper.make_node("MatMul", ["x", "w"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_shape[0], 5])], [w])


# -- bench: the batch sizes asked for, with the user's samples -----------------------------------


def test_bench_times_the_samples_at_each_batch_size_asked(tmp_path):
    """`bench --inputs x16.npz --batch-sizes 1,16` timed batch 16 only and never said so: now the
    samples are cut (batch 1: the first) or repeated (batch 40), and the note says which."""
    model = matmul(tmp_path / "m.onnx")
    np.savez(tmp_path / "x16.npz", x=np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32))
    done = ptx("bench", model, "--inputs", tmp_path / "x16.npz", "--batch-sizes", "1,16,40", "--backends", "ort-cpu",
               "--seconds", "0.02", "--rounds", "1", "--warmup", "1", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert sorted({r["batch"] for r in doc["rows"] if r["runner"] == "ort-cpu"}) == [1, 16, 40]
    assert "timed on the 16 samples given (x16.npz) at batch 1 (the first sample), 16 (all of them), 40 (repeated " \
           "2.5x)" in doc["notes"]
    # no --batch-sizes: the samples' own batch, and the note says how to time others
    done = ptx("bench", model, "--inputs", tmp_path / "x16.npz", "--backends", "ort-cpu", "--seconds", "0.02",
               "--rounds", "1", "--warmup", "1", "--json")
    doc = json.loads(done.stdout)
    assert {r["batch"] for r in doc["rows"]} == {16}
    assert any("at their own batch (16; --batch-sizes cuts or repeats them)" in n for n in doc["notes"]), doc["notes"]


def test_bench_says_which_batch_sizes_it_dropped_and_why(tmp_path):
    from ptx.infer.bench.timing import bench
    from ptx.infer.model.target import Target

    fixed = matmul(tmp_path / "fixed.onnx", (4, 8))  # no batch axis: nothing to cut or repeat
    np.save(tmp_path / "x4.npy", np.ones((4, 8), np.float32))
    result = bench(Target.of(fixed), backends=["ort-cpu"], batch_sizes=(1, 16), input_files=[tmp_path / "x4.npy"],
                   seconds=0.01, rounds=1, warmup=0, bare=False)
    assert {r.batch for r in result.rows} == {1}  # a model without a batch axis: its row says batch 1
    assert result.notes == ["timed on the samples given (x4.npy) at their own shape: --batch-sizes 1,16 dropped, as "
                            "no input of the model has a batch axis to cut or repeat"]
    # two cases of different widths cannot be joined into one batch to cut
    two = save(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])])
    np.savez(tmp_path / "two.npz", **{"x:0": np.ones((2, 3), np.float32), "x:1": np.ones((5, 4), np.float32)})
    result = bench(Target.of(two, options={"batch_axes": {"x": 0}}), backends=["ort-cpu"], batch_sizes=(1, 8),
                   input_files=[tmp_path / "two.npz"],
                   seconds=0.01, rounds=1, warmup=0, bare=False)
    assert sorted(r.batch for r in result.rows) == [2, 5]
    assert "--batch-sizes 1,8 dropped, as the cases differ in a non-batch axis" in result.notes[0]


# -- predict --topk: a file whose output is scores ------------------------------------------------


def test_topk_for_a_model_file_whose_output_is_scores(tmp_path):
    model = matmul(tmp_path / "scores.onnx")
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    want = x @ (np.arange(40, dtype=np.float32).reshape(8, 5) / 40)
    done = ptx("predict", model, tmp_path / "in.npz", "--topk", "2", "--json")
    assert done.returncode == 0, done.stderr  # was: "--topk is for the tutorial models' answers"
    top = json.loads(done.stdout)["results"][0]["outputs"]["y"]["topk"]
    assert [[i for i, _ in row] for row in top] == np.argsort(-want, -1)[:, :2].tolist()
    np.testing.assert_allclose([[s for _, s in row] for row in top], -np.sort(-want, -1)[:, :2], rtol=1e-6)
    text = ptx("predict", model, tmp_path / "in.npz", "--topk", "2")
    assert text.returncode == 0 and re.search(r"top 2 per row \(index:score\) \d:[-\d.]+ \d:[-\d.]+ \| ", text.stdout)
    # a model whose outputs hold no scores: one line, before anything runs
    ids = save(tmp_path / "ids.onnx", [helper.make_node("Identity", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 4])],
               [helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", 4])])
    np.savez(tmp_path / "ids.npz", x=np.ones((2, 4), np.int64))
    refused = ptx("predict", ids, tmp_path / "ids.npz", "--topk", "2")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: --topk 2: no output of ids is a score vector (floats whose last axis holds 2 or more scores): it "
        "answers y int64 [batch, 4]; leave --topk out"), refused.stderr



def test_scores_with_a_sequence_axis_are_summarised_per_position_not_per_row():
    """An LM's [batch, seq, vocab] logits: argmax and top-k are taken per token position, and said so (it
    said "per row" with batch x seq rows, which a user reads as one per sample)."""
    from ptx.infer.predict.named_outputs import summarize, summary_line

    logits = np.random.default_rng(0).normal(size=(2, 3, 7)).astype(np.float32)
    line = summary_line("in.npz", "logits", summarize(logits, 0, topk=2))
    assert re.search(r"argmax per position( \d){6}, top 2 per position \(index:score\) ", line), line
    assert len(summarize(logits, 0)["argmax"]) == 6
    scores = summary_line("in.npz", "y", summarize(logits[:, 0], 0, topk=2))
    assert "argmax per row" in scores and "top 2 per row" in scores, scores

# -- a module's served name ---------------------------------------------------------------------


def test_a_module_exported_under_another_folder_is_served_by_its_factorys_name(tmp_path):
    (tmp_path / "net.py").write_text("import torch\n\n\ndef classifier():\n    torch.manual_seed(0)\n"
                                     "    return torch.nn.Linear(4, 3)\n")
    done = ptx("export", "--module", "net.py:classifier", "--input", "x=batchx4", "--out", "exp1", "--format", "onnx",
               cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with serving.running(tmp_path, tmp_path / "exp1" / "model.onnx") as server:
        with urllib.request.urlopen(f"{server.url}/v2/models/classifier", timeout=30) as response:
            assert json.loads(response.read())["name"] == "classifier"  # was served as "model"
    with serving.running(tmp_path, tmp_path / "exp1" / "model.onnx", args=("--name", "mine")) as server:
        with urllib.request.urlopen(f"{server.url}/v2/models/mine", timeout=30) as response:
            assert json.loads(response.read())["name"] == "mine"


# -- inspect: weights in Constant nodes ---------------------------------------------------------


def test_inspect_counts_the_constant_nodes_that_hold_weights(tmp_path):
    """A graph whose weights are Constant nodes (no initializer) said "0 initializers and Constant
    nodes": the nodes are counted now."""
    w = numpy_helper.from_array(np.ones((8, 5), np.float32), "w")
    b = numpy_helper.from_array(np.ones(5, np.float32), "b")
    model = save(tmp_path / "constants.onnx",
                 [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("Constant", [], ["b"], value=b),
                  helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])])
    done = ptx("inspect", model, "--json")
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)["graph"]
    assert (graph["initializers"], graph["constant_nodes"], graph["parameters"]) == (0, 2, 45)
    assert "parameters: 45 values in 0 initializers and 2 Constant nodes" in ptx("inspect", model).stdout


# -- an answer whose shape contradicts the declared one ------------------------------------------


@pytest.mark.parametrize("declared, said", [([1, "seqlen"], "[1, seqlen]"), ([1, 1, 8], "[1, 1, 8]")])
def test_an_output_shape_the_runtime_contradicts_is_flagged_by_verify_and_inspect(tmp_path, declared, said):
    """A file declaring output [1, seqlen] that returns [20, 1, 8210] was never flagged: ONNX
    Runtime drops a declared shape of another rank (and keeps one of the same rank, fixed sizes
    and all), so the answers are held to the graph's declaration."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    model = save(tmp_path / "lies.onnx", [helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)], [axes])
    verified = ptx("verify", model, "--backends", "ort-cpu")
    # the first answer seen says it: the shape certificate's probe at batch 1 runs before the cases
    lines = [re.sub(r"as \[\d+, 1, 8\]", "as [N, 1, 8]", ln) for ln in verified.stdout.splitlines() if "declares it" in ln]
    assert lines == [f"warning: lies on ort-cpu returned output 'y' as [N, 1, 8], but the model declares it {said}: "
                     "its declared output shapes are wrong (trust the answers' shapes; a server's metadata and a "
                     "Triton config made from the declaration will be too)"], verified.stdout
    inspected = ptx("inspect", model)
    assert inspected.returncode == 0, inspected.stderr
    assert [ln for ln in inspected.stdout.splitlines() if "declares it" in ln] == \
        [lines[0].replace("[N, 1, 8]", "[2, 1, 8]")]
    honest = matmul(tmp_path / "honest.onnx")  # an answer as declared says nothing
    assert "declares it" not in ptx("verify", honest, "--backends", "ort-cpu").stdout + ptx("inspect", honest).stdout


def test_answers_are_checked_only_at_first_so_timing_pays_nothing(tmp_path):
    from ptx.infer import load

    model = load(matmul(tmp_path / "m.onnx"))
    for _ in range(5):
        model.run({"x": np.ones((2, 8), np.float32)})
    assert model.runner.contradiction is None and model.runner._shape_checks == 0


# -- issue 59: the `ptx verify URL` line of a deployment folder -----------------------------------


def test_triton_and_kserve_exports_print_the_verify_line_to_run_once_served(tmp_path, monkeypatch):
    model = matmul(tmp_path / "scores.onnx")
    done = ptx("export", model, "--format", "triton", "--out", "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "verify it once served: ptx verify http://HOST:8000/v2/models/scores --against repo/scores/1/model.onnx  "
        "(HOST: where `tritonserver --model-repository repo` runs)")
    assert (tmp_path / "repo" / "scores" / "1" / "model.onnx").is_file()

    import ptx.export.kserve as kserve
    from ptx.export.sources import file_source
    from ptx.infer import load

    monkeypatch.setattr(kserve, "build_wheel", lambda into: None)  # the image's wheel: tests/test_kserve.py's
    said = []
    out = kserve.export_kserve(file_source(model, "onnx"), tmp_path / "deploy", log=said.append)
    placed = out / "models" / "scores" / "model.onnx"
    assert placed.is_file() and said[-1] == (
        f"verify it once served: ptx verify http://HOST:PORT/v2/models/scores --against {placed} --token TOKEN  "
        "(HOST:PORT: the URL `kubectl get inferenceservice scores` prints, with its port (80 for http://); TOKEN: the "
        "secret scores-token's)")


def test_a_cpp_error_from_torch_is_said_by_its_message_not_the_last_frame_of_its_backtrace():
    """An AOTInductor kernel's bounds check (a pt2 BERT fed a longer sequence than its position
    table) raises the error first and c10's backtrace after it: the one line is the error."""
    from ptx.infer.runtime.torch_runner import torch_complaint

    raised = RuntimeError("index out of bounds: 0 <= tmp13 < 64L\nException raised from cpp_fused_add_embedding_0 at "
                          "/tmp/k.cpp:48 (most recent call first):\n<omitting python frames>\nframe #0: f + 0x1 (0x7f in "
                          "libtorch.so)\nframe #31: _start + 0x21 (0x55 in python)")
    assert torch_complaint(raised) == "index out of bounds: 0 <= tmp13 < 64L"
    scripted = RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript:\n"
                            "  File \"code.py\", line 3\nRuntimeError: The size of tensor a (5) must match (4)")
    assert torch_complaint(scripted) == "RuntimeError: The size of tensor a (5) must match (4)"


def test_a_module_factory_given_as_name_is_told_to_go_through_module(tmp_path):
    """`ptx export net.py:build --input x=...` (--module left out) was refused as a tutorial model's wrong
    --input, and verify, predict, serve and bench called it an unknown model: each now says it is a factory
    and what to type."""
    (tmp_path / "net.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n")
    spec = str(tmp_path / "net.py") + ":build"
    export = ptx("export", spec, "--input", "x=batchx4")
    assert export.returncode == 2 and export.stderr.strip() == (
        f"error: {spec}: an nn.Module's factory, not a model NAME or file; give it with --module: "
        f"`ptx export --module {spec} --out DIR`"), export.stderr
    for args in (["verify", spec], ["predict", "--model", spec, "x.npz"], ["serve", spec]):
        done = ptx(*args)
        assert done.returncode == 2 and done.stderr.strip() == (
            f"error: {spec}: an nn.Module's factory, not a model NAME or file; export it first (`ptx export "
            f"--module {spec} --out DIR`), then give DIR's model file"), (args, done.stderr)
    missing = ptx("bench", "gone.py:build")
    assert missing.returncode == 2 and "gone.py:build: an nn.Module's factory (gone.py: no such file)" in missing.stderr
