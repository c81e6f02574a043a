"""infer/runtime/reference_runner.py: onnx.reference, the third opinion beside the runtimes, computes GatherElements
as its definition reads, where onnx's own (1.23) failed on a table longer than 64 along the gathered axis (a BERT's
position or token-type buffer, transformers 5.24's export): held to ONNX Runtime on every form the operator takes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ptx.infer.runtime.reference_runner import ReferenceRunner

ort = pytest.importorskip("onnxruntime")

# (data shape, indices shape, axis, whether some indices are negative)
CASES = {"a-token-type-table": ((1, 512), (1, 8), 1, False), "along-rows": ((70, 5), (3, 5), 0, False),
         "negative": ((4, 100), (4, 7), -1, True), "shorter-off-the-axis": ((6, 9, 80), (2, 4, 5), 2, False),
         "three-d-middle": ((3, 66, 2), (3, 10, 2), 1, True)}


def _graph(tmp_path, data_shape, indices_shape, axis) -> str:
    node = helper.make_node("GatherElements", ["data", "indices"], ["out"], axis=axis)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, data_shape),
                                            helper.make_tensor_value_info("indices", TensorProto.INT64, indices_shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, indices_shape)])
    path = tmp_path / "gather.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return str(path)


@pytest.mark.parametrize("case", CASES)
def test_gather_elements_is_onnx_runtime_s_on_every_form(tmp_path, case):
    data_shape, indices_shape, axis, negative = CASES[case]
    rng = np.random.default_rng(0)
    size = data_shape[axis]
    feeds = {"data": rng.standard_normal(data_shape).astype(np.float32),
             "indices": rng.integers(-size if negative else 0, size, indices_shape)}
    path = _graph(tmp_path, data_shape, indices_shape, axis)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ReferenceRunner(path).run(feeds)["out"]
    assert got.shape == want.shape and np.array_equal(got, want)
    # a planted fault, the indices read one position on (the bug's kind: a value from the wrong place), differs
    moved = {**feeds, "indices": (feeds["indices"] + 1) % size}
    assert not np.array_equal(ReferenceRunner(path).run(moved)["out"], want)
