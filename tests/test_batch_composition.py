"""Issue 44, item 6: a sample's answer alone against its answer inside a batch of others
(infer/verify/batch_composition.py), on ONNX Runtime through ptx's runner: a model that normalises over the
batch is caught; one that treats each sample on its own passes; a model without a batch is skipped."""
from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import urllib.request

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import serving
from ptx.contract.schema import Tolerance
from ptx.infer import load
from ptx.infer.verify.batch_composition import check_batch_composition
from ptx.infer.model.target import Target

TOLERANCE = Tolerance(1e-5, 1e-4)


def batch_mean_model(tmp_path):
    """y = x - mean(x over the batch): a normalisation left in training mode."""
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    return save(tmp_path, "batchnorm_in_training", [helper.make_node("ReduceMean", ["x", "axes"], ["mean"]),
                                                    helper.make_node("Sub", ["x", "mean"], ["y"])],
                ["batch", 4], ["batch", 4], [axes])


def linear_model(tmp_path):
    weight = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32), "w")
    return save(tmp_path, "linear", [helper.make_node("MatMul", ["x", "w"], ["y"])], ["batch", 4], ["batch", 3],
                [weight])


def save(tmp_path, name, nodes, x_shape, y_shape, initializers=()):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              initializer=list(initializers))
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return load(path)


def check(model, batch=6):
    x = {"x": np.random.default_rng(0).normal(size=(batch, 4)).astype(np.float32)}
    return check_batch_composition(model.run, model.runner.signature, x, model.run(x), lambda _: TOLERANCE)


def test_a_model_that_normalises_over_its_batch_is_caught(tmp_path):
    result = check(batch_mean_model(tmp_path))
    assert not result.ok and result.alone == [0, 3, 5] and result.outputs[0].beyond > 0
    assert result.summary().startswith("sample answers depend on the batch: samples 0, 3, 5 alone differ from "
                                       "their rows in a batch of 6: y: max abs"), result.summary()


def test_a_model_that_treats_each_sample_alone_passes(tmp_path):
    result = check(linear_model(tmp_path))
    assert result.ok and result.outputs[0].compared == 9
    assert result.summary().startswith("samples 0, 3, 5 alone = their rows in a batch of 6 (max abs")


@pytest.mark.parametrize("x_shape, batch, why", [([6, 4], 6, "the model has no batch axis"),
                                                  (["batch", 4], 1, "a batch of 1: nothing to compose")])
def test_nothing_to_compose_is_said_not_judged(tmp_path, x_shape, batch, why):
    model = save(tmp_path, "relu", [helper.make_node("Relu", ["x"], ["y"])], x_shape, x_shape)
    result = check(model, batch)
    assert result.ok and result.skipped == why and result.summary() == f"not checked: {why}"


def test_serve_under_dynamic_batching_answers_each_request_as_predict_answers_it_alone(tmp_path):
    """Concurrent clients, one sample each, joined by the server's batcher: the linear model answers
    every request as `ptx predict` (the model run alone) does; the batch-dependent model, served
    the same way, does not, so the comparison can tell them apart."""
    models = {"linear": linear_model(tmp_path), "batchnorm_in_training": batch_mean_model(tmp_path)}
    samples = np.random.default_rng(2).normal(size=(24, 1, 4)).astype(np.float32)
    with serving.running(tmp_path, *[str(tmp_path / f"{n}.onnx") for n in models],
                         args=("--max-delay-ms", 50, "--max-batch-size", 8)) as server:
        start = threading.Barrier(len(samples))

        def ask(name, x):
            start.wait(30)
            body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                           "data": x.ravel().tolist()}]}).encode()
            request = urllib.request.Request(f"{server.url}/v2/models/{name}/infer", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                return np.array(json.loads(response.read())["outputs"][0]["data"], np.float32)

        answers = {}
        for name, model in models.items():
            with concurrent.futures.ThreadPoolExecutor(len(samples)) as pool:
                served = list(pool.map(lambda x: ask(name, x), samples))
            alone = [model.run({"x": x})["y"].ravel() for x in samples]
            answers[name] = [np.allclose(s, a, atol=1e-6, rtol=1e-5) for s, a in zip(served, alone)]
        metrics = urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode()
    rows, batches = (float(re.search(rf'ptx_batch_size_{part}{{model="linear"}} (\S+)', metrics).group(1))
                     for part in ("sum", "count"))
    assert rows == len(samples) and batches < rows, (rows, batches)  # requests did share batches
    assert all(answers["linear"])
    assert not all(answers["batchnorm_in_training"])  # joined requests changed each other's answers


def test_verify_of_a_file_has_a_row_per_backend_against_itself_and_fails_a_batch_dependent_model(tmp_path):
    """`ptx verify FILE`: each backend that ran has a table row "itself, batch of 5" (its row's
    composition check); a model whose answer depends on its batch-mates fails there (exit 1), and one
    that does not passes (exit 0)."""
    from ptx.infer.verify.verify import verify

    batch_mean_model(tmp_path)
    linear_model(tmp_path)
    bad = verify(Target.of(tmp_path / "batchnorm_in_training.onnx", verifying=True), backends=["ort-cpu", "openvino"])
    good = verify(Target.of(tmp_path / "linear.onnx", verifying=True), backends=["ort-cpu", "openvino"])
    checked = {r.backend: r.composition for r in bad.rows if r.composition is not None}
    assert {b: c.batch for b, c in checked.items()} == {"ort-cpu": 5, "openvino": 5}
    assert bad.exit_status == 1 and bad.summary().startswith(
        "DISAGREE: ort-cpu vs itself, batch of 5, output y: max abs"), bad.summary()
    assert any(ln.startswith("openvino ") and " itself, batch of 5 " in ln and ln.endswith("FAIL: 12 of 12 beyond")
               for ln in bad.table().splitlines()), bad.table()
    assert good.exit_status == 0 and good.summary().endswith("each alone as inside a batch: ort-cpu, openvino")
    assert all(r.ok for r in good.rows if r.composition) and {r.backend for r in good.rows if r.composition} == \
        {"ort-cpu", "openvino"}


def test_verify_of_a_tutorial_model_checks_every_f32_row_alone_against_its_largest_batch(runs):
    from ptx.infer.verify.verify import verify

    report = verify(Target.of("mlp", root=runs.ready("mlp"), verifying=True),
                    backends=["eager", "ort-cpu", "openvino"], samples=20,
                    notice=lambda _: None)
    checked = [v for v in report.rows if v.composition is not None]
    assert {v.backend for v in checked} == {"eager", "ort-cpu", "openvino"} and all(v.composition.ok for v in checked)
    assert all(v.composition.batch == 64 and v.composition.alone == [0, 32, 63] for v in checked)
    line = next(ln for ln in report.table().splitlines() if ln.startswith("batch composition"))
    assert "samples 0, 32, 63 alone = their rows in a batch of 64 on 3 rows (max abs" in line
    assert report.to_dict()["rows"][0]["composition"]["ok"] is True
