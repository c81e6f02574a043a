"""Issue 51, "one world": a tutorial model is a model file with a contract, and every capability reaches
every model. What a user's model could not do (reduced precisions, its int8 twin's triage, a served name
with dots) and what a tutorial model could not (--against, --inputs, --seed, --strict, load() of its run
folder), each checked on both kinds through the one opening and the one verify."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptx.contract.names import model_name
from ptx.files import exists, is_dir, is_file
from ptx.infer import load
from ptx.infer.model.target import Target
from ptx.infer.runtime.openvino_runner import unavailable as openvino_unavailable
from ptx.infer.verify.verify import verify
from ptx_command import ptx


def classifier_onnx(path, classes: int = 4, seed: int = 0):
    """A user's own classifier: x [batch, 8] -> Gemm -> Relu -> Gemm -> scores [batch, classes]."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(8, 16)).astype(np.float32), rng.normal(size=(16, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["scores"])], "own",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_users_file_runs_openvino_bf16_judged_by_its_tensors(tmp_path):
    path = classifier_onnx(tmp_path / "own.onnx")
    report = verify(Target.of(path, verifying=True), backends=["ort-cpu", "openvino-bf16"], notice=lambda _: None)
    if openvino_unavailable():
        pytest.skip(f"openvino is not installed here: {openvino_unavailable()}")
    rows = {r.label: r for r in report.rows}
    if "openvino-bf16" not in rows:  # a CPU without bf16 instructions says so, never runs f32 under its name
        assert "no bf16 instructions" in report.skipped["openvino-bf16"]
        return
    bf16 = rows["openvino-bf16"]
    assert bf16.precision == "bf16" and bf16.against == "ort-cpu" and report.samples == 0
    assert bf16.outputs[0].decisions == 8  # class scores: judged by their argmax, the rule a file can have
    # either verdict is this CPU's bf16 arithmetic; the row was named, so NOT USABLE fails the command
    assert bf16.status in ("PASS", "NOT USABLE") and report.exit_status == (0 if bf16.status == "PASS" else 1)
    assert "class scores keep their argmax on >= 99% of rows" in report.table()


def test_a_users_int8_twin_is_found_beside_it_and_triaged(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = classifier_onnx(tmp_path / "own.onnx")
    target = Target.of(path)
    int8 = next(v for v in target.variants(["ort-cpu-int8"]))
    with pytest.raises(Exception, match=r"no own.int8.onnx beside own.onnx: run `ptx export .*own.onnx --format "
                                        r"onnx-int8` first"):
        target.file_for(int8)
    quantize_dynamic(str(path), str(tmp_path / "own.int8.onnx"), weight_type=QuantType.QInt8)
    assert target.file_for(int8) == tmp_path / "own.int8.onnx"
    report = verify(Target.of(path, verifying=True), backends=["ort-cpu", "ort-cpu-int8"], notice=lambda _: None)
    row = next(r for r in report.rows if r.label == "ort-cpu-int8")
    assert row.cases and row.precision == "int8" and not row.error
    result = ptx("verify", path, "--backends", "ort-cpu,ort-cpu-int8", "--locate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "triage: ort-cpu-int8 against ort-cpu, own.int8.onnx, on batch 5 of the cases verify fed" in result.stdout


def test_a_tutorial_model_takes_against_inputs_seed_and_strict(runs, tmp_path):
    root = runs.ready("convnet")
    other = root / "convnet" / "model.torchscript.pt"
    report = verify(Target.of("convnet", root=root, verifying=True),
                    backends=["eager", "ort-cpu"], against=Target.of(other), strict=True,
                    notice=lambda _: None)
    held = next(r for r in report.rows if r.backend == "model.torchscript.pt (torchscript-cpu)")
    assert held.ok and held.outputs and report.strict and report.exit_status == 0, report.table()
    seeded = verify(Target.of("convnet", root=root, verifying=True),
                    backends=["eager", "ort-cpu"], seed=3, notice=lambda _: None)
    assert seeded.samples == 0 and seeded.inputs.startswith("generated, seed 3") and seeded.ok
    saved = tmp_path / "cases.npz"
    result = ptx("verify", "convnet", "--root", root, "--backends", "eager,ort-cpu", "--samples", "50",
                 "--save-inputs", saved)
    assert result.returncode == 0, result.stdout + result.stderr
    again = ptx("verify", "convnet", "--root", root, "--backends", "eager,ort-cpu", "--inputs", saved, "--strict")
    assert again.returncode == 0 and "cases: 6 from cases.npz" in again.stdout, again.stdout + again.stderr
    both = ptx("verify", "convnet", "--root", root, "--inputs", saved, "--seed", "1")  # one source of inputs, not two
    assert both.returncode == 2 and both.stderr.strip().splitlines()[-1] == (
        "error: --inputs feeds your own samples; --seed is for generated ones: give one of them (see `ptx verify "
        "--help`)"), both.stderr


def test_load_takes_a_run_folder_as_run_does(runs, tmp_path):
    folder = tmp_path / "any-name"
    shutil.copytree(runs.trained("convnet"), folder)
    by_folder, by_run = load(folder), load("convnet", run=folder)
    assert by_folder.name == by_run.name == "convnet" and by_folder.path == by_run.path
    x = np.zeros((2, 1, 28, 28), np.float32)
    assert np.array_equal(by_folder.run({"input": x})["logits"], by_run.run({"input": x})["logits"])


def test_a_model_name_keeps_its_dots(tmp_path):
    path = classifier_onnx(tmp_path / "ch_ppocr_mobile_v2.0_cls_infer.onnx")
    assert model_name(path) == "ch_ppocr_mobile_v2.0_cls_infer"
    assert load(path).name == "ch_ppocr_mobile_v2.0_cls_infer"
    assert [model_name(n) for n in ("model.int8.onnx", "model.torchscript.pt", "net.pt2", "v1.2.pth")] == \
        ["model", "model", "net", "v1.2"]


def test_a_word_too_long_to_name_a_file_is_a_word():
    word = "a" * 5000
    assert not is_file(word) and not is_dir(word) and not exists(word)
    assert is_file(__file__) and is_dir("/") and exists(__file__)
