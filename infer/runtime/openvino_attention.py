"""A decoder's attention as OpenVINO's ScaledDotProductAttention, so that its CPU plugin runs its fused kernel.

ptx's decoder files write each layer's attention in plain ONNX operators: MatMul(Q, K^T), a scale, Add(mask),
Softmax, MatMul(., V). OpenVINO 2026.4's CPU plugin has a fused attention kernel that reads the cache where it
lies (and can keep it in u8, its KV_CACHE_PRECISION), but it forms it only from an opset13
ScaledDotProductAttention node: none of its transformations that Python can call (apply_moc_transformations,
paged_attention_transformation, which expects the node already there) makes one from an ONNX file, and its own
SDPAFusion (C++ only) does not match these layouts. So each block whose operators are exactly one of the layouts
below is rewritten into one node, with the graph's own mask and the product of the graph's own scales;
anything else is left as written, never approximated. Written with OpenVINO's pattern matcher
(openvino.passes): the matcher finds the chain, the callback checks what a pattern cannot say (the Softmax's
axis, the permutations, the heads, the scales being scalars, each intermediate read by the chain alone).

The layouts ptx writes (transformers' models through torch.onnx, export/grouped_attention.py):
- one key/value head per query head (GPT-2): Q and K^T each scaled by sqrt(scale) before the MatMul, K^T
  traced as Reshape(3-D)/Transpose/Reshape, and a guard Where(IsNaN(weights), 0, weights) after the Softmax;
- grouped heads (Llama, Qwen2): Q [b, heads, n, d] laid out per key/value group as [b, kv heads, group x n, d]
  by a Reshape, the scores reshaped back to [b, heads, n, past] and scaled, the weights regrouped, the output
  reshaped to [b, heads, n, d]. The rewrite gives the node Q as it was before the grouping and the keys and
  values broadcast to every query head (Unsqueeze/Broadcast/Reshape: the form the plugin's stateful fusion
  recognises, where it reads the cache without the copy).

For the plugin to fuse the node with the cache in its stateful form (openvino_state.make_stateful),
with_cache_reorder gives each past's ReadValue the Gather by beam index its StatefulSDPAFusion looks for; the
index is computed (0 .. batch - 1), so the model's inputs do not change. numpy and openvino only.
"""
from __future__ import annotations

import numpy as np

_SCALES = ["opset1.Multiply", "opset1.Divide"]


def _pattern():
    """The pattern's root and its named nodes (openvino.passes), one pattern for every layout above."""
    from openvino.passes import AnyInput, Optional, Or, WrapType

    q, k, v, mask = AnyInput(), AnyInput(), AnyInput(), AnyInput()
    q_grouped = Optional(["opset1.Reshape"], [q, AnyInput()])
    k_t4 = WrapType("opset1.Transpose", [k, WrapType("opset1.Constant")])
    k_flat = WrapType("opset1.Reshape", [k, AnyInput()])
    k_t3 = WrapType("opset1.Transpose", [k_flat, WrapType("opset1.Constant")])
    k_t3_back = WrapType("opset1.Reshape", [k_t3, AnyInput()])
    k_t = Or([k_t4, k_t3_back])
    k_scale = WrapType("opset1.Constant")
    k_scaled = Optional(_SCALES, [k_t, k_scale])
    scores = WrapType("opset1.MatMul", [q_grouped, k_scaled])
    scores_heads = Optional(["opset1.Reshape"], [scores, AnyInput()])
    scale = WrapType("opset1.Constant")
    scaled = Optional(_SCALES, [scores_heads, scale])
    masked = WrapType("opset1.Add", [scaled, mask])
    softmax = WrapType(["opset1.Softmax", "opset8.Softmax"], [masked])
    is_nan = WrapType("opset10.IsNaN", [softmax])
    guard_zero = WrapType("opset1.Constant")
    guard = WrapType("opset1.Select", [is_nan, guard_zero, softmax])
    guarded = Or([softmax, guard])
    weights_grouped = Optional(["opset1.Reshape"], [guarded, AnyInput()])
    out = WrapType("opset1.MatMul", [weights_grouped, v])
    root = Optional(["opset1.Reshape"], [out, AnyInput()])
    names = dict(q=q, k=k, v=v, mask=mask, q_grouped=q_grouped, k_t4=k_t4, k_flat=k_flat, k_t3=k_t3,
                 k_t3_back=k_t3_back, k_scale=k_scale, k_scaled=k_scaled, scores=scores, scores_heads=scores_heads,
                 scale=scale, scaled=scaled, masked=masked, softmax=softmax, is_nan=is_nan, guard=guard,
                 guard_zero=guard_zero, weights_grouped=weights_grouped, out=out, root=root)
    return root, names


def _dims(output) -> list[int | None] | None:
    """The static dims of ``output`` (None for a dynamic one), or None where its rank is dynamic."""
    shape = output.get_partial_shape()
    if shape.rank.is_dynamic:
        return None
    return [d.get_length() if d.is_static else None for d in shape]


def _scalar(output) -> float | None:
    """The value of a one-element floating constant, else None."""
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    data = node.get_data()
    if data.size != 1 or not np.issubdtype(data.dtype, np.floating):
        return None
    return float(data.reshape(-1)[0])


def _factor(node, constant_index: int) -> float | None:
    """The factor a matched Multiply or Divide applies (its constant is input ``constant_index``), or None."""
    value = _scalar(node.input_value(constant_index))
    if value is None or (node.get_type_name() == "Divide" and (constant_index != 1 or value == 0.0)):
        return None
    return 1.0 / value if node.get_type_name() == "Divide" else value


def _read_once(output, readers: int = 1) -> bool:
    """Whether ``output`` has exactly ``readers`` readers."""
    return len(output.get_target_inputs()) == readers


# each optional step of the chain and the step it follows: where the graph skips it, the matcher maps it to that one
_OPTIONAL = {"q_grouped": "q", "scores_heads": "scores", "scaled": "scores_heads", "weights_grouped": "guarded",
             "root": "out"}  # in the chain's order


class _Match:
    """One matched block: what the checks found, or why it is not rewritten (``refused``)."""

    def __init__(self, found: dict):
        self.found = found  # {pattern name: the matched output}
        self.refused = ""
        self.scale = 1.0
        self.group = 1
        self.heads = 0

    def there(self, name: str) -> bool:
        """Whether the graph has this optional step (an Optional the graph skips is matched to its input)."""
        inner = _OPTIONAL.get(name) or ("k_t4" if "k_t4" in self.found else "k_t3_back")
        return name in self.found and self.found[name] != self.found[inner]

    def node(self, name: str):
        return self.found[name].get_node()


def _checked(match: _Match) -> _Match:
    """``match`` with ``refused`` set where the chain is not exactly attention in one of the layouts."""
    match.refused = _refusal(match)
    return match


def _refusal(match: _Match) -> str:
    """Why the chain of ``match`` is not rewritten ("" where it is), its scale, group and heads set on the way.

    What the partial shapes say statically (heads, head sizes, ranks) is checked; the batch and position axes are
    dynamic in a decoder file and taken to be where each Reshape's rank puts them."""
    f, node, there = match.found, match.node, match.there
    q, k, v = _dims(f["q"]), _dims(f["k"]), _dims(f["v"])
    if q is None or k is None or v is None or not (len(q) == len(k) == len(v) == 4):
        return "Q, K and V are not of rank 4"
    kv_heads, size = k[1], k[3]
    if None in (kv_heads, size, v[3]) or v[1] != kv_heads or q[3] not in (None, size):
        return "the key/value heads and head sizes are not static and consistent"
    types = {f[name].get_element_type() for name in ("q", "k", "v", "mask", "out")}
    if len(types) != 1 or not next(iter(types)).is_real():
        return "Q, K, V, the mask and the output are not one floating type"
    axis = node("softmax").get_attributes()["axis"]
    if axis not in (-1, 3):
        return f"the Softmax is over axis {axis}, not the last"
    # K^T: a Transpose of its last two axes, or torch's Reshape to 3-D / Transpose / Reshape back to 4-D
    if "k_t4" in f:
        if list(node("k_t4").input_value(1).get_node().get_data()) != [0, 1, 3, 2]:
            return "K is not transposed over its last two axes"
    else:
        flat, back = _dims(f["k_flat"]), _dims(f["k_t3_back"])
        perm = list(node("k_t3").input_value(1).get_node().get_data())
        if flat is None or back is None or len(flat) != 3 or flat[2] != size or perm != [0, 2, 1] or len(back) != 4 \
                or back[1] != kv_heads or back[2] != size or not (_read_once(f["k_flat"]) and _read_once(f["k_t3"])):
            return "K's Reshape/Transpose/Reshape is not K^T"
    # the scale: the product of every constant factor the graph applies to K^T and to the scores (one on Q
    # stays in Q, which the node is given as the graph computed it)
    for name, before in (("k_scaled", f.get("k_t4", f.get("k_t3_back"))), ("scaled", f["scores_heads"])):
        if there(name):
            scaler = node(name)
            factor = _factor(scaler, 1 if scaler.input_value(0) == before else 0)
            if factor is None:
                return "a scale is not one constant factor"
            match.scale *= factor
    # grouped heads: the four Reshapes together, a whole number of query heads per key/value head
    grouping = ("q_grouped", "scores_heads", "weights_grouped", "root")
    if any(there(name) for name in grouping):
        shapes = [_dims(f[name]) for name in grouping]
        if not all(there(name) for name in grouping) or any(d is None or len(d) != 4 for d in shapes):
            return "only some of the grouped layout's Reshapes are there"
        heads = shapes[1][1]
        if heads is None or heads <= kv_heads or heads % kv_heads or q[1] not in (None, heads) \
                or shapes[0][1] != kv_heads or shapes[0][3] != size or shapes[2][1] != kv_heads \
                or shapes[3][1] != heads or shapes[3][3] != v[3]:
            return "the grouped Reshapes do not lay each key/value head's query heads side by side"
        match.group, match.heads = heads // kv_heads, heads
    elif q[1] not in (None, kv_heads):
        return "Q has other heads than K and V, and no grouping"
    # every intermediate read by the chain alone (another reader would need a value the node does not give)
    steps = ["q_grouped", "k_scaled", "scaled", "scores_heads", "weights_grouped", "out"]
    if any(there(name) and not _read_once(f[name]) for name in steps if name not in ("out",)) \
            or not (_read_once(f["scores"]) and _read_once(f["masked"])) \
            or (there("root") and not _read_once(f["out"])):
        return "an intermediate is read outside the attention"
    if "guard" in f and (_scalar(f["guard_zero"]) != 0.0 or not (_read_once(f["is_nan"]) and _read_once(f["guard"]))):
        return "the Softmax's guard is not Where(IsNaN(weights), 0, weights)"
    if not _read_once(f["softmax"], 2 if "guard" in f else 1):
        return "the attention weights are read outside the attention"
    return ""


def _rewrite(match: _Match) -> None:
    """The block of ``match`` replaced by one ScaledDotProductAttention (and the NaN guard where the graph had
    one, on the node's output: the graph zeroes a row of weights that is NaN, whose output row is then zero)."""
    import openvino.opset13 as ops

    f = match.found
    q, k, v, mask = f["q"], f["k"], f["v"], f["mask"]
    element = q.get_element_type()
    if match.group > 1:
        heads = match.heads

        def every_head(cache):
            grouped = ops.unsqueeze(cache, ops.constant(np.array([2], np.int64)))
            repeat = ops.constant(np.array([1, 1, match.group, 1, 1], np.int64))
            spread = ops.broadcast(grouped, repeat, broadcast_spec="BIDIRECTIONAL")
            every = ops.constant(np.array([0, heads, -1, _dims(cache)[3]], np.int64))
            return ops.reshape(spread, every, True).output(0)

        k, v = every_head(k), every_head(v)
    scale = ops.constant(np.array(match.scale, dtype=element.to_dtype()))
    attention = ops.scaled_dot_product_attention(q, k, v, mask, scale, causal=False)
    root = f["root"]
    attention.set_friendly_name(root.get_node().get_friendly_name() + "/sdpa")
    result = attention.output(0)
    if "guard" in f:
        zero = ops.constant(np.array(0, dtype=element.to_dtype()))
        result = ops.select(ops.is_nan(result), zero, result).output(0)
    root.replace(result)


def fuse_attention(model) -> int:
    """Each attention block of ``model`` (an openvino.Model) that is exactly one of the layouts this module
    describes rewritten, in place, into an opset13 ScaledDotProductAttention (causal off, the graph's mask and
    scale); the number rewritten. A block that differs in anything is left as written."""
    from openvino.passes import Manager, Matcher, MatcherPass

    root, names = _pattern()
    rewritten = []

    def callback(matcher: Matcher) -> bool:
        values = matcher.get_pattern_value_map()
        found = {name: values[pattern] for name, pattern in names.items() if pattern in values}
        found["guarded"] = found.get("guard", found["softmax"])
        found.setdefault("k_scaled", found.get("k_t4", found.get("k_t3_back")))
        for name, inner in _OPTIONAL.items():  # a step the graph skips: the one it follows
            found.setdefault(name, found[inner])
        match = _checked(_Match(found))
        if match.refused:
            return False
        _rewrite(match)
        rewritten.append(match)
        return True

    manager = Manager()
    manager.register_pass(MatcherPass(Matcher(root, "PtxAttentionToSdpa"), callback))
    manager.run_passes(model)
    if rewritten:
        model.validate_nodes_and_infer_types()
    return len(rewritten)


def with_cache_reorder(model, ids: str) -> int:
    """Each past of ``model`` (in its stateful form) that a ScaledDotProductAttention reads through a Concat
    given a Gather over its batch by an index, in place, as OpenVINO's stateful models carry one (beam_idx), and
    an initial value: the CPU plugin's StatefulSDPAFusion fuses the node with the cache's variables only where
    it finds both. The index is 0 .. batch - 1, the batch read from the input ``ids`` (the decoder's token ids,
    [batch, new]), so the Gather leaves the cache as it is and the model's inputs do not change. The number of
    layers given them; a node that reads its keys and values otherwise (an encoder-decoder's cross-attention)
    runs as the plugin's attention kernel without the variables' fusion."""
    import openvino.opset13 as ops

    def cache_of(output):
        """The Concat that ``output`` (a node's key or value input) reads, through the grouped broadcast."""
        node = output.get_node()
        while node.get_type_name() in ("Reshape", "Broadcast", "Unsqueeze"):
            node = node.input_value(0).get_node()
        return node if node.get_type_name() == "Concat" else None

    tokens = next((p for p in model.get_parameters() if ids in p.output(0).get_names()), None)
    if tokens is None:
        return 0
    batch = ops.gather(ops.shape_of(tokens, "i64"), ops.constant(np.array([0], np.int64)),
                       ops.constant(np.array(0, np.int64)))
    index = ops.range(ops.constant(np.array(0, np.int32)), ops.squeeze(ops.convert(batch, "i32"), ops.constant(
        np.array([0], np.int64))), ops.constant(np.array(1, np.int32)), "i32")
    layers = 0
    for attention in [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]:
        concats = [cache_of(attention.input_value(i)) for i in (1, 2)]
        if None in concats:  # keys and values not a past and the new ones (an encoder-decoder's cross-attention)
            continue
        reads = [c.input_value(0).get_node() for c in concats]
        # both a variable read as it is (TorchScript's BART writes layer 0's keys as a Concat of a Concat): else the
        # node runs as the plugin's attention kernel, the variables read and written as the file writes them
        if any(r.get_type_name() != "ReadValue" or len(r.inputs()) for r in reads):
            continue
        for concat in concats:
            cache = concat.input_value(0)
            reordered = ops.gather(cache, index, ops.constant(np.array(0, np.int32)))
            concat.input(0).replace_source_output(reordered.output(0))
            _with_initial_value(cache.get_node(), batch, concat.output(0))
        layers += 1
    if layers:
        model.validate_nodes_and_infer_types()
    return layers


def _with_initial_value(read_value, batch, current) -> None:
    """``read_value`` (a past's ReadValue, which MakeStateful leaves without an input) given an empty cache
    ([batch, heads, 0, head size], the heads and size of ``current``, the layer's present keys or values) as its
    initial value: the plugin's fused cache (MemoryInputSDPA) reads its ReadValue's input and refuses one
    without ("contains less parent edges than 0"). A decoding of ptx's sets each variable from its feeds before
    its first step (openvino_state.StatefulRequest): the value is what a reset request reads, never ptx's."""
    import openvino.opset13 as ops

    dims = _dims(current)
    if dims is None or len(dims) != 4 or None in (dims[1], dims[3]):
        raise ValueError(f"the cache read by {read_value.get_friendly_name()} has no static heads and head size")
    rest = ops.constant(np.array([dims[1], 0, dims[3]], np.int64))
    zero = ops.constant(np.array(0, dtype=current.get_element_type().to_dtype()))
    read_value.set_arguments([ops.broadcast(zero, ops.concat([batch, rest], 0)).output(0)])
