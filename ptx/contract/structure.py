"""The structure a model's outputs come in (tuples, lists and dicts nested, a ModelOutput, a
dataclass, a named tuple): flattened to named tensors by their path, recorded as JSON, and rebuilt
from the named tensors without torch.

Every runner answers flat named tensors (``run(dict) -> dict``), and every file's outputs are a flat
list. A module that returns ``(predictions, [p3, p4, p5])`` (ultralytics' DetectionModel) is exported
with the outputs ``output_0``, ``output_1_0``, ``output_1_1``, ``output_1_2``, and its structure is
recorded in the file (``ptx.output_structure``), so that ``Model.nest`` gives an answer back as the
module returned it, on any runtime.

Names follow the path. A tensor alone is ``output``; the items of a tuple or list returned are
``output_0``, ``output_1``...; a dict's (a ModelOutput's, a dataclass's, a named tuple's) its own keys;
each level below adds ``_INDEX`` or ``_KEY`` (``hidden_states_0``, ``text_model_output_pooler_output``).
Those are the names ptx gave the outputs it exported before it recorded structures, and they stay so.

The walk is ptx's own rather than torch.utils._pytree's: a plain dataclass is no pytree node unless
registered, a generation cache is left out by its key before its insides are walked (transformers
registers its caches as pytree nodes), the names must stay the ones above, and the ONNX Runtime
path rebuilds without importing torch. Standard library only.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ptx.errors import PtxError

from .tensors import ContractError, parse_json

STRUCTURE_KEY = "output_structure"  # ptx.output_structure: the JSON below, in a file ptx export --module wrote
TOP = "output"  # the name of a tensor returned alone, and the prefix of a tuple's or list's items

# The JSON: a leaf is the output's name (a string); null an entry that was None (or a cache left out);
# {"tuple": [...]}, {"list": [...]}; {"dict": {key: ...}} with "type" for a ModelOutput or dataclass (rebuilt
# as a dict: its class may not import where the file runs) and {"namedtuple": {field: ...}, "type": NAME}.
SEQUENCES = ("tuple", "list")
KEYED = ("dict", "namedtuple")


@dataclass(frozen=True)
class OutputStructure:
    """A model's outputs as it returns them: ``tree`` is the JSON value described above."""

    tree: object

    def names(self) -> list[str]:
        """The outputs' names, in the order the walk met them (the file's order)."""
        found: list[str] = []

        def walk(node) -> None:
            if isinstance(node, str):
                found.append(node)
            elif isinstance(node, dict):
                kind = _kind(node)
                for child in (node[kind] if kind in SEQUENCES else node[kind].values()):
                    walk(child)

        walk(self.tree)
        return found

    @property
    def nested(self) -> bool:
        """Whether the structure says more than the names do: a container inside a container."""
        if not isinstance(self.tree, dict):
            return False
        kind = _kind(self.tree)
        children = self.tree[kind] if kind in SEQUENCES else self.tree[kind].values()
        return any(isinstance(c, dict) for c in children)

    def nest(self, outputs: Mapping[str, object]):
        """Named tensors (a runner's answer) -> the structure the module returned them in: tuples,
        lists, dicts (a ModelOutput or dataclass as a dict of its fields) and named tuples."""
        missing = [n for n in self.names() if n not in outputs]
        if missing:
            raise PtxError(f"the answer lacks output {missing[0]!r}, which the structure holds: nest the answer of "
                           "run(feeds) with every output (not outputs=[...])")

        def build(node):
            if node is None:
                return None
            if isinstance(node, str):
                return outputs[node]
            kind = _kind(node)
            if kind in SEQUENCES:
                items = [build(c) for c in node[kind]]
                return tuple(items) if kind == "tuple" else items
            built = {k: build(c) for k, c in node[kind].items()}
            if kind == "namedtuple":
                try:
                    return collections.namedtuple(node.get("type", "Outputs"), list(built))(**built)
                except (TypeError, ValueError):  # a field Python cannot name: its values by key
                    return built
            return built

        return build(self.tree)

    def describe(self) -> str:
        """``(output_0, [output_1_0, output_1_1, output_1_2])``: the structure with each tensor's name."""
        def text(node) -> str:
            if node is None:
                return "None"
            if isinstance(node, str):
                return node
            kind = _kind(node)
            if kind in SEQUENCES:
                inner = ", ".join(text(c) for c in node[kind])
                return f"({inner}{',' if len(node[kind]) == 1 else ''})" if kind == "tuple" else f"[{inner}]"
            if "type" in node:
                return f"{node['type']}({', '.join(f'{k}={text(c)}' for k, c in node[kind].items())})"
            return "{" + ", ".join(f"{k}: {text(c)}" for k, c in node[kind].items()) + "}"

        return text(self.tree)

    def renamed(self, names: Mapping[str, str]) -> "OutputStructure":
        """The same structure with its leaves renamed (``--output``'s names, by the flat ones)."""
        def walk(node):
            if isinstance(node, str):
                return names.get(node, node)
            if not isinstance(node, dict):
                return node
            kind = _kind(node)
            children = [walk(c) for c in node[kind]] if kind in SEQUENCES else \
                {k: walk(c) for k, c in node[kind].items()}
            return {**node, kind: children}

        return OutputStructure(walk(self.tree))

    def to_json(self) -> str:
        return json.dumps(self.tree, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str) -> "OutputStructure":
        """What ``to_json`` wrote, checked: every node one of the kinds above, every name once."""
        tree = parse_json(text, where)

        def check(node, at: str) -> None:
            if node is None or (isinstance(node, str) and node):
                return
            if not isinstance(node, dict):
                raise ContractError(f"{where}{at}: {node!r} is neither an output's name, null nor a container")
            kinds = [k for k in (*SEQUENCES, *KEYED) if k in node]
            extra = sorted(set(node) - {*kinds, "type"})
            if len(kinds) != 1 or extra or ("type" in node and not isinstance(node["type"], str)):
                raise ContractError(f"{where}{at}: {node!r} is not one of tuple, list, dict, namedtuple (with a type)")
            children = node[kinds[0]]
            if kinds[0] in SEQUENCES and isinstance(children, list):
                for i, child in enumerate(children):
                    check(child, f"{at}[{i}]")
            elif kinds[0] in KEYED and isinstance(children, dict):
                for key, child in children.items():
                    check(child, f"{at}[{key!r}]")
            else:
                raise ContractError(f"{where}{at}.{kinds[0]}: {children!r} is not a "
                                    f"{'list' if kinds[0] in SEQUENCES else 'JSON object'}")

        check(tree, "")
        structure = cls(tree)
        names = structure.names()
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ContractError(f"{where}: the output {repeated[0]!r} appears twice")
        return structure


def _kind(node: dict) -> str:
    return next(k for k in (*SEQUENCES, *KEYED) if k in node)


# -- flattening a module's answer ------------------------------------------------------------------


@dataclass
class Flat:
    """A module's answer flattened: its tensors by name in the walk's order, the entries left out as
    caches ([(name, type name)]), and the structure."""

    tensors: dict[str, object] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    structure: OutputStructure | None = None


def flatten(out, is_tensor: Callable[[object], bool], is_cache: Callable[[str | None, object], bool]) -> Flat:
    """``out`` (a module's answer) -> Flat. ``is_tensor`` says what a leaf is; ``is_cache(key or
    None, value)`` what is left out as a generation cache. A leaf of another kind is one PtxError
    naming its path (``output[1]['anchors'] is a str``); so is a list of dicts, a detection model's
    one answer per image, which is no structure of fixed tensors."""
    if isinstance(out, list) and out and all(isinstance(v, Mapping) for v in out):
        raise PtxError(f"the model returned a list of {len(out)} dicts (one per image, as torchvision's detection "
                       "models answer): ptx exports outputs of a fixed structure; return the tensors batched (a tuple "
                       "or dict of them)")
    flat = Flat()
    paths: dict[str, str] = {}

    def leaf(name: str, path: str, value) -> str:
        if name in paths:
            raise PtxError(f"the model's {TOP}{paths[name]} and {TOP}{path} would both be named {name!r}: "
                           "rename a key of one, so that every output has a name of its own")
        paths[name] = path
        flat.tensors[name] = value
        return name

    def walk(value, prefix: str, path: str, key: str | None, top: bool = False):
        # prefix: the name this node's tensors start with ("" for the keys of a dict returned)
        if value is None:
            return None
        if is_tensor(value):
            return leaf(prefix or TOP, path, value)
        if is_cache(key, value):
            flat.dropped.append((prefix, type(value).__name__))
            return None
        entries = _entries(value, top)
        if entries is None:
            where = f"the model's {TOP}{path}" if path else "the model"
            raise PtxError(f"{where} {'is' if path else 'returned'} a {type(value).__name__}, not a tensor: ptx exports "
                           "tensors, alone or in tuples, lists and dicts of them (a ModelOutput or dataclass too); "
                           "return tensors there, or leave it out")
        kind, items = entries
        children = {}
        for part, child, step in items:
            name = f"{prefix}_{part}" if prefix else str(part)
            if top and kind in SEQUENCES:
                name = f"{TOP}_{part}"
            children[part] = walk(child, name, path + step, part if kind not in SEQUENCES else None)
        if kind in SEQUENCES:
            return {kind: list(children.values())}
        node = {kind: {str(k): v for k, v in children.items()}}
        if kind == "namedtuple" or type(value) not in (dict, collections.OrderedDict):
            node["type"] = type(value).__name__
        return node

    flat.structure = OutputStructure(walk(out, "", "", None, top=True))
    if not flat.tensors:
        raise PtxError(f"the model returned a {type(out).__name__} without a tensor in it")
    return flat


def _entries(value, top: bool):
    """(kind, [(part of the name, child, step of the path)]) of a container, or None for anything else.
    A named tuple returned is keyed by its fields (as a runner names it); one further in, by index
    (as ptx named it inside a ModelOutput)."""
    if isinstance(value, Mapping):
        return "dict", [(str(k), v, f"[{k!r}]") for k, v in value.items()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return "dict", [(f.name, getattr(value, f.name), f".{f.name}") for f in dataclasses.fields(value)]
    if top and isinstance(value, tuple) and hasattr(value, "_fields"):
        return "namedtuple", [(f, getattr(value, f), f".{f}") for f in value._fields]
    if isinstance(value, (tuple, list)):
        return ("list" if isinstance(value, list) else "tuple"), [(i, v, f"[{i}]") for i, v in enumerate(value)]
    return None
