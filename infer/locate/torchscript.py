"""``ptx verify model.onnx --against model.torchscript.pt --locate``: the module of the user's code
whose TorchScript answer parts from the ONNX graph's, module by module.

Forward hooks would be the natural way to read a module's own outputs, but torch refuses them on a
loaded TorchScript module ("register_forward_hook is not supported on ScriptModules", torch 2.13).
What a ScriptModule does keep is every submodule, each callable on its own. So each module that
the exporter's ``pkg.torch.onnx.name_scopes`` metadata delimits in the graph with one computed
input and one output is *replayed*: its TorchScript submodule is run on the very tensor the ONNX
graph fed that scope, and its answer compared with the graph's output of the scope. The module's
inputs agree by construction, so the first module (in graph order, innermost first) that departs is
where the difference is born; its enclosing modules, replayed the same way, and the whole model show
how it grows. A scope that an exporter rewrite made (batch norm folded into the convolution before
it) spans more than its module and is skipped: replaying that module alone would depart falsely.

This module imports torch (only the TorchScript path does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ptx.errors import PtxError

from .origin import FRONTIER, Located, NothingToLocate, Step, tensor_error
from .graph import LocateGraph
from .names import RULE, folded_into, module_of, node_props, scopes_of, short_class


def _replayable(graph: LocateGraph, modules: dict, feeds) -> list[dict]:
    """Scopes of the graph that a TorchScript submodule can be replayed on: one computed input,
    one output, no exporter rewrite inside at their own level. Innermost first at each output."""
    nodes = graph.nodes
    members: dict[str, list[int]] = {}
    rewritten = set()
    for i, node in enumerate(nodes):
        scopes = scopes_of(node)
        for scope in scopes:
            members.setdefault(scope, []).append(i)
        if scopes and RULE in node_props(node):
            rewritten.add(scopes[-1])
    readers: dict[str, set[int]] = {}
    for i, names in enumerate(graph.inputs_of):
        for name in names:
            readers.setdefault(name, set()).add(i)
    outputs = set(graph.output_names)
    found = []
    for scope, idx in members.items():
        chain = [scope]
        if scope in rewritten:  # batch norm folded into its convolution: replay the two in turn
            owner = folded_into(nodes[idx[0]], scope) if len(idx) == 1 else None
            if owner is None or owner not in modules:
                continue
            chain = [owner, scope]
        if any(m not in modules for m in chain):
            continue
        inside = set(idx)
        produced = {o for i in idx for o in nodes[i].output if o}
        ins = list(dict.fromkeys(t for i in idx for t in graph.inputs_of[i]
                                 if t not in produced and (graph.comparable(t) or t in feeds)))
        outs = [t for t in produced if t in outputs or readers.get(t, set()) - inside]
        if len(ins) == 1 and len(outs) == 1:
            found.append({"module": chain[0], "chain": chain, "input": ins[0], "output": outs[0],
                          "at": graph.produced_at[outs[0]], "depth": scope.count(".") + 1})
    return sorted(found, key=lambda c: (c["at"], -c["depth"]))


def locate_torchscript(graph: LocateGraph, reference, other: Path, tolerance_of, case, label: str,
                       progress: Callable[[str], None]) -> tuple[Located, Callable[[Path], str]]:
    import torch

    progress(f"locating: {label} against {reference.label} on {case.label}, module by module")
    script = _load(other)
    modules = dict(script.named_modules())
    candidates = _replayable(graph, modules, case.feeds)
    if not candidates:
        raise PtxError(f"--locate: {graph.path.name} names no module of {other.name} with one input and one output "
                       "(its nodes carry no pkg.torch.onnx.name_scopes: export it with `ptx export --module`)")
    questions, origin, seen = 0, None, {}
    for start in range(0, len(candidates), FRONTIER // 2):
        chunk = candidates[start:start + FRONTIER // 2]
        values = reference.values([t for c in chunk for t in (c["input"], c["output"])])
        questions += 1
        for c in chunk:
            got = _replay(torch, [modules[m] for m in c["chain"]], values[c["input"]])
            if got is None:
                continue
            error = tensor_error(c["output"], got, values[c["output"]], tolerance_of)
            seen[c["module"]] = (c, error, values[c["input"]], values[c["output"]], got)
            if error.departs:
                origin = c
                break
        if origin is not None:
            break
    if origin is None:
        raise NothingToLocate(f"nothing to locate: every module of {other.name} replayed on the graph's own tensors "
                              f"agrees with {graph.path.name} ({len(seen)} modules)")
    c, error, x, want, got = seen[origin["module"]]
    k = origin["at"]
    node = graph.nodes[k]
    named = module_of(node) or {}
    submodule = modules[origin["module"]]
    cls = named.get("class") if named.get("module") == origin["module"] and named.get("class") else \
        getattr(submodule, "original_name", None)
    inputs = [{"name": c["input"], "kind": "computed" if c["input"] in graph.produced_at else "graph input",
               "shape": list(np.shape(x)), "max_abs": 0.0, "magnitude": float(np.abs(x).max()) if np.size(x) else 0.0,
               "departs": False}]
    for pname, param in submodule.named_parameters():
        full = f"{origin['module']}.{pname}"
        theirs = param.detach().numpy()
        ours = graph.weight(full)
        diff = float(np.abs(ours.astype(np.float64) - theirs).max()) if ours is not None and \
            ours.shape == theirs.shape else None
        inputs.append({"name": full, "kind": "weight", "shape": list(theirs.shape), "max_abs": diff,
                       "magnitude": float(np.abs(theirs).max()) if theirs.size else 0.0, "departs": bool(diff)})
    changed = [i["name"] for i in inputs if i["kind"] == "weight" and i["departs"]]
    born = ("its input is the graph's own: born here" +
            (f"; its weight {', '.join(changed)} differs between the two files" if changed else ""))
    origin_doc = {"node": node.name or f"#{k}", "index": k, "op": node.op_type, "output": c["output"],
                  "max_abs": error.max_abs, "rel": error.rel, "sqnr_db": error.sqnr_db, "magnitude": error.magnitude,
                  "atol": error.tolerance.atol,
                  "rtol": error.tolerance.rtol, "born": born, "inputs": inputs, "module": origin["module"],
                  "class": short_class(cls) if cls else None, "source": named.get("source"),
                  "code": named.get("code"), "rule": named.get("rule"), "folded": named.get("folded")}
    # the path: each enclosing module replayed the same way, then the whole model
    path = [Step(origin_doc["node"], node.op_type, c["output"], error.max_abs, True, origin["module"])]
    enclosing = [e for e in candidates if origin["module"].startswith(e["module"] + ".")]
    if enclosing:
        values = reference.values([t for e in enclosing for t in (e["input"], e["output"])])
        questions += 1
        for e in sorted(enclosing, key=lambda e: -e["depth"]):
            replayed = _replay(torch, [modules[m] for m in e["chain"]], values[e["input"]])
            if replayed is not None:
                err = tensor_error(e["output"], replayed, values[e["output"]], tolerance_of)
                end = graph.nodes[e["at"]]
                path.append(Step(end.name or f"#{e['at']}", end.op_type, e["output"], err.max_abs, err.departs,
                                 e["module"]))
    final = reference.values(graph.output_names)
    weights = graph.initializers
    whole = _replay(torch, [script], *[case.feeds[i.name] for i in graph.proto.graph.input if i.name not in weights])
    if whole is not None and len(graph.output_names) == 1:
        err = tensor_error(graph.output_names[0], whole, final[graph.output_names[0]], tolerance_of)
        path.append(Step("(the whole model)", "", graph.output_names[0], err.max_abs, err.departs, "(root)"))
    located = Located(graph.path.name, reference.label, label, case.label, origin_doc, path, questions + 1,
                      2 * (FRONTIER // 2), len(graph.nodes))
    located.notes.append("note: TorchScript modules take no forward hooks; each module was replayed on the ONNX "
                         "graph's own input to it")
    located.values = {"inputs": {c["input"]: x}, "reference": {c["output"]: want}, "other": {c["output"]: got},
                      "outputs": [c["output"]], "node": k}

    def write_against(folder: Path) -> str:
        # the module's own TorchScript, its weights with it (a folded pair: the two in turn)
        piece = submodule if len(c["chain"]) == 1 else torch.jit.script(
            torch.nn.Sequential(*[modules[m] for m in c["chain"]]))
        piece.save(str(folder / "against.pt"))
        return "against.pt"

    return located, write_against


def _load(path: Path):
    from ..runtime.torch_files import load_torchscript

    try:
        return load_torchscript(path)[0]
    except Exception as exc:  # noqa: BLE001
        raise PtxError(f"--against {path.name}: torch cannot load it as TorchScript ({exc}); give the TorchScript "
                       "file of the same module") from None


def _replay(torch, chain, *arrays):
    """The modules' answer on numpy inputs (each fed the one before's), as numpy; None where they
    cannot take them (a scope whose one input is not the module's one argument)."""
    try:
        with torch.inference_mode():
            out = chain[0](*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
            for module in chain[1:]:
                out = module(out)
    except Exception:  # noqa: BLE001 - such a scope is not replayable: skipped, the others still tell
        return None
    if isinstance(out, (tuple, list)):
        out = out[0] if len(out) == 1 else None
    return out.detach().numpy() if hasattr(out, "detach") else None
