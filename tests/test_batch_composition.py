"""Issue 44, item 6: a sample's answer alone against its answer inside a batch of others
(infer/batch_composition.py), on ONNX Runtime through ptx's runner: a model that normalises over the
batch is caught; one that treats each sample on its own passes; a model without a batch is skipped."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ptx.contract.schema import Tolerance
from ptx.infer import load
from ptx.infer.batch_composition import check_batch_composition

TOLERANCE = Tolerance(1e-5, 1e-4)


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
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    model = save(tmp_path, "batchnorm_in_training", [helper.make_node("ReduceMean", ["x", "axes"], ["mean"]),
                                                     helper.make_node("Sub", ["x", "mean"], ["y"])],
                 ["batch", 4], ["batch", 4], [axes])
    result = check(model)
    assert not result.ok and result.alone == [0, 3, 5] and result.outputs[0].beyond > 0
    assert result.summary().startswith("sample answers depend on the batch: samples 0, 3, 5 alone differ from "
                                       "their rows in a batch of 6: y: max abs"), result.summary()


def test_a_model_that_treats_each_sample_alone_passes(tmp_path):
    weight = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32), "w")
    model = save(tmp_path, "linear", [helper.make_node("MatMul", ["x", "w"], ["y"])], ["batch", 4], ["batch", 3],
                 [weight])
    result = check(model)
    assert result.ok and result.outputs[0].compared == 9
    assert result.summary().startswith("samples 0, 3, 5 alone = their rows in a batch of 6 (max abs")


@pytest.mark.parametrize("x_shape, batch, why", [([6, 4], 6, "the model has no batch axis"),
                                                  (["batch", 4], 1, "a batch of 1: nothing to compose")])
def test_nothing_to_compose_is_said_not_judged(tmp_path, x_shape, batch, why):
    model = save(tmp_path, "relu", [helper.make_node("Relu", ["x"], ["y"])], x_shape, x_shape)
    result = check(model, batch)
    assert result.ok and result.skipped == why and result.summary() == f"not checked: {why}"
