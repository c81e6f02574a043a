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

from .graph import LocateGraph
from ptx.infer.formats.onnx_names import RULE, folded_into, node_props, scopes_of, short_class
from .origin import Located, NothingToLocate, Step, node_doc
from .sweep import tensor_error

CHUNK = 8  # modules replayed a question (each its input and output asked for)


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
    outputs = set(graph.output_names)
    found = []
    for scope, idx in members.items():
        chain = [scope]
        if scope in rewritten:  # batch norm folded into its convolution: replay the two in turn
            chain = [folded_into(nodes[idx[0]], scope) if len(idx) == 1 else None, scope]
        if any(m not in modules for m in chain):  # (an owner of None, not found, is no module's name)
            continue
        inside = set(idx)
        produced = {o for i in idx for o in nodes[i].output if o}
        ins = list(dict.fromkeys(t for i in idx for t in graph.inputs_of[i]
                                 if t not in produced and (graph.comparable(t) or t in feeds)))
        outs = [t for t in produced if t in outputs or set(graph.readers.get(t, ())) - inside]
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
    questions = 0

    def replayed(chosen: list[dict]):
        """(candidate, the graph's input to it, the graph's output of it, the module's, the error) for
        each of ``chosen`` that replays, CHUNK to a question."""
        nonlocal questions
        for start in range(0, len(chosen), CHUNK):
            chunk = chosen[start:start + CHUNK]
            values = reference.values([t for c in chunk for t in (c["input"], c["output"])])
            questions += 1
            for c in chunk:
                got = _replay(torch, [modules[m] for m in c["chain"]], values[c["input"]])
                if got is not None:
                    want = values[c["output"]]
                    yield c, values[c["input"]], want, got, tensor_error(c["output"], got, want, tolerance_of)

    seen = 0  # modules replayed, where none does
    for seen, found in enumerate(replayed(candidates), 1):
        if found[-1].departs:
            break
    else:
        raise NothingToLocate(f"nothing to locate: every module of {other.name} replayed on the graph's own tensors "
                              f"agrees with {graph.path.name} ({seen} modules)")
    c, x, want, got, error = found
    submodule = modules[c["module"]]
    inputs = [{"name": c["input"], "kind": "computed" if c["input"] in graph.produced_at else "graph input",
               "shape": list(np.shape(x)), "max_abs": 0.0, "magnitude": float(np.abs(x).max()) if np.size(x) else 0.0,
               "departs": False}]
    for pname, param in submodule.named_parameters():
        full = f"{c['module']}.{pname}"
        theirs = param.detach().numpy()
        ours = graph.weight(full)
        diff = float(np.abs(ours.astype(np.float64) - theirs).max()) if ours is not None and \
            ours.shape == theirs.shape else None
        inputs.append({"name": full, "kind": "weight", "shape": list(theirs.shape), "max_abs": diff,
                       "magnitude": float(np.abs(theirs).max()) if theirs.size else 0.0, "departs": bool(diff)})
    changed = [i["name"] for i in inputs if i["kind"] == "weight" and i["departs"]]
    born = ("its input is the graph's own: born here" +
            (f"; its weight {', '.join(changed)} differs between the two files" if changed else ""))
    origin_doc = node_doc(graph, c["at"], error, inputs)
    cls = origin_doc["class"] if origin_doc["module"] == c["module"] and origin_doc["class"] else \
        getattr(submodule, "original_name", None)
    origin_doc.update(born=born, module=c["module"], **{"class": short_class(cls) if cls else None})
    # the path: each enclosing module replayed the same way, then the whole model
    path = [Step(origin_doc["node"], origin_doc["op"], c["output"], error.max_abs, True, c["module"])]
    enclosing = sorted((e for e in candidates if c["module"].startswith(e["module"] + ".")), key=lambda e: -e["depth"])
    path += [Step(graph.label(e["at"]), graph.nodes[e["at"]].op_type, e["output"], err.max_abs, err.departs,
                  e["module"]) for e, *_, err in replayed(enclosing)]
    final = reference.values(graph.output_names)
    whole = _replay(torch, [script], *[case.feeds[i.name] for i in graph.proto.graph.input
                                       if i.name not in graph.initializer])
    if whole is not None and len(graph.output_names) == 1:
        err = tensor_error(graph.output_names[0], whole, final[graph.output_names[0]], tolerance_of)
        path.append(Step("(the whole model)", "", graph.output_names[0], err.max_abs, err.departs, "(root)"))
    located = Located(graph.path.name, reference.label, label, case.label, origin_doc, path, questions + 1,
                      2 * CHUNK, len(graph.nodes))
    located.notes.append("note: TorchScript modules take no forward hooks; each module was replayed on the ONNX "
                         "graph's own input to it")
    located.values = {"inputs": {c["input"]: x}, "reference": {c["output"]: want}, "other": {c["output"]: got},
                      "outputs": [c["output"]]}

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
