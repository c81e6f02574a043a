"""A decoder's ONNX graph for N layers made from its trace with two: layer 1's nodes repeated for layers 2 to N-1,
each copy reading its own weights and past and the layer before it, which is the graph a trace of all N layers
makes, in fewer seconds. torch.export's capture and decompositions, which take most of a large LM's export,
grow with the layers traced (Qwen2.5-0.5B's 24 layers: 94 s of its 232 s export), and every layer of a
transformers decoder is the same code on other weights.

Why by hand: neither torch.export nor torch.onnx repeats a traced block (torch's own answer, regional compilation,
is torch.compile's, not the exporter's). The copy is made only where the two traced layers prove it right: layer
1's nodes are layer 0's, operator for operator and attribute for attribute, each reading the same shared values
(mask, rotary tables) or its own layer's weights, past or values, and the one value layer 1 takes from layer 0 is
the one the model's last part reads from layer 1. Anything else (layers of different kinds, a value one layer
leaves for a later one, a subgraph) is said as a reason, and the caller traces every layer. The exporter names each
node's module in its metadata (``pkg.torch.onnx.name_scopes``); the cache's updates carry no module and are
given to the layer whose values alone they read and feed.
"""
from __future__ import annotations

import ast
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from ptx.contract.tensors import Signature
from ptx.errors import PtxError

SCOPES = "pkg.torch.onnx.name_scopes"
LAYER_NAME = re.compile(r"^(past_key_values|present)\.(\d+)\.")  # export/cached_decoder.py's cache tensors
FEWEST = 4  # a decoder of fewer layers is traced whole: two of three saves little


def traced_by_two_layers(decoder, example: tuple, signature: Signature, trace: Callable) -> tuple[object, str]:
    """(``trace``'s program of ``decoder`` (export/cached_decoder.CachedDecoder) with all its layers, made from its
    trace with two, how) or (None, why it is to be traced whole: '' for a decoder of so few layers that the trace
    of all is quick). ``trace(module, example, signature)``: the exporter's program, unoptimized, of a module called
    on ``example``."""
    from .cached_decoder import CachedDecoder, named

    if not isinstance(decoder, CachedDecoder):
        return None, "not a transformers decoder"
    layers = decoder.layers
    found = _layer_stack(decoder, layers)
    if isinstance(found, str):
        return None, found
    stack, parent, attribute = found
    config = getattr(decoder.model, "config", None)
    kinds = getattr(config, "layer_types", None)
    if layers < FEWEST:
        return None, ""  # nothing worth saying: a trace of two or three layers is quick
    if config is None or getattr(config, "num_hidden_layers", None) != layers:
        return None, "its config does not count its layers"
    if kinds and len(set(kinds)) > 1:
        return None, f"its layers are of {len(set(kinds))} kinds ({', '.join(sorted(set(kinds)))})"
    apart = _set_apart(config, layers) or _unlike(getattr(parent, attribute))
    if apart:
        return None, apart
    keep = [k for k, name in enumerate(signature.input_names) if not _beyond_two(name)]
    two = Signature(tuple(signature.inputs[k] for k in keep),
                    tuple(t for t in signature.outputs if not _beyond_two(t.name)))
    with _two_layers(parent, attribute, config):
        module = named(CachedDecoder(decoder.model, 2, decoder.takes_positions, decoder.cache_keyword,
                                     decoder.keeps_logits, decoder.placed, decoder.static), list(two.input_names))
        module.train(decoder.training)
        program = trace(module, tuple(example[k] for k in keep), two)
    graph = program.model.graph
    past, present = cache_layers(signature)
    try:
        why = repeat_layers(graph, stack, layers, past, present, lambda k: _pasts(graph, signature, k),
                            lambda k: [n for n, layer in present.items() if layer == k], _weight_like)
    except Exception as exc:  # noqa: BLE001 - a graph this code did not foresee: the program is dropped, all traced
        why = f"the repeat failed ({type(exc).__name__}: {exc})"
    if why is not None:
        return None, why
    return program, f"its {layers} layers traced as 2, layers 2 to {layers - 1} repeated from layer 1's nodes"


def cache_layers(signature: Signature) -> tuple[dict[str, int], dict[str, int]]:
    """({each past input's name: its layer}, {each present output's name: its layer}) of a decoder's signature."""
    def layer_of(tensors):
        return {t.name: int(LAYER_NAME.match(t.name)[2]) for t in tensors if LAYER_NAME.match(t.name)}

    return layer_of(signature.inputs), layer_of(signature.outputs)


def _set_apart(config, layers: int) -> str | None:
    """Which setting of ``config`` lists a value per layer with more than one value (SmolLM3's no_rope_layers,
    Qwen2's windows past max_window_layers as layer_types): such layers are not one layer repeated."""
    for name, value in vars(config).items():
        if isinstance(value, (list, tuple)) and len(value) == layers and len({repr(v) for v in value}) > 1:
            return f"its config's {name} sets its layers apart"
    return None


def _unlike(stack) -> str | None:
    """Where a layer of ``stack`` is not layer 1 (its modules' classes, its weights' shapes, its modules' settings:
    a sliding window, a dense layer among mixtures of experts), or None. The layer's own index is the one setting
    that differs (transformers' layers keep it to find their cache)."""
    def anatomy(layer):
        modules = [(n, type(m).__name__, sorted((k, repr(v)) for k, v in vars(m).items()
                                               if isinstance(v, (int, float, str, bool, type(None))) and
                                               not k.startswith("_") and k not in ("layer_idx", "layer_id", "training")))
                   for n, m in layer.named_modules()]
        return modules, [(n, tuple(p.shape)) for n, p in layer.named_parameters()]

    reference = anatomy(stack[1])
    for k, layer in enumerate(stack):
        if k != 1 and anatomy(layer) != reference:
            return f"layer {k} is not built as layer 1 is"
    return None


def _beyond_two(name: str) -> bool:
    found = LAYER_NAME.match(name)
    return found is not None and int(found[2]) >= 2


def _layer_stack(decoder, layers: int):
    """(the ModuleList of ``decoder``'s ``layers`` layers, as the exporter names its scope; the module holding it;
    its attribute there), or why there is none: one list of that many modules of one class."""
    import torch

    stacks = [(name, module) for name, module in decoder.named_modules()
              if isinstance(module, torch.nn.ModuleList) and len(module) == layers and
              len({type(m) for m in module}) == 1]
    if len(stacks) != 1:
        return f"{len(stacks)} lists of {layers} modules of one class"
    name, _ = stacks[0]
    parent_name, _, attribute = name.rpartition(".")
    return name, decoder.get_submodule(parent_name), attribute


@contextmanager
def _two_layers(parent, attribute: str, config):
    """The model cut to its first two layers inside the block (its list and its config's count and kinds)."""
    import torch

    whole = getattr(parent, attribute)
    count, kinds = config.num_hidden_layers, getattr(config, "layer_types", None)
    parent._modules[attribute] = torch.nn.ModuleList(list(whole)[:2])
    config.num_hidden_layers = 2
    if kinds:
        config.layer_types = list(kinds)[:2]
    try:
        yield
    finally:
        parent._modules[attribute] = whole
        config.num_hidden_layers = count
        if kinds:
            config.layer_types = kinds


def _pasts(graph, signature: Signature, k: int) -> list:
    """Layer k's past inputs, made like layer 1's (shape and type), in the signature's order."""
    import onnx_ir as ir

    like = {v.name: v for v in graph.inputs}
    made = []
    for t in signature.inputs:
        found = LAYER_NAME.match(t.name)
        if found and int(found[2]) == k:
            one = like[t.name.replace(f".{k}.", ".1.", 1)]
            made.append(ir.Value(name=t.name, shape=one.shape, type=one.type))
    return made


def _weight_like(initializer, name: str):
    """An initializer named ``name`` standing for a folder tensor of layer 1's ``initializer``'s shape: a fake
    tensor, which export/weightless.lazy_graph names as its folder tensor. A real tensor here would be layer 1's
    values under layer k's name: refused."""
    import onnx_ir as ir
    from torch._subclasses.fake_tensor import FakeTensor

    held = initializer.const_value
    if not isinstance(getattr(held, "raw", None), FakeTensor):
        raise PtxError(f"{initializer.name}: the layers are repeated only in a graph traced without its weights")
    return ir.Value(name=name, shape=initializer.shape, type=initializer.type,
                    const_value=type(held)(held.raw, name=name))


def _scopes(node) -> list[str]:
    try:
        return ast.literal_eval(node.metadata_props.get(SCOPES, "[]"))
    except (ValueError, SyntaxError):
        return []


def _layers_of_nodes(graph, stack: str, past_layer: dict[str, int], present_layer: dict[str, int]) -> dict:
    """{node: its layer} for every node of the graph that belongs to one: by its module (``stack``.K), else
    (a node no module holds: the cache's update) the layer whose values or past alone it reads, where every
    reader of its outputs is that layer's or its present."""
    owner: dict = {}
    loose = []
    for node in graph:
        scopes = _scopes(node)
        index = next((s[len(stack) + 1:].split(".")[0] for s in scopes if s.startswith(stack + ".")), None)
        if index is not None and index.isdigit():
            owner[node] = int(index)
        elif len(scopes) <= 2:  # the wrapper's own code or an unnamed op: no module at all
            loose.append(node)
    for _ in range(3):  # an attachment taken back can undo one that read it
        changed = False
        for node in loose:
            layers = set()
            for value in node.inputs:
                if value is None:
                    continue
                if value.producer() is not None and value.producer() in owner:
                    layers.add(owner[value.producer()])
                elif value.name in past_layer:
                    layers.add(past_layer[value.name])
            layer = next(iter(layers)) if len(layers) == 1 else None
            readers_ok = layer is not None and all(
                all(owner.get(user) == layer for user, _ in out.uses()) and
                (not out.is_graph_output() or present_layer.get(out.name) == layer) for out in node.outputs)
            if readers_ok and owner.get(node) != layer:
                owner[node], changed = layer, True
            elif not readers_ok and node in owner:
                del owner[node]
                changed = True
        if not changed:
            break
    return owner


def _sizes(graph, weights: str) -> set:
    """The values computed from constants and tensors' shapes alone (a Constant's, a Shape's, arithmetic on
    them): the same for every layer of identical layers, so that one layer may read another's."""
    static: set = set()  # an initializer of at most 64 values outside the layers' weights: a lifted scalar or shape
    for node in graph:
        if node.op_type in ("Constant", "Shape", "Size") or all(
                v is None or v in static or (v.is_initializer() and not v.name.startswith(weights) and
                                             v.const_value is not None and v.const_value.size <= 64)
                for v in node.inputs):
            static.update(node.outputs)
    return static


def _same_attributes(a, b) -> bool:
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


@dataclass
class _Pairing:
    """Layer 1 proven to be layer 0 (_paired): whose each node is, layer 1's nodes in order, the sizes and
    constants layer 0 computed for both, layer 0's values as layer 1 has them, and the value(s) one layer hands the
    next (layer 1's input from layer 0 -> what layer 0 read in its place)."""

    owner: dict
    second: list
    lent: set
    counterpart: dict
    carried: dict


def repeat_layers(graph, stack: str, layers: int, past: dict[str, int], present: dict[str, int],
                  pasts_of: Callable[[int], list], presents_of: Callable[[int], list[str]],
                  weight_for: Callable[[object, str], object]) -> str | None:
    """Make ``graph`` (an onnx_ir Graph traced with two layers of the ModuleList ``stack``) the graph of
    ``layers``: None when done, else why not (the graph left as it was). ``past``/``present``: {graph input/output
    name: its layer} (cache_layers); ``pasts_of(k)``: layer k's new graph inputs (onnx_ir Values named as the
    signature names them); ``presents_of(k)``: its outputs' names; ``weight_for(initializer, name)``: layer k's
    initializer named ``name``, made like layer 1's ``initializer``."""
    pairing = _paired(graph, stack, past, present)
    if isinstance(pairing, str):
        return pairing
    leaving = {pairing.counterpart[v] for v in pairing.carried}  # what the model's last part reads: the last hidden
    readers = {v: [(u, i) for u, i in v.uses() if pairing.owner.get(u) != 1] for v in leaving}
    made: dict = {}  # layer k's weights, by name
    last = pairing.second[-1]
    previous = {v: v for v in leaving}  # layer k-1's carried values, by layer 1's
    for k in range(2, layers):
        made_pasts = {v.name.rsplit(".", 1)[-1]: v for v in pasts_of(k)}  # by kind: key, value
        inputs = {v: made_pasts[v.name.rsplit(".", 1)[-1]] for v in graph.inputs if past.get(v.name) == 1}
        clone, last = _copy_layer(graph, k, stack, pairing, inputs, previous, made, weight_for, last)
        graph.inputs.extend(made_pasts.values())
        names = {name.rsplit(".", 1)[-1]: name for name in presents_of(k)}
        for out in [o for o in graph.outputs if present.get(o.name) == 1]:
            clone[out].name = names[out.name.rsplit(".", 1)[-1]]
            graph.outputs.append(clone[out])
        previous = {v: clone[v] for v in previous}
    for value, users in readers.items():  # the model's last part reads the last layer's
        for user, index in users:
            user.replace_input_with(index, previous[value])
    return None


def _paired(graph, stack: str, past: dict[str, int], present: dict[str, int]) -> _Pairing | str:
    """Layer 1 of the two-layer ``graph`` paired with layer 0 node for node, or why it cannot stand for the layers
    after it."""
    owner = _layers_of_nodes(graph, stack, past, present)
    ordered = list(graph)
    sizes = _sizes(graph, f"{stack}.")
    second = [n for n in ordered if owner.get(n) == 1]
    # the sizes and constants layer 0 computed for layer 1 too (the exporter computes each once): shared
    lent = {v for n in second for v in n.inputs if v is not None and v in sizes and v.producer() is not None and
            owner.get(v.producer()) == 0}
    shared = {v.producer() for v in lent}  # with the layer-0 sizes and constants only those read
    for node in reversed(ordered):
        if owner.get(node) == 0 and node not in shared and node.outputs and all(v in sizes for v in node.outputs) \
                and all(user in shared for v in node.outputs for user, _ in v.uses()):
            shared.add(node)
    first = [n for n in ordered if owner.get(n) == 0 and n not in shared]
    if not second or len(first) != len(second):
        return f"layers 0 and 1 have {len(first)} and {len(second)} nodes"
    if any(owner.get(n) not in (None, 0, 1) for n in ordered):
        return "the trace holds more than two layers"
    pairing = _Pairing(owner, second, lent, {}, {})
    prefix0, prefix1 = f"{stack}.0.", f"{stack}.1."
    for a, b in zip(first, second):
        if (a.domain, a.op_type, a.overload, len(a.inputs), len(a.outputs)) != \
                (b.domain, b.op_type, b.overload, len(b.inputs), len(b.outputs)) or not _same_attributes(a, b):
            return f"layer 1's {b.op_type} node {b.name} is not layer 0's {a.op_type} ({a.name})"
        for x, y in zip(a.inputs, b.inputs):
            if y in lent:  # a size or constant layer 0 computed: layer 0 reads the same, or its equal
                why = None if x is y or _same_constant(x, y) else f"layer 1 reads {y.name} where layer 0 reads {x.name}"
            else:
                why = _paired_input(x, y, owner, pairing.counterpart, pairing.carried, past, prefix0, prefix1)
            if why:
                return why
        pairing.counterpart.update(zip(a.outputs, b.outputs))
    # what the model reads from the layers: layer 1's carried values (the last hidden state) and each present
    leaving = {pairing.counterpart[v] for v in pairing.carried}
    for node in second:
        for out in node.outputs:
            outside = [u for u, _ in out.uses() if owner.get(u) != 1]
            if outside and out not in leaving:
                return f"{out.name} of layer 1 is read outside it ({outside[0].op_type} {outside[0].name})"
            if out.is_graph_output() and present.get(out.name) != 1:
                return f"{out.name} of layer 1 is a graph output other than its present"
    for node in first:
        for out in node.outputs:
            if out in lent:
                continue
            if any(owner.get(u) not in (0, 1) for u, _ in out.uses()) or \
                    (out.is_graph_output() and present.get(out.name) != 0):
                return f"{out.name} of layer 0 is read outside the layers"
    return pairing


def _copy_layer(graph, k: int, stack: str, pairing: _Pairing, inputs: dict, previous: dict, made: dict,
                weight_for: Callable, last) -> tuple[dict, object]:
    """Layer 1's nodes copied as layer ``k``'s after node ``last``, each reading layer k's past (``inputs``: layer
    1's past -> layer k's), its weights (made by ``weight_for`` into ``made``), the layer before's carried values
    (``previous``) and the shared values as they are: ({layer 1's value: layer k's}, the last node copied)."""
    import onnx_ir as ir

    prefix1 = f"{stack}.1."
    clone: dict = {}
    for node in pairing.second:
        ins = []
        for value in node.inputs:
            if value is None or value in pairing.lent:
                ins.append(value)
            elif value in clone:
                ins.append(clone[value])
            elif value in inputs:
                ins.append(inputs[value])
            elif value.producer() is not None and pairing.owner.get(value.producer()) == 0:  # the layer before's
                ins.append(previous[pairing.counterpart[value]])
            elif value.is_initializer() and value.name.startswith(prefix1):
                name = f"{stack}.{k}.{value.name[len(prefix1):]}"
                if name not in made:
                    made[name] = weight_for(value, name)
                    graph.register_initializer(made[name])
                ins.append(made[name])
            else:
                ins.append(value)
        outs = [ir.Value(name=f"{o.name}__layer{k}", shape=o.shape, type=o.type) for o in node.outputs]
        copy = ir.Node(node.domain, node.op_type, ins, attributes=list(node.attributes.values()),
                       overload=node.overload, outputs=outs, version=node.version, name=f"{node.name}__layer{k}",
                       metadata_props=dict(node.metadata_props))
        graph.insert_after(last, copy)
        last = copy
        clone.update(zip(node.outputs, outs))
    return clone, last


def _paired_input(x, y, owner, counterpart, carried, past, prefix0: str, prefix1: str) -> str | None:
    """Why layer 1's input ``y`` is not what layer 0's ``x`` is for it, or None (recording a carried value)."""
    if x is None or y is None:
        return None if x is y else "an optional input present in one layer only"
    if x.name in past or y.name in past:
        return None if (past.get(x.name), past.get(y.name)) == (0, 1) and \
            x.name.split(".")[-1] == y.name.split(".")[-1] else f"{y.name} is not layer 1's past as {x.name} is layer 0's"
    if x.is_initializer() and x.name.startswith(prefix0):
        return None if y.is_initializer() and y.name == prefix1 + x.name[len(prefix0):] else \
            f"{y.name} is not layer 1's {x.name[len(prefix0):]}"
    if x in counterpart:
        return None if counterpart[x] is y else f"{y.name} is not layer 1's own {x.name}"
    if x is y:
        return None
    if y.producer() is not None and owner.get(y.producer()) == 0:  # what layer 0 hands layer 1: its output
        if carried.setdefault(y, x) is not x:
            return f"{y.name} stands for two values"
        return None
    if _same_constant(x, y):
        return None
    return f"layer 1 reads {y.name} where layer 0 reads {x.name}"


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


def _same_constant(x, y) -> bool:
    import numpy as np

    a, b = _constant(x), _constant(y)
    if a is None or b is None:
        return False
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
