"""A file ptx did not write is opened by every variant in one child first; where that child
crashes, each variant is probed alone, and a crash is said under the variant that crashed, even
where a variant before it has no file to probe (an f32 file's missing int8 twin)."""
from __future__ import annotations

import json

import onnx
from onnx import TensorProto, helper

import ptx.infer.model.opening as opening_module
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

    monkeypatch.setattr(opening_module, "run_child", run_child)
    crashed = target._probe(variants)
    assert list(crashed) == ["openvino"]


def _relu_file(path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_file_that_opened_in_a_child_is_not_probed_again_until_it_changes(tmp_path, monkeypatch):
    """A probe costs an interpreter's start (half a second); a file a child opened once in this process,
    unchanged, opens again without one. A crash is never remembered, and a file written anew is probed anew."""
    path = _relu_file(tmp_path / "relu.onnx")
    children: list[list[str]] = []

    def run_child(code, args, what=""):
        children.append([one["backend"] for one in json.loads(args)])
        if crash:
            raise ChildCrashError(f"{what} crashed (SIGSEGV)")

    monkeypatch.setattr(opening_module, "run_child", run_child)
    monkeypatch.setattr(opening_module, "_PROBED", set())
    args = opening_module.probe_args(path, "ort-cpu", "cpu", [], None, False)
    crash = True
    for _ in range(2):
        try:
            opening_module.probe_in_child([args], what="ort-cpu opening relu.onnx")
        except ChildCrashError:
            pass
    assert len(children) == 2  # a crash is said every time
    crash = False
    for _ in range(3):
        opening_module.probe_in_child([args], what="ort-cpu opening relu.onnx")
    assert len(children) == 3  # one child; the next two opens learn nothing new
    other = opening_module.probe_args(path, "openvino", "cpu", [], None, False)
    opening_module.probe_in_child([args, other], what="opening relu.onnx")
    assert children[-1] == ["openvino"]  # only what was not probed yet
    written = _relu_file(tmp_path / "relu.onnx.tmp")
    written.replace(path)  # as ptx writes: beside, then renamed into place
    opening_module.probe_in_child([args], what="ort-cpu opening relu.onnx")
    assert len(children) == 5 and children[-1] == ["ort-cpu"]

