"""The artifact contract as typed, validated dataclasses (torch-free).

A contract is the tensor layer's named tensors (ptx.contract.tensors.TensorSig: shape with its
symbolic axes, dtype, what each axis means) with a head: what a user hands over (``kind``), the
preprocessing steps from that to the input tensor, how the output becomes a decision, the labels,
and the tolerances its backends must agree within. ``Contract.from_dict`` refuses
anything malformed or inconsistent with one ``ContractError`` that names the field, so a lying
or damaged artifact is never believed. docs/artifact-format.md describes every field.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Union

from .names import BATCH, SCHEMA_VERSION, SEQ
# The tensor layer is the ground a contract stands on: it is imported here and imports nothing of this module.
from .tensors import ContractError, Signature, TensorSig


class ValueEnum(str, Enum):
    """An enum that prints as its value ("sgd", not "Optimizer.SGD") in messages and f-strings."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Task(ValueEnum):
    CLASSIFICATION = "classification"  # output: logits, one per label; decision: argmax
    BINARY = "binary"  # output: P(label 1), shape (batch, 1); decision: p >= threshold
    REGRESSION = "regression"  # output: the value itself; no decision


class InputKind(ValueEnum):
    """What a user hands ``predict``."""

    IMAGE = "image"  # pictures: files, PIL images, arrays
    NUMBER = "number"  # one number per sample
    VECTOR = "vector"  # a row of named features (CSV)
    TEXT = "text"  # a string, encoded to token ids


class OutputMeaning(ValueEnum):
    LOGITS = "logits"
    PROBABILITY = "probability"
    VALUE = "value"


MEANING_OF_TASK = {Task.CLASSIFICATION: OutputMeaning.LOGITS, Task.BINARY: OutputMeaning.PROBABILITY,
                   Task.REGRESSION: OutputMeaning.VALUE}
BINARY_THRESHOLD = 0.5

# Picture pipelines: a user's picture -> one raw sample (canvas x canvas uint8, light on dark), as
# the training data was made. Name -> its parameters and their defaults; ptx.contract.pictures
# implements them and docs/artifact-format.md defines them step by step.
PICTURE_PIPELINES: dict[str, dict[str, Any]] = {
    "mnist-digit": {"canvas": 28, "box": 20, "ink_threshold": 0.2, "paper_window": 0.34},
    "fashion-product": {"canvas": 28, "trim_threshold": 0.05, "sharpen_radius": 0.0},
}
# The versions of each pipeline this ptx computes, oldest first. A new version gives other samples
# (mnist-digit 2: the same steps at the size each needs); an artifact keeps the version it was
# exported with, to the bit. The parameter ``version`` is absent from what ptx wrote before versions
# existed, which reads as 1; ptx writes it only when it is not 1, and a new export takes the newest.
PICTURE_VERSIONS: dict[str, tuple[int, ...]] = {"mnist-digit": (1, 2), "fashion-product": (1,)}
TEXT_ENCODINGS = ("latin-1", "vocab")
# uint8: raw pictures, the graph input of an artifact exported with --input uint8 (never a contract's input).
CONTRACT_DTYPES = ("float32", "int64", "uint8")
TOLERANCE_DEVICES = ("cpu", "cuda")


def _fail(path: str, problem: str) -> ContractError:
    return ContractError(f"contract field {path}: {problem}")


def _finite(path: str, value, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"{value!r} is not a finite number")
    if positive and value <= 0:
        raise _fail(path, f"{value!r} must be > 0")
    if non_negative and value < 0:
        raise _fail(path, f"{value!r} must be >= 0")
    return float(value)


def _int(path: str, value, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, f"{value!r} is not an integer >= {minimum}")
    return value


def _text(path: str, value, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise _fail(path, f"{value!r} is not a{'' if allow_empty else ' non-empty'} string")
    return value


def _enum(path: str, enum_cls, value):
    try:
        return enum_cls(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum_cls)
        raise _fail(path, f"{value!r} is not one of {choices}") from None


def _mapping(path: str, value) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    return value


def _keys(path: str, doc: Mapping, required: set[str], optional: set[str] = frozenset()) -> None:
    missing = sorted(required - set(doc))
    if missing:
        raise _fail(f"{path}.{missing[0]}" if path else missing[0], "missing")
    unknown = sorted(set(doc) - required - set(optional))
    if unknown:
        raise _fail(f"{path}.{unknown[0]}" if path else unknown[0], "unknown field (made by a newer ptx?)")


def _numbers(path: str, value, **checks) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise _fail(path, "empty list")
    return tuple(_finite(f"{path}[{i}]", v, **checks) for i, v in enumerate(values))


# ---------------------------------------------------------------------------------------------
# Preprocessing steps: a user's input -> the model's input tensor, in order.


@dataclass(frozen=True)
class PictureStep:
    """A picture -> one raw sample (``canvas`` x ``canvas`` uint8, light on dark)."""

    pipeline: str
    params: tuple[tuple[str, Any], ...]
    op = "picture"

    @classmethod
    def make(cls, pipeline: str, **params) -> "PictureStep":
        """The step a new export writes: the pipeline's newest version unless ``version`` is given."""
        params.setdefault("version", PICTURE_VERSIONS.get(pipeline, (1,))[-1])
        return cls.from_dict({"op": cls.op, "pipeline": pipeline, "params": params}, "preprocessing[0]")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def canvas(self) -> int:
        return self.options["canvas"]

    @property
    def version(self) -> int:
        return self.options["version"]

    def to_dict(self) -> dict:
        params = {k: v for k, v in self.params if not (k == "version" and v == 1)}  # as ptx wrote it before versions
        return {"op": self.op, "pipeline": self.pipeline, "params": params}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "PictureStep":
        _keys(path, doc, {"op", "pipeline", "params"})
        name = doc["pipeline"]
        if name not in PICTURE_PIPELINES:
            raise _fail(f"{path}.pipeline", f"unknown picture pipeline {name!r} (known: {', '.join(PICTURE_PIPELINES)})")
        defaults = PICTURE_PIPELINES[name]
        given = _mapping(f"{path}.params", doc["params"])
        _keys(f"{path}.params", given, set(), set(defaults) | {"version"})
        params = {**defaults, "version": 1, **given}
        checked = {}
        for key, value in params.items():
            where = f"{path}.params.{key}"
            if key == "version":
                versions = PICTURE_VERSIONS[name]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise _fail(where, f"{value!r} is not a version number (known: {', '.join(map(str, versions))})")
                if value not in versions:
                    raise _fail(where, f"{name} version {value} is newer than this ptx computes "
                                       f"({', '.join(map(str, versions))}): upgrade ptx")
                checked[key] = value
            elif key == "canvas":
                checked[key] = _int(where, value, minimum=8)
            elif key == "box":
                checked[key] = _int(where, value, minimum=1)
            else:
                checked[key] = _finite(where, value, non_negative=True)
        if "box" in checked and checked["box"] > checked["canvas"]:
            raise _fail(f"{path}.params.box", f"{checked['box']} is larger than the canvas {checked['canvas']}")
        for key in ("ink_threshold", "trim_threshold", "paper_window"):
            if key in checked and checked[key] >= 1:
                raise _fail(f"{path}.params.{key}", f"{checked[key]} must be a fraction below 1")
        return cls(name, tuple(sorted(checked.items())))


@dataclass(frozen=True)
class ScaleStep:
    """x = x * factor (raw pixel values 0-255 -> [0, 1])."""

    factor: float
    op = "scale"

    def to_dict(self) -> dict:
        return {"op": self.op, "factor": self.factor}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "ScaleStep":
        _keys(path, doc, {"op", "factor"})
        return cls(_finite(f"{path}.factor", doc["factor"], positive=True))


@dataclass(frozen=True)
class NormalizeStep:
    """x = (x - mean) / std, one value for all, or one per feature (the sample's last axis)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    op = "normalize"

    def to_dict(self) -> dict:
        return {"op": self.op, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "NormalizeStep":
        _keys(path, doc, {"op", "mean", "std"})
        mean = _numbers(f"{path}.mean", doc["mean"])
        std = _numbers(f"{path}.std", doc["std"], positive=True)
        if len(mean) != len(std):
            raise _fail(f"{path}.mean", f"{len(mean)} means but {len(std)} stds")
        return cls(mean, std)


@dataclass(frozen=True)
class PadStep:
    """Zero padding of ``pixels`` on each side of the picture (after normalisation)."""

    pixels: int
    op = "pad"

    def to_dict(self) -> dict:
        return {"op": self.op, "pixels": self.pixels}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "PadStep":
        _keys(path, doc, {"op", "pixels"})
        return cls(_int(f"{path}.pixels", doc["pixels"], minimum=1))


@dataclass(frozen=True)
class EncodeStep:
    """A string -> token ids. ``latin-1``: each character's Latin-1 code, ``unknown_id`` for any
    other character; ``vocab``: each character's index in ``vocab`` (others are an error).
    ``pad_id`` fills the end of shorter strings in a batch; None: the model has no padding token,
    so strings of different lengths are never batched together."""

    encoding: str
    vocab: str | None = None
    pad_id: int | None = None
    unknown_id: int | None = None
    op = "encode"

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) if self.encoding == "vocab" else 256

    def to_dict(self) -> dict:
        return {"op": self.op, "encoding": self.encoding, "vocab": self.vocab, "pad_id": self.pad_id,
                "unknown_id": self.unknown_id}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "EncodeStep":
        _keys(path, doc, {"op", "encoding", "vocab", "pad_id", "unknown_id"})
        encoding = doc["encoding"]
        if encoding not in TEXT_ENCODINGS:
            raise _fail(f"{path}.encoding", f"{encoding!r} is not one of {', '.join(TEXT_ENCODINGS)}")
        vocab = doc["vocab"]
        if encoding == "vocab":
            vocab = _text(f"{path}.vocab", vocab)
            if len(set(vocab)) != len(vocab):
                raise _fail(f"{path}.vocab", f"{vocab!r} repeats a character")
        elif vocab is not None:
            raise _fail(f"{path}.vocab", "must be null for the latin-1 encoding")
        step = cls(encoding, vocab)
        ids = {}
        for key in ("pad_id", "unknown_id"):
            value = doc[key]
            if value is not None:
                value = _int(f"{path}.{key}", value)
                if value >= step.vocab_size:
                    raise _fail(f"{path}.{key}", f"{value} is outside the {step.vocab_size} token ids")
            ids[key] = value
        if ids["pad_id"] is not None and ids["pad_id"] == ids["unknown_id"]:
            raise _fail(f"{path}.unknown_id", f"{ids['unknown_id']} is also the pad id")
        if encoding == "vocab" and ids["unknown_id"] is not None:
            raise _fail(f"{path}.unknown_id", "a vocab encoding refuses unknown characters; must be null")
        if encoding == "vocab" and ids["pad_id"] is not None:
            raise _fail(f"{path}.pad_id", f"id {ids['pad_id']} is the character {vocab[ids['pad_id']]!r}, not padding")
        return cls(encoding, vocab, ids["pad_id"], ids["unknown_id"])


Step = Union[PictureStep, ScaleStep, NormalizeStep, PadStep, EncodeStep]
STEP_TYPES = {cls.op: cls for cls in (PictureStep, ScaleStep, NormalizeStep, PadStep, EncodeStep)}


# ---------------------------------------------------------------------------------------------


# A contract stores its tensors as every ptx since schema 1 has written them: the batch (and a token
# model's sequence) is the symbol "batch" ("seq") in ``shape``, and ``axes`` names every axis. Read,
# each is the tensor layer's TensorSig, its batch axis the one "batch" stands on.
def tensor_to_dict(t: TensorSig) -> dict:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "axes": list(t.axes or ())}


def tensor_from_dict(doc: Mapping, path: str) -> TensorSig:
    _keys(path, _mapping(path, doc), {"name", "shape", "dtype", "axes"})
    name = _text(f"{path}.name", doc["name"])
    shape = doc["shape"]
    if not isinstance(shape, list) or not shape:
        raise _fail(f"{path}.shape", f"{shape!r} is not a non-empty list")
    for i, d in enumerate(shape):
        if not (d in (BATCH, SEQ) or (isinstance(d, int) and not isinstance(d, bool) and d > 0)):
            raise _fail(f"{path}.shape[{i}]", f"{d!r} is neither a positive size nor {BATCH!r}/{SEQ!r}")
    for symbol in (BATCH, SEQ):
        if shape.count(symbol) > 1:
            raise _fail(f"{path}.shape", f"{symbol!r} appears {shape.count(symbol)} times")
    if BATCH not in shape:
        raise _fail(f"{path}.shape", f"no {BATCH!r} axis")
    axes = doc["axes"]
    if not isinstance(axes, list) or not all(isinstance(a, str) and a for a in axes):
        raise _fail(f"{path}.axes", f"{axes!r} is not a list of axis names")
    if len(axes) != len(shape):
        raise _fail(f"{path}.shape", f"{shape} has {len(shape)} axes but {path}.axes names {len(axes)}")
    for i, (d, a) in enumerate(zip(shape, axes)):
        if (d in (BATCH, SEQ) or a in (BATCH, SEQ)) and a != d:
            raise _fail(f"{path}.shape", f"axis {i} is {d!r} but {path}.axes[{i}] calls it {a!r}")
    if doc["dtype"] not in CONTRACT_DTYPES:
        raise _fail(f"{path}.dtype", f"{doc['dtype']!r} is not one of {', '.join(CONTRACT_DTYPES)}")
    return TensorSig(name, doc["dtype"], tuple(shape), shape.index(BATCH), axes=tuple(axes))


@dataclass(frozen=True)
class Tolerance:
    """Two backends agree when every element has |got - want| <= atol + rtol * |want|."""

    atol: float
    rtol: float

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "Tolerance":
        _keys(path, _mapping(path, doc), {"atol", "rtol"})
        return cls(_finite(f"{path}.atol", doc["atol"], non_negative=True),
                   _finite(f"{path}.rtol", doc["rtol"], non_negative=True))


# float32 on the CPU reorders sums a little between runtimes; CUDA kernels (cuDNN, TF32 matmuls)
# round differently again, so GPU rows get a wider band.
DEFAULT_TOLERANCES = {"cpu": Tolerance(1e-4, 1e-3), "cuda": Tolerance(1e-3, 1e-2)}


@dataclass(frozen=True)
class Contract:
    model: str
    task: Task
    kind: InputKind
    input: TensorSig
    output: TensorSig
    labels: tuple[str, ...]
    steps: tuple[Step, ...]
    features: tuple[str, ...] = ()  # number/vector inputs: the feature of each input column
    tolerances: tuple[tuple[str, Tolerance], ...] = tuple(DEFAULT_TOLERANCES.items())
    description: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- derived views ------------------------------------------------------------------------
    @property
    def meaning(self) -> OutputMeaning:
        return MEANING_OF_TASK[self.task]

    @property
    def picture(self) -> PictureStep | None:
        return next((s for s in self.steps if isinstance(s, PictureStep)), None)

    @property
    def encoding(self) -> EncodeStep | None:
        return next((s for s in self.steps if isinstance(s, EncodeStep)), None)

    @property
    def tensor_steps(self) -> tuple[Step, ...]:
        """The steps after the picture pipeline: raw sample batch -> model input."""
        return tuple(s for s in self.steps if not isinstance(s, PictureStep))

    @property
    def per_position(self) -> bool:
        """One answer per token (rnn-hello) rather than one per sample."""
        return SEQ in self.output.shape

    @property
    def sample_size(self) -> int:
        return math.prod(d for d in self.input.sample_shape if isinstance(d, int))

    @property
    def signature(self) -> Signature:
        """The tensor layer under this head: one named input, one named output (ptx.contract.tensors)."""
        return signature_of_contract(self)

    def tolerance(self, device: str) -> Tolerance:
        table = dict(self.tolerances)  # "cpu" is required; other accelerators fall back to "cuda"'s
        return table.get(device) or table.get("cuda") or table["cpu"]

    def replace(self, **changes) -> "Contract":
        """A copy with ``changes``, validated like any contract read from a file."""
        return Contract.from_dict(dataclasses.replace(self, **changes).to_dict())

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "description": self.description,
            "task": self.task.value,
            "kind": self.kind.value,
            "input": tensor_to_dict(self.input),
            "output": tensor_to_dict(self.output),
            "labels": list(self.labels),
            "features": list(self.features),
            "preprocessing": [s.to_dict() for s in self.steps],
            "tolerances": {device: t.to_dict() for device, t in self.tolerances},
        }

    @classmethod
    def from_dict(cls, doc) -> "Contract":
        doc = _mapping("contract", doc)
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise _fail("schema_version", f"{version} is newer than this ptx reads ({SCHEMA_VERSION}): upgrade ptx")
            raise _fail("schema_version", f"{version!r} is not {SCHEMA_VERSION}: re-export with this ptx")
        _keys("", doc, {"schema_version", "model", "task", "kind", "input", "output", "labels", "preprocessing",
                        "tolerances"}, {"description", "features"})
        task = _enum("task", Task, doc["task"])
        kind = _enum("kind", InputKind, doc["kind"])
        tensor_in = tensor_from_dict(doc["input"], "input")
        tensor_out = tensor_from_dict(doc["output"], "output")
        labels = doc["labels"]
        if not isinstance(labels, list) or not labels:
            raise _fail("labels", f"{labels!r} is not a non-empty list")
        for i, label in enumerate(labels):
            if not isinstance(label, str) or not label or "\n" in label:
                raise _fail(f"labels[{i}]", f"{label!r} is not a one-line non-empty string")
        if len(set(labels)) != len(labels):
            raise _fail("labels", "a label appears twice")
        steps_doc = doc["preprocessing"]
        if not isinstance(steps_doc, list):
            raise _fail("preprocessing", "expected a list of steps")
        steps = []
        for i, step in enumerate(steps_doc):
            path = f"preprocessing[{i}]"
            op = _mapping(path, step).get("op")
            if op not in STEP_TYPES:
                raise _fail(f"{path}.op", f"unknown step {op!r} (known: {', '.join(STEP_TYPES)})")
            steps.append(STEP_TYPES[op].from_dict(step, path))
        tolerances = _mapping("tolerances", doc["tolerances"])
        _keys("tolerances", tolerances, {"cpu"}, set(TOLERANCE_DEVICES))
        features = doc.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
            raise _fail("features", f"{features!r} is not a list of names")
        contract = cls(
            model=_text("model", doc["model"]), task=task, kind=kind, input=tensor_in, output=tensor_out,
            labels=tuple(labels), steps=tuple(steps), features=tuple(features),
            tolerances=tuple((d, Tolerance.from_dict(t, f"tolerances.{d}")) for d, t in tolerances.items()),
            description=_text("description", doc.get("description", ""), allow_empty=True),
        )
        contract._check_consistency()
        return contract

    def _check_consistency(self) -> None:
        """Fields that are each well-formed must also fit together."""
        inp, out = self.input, self.output
        text = self.kind is InputKind.TEXT
        want_dtype = "int64" if text else "float32"
        if inp.dtype != want_dtype:
            raise _fail("input.dtype", f"{inp.dtype} does not suit {self.kind.value} input (needs {want_dtype})")
        if out.dtype != "float32":
            raise _fail("output.dtype", f"{out.dtype}: outputs are float32")
        if SEQ in inp.shape and not text:
            raise _fail("input.shape", f"only text inputs have a {SEQ!r} axis")
        if text and SEQ not in inp.shape:
            raise _fail("input.shape", f"text input needs a {SEQ!r} axis")
        if out.batch_axis != 0:
            raise _fail("output.shape", f"the batch must be the first output axis, not axis {out.batch_axis}")
        if SEQ in out.shape and SEQ not in inp.shape:
            raise _fail("output.shape", f"{SEQ!r} in the output but not in the input")
        if out.name != self.meaning.value:
            raise _fail("output.name", f"{out.name!r}: a {self.task.value} model outputs {self.meaning.value!r}")
        width = out.shape[-1]
        if not isinstance(width, int):
            raise _fail("output.shape", "the last output axis must be a size")
        if self.task is Task.CLASSIFICATION:
            if len(self.labels) != width:
                raise _fail("labels", f"{len(self.labels)} labels for the {width} outputs of output.shape")
        else:
            if width != 1:
                raise _fail("output.shape", f"last axis {width}: a {self.task.value} model outputs one value")
            want = 2 if self.task is Task.BINARY else 1
            if len(self.labels) != want:
                raise _fail("labels", f"{len(self.labels)} labels; a {self.task.value} model has {want}")
        self._check_steps()

    def _check_steps(self) -> None:
        kinds = [type(s) for s in self.steps]
        if self.kind is InputKind.TEXT:
            if kinds != [EncodeStep]:
                raise _fail("kind", "text input takes exactly one preprocessing step, encode")
            return
        if EncodeStep in kinds:
            raise _fail("kind", f"{self.kind.value} input with an encode step in preprocessing")
        if self.kind is InputKind.IMAGE:
            if not kinds or kinds[0] is not PictureStep or kinds.count(PictureStep) != 1:
                raise _fail("kind", "image input starts its preprocessing with one picture step")
            pad = sum(s.pixels for s in self.steps if isinstance(s, PadStep))
            side = self.picture.canvas + 2 * pad
            if self.sample_size != side * side:
                raise _fail("input.shape", f"{list(self.input.shape)} does not hold one {side}x{side} picture "
                                           f"({self.picture.canvas}x{self.picture.canvas} canvas, pad {pad})")
        elif PictureStep in kinds or PadStep in kinds:
            raise _fail("kind", f"{self.kind.value} input with picture steps in preprocessing")
        if len(self.features) != (0 if self.kind is InputKind.IMAGE else self.sample_size):
            raise _fail("features", f"{len(self.features)} names for {self.sample_size} input values"
                        if self.kind is not InputKind.IMAGE else "image inputs have no feature names")
        for i, step in enumerate(self.steps):
            if isinstance(step, NormalizeStep) and len(step.mean) not in (1, self._last_axis_size()):
                raise _fail(f"preprocessing[{i}].mean", f"{len(step.mean)} values; give 1 or one per feature "
                                                        f"({self._last_axis_size()})")

    def _last_axis_size(self) -> int:
        return self.input.sample_shape[-1] if self.kind is not InputKind.IMAGE else 1


def signature_of_contract(contract, raw_input=None) -> Signature:
    """A tutorial model's tensor layer: its one input (or, for an ``--input uint8`` export, the raw
    pictures its graph takes) and its one output, batched on the axis called ``batch``. The axes'
    names stay with the head (ptx.contract): ptx.signature is written as every ptx reads it."""
    def bare(t: TensorSig) -> TensorSig:
        return dataclasses.replace(t, axes=None)

    return Signature((bare(raw_input or contract.input),), (bare(contract.output),))
