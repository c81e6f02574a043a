"""A node of an ONNX graph named in its author's PyTorch code, from the metadata torch's exporter
(torch.export-based, ``dynamo=True``) writes on every node:

- ``pkg.torch.onnx.name_scopes``: ``['', 'layer1', 'layer1.0', 'layer1.0.conv2', 'conv2d_1']``,
  the module path from the root, the last entry the aten op's own name;
- ``pkg.torch.onnx.class_hierarchy``: the classes along that path, the last the aten op;
- ``pkg.torch.onnx.stack_trace``: the Python frames from the root's ``forward`` inwards, torch's own
  modules' frames (nn.Conv2d.forward) among them.

A node a rewrite rule made from several (``pkg.onnxscript.rewriter.rule_name``, batch norm folded
into the convolution before it) carries one of its origins' scopes: the rule is named with it.
onnx and the standard library only.
"""
from __future__ import annotations

import ast
import re

SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"
STACK = "pkg.torch.onnx.stack_trace"
RULE = "pkg.onnxscript.rewriter.rule_name"
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)\n\s*(?P<code>[^\n]*)')
# Frames inside torch (nn.Conv2d.forward, containers) say where torch computes, not the user's code.
_TORCH_FILE = re.compile(r"[/\\](torch|torchvision)[/\\]")


def _listed(text: str | None) -> list[str]:
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def short_class(name: str) -> str:
    """``torch.nn.modules.conv.Conv2d`` -> ``torch.nn.Conv2d``, and a class of the user's file that
    ``ptx export --module tinyvit.py:build`` imported as ``ptx_user_tinyvit_44168676`` -> ``tinyvit.Attention``
    (as users write them)."""
    name = re.sub(r"^ptx_user_(\w+?)_[0-9a-f]{8}\.", r"\1.", name)
    return re.sub(r"^torch\.nn\.modules\.\w+\.", "torch.nn.", name)


def node_props(node) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def folded_into(node, scope: str) -> str | None:
    """The module a rewritten node's weight belongs to, where a rule folded ``scope`` into it: batch
    norm folded into a convolution keeps the convolution's weight name (``layer3.1.conv2.weight``)
    and the batch norm's scope (``layer3.1.bn2``). None where the node was not rewritten so."""
    if RULE not in node_props(node) or len(node.input) < 2 or not node.input[1].endswith(".weight"):
        return None
    owner = node.input[1][:-len(".weight")]
    sibling = owner.rpartition(".")[0] == scope.rpartition(".")[0]
    return owner if owner != scope and sibling else None


def module_of(node) -> dict | None:
    """``{module, class, source, code, rule, folded}`` for a node torch's exporter wrote, else None."""
    props = node_props(node)
    scopes = _listed(props.get(SCOPES))
    if not scopes:
        return None
    modules = scopes[:-1]  # the last scope is the aten op's own name
    classes = _listed(props.get(CLASSES))[:-1]
    module = next((m for m in reversed(modules) if m), "")
    cls = short_class(classes[len(modules) - 1]) if len(classes) >= len(modules) and classes else None
    named = {"module": module or "(the model itself)", "class": cls, "source": None, "code": None,
             "rule": props.get(RULE), "folded": None}
    owner = folded_into(node, module)
    if owner:  # name the module whose weight the node computes with; the folded one beside it
        named.update(module=owner, **{"class": None}, folded=f"{module} ({cls})" if cls else module)
    frames = [m.groupdict() for m in _FRAME.finditer(props.get(STACK, ""))]
    users = [f for f in frames if not _TORCH_FILE.search(f["file"]) and "site-packages" not in f["file"]]
    if users:  # the innermost of the user's own frames: the line that called this module or op
        named["source"] = f"{users[-1]['file']}:{users[-1]['line']}"
        named["code"] = users[-1]["code"].strip()
    return named


def scopes_of(node) -> list[str]:
    """The module paths a node lies in, outermost first ('' the root excluded)."""
    return [s for s in _listed(node_props(node).get(SCOPES))[:-1] if s]
