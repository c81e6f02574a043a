"""``ptx verify --locate --repro DIR``: the smallest graph that still disagrees, ready to file with
the runtime: the origin node with what feeds it (onnx.utils.Extractor), the tensors it read on the
case located, both sides' outputs, and a README whose one command shows the disagreement alone.

DIR is written whole or not at all (ptx.atomic.atomic_folder). onnx and numpy only; a TorchScript
file's own piece (against.pt) is written by locate_torchscript.py, handed in as ``write_against``.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .origin import Located
from .graph import LocateGraph


def check_repro_dir(where: str | Path) -> Path:
    """A folder that does not exist yet, or an empty one: --repro never overwrites a user's files."""
    where = Path(where)
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise PtxError(f"--repro {where}: it exists and is not an empty folder; give a new folder name")
    return where


def extract(graph: LocateGraph, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]):
    """The subgraph of ``graph`` from ``inputs`` to ``outputs`` (names), weights inline, typed by
    the values actually seen (shape inference may not know every intermediate's type)."""
    import onnx
    from onnx import helper
    from onnx.external_data_helper import load_external_data_for_model
    from onnx.utils import Extractor

    typed = onnx.ModelProto()
    typed.CopyFrom(graph.proto)
    del typed.graph.value_info[:]
    known = {i.name for i in typed.graph.input} | {o.name for o in typed.graph.output}
    for name, value in {**inputs, **outputs}.items():
        if name not in known:
            typed.graph.value_info.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype), list(np.shape(value))))
    piece = Extractor(typed).extract_model(list(inputs), list(outputs))
    load_external_data_for_model(piece, str(graph.folder))  # self-contained: the weights inside
    for tensor in piece.graph.initializer:
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return piece


def write_repro(where: Path, located: Located, graph: LocateGraph, *, other_graph: LocateGraph | None = None,
                backends: Sequence[str] = (), tolerance_args: Sequence[str] = (),
                write_against: Callable[[Path], str] | None = None) -> dict:
    """Write DIR (see the module's docstring); returns what ``located.repro`` records."""
    import onnx

    from ptx.atomic import atomic_folder

    where = check_repro_dir(where)
    values = located.values
    inputs, outputs = values["inputs"], {o: values["reference"][o] for o in values["outputs"]
                                         if o in values["reference"]}
    piece = extract(graph, inputs, outputs)
    nodes = len(piece.graph.node)
    command = ["ptx", "verify", str(where / "repro.onnx"), "--inputs", str(where / "inputs.npz")]
    with atomic_folder(where) as staging:
        onnx.save_model(piece, str(staging / "repro.onnx"))
        np.savez(staging / "inputs.npz", **{n: np.asarray(v) for n, v in inputs.items()})
        sides = {f"{located.reference}:{n}": v for n, v in values["reference"].items()}
        sides.update({f"{located.other}:{n}": v for n, v in values["other"].items()})
        np.savez(staging / "outputs.npz", **sides)
        if other_graph is not None:
            onnx.save_model(extract(other_graph, inputs, outputs), str(staging / "against.onnx"))
            command += ["--against", str(where / "against.onnx")]
        elif write_against is not None:
            command += ["--against", str(where / write_against(staging))]
        if backends:
            command += ["--backends", ",".join(backends)]
        command += list(tolerance_args)
        o = located.origin
        (staging / "README").write_text(
            f"{o['op']} node {o['node']} of {located.file}, where {located.other} parts from {located.reference} "
            f"(max abs {o['max_abs']:.2e}{', module ' + o['module'] if o.get('module') else ''}), alone:\n"
            f"{shlex.join(command)}\n"
            f"exits 1: its outputs disagree; outputs.npz holds both sides' ({located.reference}: and "
            f"{located.other}: keys), inputs.npz what the node read on {located.case}.\n")
    return {"folder": str(where), "nodes": nodes, "command": shlex.join(command)}
