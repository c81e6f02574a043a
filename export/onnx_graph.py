"""Graph clean-ups applied to an exported ONNX model before it is validated and kept.

Both torch exporters build an RNN/GRU/LSTM's zero initial state from the input's shape (Shape ->
Gather -> Concat -> ConstantOfShape or Expand), even when the module was called without one. ONNX
defines an omitted ``initial_h``/``initial_c`` as zeros, so the shape subgraph computes nothing the
op does not already assume, and it costs: ONNX Runtime's CUDA provider hands such shape subgraphs to
the CPU (its GetCpuPreferredNodes rule), which ort-cuda refuses. No library does this rewrite
(onnxsim and onnxslim fold constants, and these zeros are not constant: their batch is dynamic),
hence this small pass.

torch's exporter writes ``rsqrt`` (an RMS norm's ``x * rsqrt(mean(x^2) + eps) * w``: Llama, Qwen2, T5 and
their kin) as ``Reciprocal(Sqrt(a))``. ONNX Runtime fuses an RMS norm into one SimplifiedLayerNormalization
when it loads a graph, but its pattern reads ``Div(1, Sqrt(a))`` (or ``Div(x, Sqrt(a))``) and not the
Reciprocal: left so, each norm runs as seven small ops, and an int4 decoder's token on 2 cores takes some
7% longer (Qwen2-0.5B: 49 norms, 343 ops; docs/benchmarks/generation.md). The same value written as a Div
is fused (a graph of ONNX's own ops still, which OpenVINO and any runtime read), hence rsqrt_as_division.
"""
from __future__ import annotations

import math

MICROSOFT = "com.microsoft"  # the domain of ONNX Runtime's own ops (MatMulNBits, RotaryEmbedding, ...)
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


_FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}  # TensorProto's element types


def rsqrt_as_division(model) -> int:
    """Write each ``Reciprocal(Sqrt(a))`` of ``model``'s main graph as ``Div(1, Sqrt(a))`` (module docstring:
    the form ONNX Runtime fuses into an RMS norm), the 1 a scalar initializer of the Sqrt's element type
    (left as it is where that type is not recorded). Changes ``model`` in place; returns how many."""
    from onnx import helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    ones: dict[int, str] = {}
    rewritten = 0
    for node in graph.node:
        source = node.input[0] if node.op_type == "Reciprocal" and node.input else ""
        if source not in producers or producers[source].op_type != "Sqrt" or types.get(source) not in _FLOAT_TYPES:
            continue
        element = types[source]
        if element not in ones:
            ones[element] = unused_name(graph, f"ptx_one_{_FLOAT_TYPES[element]}")
            graph.initializer.append(helper.make_tensor(ones[element], element, [], [1.0]))
        node.op_type = "Div"
        node.input[:] = [ones[element], source]
        rewritten += 1
    return rewritten


def weight_of(tensor, folder=None):
    """An initializer's values as a numpy array, read from ``folder``'s data file where they are external, or
    from a transformers folder's shard where the tensor names one (export/folder_weights.py: a graph traced
    without its weights)."""
    from onnx import numpy_helper

    from .folder_weights import is_lazy, read_lazy

    if is_lazy(tensor):
        return read_lazy(tensor)
    return numpy_helper.to_array(tensor, str(folder) if folder is not None else "")


def weight_part(tensor, folder, axis: int, start: int, stop: int):
    """An initializer's values [start, stop) along ``axis`` of a matrix: read alone where it is a transformers
    folder's tensor whose rows they are (export/folder_weights.py), else cut from the whole."""
    from .folder_weights import is_lazy, read_lazy

    if is_lazy(tensor):
        return read_lazy(tensor, (axis, start, stop))
    import numpy as np

    return np.ascontiguousarray(weight_of(tensor, folder)[(slice(None),) * axis + (slice(start, stop),)])


def value_names(graph) -> set[str]:
    """Every value name ``graph`` uses: its nodes' inputs and outputs, its initializers, inputs and outputs."""
    return {i for n in graph.node for i in [*n.input, *n.output]} | {t.name for t in graph.initializer} | {
        v.name for v in [*graph.input, *graph.output]}


def name_not_in(name: str, taken) -> str:
    """``name``, or ``name`` with a number after it, whichever ``taken`` does not hold."""
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def unused_name(graph, name: str) -> str:
    """``name``, or ``name`` with a number after it where the graph already has a value of that name."""
    return name_not_in(name, value_names(graph))


def inferred_shapes(model) -> dict[str, list]:
    """Each value's shape as ONNX Runtime's symbolic shape inference finds it (it follows a dynamic Reshape's
    target through the Shape, Slice and Concat it is made of, and through ONNX Runtime's own ops, which ONNX's
    inference stops at), dims as names or sizes, None where unknown; {} where the inference fails, or could
    finish only by assuming two dims equal. It is given the graph with each weight an input of its shape: the
    inference reads every initializer's values."""
    from onnx import helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    graph = model.graph
    small = [t for t in graph.initializer if t.data_location != t.EXTERNAL and math.prod(t.dims) <= 1024]
    kept = {t.name for t in small}
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))  # their shapes are what counts
               for t in graph.initializer if t.name not in kept]
    skeleton = helper.make_model(helper.make_graph(graph.node, graph.name, [*graph.input, *weights], graph.output,
                                                   small), opset_imports=model.opset_import,
                                 ir_version=model.ir_version)
    # Its steps, not its infer_shapes(), which saves the model as sym_shape_infer_temp.onnx into the working
    # folder where it cannot finish. No auto_merge: a merge is an assumption (two dims taken equal where a
    # broadcast needs them so).
    inference = SymbolicShapeInference(2**31 - 1, False, False, 0)
    try:
        inference._preprocess(skeleton)
        finished = False
        while inference.run_:
            finished = inference._infer_impl()
        if not finished:
            return {}
        inference._update_output_from_vi()
        inferred = inference.out_mp_.graph
    except Exception:  # noqa: BLE001 - without shapes, nothing is proven equal and the nodes stay as they are
        return {}
    return {v.name: [d.dim_param or d.dim_value or None for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.value_info, *inferred.input, *inferred.output] if v.type.tensor_type.HasField("shape")}


def drop_reshape_round_trips(model, shapes: dict[str, list]) -> int:
    """Let each Reshape (or chain of Reshapes) whose output has the very shape of the chain's input be read as
    that input: torch's exporter writes a view and its inverse back to back (an attention's values split into
    heads and merged again for ONNX Runtime's GroupQueryAttention, its output likewise), two nodes a step that
    compute nothing. ``shapes``: inferred_shapes of the graph (only shapes it knows whole, symbol for symbol,
    count as equal). Changes ``model`` in place; returns how many Reshapes were dropped."""
    graph = model.graph
    if has_subgraphs(graph):
        return 0
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    same: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Reshape" or node.output[0] in outputs:
            continue
        shape = shapes.get(node.output[0])
        if not shape or None in shape:
            continue
        source = node.input[0]
        while True:
            if shapes.get(source) == shape:
                same[node.output[0]] = same.get(source, source)
                break
            above = producers.get(source)
            if above is None or above.op_type != "Reshape":
                break
            source = above.input[0]
    if not same:
        return 0
    for node in graph.node:
        node.input[:] = [same.get(name, name) for name in node.input]
    reshapes = sum(n.op_type == "Reshape" for n in graph.node)
    remove_dead_nodes(model)  # the Reshapes and what only built their targets (Shape, Gather, Concat)
    return reshapes - sum(n.op_type == "Reshape" for n in graph.node)


def readers_of(graph) -> dict[str, list]:
    """{value name: the nodes of ``graph`` that read it, in graph order} (a value no node reads is absent)."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def default_opset(model, missing: int = 0) -> int:
    """The version of the default (ai.onnx) domain ``model`` imports; ``missing`` where it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), missing)


def with_microsoft_ops(model) -> None:
    """``model`` importing ONNX Runtime's own ops' domain (com.microsoft), where a rewrite wrote one of them."""
    if not any(o.domain == MICROSOFT for o in model.opset_import):
        model.opset_import.add(domain=MICROSOFT, version=1)


def has_subgraphs(graph) -> bool:
    """Whether a node of ``graph`` holds a graph of its own (If, Loop, Scan), whose reads of the outer graph's
    values its nodes' inputs do not list: a rewrite that renames values or drops unread nodes leaves it alone."""
    return any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute)
