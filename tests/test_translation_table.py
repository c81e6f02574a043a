"""torch.onnx's translation table built once per opset within ptx's export, and never shared with a caller
that extends it (export/translation_table.py)."""
from __future__ import annotations

import pytest
import torch

from ptx.export import translation_table
from ptx.export.translation_table import one_table_per_opset

registration = pytest.importorskip("torch.onnx._internal.exporter._registration")


def test_each_export_in_ptx_gets_a_copy_of_one_table_and_other_callers_get_their_own():
    with one_table_per_opset():
        first = registration.ONNXRegistry.from_torchlib(opset_version=18)
        second = registration.ONNXRegistry.from_torchlib(opset_version=18)
    outside = registration.ONNXRegistry.from_torchlib(opset_version=18)
    assert first is not second and first.functions is not second.functions
    assert first.functions.keys() == second.functions.keys() == outside.functions.keys()
    assert first.opset_version == second.opset_version == 18
    # a caller that extends its table (torch's custom_translation_table) changes its copy only
    target = torch.ops.aten.relu.default
    first.register_op(target, lambda x: x)
    assert len(first.get_decomps(target)) == len(second.get_decomps(target)) + 1
    with one_table_per_opset():
        third = registration.ONNXRegistry.from_torchlib(opset_version=18)
    assert len(third.get_decomps(target)) == len(second.get_decomps(target))


def test_an_export_with_the_reused_table_writes_the_graph_torch_writes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    example = (torch.randn(2, 4),)

    def nodes():
        program = torch.onnx.export(model, example, None, dynamo=True, opset_version=18, verbose=False)
        return [(n.op_type, list(n.input), list(n.output)) for n in program.model_proto.graph.node]

    torch_own = nodes()
    with one_table_per_opset():
        assert nodes() == torch_own
        assert nodes() == torch_own  # the second export reads the table the first one built


def test_an_operator_registered_after_the_table_was_built_makes_the_next_export_build_it_anew():
    """A table built before a library registered its operators would translate none of them."""
    with one_table_per_opset():
        registration.ONNXRegistry.from_torchlib(opset_version=18)
        before = translation_table._BUILT[18][1]
        registration.ONNXRegistry.from_torchlib(opset_version=18)
        assert translation_table._BUILT[18][1] is before  # nothing registered between: the same table
        library = torch.library.Library("ptx_translation_test", "DEF")
        library.define("twice(Tensor x) -> Tensor")
        registration.ONNXRegistry.from_torchlib(opset_version=18)
        assert translation_table._BUILT[18][1] is not before
