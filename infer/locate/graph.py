"""One ONNX graph as ``ptx verify --locate`` walks it: its nodes in order, the tensors live between
them (a cut), and copies of it that give some intermediate tensors as outputs.

The weights are written once, beside a graph that refers to them (ONNX external data), in a
temporary folder: each marked copy is then a small graph file beside the same weights, so that
asking a runtime for a few more tensors neither copies nor re-serialises the weights, and no copy
ever lists every intermediate tensor (what runs out of memory in tools that mark them all).

onnx and numpy only: never torch, nor a runtime.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ptx.errors import ArtifactError, first_line

from ..formats.onnx_graph import subgraphs

WEIGHTS = "weights.bin"
# Tensors smaller than this stay inside the graph file (shape constants, scalars): cheap to copy.
INLINE_BYTES = 1024


def _subgraph_inputs(node) -> set[str]:
    """Names a node's If/Loop/Scan bodies read from the enclosing graph (they use them without
    listing them as the node's inputs): they keep those tensors alive as the node's inputs do."""
    names: set[str] = set()
    for graph in subgraphs(node):
        produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | \
                   {t.name for t in graph.initializer}
        for inner in graph.node:
            names |= {i for i in inner.input if i and i not in produced}
            names |= _subgraph_inputs(inner) - produced
    return names


@dataclass
class LocateGraph:
    """The graph of one ONNX file, its weights external in ``folder`` (removed by ``close``)."""

    path: Path
    folder: Path
    proto: object  # onnx.ModelProto whose initializers point at folder/weights.bin
    inputs_of: list[list[str]] = field(default_factory=list)  # per node: what it reads (subgraphs too)
    produced_at: dict[str, int] = field(default_factory=dict)
    last_use: dict[str, int] = field(default_factory=dict)
    types: dict[str, object] = field(default_factory=dict)  # tensor name -> TypeProto (shape inference)
    _marked: int = 0

    @classmethod
    def open(cls, path: str | Path) -> "LocateGraph":
        import onnx

        path = Path(path)
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any reader failure is the file's, in one line
            raise ArtifactError(f"{path}: not a readable ONNX file ({first_line(exc)}); check it with `ptx inspect`") \
                from None
        folder = Path(tempfile.mkdtemp(prefix="ptx-locate-"))
        try:
            onnx.save_model(proto, str(folder / "graph.onnx"), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=WEIGHTS, size_threshold=INLINE_BYTES)
            # what was saved: the initializers now refer to weights.bin, without their bytes
            proto = onnx.load(str(folder / "graph.onnx"), load_external_data=False)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        graph = cls(path, folder, proto)
        graph._index()
        return graph

    def _index(self) -> None:
        import onnx

        nodes = self.proto.graph.node
        self.inputs_of = [[i for i in n.input if i] + sorted(_subgraph_inputs(n)) for n in nodes]
        for i, node in enumerate(nodes):
            for out in node.output:
                if out:
                    self.produced_at[out] = i
        for i, names in enumerate(self.inputs_of):
            for name in names:
                self.last_use[name] = i
        for out in self.proto.graph.output:  # alive to the end
            self.last_use[out.name] = len(nodes)
        try:
            inferred = onnx.shape_inference.infer_shapes(self.proto)
            infos = [*inferred.graph.value_info, *inferred.graph.output]
        except Exception:  # noqa: BLE001 - types only help OpenVINO name an output; untyped outputs still run
            infos = []
        self.types = {v.name: v.type for v in infos if v.type.HasField("tensor_type")}

    # -- the graph in order -------------------------------------------------------------------

    @property
    def nodes(self):
        return self.proto.graph.node

    @property
    def initializers(self) -> set[str]:
        return {t.name for t in self.proto.graph.initializer}

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.proto.graph.output]

    def comparable(self, name: str) -> bool:
        """A tensor a runtime computes from the inputs: not a weight, not a Constant node's value."""
        at = self.produced_at.get(name)
        return at is not None and self.nodes[at].op_type != "Constant"

    def cut(self, k: int) -> list[str]:
        """The tensors alive after node ``k`` runs: made at or before it, read after it (or a graph
        output). If they all agree, whatever disagrees downstream is born after node ``k``."""
        return [t for t, at in self.produced_at.items()
                if at <= k < self.last_use.get(t, -1) and self.comparable(t)]

    def activations_of(self, k: int) -> list[str]:
        """Node ``k``'s inputs that are computed (not weights, not constants)."""
        return [i for i in self.inputs_of[k] if self.comparable(i)]

    def chain(self, start: int, targets: Iterable[str]) -> list[tuple[int, str]]:
        """The shortest chain of (node, the tensor it passes on) from node ``start`` to one of the
        graph outputs ``targets`` (breadth first over the nodes that read each tensor)."""
        readers: dict[str, list[int]] = {}
        for i, names in enumerate(self.inputs_of):
            for name in names:
                readers.setdefault(name, []).append(i)
        targets = set(targets)
        came = {start: None}
        queue = deque([start])
        while queue:
            i = queue.popleft()
            hit = next((o for o in self.nodes[i].output if o in targets), None)
            if hit is not None:
                chain = []
                j, passed = i, hit
                while j is not None:
                    chain.append((j, passed))
                    prev = came[j]
                    if prev is not None:
                        passed = next(o for o in self.nodes[prev].output if j in readers.get(o, ()))
                    j = prev
                return chain[::-1]
            for out in self.nodes[i].output:
                for reader in readers.get(out, ()):
                    if reader not in came:
                        came[reader] = i
                        queue.append(reader)
        return [(start, next(o for o in self.nodes[start].output if o))]

    # -- copies that answer more tensors -------------------------------------------------------

    def marked(self, names: Sequence[str]) -> Path:
        """A copy of the graph beside the weights whose outputs are ``names`` (and nothing else)."""
        import onnx

        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)  # the graph without the weights' bytes: small
        del copy.graph.output[:]
        for name in names:
            info = copy.graph.output.add()
            info.name = name
            if name in self.types:
                info.type.CopyFrom(self.types[name])
        self._marked += 1
        where = self.folder / f"marked-{self._marked}.onnx"
        onnx.save_model(copy, str(where))
        return where

    def weight(self, name: str) -> np.ndarray | None:
        """An initializer's values (read from the external weights)."""
        from onnx import numpy_helper
        from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

        tensor = next((t for t in self.proto.graph.initializer if t.name == name), None)
        if tensor is None:
            return None
        import onnx

        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        if uses_external_data(copy):
            load_external_data_for_tensor(copy, str(self.folder))
            del copy.external_data[:]
            copy.data_location = onnx.TensorProto.DEFAULT
        return numpy_helper.to_array(copy)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LocateGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
