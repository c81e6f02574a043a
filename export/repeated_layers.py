"""A decoder's ONNX graph for N layers made from its trace with two: layer 1's nodes repeated for layers 2 to N-1,
each copy reading its own weights and past and the layer before it, which is the graph a trace of all N layers
makes, in fewer seconds. Where the layers' kinds alternate with a period P (Gemma 2's sliding and full attention:
2), two periods are traced and the second period's nodes repeated for the periods after it. torch.export's capture
and decompositions, which take most of a large LM's export, grow with the layers traced (Qwen2.5-0.5B's 24 layers:
94 s of its 232 s export), and every layer of a transformers decoder is the same code on other weights.

Why by hand: neither torch.export nor torch.onnx repeats a traced block (torch's own answer, regional compilation,
is torch.compile's, not the exporter's). The copy is made only where the two traced periods prove it right (a
period: one layer, where every layer is alike): each layer of the second period is its counterpart in the first,
operator for operator and attribute for attribute, each node reading the same shared values (masks, rotary
tables) or its own layer's weights, past or values, and the value the second period takes from the first is the
one the model's last part reads from the second. Anything else (layers of kinds in no such period, a value one
period leaves for a later one, a subgraph) is said as a reason, and the caller traces every layer. The exporter names each
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

from .ir_equal import same_attributes, same_constant

SCOPES = "pkg.torch.onnx.name_scopes"
LAYER_NAME = re.compile(r"^(past_key_values|present)\.(\d+)\.")  # export/cached_decoder.py's cache tensors
FEWEST = 4  # a decoder of fewer layers is traced whole: two of three saves little
PERIOD_MOST = 8  # the longest period of layer kinds repeated: two of them are traced


def traced_by_two_layers(decoder, example: tuple, signature: Signature, trace: Callable) -> tuple[object, str]:
    """(``trace``'s program of ``decoder`` (export/cached_decoder.CachedDecoder) with all its layers, made from its
    trace with two (two periods of its layers where their kinds alternate: _period), how) or (None, why it is to be
    traced whole: '' for a decoder of so few layers that the trace of all is quick). ``trace(module, example,
    signature)``: the exporter's program, unoptimized, of a module called on ``example``."""
    from .cached_decoder import CachedDecoder, named

    if not isinstance(decoder, CachedDecoder):
        return None, "not a transformers decoder"
    layers = decoder.layers
    found = _layer_stack(decoder, layers)
    if isinstance(found, str):
        return None, found
    stack, parent, attribute = found
    config = getattr(decoder.model, "config", None)
    if layers < FEWEST:
        return None, ""  # nothing worth saying: a trace of two or three layers is quick
    if config is None or getattr(config, "num_hidden_layers", None) != layers:
        return None, "its config does not count its layers"
    period = _period(config, layers, getattr(parent, attribute))
    if isinstance(period, str):
        return None, period
    traced = 2 * period
    keep = [k for k, name in enumerate(signature.input_names) if not _beyond(name, traced)]
    cut = Signature(tuple(signature.inputs[k] for k in keep),
                    tuple(t for t in signature.outputs if not _beyond(t.name, traced)))
    with _first_layers(parent, attribute, config, traced):
        module = named(CachedDecoder(decoder.model, traced, decoder.takes_positions, decoder.cache_keyword,
                                     decoder.keeps_logits, decoder.placed, decoder.static), list(cut.input_names))
        module.train(decoder.training)
        program = trace(module, tuple(example[k] for k in keep), cut)
    graph = program.model.graph
    past, present = cache_layers(signature)
    try:
        why = repeat_layers(graph, stack, layers, past, present,
                            lambda k: _pasts(graph, signature, k, period + k % period),
                            lambda k: [n for n, layer in present.items() if layer == k], _weight_like, period)
    except Exception as exc:  # noqa: BLE001 - a graph this code did not foresee: the program is dropped, all traced
        why = f"the repeat failed ({type(exc).__name__}: {exc})"
    if why is not None:
        return None, why
    if period == 1:
        return program, f"its {layers} layers traced as 2, layers 2 to {layers - 1} repeated from layer 1's nodes"
    name, values = next(iter(_varied(_per_layer(config, layers)).items()), ("modules", None))
    every = f"every {period}" + (f": {', '.join(map(str, values[:period]))}" if values else "")
    return program, (f"its {layers} layers traced as {traced} (their {name} repeat {every}), layers {traced} to "
                     f"{layers - 1} repeated from layers {period} to {traced - 1}'s nodes")


def cache_layers(signature: Signature) -> tuple[dict[str, int], dict[str, int]]:
    """({each past input's name: its layer}, {each present output's name: its layer}) of a decoder's signature."""
    def layer_of(tensors):
        return {t.name: int(LAYER_NAME.match(t.name)[2]) for t in tensors if LAYER_NAME.match(t.name)}

    return layer_of(signature.inputs), layer_of(signature.outputs)


def _per_layer(config, layers: int) -> dict[str, list]:
    """``config``'s settings that list a value per layer (layer_types, SmolLM3's no_rope_layers)."""
    return {name: list(value) for name, value in vars(config).items()
            if isinstance(value, (list, tuple)) and len(value) == layers}


def _varied(listed: dict[str, list]) -> dict[str, list]:
    """The per-layer settings of ``listed`` (_per_layer) that hold more than one value."""
    return {name: value for name, value in listed.items() if len({repr(v) for v in value}) > 1}


def _period(config, layers: int, stack) -> int | str:
    """The fewest layers after which the layers' kinds, settings and modules repeat (1: every layer alike; 2: Gemma
    2's sliding and full attention in turn), where they divide the layers into more than two such periods and at
    most PERIOD_MOST: else why the layers are to be traced every one."""
    listed = _per_layer(config, layers)
    first = next(p for p in range(1, layers + 1)
                 if all(repr(v[k]) == repr(v[k % p]) for v in listed.values() for k in range(layers)))
    fits = [p for p in range(first, min(PERIOD_MOST, layers // 3) + 1, first) if layers % p == 0]
    period = next((p for p in fits if _unlike(stack, p) is None), None)
    if period is not None:
        return period
    if fits:
        return _unlike(stack, fits[-1])  # the longest period tried: the layer it still finds apart
    kinds = listed.get("layer_types") or []
    why = f"its layers are of {len(set(kinds))} kinds ({', '.join(sorted(set(kinds)))})" if len(set(kinds)) > 1 \
        else f"its config's {next(iter(_varied(listed)))} sets its layers apart"
    limit = (f"a period past {PERIOD_MOST}" if first > PERIOD_MOST else "not a whole number of periods"
             if layers % first else "fewer than 3 periods")
    return why if 2 * first > layers else f"{why}, in turn every {first}: {limit}"


def _unlike(stack, period: int) -> str | None:
    """Where a layer of ``stack`` is not built as its counterpart in the second period (layer ``period`` + its
    place in the period) is: its modules' classes, its weights' shapes, its modules' settings (a sliding window, a
    dense layer among mixtures of experts); or None. The layer's own index is the one setting that differs
    (transformers' layers keep it to find their cache)."""
    def anatomy(layer):
        modules = [(n, type(m).__name__, sorted((k, repr(v)) for k, v in vars(m).items()
                                               if isinstance(v, (int, float, str, bool, type(None))) and
                                               not k.startswith("_") and k not in ("layer_idx", "layer_id", "training")))
                   for n, m in layer.named_modules()]
        return modules, [(n, tuple(p.shape)) for n, p in layer.named_parameters()]

    built = [anatomy(stack[period + k]) for k in range(period)]
    for k, layer in enumerate(stack):
        if k // period != 1 and anatomy(layer) != built[k % period]:
            return f"layer {k} is not built as layer {period + k % period} is"
    return None


def _beyond(name: str, traced: int) -> bool:
    found = LAYER_NAME.match(name)
    return found is not None and int(found[2]) >= traced


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
def _first_layers(parent, attribute: str, config, count: int):
    """The model cut to its first ``count`` layers inside the block (its list, its config's count and the settings
    it lists per layer)."""
    import torch

    whole, layers = getattr(parent, attribute), config.num_hidden_layers
    own = {name: getattr(config, name) for name in _per_layer(config, layers)}  # the objects themselves, given back
    try:
        parent._modules[attribute] = torch.nn.ModuleList(list(whole)[:count])
        config.num_hidden_layers = count
        for name, value in own.items():
            setattr(config, name, list(value)[:count])
        yield
    finally:
        parent._modules[attribute] = whole
        config.num_hidden_layers = layers
        for name, value in own.items():
            setattr(config, name, value)


def _pasts(graph, signature: Signature, k: int, like: int = 1) -> list:
    """Layer k's past inputs, made like layer ``like``'s (shape and type), in the signature's order."""
    import onnx_ir as ir

    traced = {v.name: v for v in graph.inputs}
    made = []
    for t in signature.inputs:
        found = LAYER_NAME.match(t.name)
        if found and int(found[2]) == k:
            one = traced[t.name.replace(f".{k}.", f".{like}.", 1)]
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


@dataclass
class _Pairing:
    """The second period of layers proven to be the first (_paired; a period is one layer where every layer is
    alike): each node's layer (``owner``) and period (``block``), the second period's nodes in order, the sizes and
    constants the first computed for both, the first's values as the second has them, and the value(s) one period
    hands the next (the second's input from the first -> what the first read in its place)."""

    owner: dict
    block: dict
    period: int
    second: list
    lent: set
    counterpart: dict
    carried: dict


def repeat_layers(graph, stack: str, layers: int, past: dict[str, int], present: dict[str, int],
                  pasts_of: Callable[[int], list], presents_of: Callable[[int], list[str]],
                  weight_for: Callable[[object, str], object], period: int = 1) -> str | None:
    """Make ``graph`` (an onnx_ir Graph traced with two periods of ``period`` layers of the ModuleList ``stack``:
    two layers where every layer is alike) the graph of ``layers``: None when done, else why not (the graph left as
    it was). ``past``/``present``: {graph input/output name: its layer} (cache_layers); ``pasts_of(k)``: layer k's
    new graph inputs (onnx_ir Values named as the signature names them); ``presents_of(k)``: its outputs' names;
    ``weight_for(initializer, name)``: layer k's initializer named ``name``, made like the traced layer's
    ``initializer``."""
    if layers % period:
        return f"its {layers} layers are not a whole number of periods of {period}"
    pairing = _paired(graph, stack, past, present, period)
    if isinstance(pairing, str):
        return pairing
    leaving = {pairing.counterpart[v] for v in pairing.carried}  # what the model's last part reads: the last hidden
    readers = {v: [(u, i) for u, i in v.uses() if pairing.block.get(u) != 1] for v in leaving}
    made: dict = {}  # the copies' weights, by name
    last = pairing.second[-1]
    previous = {v: v for v in leaving}  # the period before's carried values, by the second period's
    for block in range(2, layers // period):
        shift = (block - 1) * period  # the second period's layer L is this one's L + shift
        made_pasts = {(k, v.name.rsplit(".", 1)[-1]): v for k in range(block * period, (block + 1) * period)
                      for v in pasts_of(k)}  # by layer and kind (key, value), in the signature's order
        inputs = {v: made_pasts[(past[v.name] + shift, v.name.rsplit(".", 1)[-1])] for v in graph.inputs
                  if past.get(v.name, -1) // period == 1}
        clone, last = _copy_layer(graph, shift, stack, pairing, inputs, previous, made, weight_for, last)
        graph.inputs.extend(made_pasts.values())
        for out in [o for o in graph.outputs if present.get(o.name, -1) // period == 1]:
            names = {name.rsplit(".", 1)[-1]: name for name in presents_of(present[out.name] + shift)}
            clone[out].name = names[out.name.rsplit(".", 1)[-1]]
            graph.outputs.append(clone[out])
        previous = {v: clone[v] for v in previous}
    for value, users in readers.items():  # the model's last part reads the last layer's
        for user, index in users:
            user.replace_input_with(index, previous[value])
    return None


def _periods_named(period: int) -> str:
    return "layers 0 and 1" if period == 1 else f"layers 0 to {period - 1} and {period} to {2 * period - 1}"


def _paired(graph, stack: str, past: dict[str, int], present: dict[str, int], period: int = 1) -> _Pairing | str:
    """The second period of layers of the ``graph`` of two paired with the first node for node, or why it cannot
    stand for the periods after it."""
    owner = _layers_of_nodes(graph, stack, past, present)
    block = {node: layer // period for node, layer in owner.items()}
    ordered = list(graph)
    sizes = _sizes(graph, f"{stack}.")
    second = [n for n in ordered if block.get(n) == 1]
    # the sizes and constants the first period computed for the second too (the exporter computes each once): shared
    lent = {v for n in second for v in n.inputs if v is not None and v in sizes and v.producer() is not None and
            block.get(v.producer()) == 0}
    shared = {v.producer() for v in lent}  # with the first period's sizes and constants only those read
    for node in reversed(ordered):
        if block.get(node) == 0 and node not in shared and node.outputs and all(v in sizes for v in node.outputs) \
                and all(user in shared for v in node.outputs for user, _ in v.uses()):
            shared.add(node)
    first = [n for n in ordered if block.get(n) == 0 and n not in shared]
    if not second or len(first) != len(second):
        return f"{_periods_named(period)} have {len(first)} and {len(second)} nodes"
    if any(block.get(n) not in (None, 0, 1) for n in ordered):
        return f"the trace holds more than {2 * period} layers"
    pairing = _Pairing(owner, block, period, second, lent, {}, {})
    for a, b in zip(first, second):
        one, other = owner[a], owner[b]
        if other != one + period or (a.domain, a.op_type, a.overload, len(a.inputs), len(a.outputs)) != \
                (b.domain, b.op_type, b.overload, len(b.inputs), len(b.outputs)) or not same_attributes(a, b):
            return f"layer {other}'s {b.op_type} node {b.name} is not layer {one}'s {a.op_type} ({a.name})"
        for x, y in zip(a.inputs, b.inputs):
            if y in lent:  # a size or constant the first period computed: the first reads the same, or its equal
                why = None if x is y or same_constant(x, y) else f"layer {other} reads {y.name} where layer {one} " \
                                                                  f"reads {x.name}"
            else:
                why = _paired_input(x, y, (one, other), block, pairing.counterpart, pairing.carried, past,
                                    (f"{stack}.{one}.", f"{stack}.{other}."))
            if why:
                return why
        pairing.counterpart.update(zip(a.outputs, b.outputs))
    return _read_within(pairing, first, present) or pairing


def _read_within(pairing: _Pairing, first: list, present: dict[str, int]) -> str | None:
    """Where a value of the two periods is read other than as the repeat copies it: the second's outside it but for
    its carried values (the last hidden state) and its presents, the first's outside both but for its presents."""
    leaving = {pairing.counterpart[v] for v in pairing.carried}
    owner, block, period = pairing.owner, pairing.block, pairing.period
    for node in pairing.second:
        for out in node.outputs:
            outside = [u for u, _ in out.uses() if block.get(u) != 1]
            if outside and out not in leaving:
                return f"{out.name} of layer {owner[node]} is read outside the layers traced ({outside[0].op_type} " \
                       f"{outside[0].name})"
            if out.is_graph_output() and present.get(out.name, -1) // period != 1:
                return f"{out.name} of layer {owner[node]} is a graph output other than its present"
    for node in first:
        for out in node.outputs:
            if out in pairing.lent:
                continue
            if any(block.get(u) not in (0, 1) for u, _ in out.uses()) or \
                    (out.is_graph_output() and present.get(out.name, -1) // period != 0):
                return f"{out.name} of layer {owner[node]} is read outside the layers"
    return None


def _copy_layer(graph, shift: int, stack: str, pairing: _Pairing, inputs: dict, previous: dict, made: dict,
                weight_for: Callable, last) -> tuple[dict, object]:
    """The second period's nodes copied as the period ``shift`` layers after it, after node ``last``, each reading
    its layer's past (``inputs``: the second period's past -> the copy's), its weights (made by ``weight_for`` into
    ``made``), the period before's carried values (``previous``) and the shared values as they are: ({the second
    period's value: the copy's}, the last node copied)."""
    import onnx_ir as ir

    clone: dict = {}
    for node in pairing.second:
        ins = []
        for value in node.inputs:
            weight = _weight_layer(value, stack)
            if value is None or value in pairing.lent:
                ins.append(value)
            elif value in clone:
                ins.append(clone[value])
            elif value in inputs:
                ins.append(inputs[value])
            elif value.producer() is not None and pairing.block.get(value.producer()) == 0:  # the period before's
                ins.append(previous[pairing.counterpart[value]])
            elif weight is not None and weight[0] // pairing.period == 1:
                name = f"{stack}.{weight[0] + shift}.{weight[1]}"
                if name not in made:
                    made[name] = weight_for(value, name)
                    graph.register_initializer(made[name])
                ins.append(made[name])
            else:
                ins.append(value)
        k = pairing.owner[node] + shift
        outs = [ir.Value(name=f"{o.name}__layer{k}", shape=o.shape, type=o.type) for o in node.outputs]
        meta = dict(node.metadata_props)  # its module named as layer k's: locate and departure read the layers so
        meta[SCOPES] = repr([_shifted(scope, stack, shift) for scope in _scopes(node)])
        copy = ir.Node(node.domain, node.op_type, ins, attributes=list(node.attributes.values()),
                       overload=node.overload, outputs=outs, version=node.version, name=f"{node.name}__layer{k}",
                       metadata_props=meta)
        graph.insert_after(last, copy)
        last = copy
        clone.update(zip(node.outputs, outs))
    return clone, last


def _shifted(scope: str, stack: str, shift: int) -> str:
    """A module path ``stack``.K... as ``stack``.(K + ``shift``)...; any other as it is."""
    index, dot, rest = scope[len(stack) + 1:].partition(".") if scope.startswith(stack + ".") else ("", "", "")
    return f"{stack}.{int(index) + shift}{dot}{rest}" if index.isdigit() else scope


def _weight_layer(value, stack: str) -> tuple[int, str] | None:
    """(its layer, the rest of its name) of an initializer named as a layer's weight (``stack``.K.rest), or None."""
    if value is None or not value.is_initializer() or not value.name.startswith(stack + "."):
        return None
    index, _, rest = value.name[len(stack) + 1:].partition(".")
    return (int(index), rest) if index.isdigit() and rest else None


def _paired_input(x, y, layers: tuple[int, int], block, counterpart, carried, past,
                  prefixes: tuple[str, str]) -> str | None:
    """Why input ``y`` of layer ``layers[1]`` is not what ``x`` is for layer ``layers[0]``, its counterpart one period
    before, or None (recording a carried value). ``prefixes``: the two layers' weights' names' starts."""
    one, other = layers
    if x is None or y is None:
        return None if x is y else "an optional input present in one layer only"
    if x.name in past or y.name in past:
        return None if (past.get(x.name), past.get(y.name)) == layers and \
            x.name.split(".")[-1] == y.name.split(".")[-1] else \
            f"{y.name} is not layer {other}'s past as {x.name} is layer {one}'s"
    if x.is_initializer() and x.name.startswith(prefixes[0]):
        return None if y.is_initializer() and y.name == prefixes[1] + x.name[len(prefixes[0]):] else \
            f"{y.name} is not layer {other}'s {x.name[len(prefixes[0]):]}"
    if x in counterpart:
        return None if counterpart[x] is y else f"{y.name} is not layer {other}'s own {x.name}"
    if x is y:
        return None
    if y.producer() is not None and block.get(y.producer()) == 0:  # what the first period hands the second
        if carried.setdefault(y, x) is not x:
            return f"{y.name} stands for two values"
        return None
    if same_constant(x, y):
        return None
    return f"layer {other} reads {y.name} where layer {one} reads {x.name}"
