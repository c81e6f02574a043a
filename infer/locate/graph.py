"""One ONNX graph as ``ptx verify --locate`` walks it: its nodes in order, the tensors live between
them (a cut), and copies of it that give some intermediate tensors as outputs.

The weights are written once, beside a graph that refers to them (ONNX external data), in a
temporary folder: each marked copy is then a small graph file beside the same weights, so that
asking a runtime for a few more tensors neither copies nor re-serialises the weights, and no copy
ever lists every intermediate tensor (what runs out of memory in tools that mark them all). A file
whose weights are external already (model.onnx.data) has its data files copied there as they are,
its graph read without them.

onnx and numpy only: never torch, nor a runtime.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ptx.errors import ArtifactError, first_line

from ..formats import onnx_files
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
    proto: object  # onnx.ModelProto whose initializers point at folder/weights.bin (or the file's own data files)
    inputs_of: list[list[str]] = field(default_factory=list)  # per node: what it reads (subgraphs too)
    produced_at: dict[str, int] = field(default_factory=dict)
    last_use: dict[str, int] = field(default_factory=dict)
    types: dict[str, object] = field(default_factory=dict)  # tensor name -> TypeProto (shape inference)
    readers: dict[str, list[int]] = field(default_factory=dict)  # tensor -> the nodes that read it
    by_name: dict[str, int] = field(default_factory=dict)  # node name -> index
    graph_inputs: set[str] = field(default_factory=set)
    constant: set[str] = field(default_factory=set)  # tensors computed from weights alone
    initializer: dict = field(default_factory=dict, repr=False)  # name -> TensorProto (its bytes in weights.bin)
    _marked: int = 0

    @classmethod
    def open(cls, path: str | Path) -> "LocateGraph":
        import onnx

        path = Path(path)
        external = onnx_files.companions(path)
        try:  # a large file's weights stay in their files: only its graph is read
            proto = onnx.load(str(path), load_external_data=not external)
        except Exception as exc:  # noqa: BLE001 - any reader failure is the file's, in one line
            raise ArtifactError(f"{path}: not a readable ONNX file ({first_line(exc)}); check it with `ptx inspect`") \
                from None
        folder = Path(tempfile.mkdtemp(prefix="ptx-locate-"))
        try:
            onnx_files.copy_data(path, folder)
            onnx.save_model(proto, str(folder / "graph.onnx"), save_as_external_data=not external,
                            all_tensors_to_one_file=True, location=WEIGHTS, size_threshold=INLINE_BYTES)
            # what was saved: the initializers now refer to weights.bin, without their bytes
            proto = onnx.load(str(folder / "graph.onnx"), load_external_data=False)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(path, folder, proto)

    def __post_init__(self) -> None:  # the graph indexed
        import onnx

        nodes = self.proto.graph.node
        self.inputs_of = [[i for i in n.input if i] + sorted(_subgraph_inputs(n)) for n in nodes]
        self.produced_at = {out: i for i, node in enumerate(nodes) for out in node.output if out}
        for i, names in enumerate(self.inputs_of):
            for name in names:
                self.readers.setdefault(name, []).append(i)
        self.last_use = {name: i for i, names in enumerate(self.inputs_of) for name in names}
        self.last_use.update((out.name, len(nodes)) for out in self.proto.graph.output)  # alive to the end
        self.by_name = {n.name: i for i, n in enumerate(nodes) if n.name}
        self.initializer = {t.name: t for t in self.proto.graph.initializer}
        for k, node in enumerate(nodes):
            if node.op_type == "Constant" or (node.input and not self.has_body(k) and all(
                    not n or n in self.initializer or n in self.constant for n in node.input)):
                self.constant |= {o for o in node.output if o}
        self.graph_inputs = {i.name for i in self.proto.graph.input if i.name not in self.initializer}
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
    def output_names(self) -> list[str]:
        return [o.name for o in self.proto.graph.output]

    @property
    def order(self) -> list[int]:
        """The nodes that compute a comparable tensor, in graph order."""
        return [k for k, n in enumerate(self.nodes) if any(self.comparable(o) for o in n.output)]

    def label(self, k: int) -> str:
        """Node ``k``'s name, or ``#k`` where it has none."""
        return self.nodes[k].name or f"#{k}"

    def has_body(self, k: int) -> bool:
        """Whether node ``k`` holds If/Loop/Scan bodies (which read the enclosing graph's names)."""
        return any(True for _ in subgraphs(self.nodes[k]))

    def dtype_of(self, name: str):
        """The numpy dtype shape inference gives ``name``, or None."""
        from onnx import helper

        kind = self.types.get(name)
        return helper.tensor_dtype_to_np_dtype(kind.tensor_type.elem_type) if kind is not None and \
            kind.tensor_type.elem_type else None

    def narrow_float(self, name: str) -> bool:
        """Whether shape inference types ``name`` as a float narrower than float32 (float16, bfloat16)."""
        dtype = self.dtype_of(name)
        return dtype is not None and dtype.kind == "f" and dtype.itemsize < 4

    def comparable(self, name: str) -> bool:
        """A tensor a runtime computes from the inputs: not a weight, nor computed from weights alone
        (a Constant node's value, a weight's DequantizeLinear or Cast, a shape made of constants)."""
        return name in self.produced_at and name not in self.constant

    def sizes(self, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Bytes of each computed tensor on ``feeds``: shape inference given their shapes (a dynamic
        graph's symbolic axes made concrete), and where it leaves a tensor unsized (a shape computed at
        run time), the largest of what its node reads, as an elementwise op or a reshape keeps it; a
        sweep sizes its pieces by them before it runs one. Empty where inference fails."""
        import onnx
        from onnx import helper

        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)  # the graph without the weights' bytes: small
        for value in copy.graph.input:
            given = np.shape(feeds[value.name]) if value.name in feeds else None
            if given is not None and value.type.HasField("tensor_type"):
                value.type.tensor_type.shape.Clear()
                value.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=n) for n in given)
        try:
            inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
        except Exception:  # noqa: BLE001 - sizes only plan the pieces; a sweep without them sizes as it goes
            return {}
        known = {}
        for value in [*inferred.graph.value_info, *inferred.graph.output]:
            kind = value.type.tensor_type
            if kind.elem_type and kind.HasField("shape") and all(d.HasField("dim_value") for d in kind.shape.dim):
                known[value.name] = int(np.prod([d.dim_value for d in kind.shape.dim], dtype=np.int64)) * \
                    helper.tensor_dtype_to_np_dtype(kind.elem_type).itemsize
        known.update((name, np.asarray(value).nbytes) for name, value in feeds.items())
        for k, node in enumerate(self.nodes):  # in graph order: what a node reads is sized before it
            read = max((known.get(i, 0) for i in self.inputs_of[k] if self.comparable(i) or i in self.graph_inputs),
                       default=0)
            known.update((o, read) for o in node.output if o and o not in known and self.comparable(o))
        return known

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
        targets = set(targets)
        came: dict[int, tuple[int, str] | None] = {start: None}  # node -> (the node before, what it passed)
        queue = deque([start])
        while queue:
            i = queue.popleft()
            hit = next((o for o in self.nodes[i].output if o in targets), None)
            if hit is not None:
                chain = [(i, hit)]
                while came[chain[-1][0]] is not None:
                    chain.append(came[chain[-1][0]])
                return chain[::-1]
            for out in self.nodes[i].output:
                for reader in self.readers.get(out, ()):
                    if reader not in came:
                        came[reader] = (i, out)
                        queue.append(reader)
        return [(start, next(o for o in self.nodes[start].output if o))]

    # -- copies that answer more tensors -------------------------------------------------------

    def marked(self, names: Sequence[str]) -> Path:
        """A copy of the graph beside the weights whose outputs are ``names`` (and nothing else)."""
        import onnx

        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)  # the graph without the weights' bytes: small
        del copy.graph.output[:]
        copy.graph.output.extend(onnx.ValueInfoProto(name=n, type=self.types.get(n)) for n in names)
        return self.save(copy, "marked")

    def weight(self, name: str) -> np.ndarray | None:
        """An initializer's or a Constant node's values (paddle2onnx and float16 converters keep weights
        in Constant nodes); None for a computed tensor."""
        import onnx
        from onnx import numpy_helper

        tensor = self.initializer.get(name)
        if tensor is not None:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)  # to_array reads the bytes into the tensor it is given: never the graph's own
            return numpy_helper.to_array(copy, base_dir=str(self.folder))
        at = self.produced_at.get(name)
        if at is None or self.nodes[at].op_type != "Constant":
            return None
        value = self.nodes[at].attribute[0]
        return numpy_helper.to_array(value.t) if value.name == "value" else np.asarray(
            onnx.helper.get_attribute_value(value))

    def weight_as_read(self, name: str, depth: int = 3) -> np.ndarray | None:
        """The values a node computes with where no input changes them: a weight, a DequantizeLinear
        or Cast of one (a QDQ or float16 file), an Identity of one (torch's TorchScript-based exporter
        writes a parameter equal to another so), or the dynamic quantizer's int8 ``W_quantized``
        dequantized by the ``W_scale`` and ``W_zero_point`` kept beside it."""
        import onnx

        base = name[:-len("_quantized")]
        if name.endswith("_quantized") and base + "_scale" in self.initializer and name in self.initializer and \
                not any(self.nodes[k].op_type == "DequantizeLinear" for k in self.readers.get(name, ())):
            q, scale = self.weight(name), self.weight(base + "_scale")
            axis = 0 if np.size(scale) == 1 or q.shape[0] == np.size(scale) else q.ndim - 1
            return dequantize(q, scale, self.weight(base + "_zero_point"), axis)
        value = self.weight(name)
        at = self.produced_at.get(name)
        if value is not None or at is None or depth == 0 or \
                self.nodes[at].op_type not in ("DequantizeLinear", "Cast", "Identity"):
            return value
        node = self.nodes[at]
        values = [self.weight_as_read(i, depth - 1) if i else None for i in node.input]
        if values[0] is None or node.op_type == "Identity":
            return values[0]
        if node.op_type == "Cast":
            return values[0].astype(onnx.helper.tensor_dtype_to_np_dtype(node.attribute[0].i))
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return dequantize(values[0], values[1], values[2] if len(values) > 2 else None, axis)

    def stored_dtype(self, name: str) -> str | None:
        """The dtype a weight is stored at (int8, float16), looking through DequantizeLinear and Cast."""
        for _ in range(3):
            at = self.produced_at.get(name)
            if at is None or self.nodes[at].op_type not in ("DequantizeLinear", "Cast"):
                break
            name = self.nodes[at].input[0]
        value = self.weight(name)
        return str(value.dtype) if value is not None else None

    # -- regions: pieces of the graph run as models of their own ----------------------------------

    def walk_back(self, outputs: Iterable[str], stops: set[str], limit: int = 10 ** 6) -> list[int] | None:
        """The nodes that compute ``outputs`` from ``stops`` (fed from outside), graph inputs and the
        weights, in graph order; None where more than ``limit`` are needed."""
        need: set[int] = set()
        stack = list(outputs)
        while stack:
            name = stack.pop()
            at = self.produced_at.get(name)
            if name in stops or at is None or at in need:
                continue
            need.add(at)
            if len(need) > limit:
                return None
            stack.extend(self.inputs_of[at])
        return sorted(need)

    def region_model(self, regions: Sequence[tuple], fed: Mapping[str, np.ndarray]):
        """One model holding each region (prefix, its nodes, its outputs, anything after) side by side. A region's
        tensors are named ``prefix + name``, so that regions sharing a node (a weight's
        DequantizeLinear) or an input never collide; the weights keep their names, shared, external.
        Its inputs are what its nodes read from outside, typed by ``fed`` (prefixed names, the values
        that will be fed). Hand-built rather than onnx.utils.Extractor: that makes one model per region
        from a shape-inferred copy of the whole graph, and many regions are asked about at once."""
        from onnx import ValueInfoProto, helper

        graph = helper.make_graph([], "region", [], [])
        used: set[str] = set()
        inputs: set[str] = set()
        for prefix, indices, outputs, *_ in regions:
            made = {o for k in indices for o in self.nodes[k].output}

            def named(name: str) -> str:
                return name if not name or name in self.initializer else prefix + name

            for k in indices:
                self.copy_node(graph, k, prefix, named)
                used |= {i for i in self.inputs_of[k] if i in self.initializer}
                for name in self.inputs_of[k]:
                    if name and name not in made and name not in self.initializer and named(name) not in inputs:
                        inputs.add(named(name))
                        value = np.asarray(fed[named(name)])
                        graph.input.append(helper.make_tensor_value_info(
                            named(name), helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
            graph.output.extend(ValueInfoProto(name=named(n), type=self.types.get(n)) for n in outputs)
        graph.initializer.extend(self.initializer[n] for n in sorted(used))
        return helper.make_model(graph, opset_imports=self.proto.opset_import, ir_version=self.proto.ir_version)

    def copy_node(self, graph, k: int, prefix: str, named: Callable[[str], str]) -> None:
        """Node ``k`` copied into ``graph`` (a GraphProto), named ``prefix`` + its label, each tensor it reads
        or writes renamed by ``named``."""
        node = graph.node.add()
        node.CopyFrom(self.nodes[k])
        node.name = prefix + self.label(k)
        node.input[:] = [named(i) for i in node.input]
        node.output[:] = [named(o) for o in node.output]

    def save(self, model, stem: str = "region") -> Path:
        """``model`` written beside the weights it refers to (a piece holding its own that pass one
        file's size: with them beside it, onnx_files.save_model)."""
        self._marked += 1
        where = self.folder / f"{stem}-{self._marked}.onnx"
        onnx_files.save_model(model, where)
        return where

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LocateGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def dequantize(q: np.ndarray, scale: np.ndarray, zero, axis: int) -> np.ndarray:
    """DequantizeLinear's arithmetic: (q - zero point) x scale, per axis where the scale is a vector;
    in float32, as the operator computes (an int8 or int32 value and its zero point are exact there,
    up to 2^24), without float64 copies of a large tensor."""
    scale = np.asarray(scale, np.float32)
    zero = np.zeros_like(scale) if zero is None else np.asarray(zero, np.float32)
    scale, zero = along(axis, q.ndim, scale, zero)
    value = q.astype(np.float32)
    value -= zero
    value *= scale
    return value


def along(axis: int, ndim: int, scale: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A per-axis scale and zero point (vectors) shaped to broadcast along ``axis`` of an ``ndim``-D
    tensor, as (De)QuantizeLinear applies them; a per-tensor pair as it is."""
    if scale.ndim == 1 and ndim > 1:
        shape = [1] * ndim
        shape[axis] = -1
        return scale.reshape(shape), zero.reshape(shape)
    return scale, zero
