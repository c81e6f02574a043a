"""Where a model's tensor signature comes from, decided in one place for every runtime.

A tutorial export's contract (checked against the graph: a lying file is refused, never fed wrong
data), else the ``ptx.signature`` a file records (checked the same way), else the graph itself,
else the inputs a user declares (``--input``: a TorchScript or pt2 file keeps no description of
them). ``--input`` narrows whichever it is (a size for a symbol, a value range) and never
contradicts it. A runner is handed an ``Opening`` and asks it for the signature of what it read;
it never asks which kind of model it holds.

numpy and the standard library only: never torch or a runtime.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract.schema import ContractError
from ptx.contract.tensors import Signature, TensorSig, infer_batch_axes
from ptx.contract.weights import SIGNATURE_KEY
from ptx.contract.metadata import RAW_INPUT
from ptx.errors import ArtifactError, PtxError

from .genai_config import with_cache_sizes
from .model_files import IGNORE_HINT


@dataclass(frozen=True)
class Opening:
    """What opening decided about a model before a runtime reads it: the ptx strings believed (none
    with --ignore-metadata), the contract's tensors where it is a tutorial export, and what the
    user declared. One value for every runtime and every kind of model."""

    kind: str  # onnx, torchscript, pt2, checkpoint, module
    metadata: Mapping[str, str] = field(default_factory=dict)
    contract: Signature | None = None  # a tutorial export's tensors, from its contract
    inputs: tuple[TensorSig, ...] = ()  # declared with --input (library: inputs=)
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)
    name: str | None = None  # what a runner's errors call the model
    module: object = None  # a live nn.Module (kind "module")
    plan: object = None  # an InputPlan: the inputs a module's outputs are learned on (export's --shape, --range)

    @property
    def remedy(self) -> str:
        """What a file a runtime cannot load is told to do: re-export ptx's own, inspect a user's."""
        return "re-export with `ptx export`" if self.contract is not None else \
            "check the file with `ptx inspect`, or re-export it"

    def of_graph(self, graph: Signature, path: Path) -> Signature:
        """The signature of a file whose graph describes its tensors (ONNX), as ``graph`` reads it."""
        if self.contract is not None:
            signature = check_contract(self.contract, graph, path, raw=RAW_INPUT in self.metadata)
        else:
            recorded = recorded_signature(self.metadata, path)
            signature = check_graph_against(recorded, graph, path) if recorded and not self.batch_axes else graph
            if not recorded and any(not t.shape for t in signature.inputs):
                signature = _shape_unranked(signature, self.inputs, path, self.batch_axes)
            if not recorded:  # ids within the embedding's rows, where the graph says it
                ids = graph_ids(signature, path)
                signature = replace(signature, inputs=tuple(replace(t, value_range=(0, ids[t.name][0] - 1))
                                                            if t.name in ids else t for t in signature.inputs))
                signature = with_cache_sizes(signature, path)  # onnxruntime-genai's builder output
        return _with_declared(signature, self.inputs, path) if self.inputs else signature

    def of_code(self, path: Path | None) -> Signature:
        """The signature of a model whose file keeps no graph of its tensors (TorchScript, pt2, an
        nn.Module): its outputs are empty where the runner must learn them by running the model."""
        if self.contract is not None and not self.inputs:
            return self.contract
        recorded = self.contract or recorded_signature(self.metadata, path)
        if self.inputs:
            inputs = _with_batch_axes(self.inputs, self.batch_axes)
            if recorded is None:
                return Signature(inputs, ())
            check_graph_against(Signature(recorded.inputs, ()), Signature(inputs, ()), path or Path("model"))
            return Signature(inputs, (), _limits_renamed(recorded, inputs))
        if recorded is not None:
            return replace(recorded, inputs=_with_batch_axes(recorded.inputs, self.batch_axes))
        raise PtxError(f"{path or 'the model'}: a {'TorchScript' if self.kind == 'torchscript' else self.kind} "
                       "file keeps no description of its inputs: declare each, in forward()'s order, with "
                       "--input NAME=SHAPE:DTYPE (e.g. --input x=batchx3x224x224:float32; library: "
                       "load(path, inputs=[...]))" if self.kind != "module" else
                       "an nn.Module keeps no description of its inputs: give inputs=[TensorSig or "
                       "'name=shape:dtype', ...] in forward()'s order")


def graph_ids(signature: Signature, path: Path) -> dict[str, tuple[int, str]]:
    """{integer input: (N, why)} for each integer input of the ONNX graph at ``path`` whose values index
    the N rows of one of its tables (a Gather of an initializer: token ids into an embedding), directly
    or through a Cast or a reshape; {} where none does, or the file cannot say."""
    from ptx.contract.onnx_wire import gathered_rows

    names = [t.name for t in signature.inputs if t.dtype_info.is_integer]
    try:
        found = gathered_rows(path, names) if names else {}
    except PtxError:  # a file ONNX Runtime opened and the wire cannot walk: its ids keep the default range
        return {}
    return {name: (rows, f"rows of the graph's Gather {node}") for name, (rows, node) in found.items()}


def _limits_renamed(recorded: Signature, inputs: Sequence[TensorSig]) -> tuple[tuple[str, int], ...]:
    """The recorded bounds on sizes, under the symbols the user's --input gives the same axes."""
    limits: dict[str, int] = {}
    for was, now in zip(recorded.inputs, inputs):
        for old, new in zip(was.shape, now.shape):
            if isinstance(new, str) and recorded.limit(str(old)) is not None:
                limits[new] = min(limits.get(new, recorded.limit(old)), recorded.limit(old))
    return tuple(sorted(limits.items()))


def recorded_signature(metadata: Mapping[str, str], path: Path | None = None) -> Signature | None:
    """The signature a file's ptx metadata records, or None where it records none."""
    text = metadata.get(SIGNATURE_KEY)
    if not text:
        return None
    try:
        return Signature.from_json(text, f"{path or 'the file'}: ptx.{SIGNATURE_KEY}")
    except ContractError as exc:
        raise ArtifactError(f"{exc}; re-export the model, or give {IGNORE_HINT}") from None


def check_graph_against(recorded: Signature, graph: Signature, path: Path) -> Signature:
    """The recorded signature, once the graph is found to match it (names, dtypes, ranks, fixed
    sizes): a hand-edited signature is refused rather than believed."""
    for kind, claimed, actual in (("input", recorded.inputs, graph.inputs), ("output", recorded.outputs, graph.outputs)):
        if [t.name for t in claimed] != [t.name for t in actual]:
            raise ArtifactError(f"{path}: ptx.{SIGNATURE_KEY} names {kind}s {[t.name for t in claimed]}, the graph has "
                                f"{[t.name for t in actual]}; re-export it, or give {IGNORE_HINT}")
        for c, a in zip(claimed, actual):
            if c.dtype != a.dtype or len(c.shape) != len(a.shape) or any(
                    isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(c.shape, a.shape)):
                raise ArtifactError(f"{path}: ptx.{SIGNATURE_KEY} says {kind} {c.name!r} is {c.dtype} {c.dims_text()}, "
                                    f"the graph's is {a.dtype} {a.dims_text()}; re-export it, or give {IGNORE_HINT}")
    return recorded


def check_contract(contract: Signature, graph: Signature, path: Path, raw: bool = False) -> Signature:
    """A tutorial export's graph has one input and one output, each what its contract claims: a
    lying shape, dtype or batch axis is refused here rather than fed wrong data."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ArtifactError(f"{path}: the graph has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                            "a ptx export has one of each")
    _check_tensor(contract.inputs[0], graph.inputs[0], "raw_input" if raw else "input", path)
    _check_tensor(contract.outputs[0], graph.outputs[0], "output", path)
    return contract


def _check_tensor(claimed: TensorSig, actual: TensorSig, where: str, path: Path) -> None:
    def refuse(problem: str):
        raise ArtifactError(f"{path}: contract field {where}.{problem}; re-export with `ptx export`")

    if actual.name != claimed.name:
        refuse(f"name is {claimed.name!r}, but the graph's tensor is {actual.name!r}")
    if actual.dtype != claimed.dtype:
        refuse(f"dtype is {claimed.dtype}, but the graph's tensor is {actual.dtype}")
    if len(actual.shape) != len(claimed.shape):
        refuse(f"shape {list(claimed.shape)} has {len(claimed.shape)} axes, the graph's {list(actual.shape)} has "
               f"{len(actual.shape)}")
    for i, (want, got) in enumerate(zip(claimed.shape, actual.shape)):
        if isinstance(want, str) and isinstance(got, int):
            refuse(f"shape[{i}] is {want!r}, but the graph fixes that axis to {got}")
        if isinstance(want, int) and isinstance(got, int) and want != got:
            refuse(f"shape[{i}] is {want}, but the graph's is {got}")
        if isinstance(want, int) and isinstance(got, str):
            refuse(f"shape[{i}] is {want}, but the graph's axis is the dynamic {got!r}")


def _with_batch_axes(inputs: Sequence[TensorSig], batch_axes: Mapping[str, int | None]) -> tuple[TensorSig, ...]:
    """Declared or recorded inputs with ``--batch-axis`` applied (outputs' batch axes are found by
    running the model)."""
    ins = tuple(inputs)
    for name, axis in (batch_axes or {}).items():
        match = [i for i, t in enumerate(ins) if t.name == name]
        if not match:
            raise PtxError(f"--batch-axis {name}: no input {name!r} (inputs: {', '.join(t.name for t in ins)}); "
                           f"outputs' batch axes are found by running the model")
        t = ins[match[0]]
        if axis is not None and not (0 <= axis < len(t.shape) and isinstance(t.shape[axis], str)):
            raise PtxError(f"--batch-axis {name}={axis}: {name}'s shape is {list(t.shape)}; the batch axis must be "
                           "one of its symbolic dimensions (or none)")
        ins = ins[:match[0]] + (replace(t, batch_axis=axis),) + ins[match[0] + 1:]
    return ins


def _shape_unranked(signature: Signature, declared: Sequence[TensorSig], path: Path,
                    batch_axes: Mapping[str, int | None] | None) -> Signature:
    """An input the graph gives no shape at all (not even a rank) was taken for a scalar, since ONNX
    Runtime lists both as []: every real sample was then refused as the wrong rank and inspect
    printed []. Such an input takes its shape from --input, or the file is refused saying so."""
    from ptx.contract.onnx_wire import shapeless_inputs

    unranked = shapeless_inputs(path) & {t.name for t in signature.inputs if not t.shape}
    if not unranked:
        return signature
    by_name = {t.name: t for t in declared}
    inputs = []
    for t in signature.inputs:
        d = by_name.get(t.name)
        if t.name in unranked and d is None:
            raise ArtifactError(f"{path.name}: input {t.name!r} has no shape in the graph, not even a rank: declare "
                                f"it with --input {t.name}=SHAPE[:DTYPE] (e.g. {t.name}=batchx3x224x224:{t.dtype})")
        inputs.append(replace(t, shape=d.shape, batch_axis=None) if t.name in unranked else t)
    outputs = [replace(t, batch_axis=None) for t in signature.outputs]
    return Signature(*infer_batch_axes([replace(t, batch_axis=None) for t in inputs], outputs, batch_axes))


def _with_declared(signature: Signature, declared: Sequence[TensorSig], path: Path) -> Signature:
    """--input on a file whose graph describes its tensors narrows what the graph says (a size for a
    symbol, a range), never contradicts it."""
    by_name = {t.name: t for t in declared}
    unknown = sorted(set(by_name) - set(signature.input_names))
    if unknown:
        raise ArtifactError(f"--input {unknown[0]}: {path.name} has no input {unknown[0]!r}; its inputs are "
                            f"{', '.join(signature.input_names)} (an ONNX file describes its own inputs: {IGNORE_HINT} "
                            "is not needed)")
    merged = []
    for t in signature.inputs:
        d = by_name.get(t.name)
        if d is not None and (d.dtype != t.dtype or len(d.shape) != len(t.shape)
                              or any(isinstance(a, int) and isinstance(b, int) and a != b
                                     for a, b in zip(d.shape, t.shape))):
            raise ArtifactError(f"--input {t.name}: declared {d.dtype} {d.dims_text()}, but {path.name} takes "
                                f"{t.dtype} {t.dims_text()}")
        if d is None:
            merged.append(t)
            continue
        shape = tuple(b if isinstance(b, int) or axis == t.batch_axis else a
                      for axis, (a, b) in enumerate(zip(d.shape, t.shape)))
        merged.append(replace(t, shape=shape, value_range=d.value_range or t.value_range))
    return replace(signature, inputs=tuple(merged))
