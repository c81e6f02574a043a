"""Graph clean-ups applied to an exported ONNX model before it is validated and kept.

Both torch exporters build an RNN/GRU/LSTM's zero initial state from the input's shape (Shape ->
Gather -> Concat -> ConstantOfShape or Expand), even when the module was called without one. ONNX
defines an omitted ``initial_h``/``initial_c`` as zeros, so the shape subgraph computes nothing the
op does not already assume, and it costs: ONNX Runtime's CUDA provider hands such shape subgraphs to
the CPU (its GetCpuPreferredNodes rule), which ort-cuda refuses. No library does this rewrite
(onnxsim and onnxslim fold constants, and these zeros are not constant: their batch is dynamic),
hence this small pass.
"""
from __future__ import annotations

RECURRENT_STATE_INPUTS = {"RNN": (5,), "GRU": (5,), "LSTM": (5, 6)}  # initial_h (and initial_c)
# Ops whose output is all zeros when their first input is (the shape-only ops exporters put between
# the zeros and the recurrent op).
_ZERO_PRESERVING = {"Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Cast", "Identity", "Tile",
                    "Gather", "Flatten"}


def _is_all_zero(name: str, producers: dict, initializers: dict, seen: set | None = None) -> bool:
    from onnx import helper, numpy_helper

    seen = set() if seen is None else seen
    if name in seen:
        return False
    seen.add(name)
    if name in initializers:  # one whose values are in external data is not read for this (nor zero, in practice)
        tensor = initializers[name]
        return tensor.data_location != tensor.EXTERNAL and not numpy_helper.to_array(tensor).any()
    node = producers.get(name)
    if node is None:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in ("Constant", "ConstantOfShape"):  # a ConstantOfShape without a value makes float zeros
        value = attrs.get("value")
        return node.op_type == "ConstantOfShape" if value is None else not numpy_helper.to_array(value).any()
    if node.op_type in _ZERO_PRESERVING:
        return bool(node.input) and _is_all_zero(node.input[0], producers, initializers, seen)
    if node.op_type == "Concat":
        return all(_is_all_zero(i, producers, initializers, seen) for i in node.input)
    return False


def omit_zero_initial_states(model) -> int:
    """Drop every RNN/GRU/LSTM initial state that is provably all zeros (ONNX's default for an omitted
    one) and the nodes that only computed it. Changes ``model`` in place; returns how many it dropped."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {init.name: init for init in graph.initializer}
    dropped = 0
    for node in graph.node:
        for index in RECURRENT_STATE_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and _is_all_zero(node.input[index], producers, initializers):
                node.input[index] = ""
                dropped += 1
        while node.op_type in RECURRENT_STATE_INPUTS and node.input and not node.input[-1]:
            del node.input[-1]  # trailing omitted optional inputs are left out altogether
    if dropped:
        remove_dead_nodes(model)
    return dropped


def remove_dead_nodes(model) -> None:
    """Remove nodes (and initializers, value_info) that nothing downstream of the graph outputs uses."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):  # stored in topological order: consumers come after producers
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    kept = {"node": live[::-1], "initializer": [init for init in graph.initializer if init.name in needed],
            "value_info": [v for v in graph.value_info if v.name in needed]}
    for field, items in kept.items():
        del getattr(graph, field)[:]
        getattr(graph, field).extend(items)
