"""Where a decoder file parts from its model, said as the model's own layer (DESIGN.md 12: when they disagree, say
where). A reduced file that misses its bounds says which prompt and position; this says which of the model's
layers the difference is born in: the residual stream after each layer, in the file and in the eager model, on one
recorded prompt's first step, teacher-forced by construction (both read the same ids), and the layer whose own
contribution to the difference is the largest.

The file's layers are found by the module paths torch's exporter writes on every node
(``pkg.torch.onnx.name_scopes``: ptx.infer.formats.onnx_names): a layer is a scope ``PREFIX.N`` of a list of at least two,
and its output is the last node of that scope (the residual Add). The file is run once with those tensors as
outputs, by ONNX Runtime, where it lies (a copy of its graph beside it, naming the same data file); the model with
a forward hook on each layer. A file without the exporter's scopes (another tool's) has no layers to name: None.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ptx.infer.formats.onnx_names import scopes_of

_LAYER = re.compile(r"^(?P<list>.+)\.(?P<index>\d+)$")


def layer_outputs(graph, prefix: str = "") -> list[tuple[str, str]]:
    """(the module path of each layer, without ``prefix``; the tensor after it) of ``graph``, in layer order."""
    last: dict[str, str] = {}
    for node in graph.node:
        for scope in scopes_of(node):
            if _LAYER.match(scope) and node.output:
                last[scope] = node.output[0]
    lists: dict[str, list[int]] = {}
    for scope in last:
        found = _LAYER.match(scope)
        lists.setdefault(found["list"], []).append(int(found["index"]))
    if not lists:
        return []
    name, indices = max(lists.items(), key=lambda item: len(item[1]))
    if len(indices) < 2:
        return []
    return [(f"{name}.{i}"[len(prefix):] if f"{name}.{i}".startswith(prefix) else f"{name}.{i}", last[f"{name}.{i}"])
            for i in sorted(indices)]


def _file_states(path: Path, outputs: list[str], feeds: dict) -> list[np.ndarray]:
    """The file at ``path`` run by ONNX Runtime on ``feeds`` with ``outputs`` made graph outputs: their values."""
    import onnx

    from ptx.infer.runtime.ort_session import file_session

    proto = onnx.load(str(path), load_external_data=False)
    for name in outputs:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    # beside the file, so that its external data (named relative to it) is found
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".ptx-layers-", suffix=".onnx") as copy:
        onnx.save_model(proto, copy.name)
        del proto
        session = file_session(copy.name)
        taken = {i.name for i in session.get_inputs()}
        return session.run(outputs, {k: v for k, v in feeds.items() if k in taken})


def _model_states(module: torch.nn.Module, layers: list[str], ids: np.ndarray) -> list[np.ndarray]:
    """The output of each of ``module``'s ``layers`` (module paths) on ``ids`` (one prompt, from position 0)."""
    found: dict[str, np.ndarray] = {}
    handles = []
    for path in layers:
        def keep(_, __, output, path=path):
            found[path] = (output[0] if isinstance(output, tuple) else output).detach().float().numpy().copy()
        handles.append(module.get_submodule(path).register_forward_hook(keep))
    try:
        with torch.no_grad():
            module(input_ids=torch.from_numpy(ids), attention_mask=torch.ones_like(torch.from_numpy(ids)), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [found[p] for p in layers]


def departure(path: Path, module: torch.nn.Module, feeds: dict, ids: np.ndarray, prefix: str = "model.") -> str | None:
    """One line: the layer of ``module`` where the decoder file at ``path`` parts from it most on ``feeds`` (the
    first step of a prompt whose ids are ``ids``): each layer's output's relative difference, and what the layer
    added to it; None where the file names no layers."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    named = layer_outputs(graph, prefix)
    del graph
    if not named:
        return None
    theirs = _file_states(path, [t for _, t in named], feeds)
    ours = _model_states(module, [p for p, _ in named], ids)
    errors = [float(np.linalg.norm(t.reshape(-1) - o.reshape(-1)) / max(np.linalg.norm(o.reshape(-1)), 1e-30))
              for t, o in zip(theirs, ours)]
    added = [errors[0], *(b - a for a, b in zip(errors, errors[1:]))]
    worst = int(np.argmax(added))
    before = f", {errors[worst - 1]:.3g} before it" if worst else ""
    return (f"the file parts from the model most in {named[worst][0]} (layer {worst + 1} of {len(named)}): the "
            f"residual stream after it differs by {errors[worst]:.3g} of its size{before}; after the last layer "
            f"{errors[-1]:.3g} (one recorded prompt's first step)")
