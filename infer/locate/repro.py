"""``ptx verify --locate --repro DIR``: the smallest graph that still disagrees, ready to file with
the runtime: the origin node (or the region that departs only together) cut out, the tensors it
read on the case located, both sides' outputs, and a README whose one command shows it alone.

A repro is run before it is described: both sides compute it from the inputs written, and the README
says what they did (exits 1: its outputs disagree; or agrees alone: the difference needs the
surrounding graph, and which region to file instead). Another ONNX file's piece (against.onnx)
takes and gives float32 under the reference's names, its own int8 or float16 tensors quantized or
cast inside, so that the two files load and take the same inputs.

DIR is written whole or not at all (ptx.atomic.atomic_folder), and refused before the search where
it cannot be (check_repro_dir). onnx and numpy only; a TorchScript file's own piece (against.pt) is
written by torchscript.py, handed in as ``write_against``.
"""
from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from ..formats import onnx_files
from .graph import LocateGraph
from .origin import Located
from .sweep import tensor_error


def check_repro_dir(where: str | Path) -> Path:
    """A folder that does not exist yet (under one that can be written), or an empty one: --repro never
    overwrites a user's files, and says so before the search, not after it."""
    where = Path(where)
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise PtxError(f"--repro {where}: it exists and is not an empty folder; give a new folder name")
    parent = next((p for p in [where, *where.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise PtxError(f"--repro {where}: {parent} is a file, not a folder; give a folder to write the repro in")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PtxError(f"--repro {where}: {parent} cannot be written here; give a folder you can write to")
    # Permission bits do not tell: root passes os.access on /proc and read-only mounts. A folder made
    # and removed where the repro's first folder will be made is the only sure answer.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ptx-repro-check.", dir=parent))
    except OSError as exc:
        raise PtxError(f"--repro {where}: a folder cannot be made in {parent} ({exc.strerror or exc}); give a "
                       "folder you can write to") from None
    return where


def _inline(model, folder: Path):
    """``model`` with the weights it refers to in ``folder`` read into it: one file that travels."""
    from onnx.external_data_helper import convert_model_from_external_data, load_external_data_for_model

    load_external_data_for_model(model, str(folder))
    convert_model_from_external_data(model)  # each tensor now holds its bytes, not a reference to weights.bin
    return model


def _against(pairs, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]):
    """The other file's piece computing ``outputs``' counterparts from ``inputs``', wrapped to take and
    give float32 under the reference's names (QuantizeLinear/Cast in, DequantizeLinear/Cast out)."""
    import onnx
    from onnx import helper

    other = pairs.other
    nodes = other.walk_back([pairs.of[o] for o in outputs], {pairs.of[i] for i in inputs})
    fed = {"a/" + pairs.of[i]: pairs.encode(i, v) for i, v in inputs.items()}
    fed.update({"a/" + i: np.zeros((1,), np.float32) for i in other.graph_inputs})
    piece = other.region_model([("a/", nodes, [pairs.of[o] for o in outputs])], fed)
    used = {i.name for i in piece.graph.input}
    del piece.graph.input[:]
    extra = set()
    for name, value in inputs.items():
        inner = "a/" + pairs.of[name]
        if inner not in used:
            continue
        piece.graph.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
            np.asarray(value).dtype), list(np.shape(value))))
        piece.graph.node.insert(0, pairs.converter(name, name, inner, encode=True, extra=extra))
    del piece.graph.output[:]
    for name in outputs:
        piece.graph.node.append(pairs.converter(name, "a/" + pairs.of[name], name, encode=False, extra=extra))
        piece.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    have = {t.name for t in piece.graph.initializer}
    piece.graph.initializer.extend(other.initializer[n] for n in sorted(extra - have) if n in other.initializer)
    return _inline(piece, other.folder)


def _piece(located: Located):
    """(what is cut out in words, its inputs, its outputs) from what origin.py found: the region that
    departs only together, else (a reduced precision, whose origin is nearly always its first layer)
    the node that adds most error, else the origin's node, else the first departure."""
    sweep, region = located.values["sweep"], located.values["region"]
    graph, pairs = sweep.graph, sweep.pairs
    if region is not None:
        what = f"the {len(region.nodes)} nodes {located.region['first']} .. {located.region['last']}"
        return what, located.region["inputs"], region.outputs
    top = located.added[0] if located.added and located.added[0]["departs"] else None
    picked = (top if located.reduced else None) or located.origin or located.first or top
    if picked is None:
        raise PtxError("--repro: nothing departs alone to cut out (no node, and no window of nodes); the difference "
                       "needs the whole model")
    k = picked["index"]
    unit = pairs.unit(k) or next((a.unit for a in sweep.alone.values() if pairs.named(a.unit) == k), None)
    named = pairs.named(unit) if unit is not None else k
    what = f"{graph.nodes[named].op_type} node {graph.label(named)}"
    if unit is None:
        return what, graph.activations_of(k), [o for o in graph.nodes[k].output if graph.comparable(o)]
    return what, unit.inputs, unit.outputs


def write_repro(where: Path, located: Located, graph: LocateGraph, *, other_graph: LocateGraph | None = None,
                backends: Sequence[str] = (), tolerance_args: Sequence[str] = (),
                write_against: Callable[[Path], str] | None = None) -> dict:
    """Write DIR (see the module's docstring); returns what ``located.repro`` records."""
    from ptx.atomic import atomic_folder

    where = check_repro_dir(where)
    command = ["ptx", "verify", str(where / "repro.onnx"), "--inputs", str(where / "inputs.npz")]
    sweep = located.values.get("sweep")
    if sweep is None:  # a TorchScript module: its ONNX scope, replayed
        values = located.values
        what = f"{located.origin['op']} node {located.origin['node']}"
        fed, outputs, want = values["inputs"], values["outputs"], values["reference"]
    else:
        what, names, outputs = _piece(located)
        want = sweep.reference.values(list(names) + list(outputs))
        fed = {**{n: want[n] for n in names}, **sweep.reference.inputs}
    nodes = graph.walk_back(outputs, set(fed))  # with the Constant nodes that hold its weights
    piece = _inline(graph.region_model([("", nodes, outputs)], fed), graph.folder)
    reads = {i.name for i in piece.graph.input}
    inputs = {n: v for n, v in fed.items() if n in reads}
    against = _against(sweep.pairs, inputs, outputs) if other_graph is not None else None
    if sweep is None:
        got, verdict = values["other"], "exits 1: its outputs disagree"
    else:
        got = sweep.other.run(graph.save(against if against is not None else piece), inputs, outputs)
        errors = [tensor_error(o, got[o], want[o], sweep.tolerance_of) for o in outputs if o in got]
        worst = max(errors, key=lambda e: (e.departs, e.excess))
        verdict = (f"exits 1: its outputs disagree (max abs {worst.max_abs:.2e}, rel {worst.rel:.1e}, checked when it "
                   "was written)" if worst.departs else
                   f"agrees alone (max abs {worst.max_abs:.2e}, checked when it was written): the difference needs the "
                   "surrounding graph" + ("; file the region instead" if located.region else
                                          "; no smaller region was found that departs alone: file the whole model"))
    sides = {**{f"{located.reference}:{n}": want[n] for n in outputs},
             **{f"{located.other}:{n}": got[n] for n in outputs if n in got}}
    with atomic_folder(where) as staging:
        onnx_files.save_model(piece, staging / "repro.onnx")  # repro.onnx.data beside it where the piece is large
        np.savez(staging / "inputs.npz", **{n: np.asarray(v) for n, v in inputs.items()})
        np.savez(staging / "outputs.npz", **sides)
        if against is not None:
            onnx_files.save_model(against, staging / "against.onnx")
            command += ["--against", str(where / "against.onnx"), "--backends", "ort-cpu"]
        elif write_against is not None:
            command += ["--against", str(where / write_against(staging))]
        if backends:
            command += ["--backends", ",".join(backends)]
        command += list(tolerance_args)
        module = (located.origin or located.first or {}).get("module")
        (staging / "README").write_text(
            f"{what} of {located.file}, where {located.other} parts from {located.reference}"
            f"{', module ' + module if module else ''}, alone:\n{shlex.join(command)}\n{verdict}; outputs.npz holds "
            f"both sides' ({located.reference}: and {located.other}: keys), inputs.npz what it read on "
            f"{located.case}.\n")
    return {"folder": str(where), "nodes": len(piece.graph.node), "command": shlex.join(command),
            "departs_alone": verdict.startswith("exits 1")}

