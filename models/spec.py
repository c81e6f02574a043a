"""The frozen description of one model: everything training, export and inference read.

No torch here: the spec's plain data (contract, preprocessing, labels) is what travels into the
artifacts' metadata, and the builder is the only thing that touches torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

BATCH = "batch"
SEQ = "seq"  # a dynamic sequence length, for models that read tokens
MNIST_LABELS = tuple(str(d) for d in range(10))
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(frozen=True)
class InputContract:
    """The tensor a model takes. ``shape`` marks the batch axis with ``BATCH``.

    ``kind`` says what a user hands ``predict``: ``image`` (files, PIL images, arrays) or
    ``number`` (plain numbers, one per sample), ``vector`` (CSV rows of features) or ``text``
    (strings, tokenised by ``vocab``: the index of each character in it, or with no vocab its
    Latin-1 code, 0 being padding).
    """

    shape: tuple
    layout: str
    kind: str = "image"
    dtype: str = "float32"
    name: str = "input"
    output_name: str = "logits"
    vocab: str | None = None
    vocab_size: int | None = None

    @property
    def batch_axis(self) -> int:
        return self.shape.index(BATCH)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape, batch axis removed (the order data is stored in, batch first)."""
        return tuple(d for d in self.shape if d != BATCH)

    def batch_shape(self, batch: int, seq: int = 5) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else seq if d == SEQ else d for d in self.shape)

    def example(self, batch: int, seq: int = 5):
        """A random input of this contract (tokens for text models), for tests and tracing."""
        import torch

        shape = self.batch_shape(batch, seq)
        if self.dtype == "int64":
            return torch.randint(1, self.vocab_size, shape)
        return torch.randn(shape)


@dataclass(frozen=True)
class Preprocessing:
    """x = (raw * scale - mean) / std, then zero padding of ``pad`` pixels on each image side."""

    scale: float = 1.0 / 255.0
    mean: float = 0.0
    std: float = 1.0
    pad: int = 0


# 000's data_util.py feeds raw 0-255 floats (it lost the seed's /255) and its Normalize((0,),(1,))
# is a no-op; what it means is the usual MNIST input: scaled to [0, 1] and standardised with the
# training set's mean and std, as 003 lecture 9 writes it. Measured: convnet on mnist-sample reaches
# 0.957-0.961 in 10 epochs with these, 0.949-0.951 without.
MNIST_NORMALIZATION = Preprocessing(mean=0.1307, std=0.3081)


@dataclass(frozen=True)
class Recipe:
    """The seed's training recipe, used unless the command line overrides it."""

    loss: str  # cross_entropy | mse | bce
    optimizer: str  # sgd | adam
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    seed: str  # seed file and section, e.g. "000 §6"
    builder: Callable[..., Any]  # an nn.Module class; builder(**model_args) makes the model
    input: InputContract
    labels: tuple[str, ...]
    dataset: str
    recipe: Recipe
    params: int  # declared from the seed's layer sizes; a test checks the builder against it
    preprocessing: Preprocessing = Preprocessing()
    model_args: dict = field(default_factory=dict)
    task: str = "classification"  # classification | binary (outputs a probability) | regression
    atol: float = 1e-4
    rtol: float = 1e-3
    torchscript: str = "script"  # script | trace
    report: Callable[[Any], dict] | None = None  # extra per-epoch numbers the seed prints (linreg's w)
    output_shape: tuple | None = None  # default (batch, outputs); (batch, seq, classes) per position
    onnx_exporter: str | None = None  # the exporter this model needs, when the default cannot do it

    def build(self, **overrides):
        return self.builder(**{**self.model_args, **overrides})

    @property
    def num_outputs(self) -> int:
        return len(self.labels) if self.task == "classification" else 1  # binary: P(label 1)

    @property
    def outputs(self) -> tuple:
        return self.output_shape or (BATCH, self.num_outputs)

    def contract(self) -> dict:
        """The JSON-able input contract, preprocessing and labels that travel inside artifacts."""
        # Through JSON so that the spec's contract is the very dict the artifacts give back.
        return json.loads(json.dumps({
            "model": self.name,
            "task": self.task,
            "input_name": self.input.name,
            "output_name": self.input.output_name,
            "shape": list(self.input.shape),
            "output_shape": list(self.outputs),
            "vocab": self.input.vocab,
            "vocab_size": self.input.vocab_size,
            "batch_axis": self.input.batch_axis,
            "layout": self.input.layout,
            "kind": self.input.kind,
            "dtype": self.input.dtype,
            "preprocessing": asdict(self.preprocessing),
            "labels": list(self.labels),
            "atol": self.atol,
            "rtol": self.rtol,
        }))
