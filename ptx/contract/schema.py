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
from typing import Mapping

from .names import BATCH, SCHEMA_VERSION, SEQ
# The tensor layer is the ground a contract stands on: it is imported here and imports nothing of this module.
from .tensors import ContractError, Signature, TensorSig  # noqa: F401 - the contract's error, read from here too

from .fields import choice, fail, finite, keys_of, mapping, string
from .steps import (PICTURE_PIPELINES, PICTURE_VERSIONS, STEP_TYPES, TEXT_ENCODINGS, EncodeStep,  # noqa: F401
                    NormalizeStep, PadStep, PictureStep, ScaleStep, Step)  # the contract's own words, read from here too


class ValueEnum(str, Enum):
    """An enum that prints as its value ("sgd", not "Optimizer.SGD") in messages and f-strings."""

    # Enum's own __format__ formats str(self) where __str__ is overridden (3.10 on): f-strings say the value too.
    def __str__(self) -> str:
        return self.value


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


# What a task's one output holds, which is also the output's name.
MEANING_OF_TASK = {Task.CLASSIFICATION: "logits", Task.BINARY: "probability", Task.REGRESSION: "value"}
BINARY_THRESHOLD = 0.5

# uint8: raw pictures, the graph input of an artifact exported with --input uint8 (never a contract's input).
CONTRACT_DTYPES = ("float32", "int64", "uint8")
TOLERANCE_DEVICES = ("cpu", "cuda")




# ---------------------------------------------------------------------------------------------


# A contract stores its tensors as every ptx since schema 1 has written them: the batch (and a token
# model's sequence) is the symbol "batch" ("seq") in ``shape``, and ``axes`` names every axis. Read,
# each is the tensor layer's TensorSig, its batch axis the one "batch" stands on.
def tensor_to_dict(t: TensorSig) -> dict:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "axes": list(t.axes or ())}


def tensor_from_dict(doc: Mapping, path: str) -> TensorSig:
    keys_of(path, mapping(path, doc), {"name", "shape", "dtype", "axes"})
    name = string(f"{path}.name", doc["name"])
    shape = doc["shape"]
    if not isinstance(shape, list) or not shape:
        raise fail(f"{path}.shape", f"{shape!r} is not a non-empty list")
    for i, d in enumerate(shape):
        if not (d in (BATCH, SEQ) or (isinstance(d, int) and not isinstance(d, bool) and d > 0)):
            raise fail(f"{path}.shape[{i}]", f"{d!r} is neither a positive size nor {BATCH!r}/{SEQ!r}")
    for symbol in (BATCH, SEQ):
        if shape.count(symbol) > 1:
            raise fail(f"{path}.shape", f"{symbol!r} appears {shape.count(symbol)} times")
    if BATCH not in shape:
        raise fail(f"{path}.shape", f"no {BATCH!r} axis")
    axes = doc["axes"]
    if not isinstance(axes, list) or not all(isinstance(a, str) and a for a in axes):
        raise fail(f"{path}.axes", f"{axes!r} is not a list of axis names")
    if len(axes) != len(shape):
        raise fail(f"{path}.shape", f"{shape} has {len(shape)} axes but {path}.axes names {len(axes)}")
    for i, (d, a) in enumerate(zip(shape, axes)):
        if (d in (BATCH, SEQ) or a in (BATCH, SEQ)) and a != d:
            raise fail(f"{path}.shape", f"axis {i} is {d!r} but {path}.axes[{i}] calls it {a!r}")
    if doc["dtype"] not in CONTRACT_DTYPES:
        raise fail(f"{path}.dtype", f"{doc['dtype']!r} is not one of {', '.join(CONTRACT_DTYPES)}")
    return TensorSig(name, doc["dtype"], tuple(shape), shape.index(BATCH), axes=tuple(axes))


@dataclass(frozen=True)
class Tolerance:
    """Two backends agree when every element has |got - want| <= atol + rtol x its row's largest |want|
    (ptx.contract.error_model)."""

    atol: float
    rtol: float

    def to_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol}

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "Tolerance":
        keys_of(path, mapping(path, doc), {"atol", "rtol"})
        return cls(finite(f"{path}.atol", doc["atol"], non_negative=True),
                   finite(f"{path}.rtol", doc["rtol"], non_negative=True))


# float32 on the CPU reorders sums a little between runtimes; CUDA kernels (cuDNN, TF32 matmuls)
# round differently again, so GPU rows get a wider band.
# The one table of default tolerances, per dtype and device kind: float32 on the CPU is the tutorial
# models' band (runtimes reorder sums); CUDA kernels round differently again; float16 keeps 11 bits,
# its band about 10 units in the last place. A contract's default is its float32 outputs'.
DEFAULT_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "cpu"): Tolerance(1e-4, 1e-3),
    ("float32", "cuda"): Tolerance(1e-3, 1e-2),
    ("float64", "cpu"): Tolerance(1e-7, 1e-6),
    ("float64", "cuda"): Tolerance(1e-6, 1e-5),
    ("float16", "cpu"): Tolerance(1e-2, 1e-2),
    ("float16", "cuda"): Tolerance(2e-2, 2e-2),
}
CONTRACT_TOLERANCES = {device: DEFAULT_TOLERANCES[("float32", device)] for device in ("cpu", "cuda")}


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
    tolerances: tuple[tuple[str, Tolerance], ...] = tuple(CONTRACT_TOLERANCES.items())
    description: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- derived views ------------------------------------------------------------------------
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
        doc = mapping("contract", doc)
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
                raise fail("schema_version", f"{version} is newer than this ptx reads ({SCHEMA_VERSION}): upgrade ptx")
            raise fail("schema_version", f"{version!r} is not {SCHEMA_VERSION}: re-export with this ptx")
        keys_of("", doc, {"schema_version", "model", "task", "kind", "input", "output", "labels", "preprocessing",
                        "tolerances"}, {"description", "features"})
        task = choice("task", Task, doc["task"])
        kind = choice("kind", InputKind, doc["kind"])
        tensor_in = tensor_from_dict(doc["input"], "input")
        tensor_out = tensor_from_dict(doc["output"], "output")
        labels = doc["labels"]
        if not isinstance(labels, list) or not labels:
            raise fail("labels", f"{labels!r} is not a non-empty list")
        for i, label in enumerate(labels):
            if not isinstance(label, str) or not label or "\n" in label:
                raise fail(f"labels[{i}]", f"{label!r} is not a one-line non-empty string")
        if len(set(labels)) != len(labels):
            raise fail("labels", "a label appears twice")
        steps_doc = doc["preprocessing"]
        if not isinstance(steps_doc, list):
            raise fail("preprocessing", "expected a list of steps")
        steps = []
        for i, step in enumerate(steps_doc):
            path = f"preprocessing[{i}]"
            op = mapping(path, step).get("op")
            if op not in STEP_TYPES:
                raise fail(f"{path}.op", f"unknown step {op!r} (known: {', '.join(STEP_TYPES)})")
            steps.append(STEP_TYPES[op].from_dict(step, path))
        tolerances = mapping("tolerances", doc["tolerances"])
        keys_of("tolerances", tolerances, {"cpu"}, set(TOLERANCE_DEVICES))
        features = doc.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
            raise fail("features", f"{features!r} is not a list of names")
        contract = cls(
            model=string("model", doc["model"]), task=task, kind=kind, input=tensor_in, output=tensor_out,
            labels=tuple(labels), steps=tuple(steps), features=tuple(features),
            tolerances=tuple((d, Tolerance.from_dict(t, f"tolerances.{d}")) for d, t in tolerances.items()),
            description=string("description", doc.get("description", ""), allow_empty=True),
        )
        contract._check_consistency()
        return contract

    def _check_consistency(self) -> None:
        """Fields that are each well-formed must also fit together."""
        inp, out = self.input, self.output
        text = self.kind is InputKind.TEXT
        want_dtype = "int64" if text else "float32"
        if inp.dtype != want_dtype:
            raise fail("input.dtype", f"{inp.dtype} does not suit {self.kind.value} input (needs {want_dtype})")
        if out.dtype != "float32":
            raise fail("output.dtype", f"{out.dtype}: outputs are float32")
        if SEQ in inp.shape and not text:
            raise fail("input.shape", f"only text inputs have a {SEQ!r} axis")
        if text and SEQ not in inp.shape:
            raise fail("input.shape", f"text input needs a {SEQ!r} axis")
        if out.batch_axis != 0:
            raise fail("output.shape", f"the batch must be the first output axis, not axis {out.batch_axis}")
        if SEQ in out.shape and SEQ not in inp.shape:
            raise fail("output.shape", f"{SEQ!r} in the output but not in the input")
        if out.name != MEANING_OF_TASK[self.task]:
            raise fail("output.name", f"{out.name!r}: a {self.task.value} model outputs {MEANING_OF_TASK[self.task]!r}")
        width = out.shape[-1]
        if not isinstance(width, int):
            raise fail("output.shape", "the last output axis must be a size")
        if self.task is Task.CLASSIFICATION:
            if len(self.labels) != width:
                raise fail("labels", f"{len(self.labels)} labels for the {width} outputs of output.shape")
        else:
            if width != 1:
                raise fail("output.shape", f"last axis {width}: a {self.task.value} model outputs one value")
            want = 2 if self.task is Task.BINARY else 1
            if len(self.labels) != want:
                raise fail("labels", f"{len(self.labels)} labels; a {self.task.value} model has {want}")
        self._check_steps()

    def _check_steps(self) -> None:
        kinds = [type(s) for s in self.steps]
        if self.kind is InputKind.TEXT:
            if kinds != [EncodeStep]:
                raise fail("kind", "text input takes exactly one preprocessing step, encode")
            return
        if EncodeStep in kinds:
            raise fail("kind", f"{self.kind.value} input with an encode step in preprocessing")
        if self.kind is InputKind.IMAGE:
            if not kinds or kinds[0] is not PictureStep or kinds.count(PictureStep) != 1:
                raise fail("kind", "image input starts its preprocessing with one picture step")
            pad = sum(s.pixels for s in self.steps if isinstance(s, PadStep))
            side = self.picture.canvas + 2 * pad
            if self.sample_size != side * side:
                raise fail("input.shape", f"{list(self.input.shape)} does not hold one {side}x{side} picture "
                                           f"({self.picture.canvas}x{self.picture.canvas} canvas, pad {pad})")
        elif PictureStep in kinds or PadStep in kinds:
            raise fail("kind", f"{self.kind.value} input with picture steps in preprocessing")
        if len(self.features) != (0 if self.kind is InputKind.IMAGE else self.sample_size):
            raise fail("features", f"{len(self.features)} names for {self.sample_size} input values"
                        if self.kind is not InputKind.IMAGE else "image inputs have no feature names")
        per_feature = self.input.sample_shape[-1] if self.kind is not InputKind.IMAGE else 1  # a picture: one for all
        for i, step in enumerate(self.steps):
            if isinstance(step, NormalizeStep) and len(step.mean) not in (1, per_feature):
                raise fail(f"preprocessing[{i}].mean", f"{len(step.mean)} values; give 1 or one per feature "
                                                        f"({per_feature})")


def signature_of_contract(contract, raw_input=None) -> Signature:
    """A tutorial model's tensor layer: its one input (or, for an ``--input uint8`` export, the raw
    pictures its graph takes) and its one output, batched on the axis called ``batch``. The axes'
    names stay with the head (ptx.contract): ptx.signature is written as every ptx reads it."""
    return Signature((dataclasses.replace(raw_input or contract.input, axes=None),),
                     (dataclasses.replace(contract.output, axes=None),))
