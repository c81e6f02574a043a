"""The tensor layer of a contract (torch-free): the named tensors a model takes and gives.

Every artifact, ptx's own and a user's, is first a *signature*: N named inputs and M named
outputs, each with a dtype, a shape of fixed sizes and symbolic dimensions, which axis is the
batch (or none: a scalar, a model whose batch is fixed) and, where known, the range its values
lie in. The 17 tutorial models are the case "one input, one output" with a head above it
(labels, picture pipeline, task: ``ptx.contract.schema.Contract``); a user's ONNX file has the
signature alone, read from its graph; a TorchScript file, which keeps no input metadata, gets it
from what the user declares (``--input name=shape:dtype``, as Triton asks for it).
docs/artifact-format.md defines every field.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Mapping, Sequence, Union

from ptx.errors import ArtifactError, PtxError

from .names import SEQ


class ContractError(ArtifactError):
    """A contract field that is missing, malformed or inconsistent; the message names the field."""


def parse_json(text: str, where: str):
    """json.loads with a one-line ContractError naming ``where``."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ContractError(f"contract field {where}: not valid JSON ({exc})") from None
    except RecursionError:  # brackets nested deeper than json reads: no file ptx wrote
        raise ContractError(f"contract field {where}: not valid JSON (nested deeper than it can be read)") from None

Dim = Union[int, str]  # a fixed size, or a symbol ("batch", "height", "seq")
SIGNATURE_VERSION = 1


@dataclass(frozen=True)
class DTypeInfo:
    """One element type under every name the stages need."""

    name: str  # ptx's (numpy's) name
    onnx: int  # onnx.TensorProto.DataType
    ort: str  # what onnxruntime's NodeArg.type says
    v2: str  # the Open Inference Protocol's datatype
    triton: str  # Triton's model configuration data_type

    @property
    def is_float(self) -> bool:
        return self.name.startswith("float")

    @property
    def is_integer(self) -> bool:
        return self.name.startswith(("int", "uint"))


DTYPES: dict[str, DTypeInfo] = {d.name: d for d in (
    DTypeInfo("float32", 1, "tensor(float)", "FP32", "TYPE_FP32"),
    DTypeInfo("float16", 10, "tensor(float16)", "FP16", "TYPE_FP16"),
    DTypeInfo("float64", 11, "tensor(double)", "FP64", "TYPE_FP64"),
    DTypeInfo("int64", 7, "tensor(int64)", "INT64", "TYPE_INT64"),
    DTypeInfo("int32", 6, "tensor(int32)", "INT32", "TYPE_INT32"),
    DTypeInfo("int16", 5, "tensor(int16)", "INT16", "TYPE_INT16"),
    DTypeInfo("int8", 3, "tensor(int8)", "INT8", "TYPE_INT8"),
    DTypeInfo("uint8", 2, "tensor(uint8)", "UINT8", "TYPE_UINT8"),
    DTypeInfo("uint16", 4, "tensor(uint16)", "UINT16", "TYPE_UINT16"),
    DTypeInfo("bool", 9, "tensor(bool)", "BOOL", "TYPE_BOOL"),
)}
DTYPE_ALIASES = {"float": "float32", "fp32": "float32", "f32": "float32", "half": "float16", "fp16": "float16",
                 "f16": "float16", "double": "float64", "fp64": "float64", "long": "int64", "int": "int32",
                 "i64": "int64", "i32": "int32", "u8": "uint8", "boolean": "bool"}
# Element types that exist in ONNX but not in numpy (or not in every runtime ptx drives).
UNSUPPORTED_ONNX = {16: "bfloat16", 8: "string", 14: "complex64", 15: "complex128", 12: "uint32", 13: "uint64",
                    17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4",
                    22: "int4", 23: "float4e2m1"}
# Dimension names that say "this is the batch" (torch.onnx's dynamic_axes, Dim("batch"), Keras' N).
BATCH_NAMES = ("batch", "batch_size", "batchsize", "bs", "n", "b", "nbatch", "num_samples")


def dtype_info(name: str, where: str = "dtype") -> DTypeInfo:
    """The dtype called ``name`` (numpy's names, and the usual aliases), or a one-line error."""
    key = str(name).lower().removeprefix("torch.")
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise ContractError(f"{where}: {name!r} is not a dtype ptx runs; use one of {', '.join(DTYPES)}")
    return DTYPES[key]


def dtype_of_ort(type_string: str, where: str) -> str:
    for info in DTYPES.values():
        if info.ort == type_string:
            return info.name
    raise ContractError(f"{where} is {type_string}, which ptx does not run (supported: {', '.join(DTYPES)})")


def looks_like_batch(symbol: str) -> bool:
    return symbol.lower() in BATCH_NAMES or "batch" in symbol.lower()


@dataclass(frozen=True)
class TensorSig:
    """One named tensor: dtype, shape (sizes and symbols), the batch axis or None, the range
    [low, high] its values lie in where it is known (token ids below a vocabulary, a flag 0/1), and
    what each axis means where a model says so (a tutorial contract's ``axes``: lstm's
    ``("row", "batch", "column")``, its picture rows being time steps), for people and configs."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None = None
    value_range: tuple[float, float] | None = None
    axes: tuple[str, ...] | None = None

    @property
    def dtype_info(self) -> DTypeInfo:
        return DTYPES[self.dtype]

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """One sample's shape: the batch axis left out (the order datasets store samples in)."""
        return tuple(d for i, d in enumerate(self.shape) if i != self.batch_axis)

    @property
    def seq_axis(self) -> int | None:
        """The axis of the symbol ``seq`` (a token model's positions), or None."""
        return self.shape.index(SEQ) if SEQ in self.shape else None

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    @property
    def batch_symbol(self) -> str | None:
        return None if self.batch_axis is None else self.shape[self.batch_axis]

    def dims_text(self) -> str:
        """``[batch, 3, height, width]``, the batch marked when it is not called so."""
        return "[" + ", ".join(f"{d} (batch)" if i == self.batch_axis and not looks_like_batch(str(d)) else str(d)
                               for i, d in enumerate(self.shape)) + "]"

    def v2_shape(self) -> list[int]:
        """The shape as the Open Inference Protocol and Triton write it: -1 for every symbol."""
        return [-1 if isinstance(d, str) else d for d in self.shape]

    def to_dict(self) -> dict:
        doc = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "batch_axis": self.batch_axis}
        if self.value_range is not None:
            doc["range"] = list(self.value_range)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "TensorSig":
        if not isinstance(doc, Mapping):
            raise ContractError(f"{path}: expected an object, got {type(doc).__name__}")
        unknown = sorted(set(doc) - {"name", "dtype", "shape", "batch_axis", "range"})
        if unknown:
            raise ContractError(f"{path}.{unknown[0]}: unknown field (made by a newer ptx?)")
        for key in ("name", "dtype", "shape"):
            if key not in doc:
                raise ContractError(f"{path}.{key}: missing")
        name = doc["name"]
        if not isinstance(name, str) or not name:
            raise ContractError(f"{path}.name: {name!r} is not a non-empty string")
        dtype = dtype_info(doc["dtype"], f"{path}.dtype").name
        shape = doc["shape"]
        if not isinstance(shape, list):
            raise ContractError(f"{path}.shape: {shape!r} is not a list")
        for i, d in enumerate(shape):
            fixed = isinstance(d, int) and not isinstance(d, bool) and d >= 0
            if not (fixed or (isinstance(d, str) and d)):
                raise ContractError(f"{path}.shape[{i}]: {d!r} is neither a size >= 0 nor a symbol")
        axis = doc.get("batch_axis")
        if axis is not None:
            if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < len(shape):
                raise ContractError(f"{path}.batch_axis: {axis!r} is not an axis of the {len(shape)}-axis shape")
            if not isinstance(shape[axis], str):
                raise ContractError(f"{path}.batch_axis: axis {axis} is fixed to {shape[axis]}; a batch axis is "
                                    "symbolic (null: no batch axis)")
        value_range = doc.get("range")
        if value_range is not None:
            value_range = parse_range(value_range, f"{path}.range")
        return cls(name, dtype, tuple(shape), axis, value_range)


def parse_range(value, where: str) -> tuple[float, float]:
    """``[low, high]`` (or "low,high", or "low:high" as a slice reads), finite, low <= high."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split("," if "," in value else ":")]
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ContractError(f"{where}: {value!r} is not two numbers low,high") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ContractError(f"{where}: [{low:g}, {high:g}] is not a range of finite numbers, low <= high")
    return low, high


@dataclass(frozen=True)
class Signature:
    """What goes in and comes out, by name; ``limits``: ((symbol, the largest size the model takes),
    ...) where the model itself bounds a dynamic size (BERT's table of 64 positions bounds ``seq``,
    as torch.export finds it): a larger input is refused, never answered from past the table's end.
    ``sizes``: ((symbol, size), ...) export validated at where they are not ptx's defaults (the user's
    --shape, or a size export searched for because the model refuses the default: Wav2Vec2's 10-sample
    kernel): generated inputs for the file are made at them, so no command fails on a size export chose."""

    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    limits: tuple[tuple[str, int], ...] = ()
    sizes: tuple[tuple[str, int], ...] = ()
    detections: "DetectionOutputs | None" = None  # one dict per image, flat (ptx.contract.detections)

    def __post_init__(self):
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ContractError(f"signature {kind}: the name {repeated[0]!r} appears twice")

    def limit(self, symbol: str) -> int | None:
        """The largest size the model takes for ``symbol``, where it bounds it."""
        return dict(self.limits).get(symbol)

    def validated_size(self, symbol: str) -> int | None:
        """The size export validated ``symbol`` at, where it recorded one."""
        return dict(self.sizes).get(symbol)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def batched(self) -> bool:
        """Every input and output has a batch axis: requests can be joined into one batch."""
        return bool(self.inputs) and all(t.batch_axis is not None for t in (*self.inputs, *self.outputs))

    def input(self, name: str) -> TensorSig:
        return _named(self.inputs, name, "input")

    def output(self, name: str) -> TensorSig:
        return _named(self.outputs, name, "output")

    def symbols(self) -> list[str]:
        """Every symbolic dimension of the inputs, in order of first appearance."""
        return list(dict.fromkeys(s for t in self.inputs for s in t.symbols))

    def output_shapes(self, feeds: Mapping[str, object]) -> dict[str, tuple[int, ...]] | None:
        """Every output's shape for these inputs, where the signature fixes them all (each symbol of an
        output is one its inputs carry, ``N`` -> 7, ``seq`` -> 12); None where one depends on the
        values (a runtime allocates it)."""
        sizes = self.symbol_sizes(feeds)
        if any(isinstance(d, str) and d not in sizes for t in self.outputs for d in t.shape):
            return None
        return {t.name: tuple(sizes[d] if isinstance(d, str) else d for d in t.shape) for t in self.outputs}

    def symbol_sizes(self, feeds: Mapping[str, object]) -> dict[str, int]:
        """Each input symbol's size in these feeds (arrays or tensors by input name; the first input
        that carries a symbol gives its size)."""
        sizes: dict[str, int] = {}
        for t in self.inputs:
            for want, got in zip(t.shape, getattr(feeds[t.name], "shape", ())):
                if isinstance(want, str):
                    sizes.setdefault(want, int(got))
        return sizes

    def contradicted_output(self, result: Mapping[str, object]) -> tuple[TensorSig, tuple[int, ...]] | None:
        """(the first output whose answer contradicts its declared shape, the answer's shape), or None:
        the one rule for a declared output shape. Another rank, or another size where the declaration
        fixes one, contradicts it; an output declared with no axes (its rank unknown to the runtime, or
        a scalar) is held to nothing."""
        for t in self.outputs:
            got = result.get(t.name)
            if got is None or not t.shape:
                continue
            shape = tuple(int(n) for n in getattr(got, "shape", ()))
            if len(shape) != len(t.shape) or any(isinstance(d, int) and d != n for d, n in zip(t.shape, shape)):
                return t, shape
        return None

    def to_dict(self) -> dict:
        doc = {"version": SIGNATURE_VERSION, "inputs": [t.to_dict() for t in self.inputs],
               "outputs": [t.to_dict() for t in self.outputs]}
        if self.limits:
            doc["limits"] = dict(self.limits)
        if self.sizes:
            doc["sizes"] = dict(self.sizes)
        if self.detections is not None:
            doc["detections"] = self.detections.to_dict()
        return doc

    @classmethod
    def from_dict(cls, doc, where: str = "signature") -> "Signature":
        if not isinstance(doc, Mapping):
            raise ContractError(f"{where}: expected an object, got {type(doc).__name__}")
        version = doc.get("version")
        if version != SIGNATURE_VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > SIGNATURE_VERSION
            raise ContractError(f"{where}.version: {version!r} " + ("is newer than this ptx reads: upgrade ptx"
                                                                   if newer else f"is not {SIGNATURE_VERSION}"))
        unknown = sorted(set(doc) - {"version", "inputs", "outputs", "limits", "sizes", "detections"})
        if unknown:
            raise ContractError(f"{where}.{unknown[0]}: unknown field (made by a newer ptx?)")
        tensors = {}
        for kind in ("inputs", "outputs"):
            listed = doc.get(kind)
            if not isinstance(listed, list) or not listed:
                raise ContractError(f"{where}.{kind}: {listed!r} is not a non-empty list")
            tensors[kind] = tuple(TensorSig.from_dict(t, f"{where}.{kind}[{i}]") for i, t in enumerate(listed))
        symbols = {d for t in tensors["inputs"] for d in t.symbols}
        found = {}
        for key, what in (("limits", "largest size"), ("sizes", "size export validated at")):
            given = doc.get(key, {})
            if not isinstance(given, Mapping) or any(
                    k not in symbols or isinstance(v, bool) or not isinstance(v, int) or v < 1 for k, v in given.items()):
                raise ContractError(f"{where}.{key}: {given!r} is not {{symbol of an input: {what} >= 1}}")
            found[key] = tuple(sorted(given.items()))
        detections = None
        if "detections" in doc:
            from .detections import DetectionOutputs

            try:  # detections.py raises ValueError: it cannot import ContractError from here (a circle)
                detections = DetectionOutputs.from_dict(doc["detections"], f"{where}.detections")
            except ValueError as exc:
                raise ContractError(str(exc)) from None
            missing = [n for n in detections.names if n not in {t.name for t in tensors["outputs"]}]
            if missing:
                raise ContractError(f"{where}.detections: {missing[0]!r} is no output")
        return cls(tensors["inputs"], tensors["outputs"], found["limits"], found["sizes"], detections)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Signature":
        return cls.from_dict(parse_json(text, where), where)


def _named(tensors: Sequence[TensorSig], name: str, kind: str) -> TensorSig:
    for t in tensors:
        if t.name == name:
            return t
    raise PtxError(f"the model has no {kind} {name!r}; its {kind}s are {', '.join(t.name for t in tensors)}")


# -- where the batch is ---------------------------------------------------------------------------


def infer_batch_axes(inputs: Sequence[TensorSig], outputs: Sequence[TensorSig],
                     declared: Mapping[str, int | None] | None = None) -> tuple[tuple[TensorSig, ...],
                                                                               tuple[TensorSig, ...]]:
    """Each tensor's batch axis, as a graph's symbols tell it: the axis whose symbol is named like a
    batch ("batch", "N", "batch_size"), else the symbol the other inputs' batch axis carries (a
    recurrent state's axis 1), else a symbolic axis 0 where every input has one. ``declared``
    (name -> axis or None: ``--batch-axis``) overrides what is read."""
    declared = dict(declared or {})
    every = {t.name for t in (*inputs, *outputs)}
    unknown = sorted(set(declared) - every)
    if unknown:
        raise PtxError(f"--batch-axis names {unknown[0]!r}, which is no input or output of the model "
                       f"(it has {', '.join(sorted(every))})")
    for t in (*inputs, *outputs):
        axis = declared.get(t.name)
        if axis is not None and not (0 <= axis < len(t.shape) and isinstance(t.shape[axis], str)):
            raise PtxError(f"--batch-axis {t.name}={axis}: {t.name}'s shape is {list(t.shape)}; the batch "
                           "axis must be one of its symbolic dimensions (or none)")
    named = {d for t in inputs if t.name not in declared for d in t.symbols if looks_like_batch(d)}
    named |= {t.shape[declared[t.name]] for t in inputs if declared.get(t.name) is not None}
    first = {t.shape[0] for t in inputs if t.shape and isinstance(t.shape[0], str)}
    if not named and len(first) == 1 and all(t.shape and isinstance(t.shape[0], str) for t in inputs):
        named = first  # one symbol leads every input: that is the batch

    def axis_of(t: TensorSig) -> int | None:
        if t.name in declared:
            return declared[t.name]
        hits = [i for i, d in enumerate(t.shape) if isinstance(d, str) and d in named]
        return hits[0] if len(hits) == 1 else None

    return (tuple(replace(t, batch_axis=axis_of(t)) for t in inputs),
            tuple(replace(t, batch_axis=axis_of(t)) for t in outputs))


# -- what a user types ----------------------------------------------------------------------------

_DECLARATION = re.compile(r"^(?P<name>[^=\s]+)=(?P<shape>[^:]*)(?::(?P<dtype>\w+))?$")


def parse_shape(text: str, where: str, unnamed: str = "dim") -> tuple[Dim, ...]:
    """``2x3x224x224``, ``batchx3xHxW`` or ``batch,3,H,W`` (commas where a symbol holds an x);
    -1 and ? are unnamed symbols, each a size of its own, called ``{unnamed}{axis}``. An empty
    shape is a scalar."""
    text = text.strip()
    if not text:
        return ()
    parts = text.split(",") if "," in text else text.split("x")
    dims: list[Dim] = []
    for i, part in enumerate(p.strip() for p in parts):
        if re.fullmatch(r"\d+", part):
            dims.append(int(part))
        elif part in ("-1", "?"):
            dims.append(f"{unnamed}{i}")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            dims.append(part)
        else:
            raise PtxError(f"{where}: {part!r} in {text!r} is neither a size nor a symbol name "
                           "(write sizes and names joined by x, or by commas: 2x3x224x224, batch,3,H,W)")
    return tuple(dims)


def parse_declaration(text: str) -> TensorSig:
    """``--input name=shape[:dtype]`` -> a TensorSig (float32 by default); the batch axis is the
    dimension named like a batch ("batch", "N"), else none."""
    match = _DECLARATION.match(text.strip())
    if not match:
        raise PtxError(f"--input {text!r}: write name=shape:dtype, e.g. x=batchx3x224x224:float32 or ids=batchx16:int64")
    name = match["name"]
    # an unnamed size is the input's own (x_2), as a graph's are: another input's ? is another size
    shape = parse_shape(match["shape"], f"--input {text!r}", unnamed=f"{name}_")
    dtype = dtype_info(match["dtype"] or "float32", f"--input {text!r}").name
    batch = [i for i, d in enumerate(shape) if isinstance(d, str) and looks_like_batch(d)]
    if len(batch) > 1:  # y=batchxb: the axis named batch is the batch, b a size of its own (read as no batch
        # axis, y's 'batch' was x's batch symbol, which no plan sizes: KeyError 'batch' deep in export)
        batch = [i for i in batch if "batch" in str(shape[i]).lower()] or batch
    return TensorSig(name, dtype, shape, batch[0] if len(batch) == 1 else None)


def as_declarations(inputs: Sequence[TensorSig | str] | None) -> tuple[TensorSig, ...]:
    """``inputs=`` as the library takes it (infer's load, export's export_module):
    TensorSigs or ``"name=shape:dtype"`` strings."""
    return tuple(t if isinstance(t, TensorSig) else parse_declaration(str(t)) for t in (inputs or ()))


def parse_assignments(texts: Sequence[str], option: str) -> dict[str, str]:
    """``name=value`` options (repeatable) -> {name: value}; a name given twice is an error."""
    out: dict[str, str] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise PtxError(f"{option} {text!r}: write NAME=VALUE")
        if name.strip() in out:
            raise PtxError(f"{option}: {name.strip()!r} is given twice")
        out[name.strip()] = value.strip()
    return out


def parse_batch_axes(texts: Sequence[str]) -> dict[str, int | None]:
    """``--batch-axis name=1`` / ``name=none`` -> {name: axis or None}."""
    out: dict[str, int | None] = {}
    for name, value in parse_assignments(texts, "--batch-axis").items():
        if value.lower() in ("none", "null", "-"):
            out[name] = None
        elif value.isdigit():
            out[name] = int(value)
        else:
            raise PtxError(f"--batch-axis {name}={value}: give an axis number or none")
    return out

