"""A file ptx did not write is opened by every variant in one child first; where that child
crashes, each variant is probed alone, and a crash is said under the variant that crashed, even
where a variant before it has no file to probe (an f32 file's missing int8 twin)."""
from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

import ptx.infer.model.target as target_module
from ptx.child import ChildCrashError
from ptx.infer.model.target import Target


def test_a_crash_is_said_under_the_variant_that_crashed_past_a_variant_with_no_file(tmp_path, monkeypatch):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    target = Target.of(path, verifying=True)
    variants = [v for v in target.variants() if v.label in ("ort-cpu", "ort-cpu-int8", "openvino")]
    assert [target._has_file(v) for v in variants] == [True, False, True]  # the int8 twin is missing

    def run_child(code, args, what=""):  # openvino's runtime "crashes" on this file; the others open it
        if any(one["backend"] == "openvino" for one in json.loads(args)):
            raise ChildCrashError(f"{what}: killed by SIGSEGV")

    monkeypatch.setattr(target_module, "run_child", run_child)
    crashed = target._probe(variants)
    assert list(crashed) == ["openvino"]
