"""A contract's preprocessing steps: a user's input -> the model's input tensor, in order (a picture
pipeline, scaling, normalising, padding, a text encoding), each a frozen, validated dataclass with
its own ``to_dict``/``from_dict``. docs/artifact-format.md defines each step exactly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

from .fields import fail, finite, integer, keys_of, mapping, numbers, string

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
        keys_of(path, doc, {"op", "pipeline", "params"})
        name = doc["pipeline"]
        if name not in PICTURE_PIPELINES:
            raise fail(f"{path}.pipeline", f"unknown picture pipeline {name!r} (known: {', '.join(PICTURE_PIPELINES)})")
        defaults = PICTURE_PIPELINES[name]
        given = mapping(f"{path}.params", doc["params"])
        keys_of(f"{path}.params", given, set(), set(defaults) | {"version"})
        params = {**defaults, "version": 1, **given}
        checked = {}
        for key, value in params.items():
            where = f"{path}.params.{key}"
            if key == "version":
                versions = PICTURE_VERSIONS[name]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise fail(where, f"{value!r} is not a version number (known: {', '.join(map(str, versions))})")
                if value not in versions:
                    raise fail(where, f"{name} version {value} is newer than this ptx computes "
                                       f"({', '.join(map(str, versions))}): upgrade ptx")
                checked[key] = value
            elif key in ("canvas", "box"):
                checked[key] = integer(where, value, minimum=8 if key == "canvas" else 1)
            else:
                checked[key] = finite(where, value, non_negative=True)
        if "box" in checked and checked["box"] > checked["canvas"]:
            raise fail(f"{path}.params.box", f"{checked['box']} is larger than the canvas {checked['canvas']}")
        for key in ("ink_threshold", "trim_threshold", "paper_window"):
            if key in checked and checked[key] >= 1:
                raise fail(f"{path}.params.{key}", f"{checked[key]} must be a fraction below 1")
        return cls(name, tuple(sorted(checked.items())))


class _Fields:
    """A step whose document is its op and its fields as they are (a tuple as a list)."""

    def to_dict(self) -> dict:
        return {"op": self.op, **{k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}}


@dataclass(frozen=True)
class ScaleStep(_Fields):
    """x = x * factor (raw pixel values 0-255 -> [0, 1])."""

    factor: float
    op = "scale"

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "ScaleStep":
        keys_of(path, doc, {"op", "factor"})
        return cls(finite(f"{path}.factor", doc["factor"], positive=True))


@dataclass(frozen=True)
class NormalizeStep(_Fields):
    """x = (x - mean) / std, one value for all, or one per feature (the sample's last axis)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    op = "normalize"

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "NormalizeStep":
        keys_of(path, doc, {"op", "mean", "std"})
        mean = numbers(f"{path}.mean", doc["mean"])
        std = numbers(f"{path}.std", doc["std"], positive=True)
        if len(mean) != len(std):
            raise fail(f"{path}.mean", f"{len(mean)} means but {len(std)} stds")
        return cls(mean, std)


@dataclass(frozen=True)
class PadStep(_Fields):
    """Zero padding of ``pixels`` on each side of the picture (after normalisation)."""

    pixels: int
    op = "pad"

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "PadStep":
        keys_of(path, doc, {"op", "pixels"})
        return cls(integer(f"{path}.pixels", doc["pixels"], minimum=1))


@dataclass(frozen=True)
class EncodeStep(_Fields):
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

    @classmethod
    def from_dict(cls, doc: Mapping, path: str) -> "EncodeStep":
        keys_of(path, doc, {"op", "encoding", "vocab", "pad_id", "unknown_id"})
        encoding = doc["encoding"]
        if encoding not in TEXT_ENCODINGS:
            raise fail(f"{path}.encoding", f"{encoding!r} is not one of {', '.join(TEXT_ENCODINGS)}")
        vocab = doc["vocab"]
        if encoding == "vocab":
            vocab = string(f"{path}.vocab", vocab)
            if len(set(vocab)) != len(vocab):
                raise fail(f"{path}.vocab", f"{vocab!r} repeats a character")
        elif vocab is not None:
            raise fail(f"{path}.vocab", "must be null for the latin-1 encoding")
        step = cls(encoding, vocab)
        ids = {}
        for key in ("pad_id", "unknown_id"):
            value = doc[key]
            if value is not None:
                value = integer(f"{path}.{key}", value)
                if value >= step.vocab_size:
                    raise fail(f"{path}.{key}", f"{value} is outside the {step.vocab_size} token ids")
            ids[key] = value
        if ids["pad_id"] is not None and ids["pad_id"] == ids["unknown_id"]:
            raise fail(f"{path}.unknown_id", f"{ids['unknown_id']} is also the pad id")
        if encoding == "vocab" and ids["unknown_id"] is not None:
            raise fail(f"{path}.unknown_id", "a vocab encoding refuses unknown characters; must be null")
        if encoding == "vocab" and ids["pad_id"] is not None:
            raise fail(f"{path}.pad_id", f"id {ids['pad_id']} is the character {vocab[ids['pad_id']]!r}, not padding")
        return cls(encoding, vocab, ids["pad_id"], ids["unknown_id"])


Step = Union[PictureStep, ScaleStep, NormalizeStep, PadStep, EncodeStep]
STEP_TYPES = {cls.op: cls for cls in (PictureStep, ScaleStep, NormalizeStep, PadStep, EncodeStep)}
