"""Whether two onnx_ir nodes' attributes, or two values' constants, are the same: export/repeated_layers.py pairs a
traced layer's nodes with the layer before's by them."""
from __future__ import annotations


def same_attributes(a, b) -> bool:
    """Whether onnx_ir nodes ``a`` and ``b`` carry the same attributes, of the same values (a subgraph never)."""
    if list(a.attributes) != list(b.attributes):
        return False
    for name, attr in a.attributes.items():
        other = b.attributes[name]
        if attr.type != other.type:
            return False
        kind = str(attr.type)
        if "GRAPH" in kind:
            return False  # a subgraph's copy is not made here
        if "TENSOR" in kind:
            if attr.value.numpy().tobytes() != other.value.numpy().tobytes():
                return False
        elif attr.value != other.value:
            return False
    return True


def _constant(value):
    """A constant's values (an initializer's, or a Constant node's), or None."""
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is not None and node.op_type == "Constant" and not node.inputs and len(node.attributes) == 1:
        attr = next(iter(node.attributes.values()))
        held = attr.value
        return held.numpy() if hasattr(held, "numpy") else held
    return None


def same_constant(x, y) -> bool:
    """Whether values ``x`` and ``y`` are constants of the same dtype, shape and bytes."""
    import numpy as np

    a, b = _constant(x), _constant(y)
    if a is None or b is None:
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
