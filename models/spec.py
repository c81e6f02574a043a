"""The frozen description of one model: builder, its input tensor and contract defaults, and the seed's recipe.

No torch here: ``spec.contract(dataset)`` is the plain, validated ``Contract`` that travels into
checkpoints and artifacts, and the builder is the only thing that touches torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ptx.contract import BATCH, SEQ, Contract, EncodeStep, InputKind, PictureStep, Task, TensorSig
from ptx.contract import datasets as data
from ptx.contract.datasets import DIGIT_LABELS, FOLDER_PREFIX, DataKind, image_dataset
from ptx.contract.schema import (CONTRACT_TOLERANCES, PICTURE_PIPELINES, ValueEnum, MEANING_OF_TASK, NormalizeStep,
                                 ScaleStep, Step, Tolerance)

__all__ = ["BATCH", "SEQ", "tensor", "Loss", "ModelSpec", "Optimizer", "Recipe", "TorchScriptMethod",
           "IMAGE_28", "FLAT_784", "MNIST_NORMALIZATION", "PIXELS_TO_UNIT", "mnist_model"]


class Loss(ValueEnum):
    CROSS_ENTROPY = "cross_entropy"  # over the last axis: (B, C), or (B, T, C) per position
    MSE = "mse"
    BCE = "bce"  # the seeds' binary models end in a sigmoid and train BCELoss on the probability
    BCE_SUM = "bce_sum"  # BCELoss(size_average=False): summed over the batch


class Optimizer(ValueEnum):
    SGD = "sgd"
    ADAM = "adam"


class TorchScriptMethod(ValueEnum):
    SCRIPT = "script"  # falls back to trace where scripting rejects the Python
    TRACE = "trace"


def tensor(shape: tuple, axes: tuple[str, ...], dtype: str = "float32", name: str = "input") -> TensorSig:
    """A model's input as its contract declares it (the tensor layer every model shares), the batch
    axis where ``batch`` stands."""
    return TensorSig(name, dtype, tuple(shape), tuple(shape).index(BATCH), axes=tuple(axes))


@dataclass(frozen=True)
class Recipe:
    """The seed's training recipe, used unless the command line overrides it."""

    loss: Loss
    optimizer: Optimizer
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0


IMAGE_28 = tensor((BATCH, 1, 28, 28), ("batch", "channel", "height", "width"))
FLAT_784 = tensor((BATCH, 784), ("batch", "pixel"))  # the 28x28 picture, row by row
PIXELS_TO_UNIT = (ScaleStep(1.0 / 255.0),)  # ToTensor: 0-255 -> [0, 1]
# 000's data_util.py feeds raw 0-255 floats (it lost the seed's /255) and its Normalize((0,),(1,))
# is a no-op; what it means is the usual MNIST input: scaled to [0, 1] and standardised with the
# training set's mean and std, as 003 lecture 9 writes it. Measured: convnet on mnist-sample reaches
# 0.957-0.961 in 10 epochs with these, 0.949-0.951 without.
MNIST_NORMALIZATION = PIXELS_TO_UNIT + (NormalizeStep((0.1307,), (0.3081,)),)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    seed: str  # seed file and section, e.g. "000 §6"
    builder: Callable[..., Any]  # an nn.Module class; builder(**model_args) makes the model
    input: TensorSig  # the tensor it takes (int64 token ids for a text model)
    dataset: str  # the default dataset; image datasets decide labels and picture pipeline
    recipe: Recipe
    params: int  # declared from the seed's layer sizes; a test checks the builder against it
    labels: tuple[str, ...] = DIGIT_LABELS  # for image models: the default dataset's, overridden by the data
    preprocessing: tuple[Step, ...] = ()  # tensor steps after the picture pipeline, or the encode step
    features: tuple[str, ...] = ()  # number/vector inputs: what each input column is
    model_args: dict = field(default_factory=dict)
    task: Task = Task.CLASSIFICATION
    kind: InputKind = InputKind.IMAGE  # what a user hands predict
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(CONTRACT_TOLERANCES))
    torchscript: TorchScriptMethod = TorchScriptMethod.SCRIPT
    report: Callable[[Any], dict] | None = None  # extra per-epoch numbers the seed prints (linreg's w)
    output_shape: tuple | None = None  # default (batch, outputs); (batch, seq, classes) per position
    onnx_exporter: str | None = None  # the exporter this model needs, when the default cannot do it
    # Why torch.export cannot keep this model's dynamic dimensions, or None: formats built on
    # torch.export alone (pt2) refuse the model with this reason; a test checks the claim.
    torch_export_blocker: str | None = None

    def build(self, **overrides):
        return self.builder(**{**self.model_args, **overrides})

    @property
    def num_outputs(self) -> int:
        return len(self.labels) if self.task is Task.CLASSIFICATION else 1  # binary: P(label 1)

    @property
    def outputs(self) -> tuple:
        return self.output_shape or (BATCH, self.num_outputs)

    @property
    def vocab_size(self) -> int | None:
        step = next((s for s in self.preprocessing if isinstance(s, EncodeStep)), None)
        return step.vocab_size if step else None

    @property
    def takes(self) -> DataKind:
        """The data this model can learn from, in the words datasets use for what they give (28x28
        pictures with 10 classes, a number with a 0/1 label, ...): from its input kind, its picture
        pipeline's canvas, its features, its text encoding, its task and its outputs."""
        if self.task is Task.REGRESSION:
            label = data.VALUE
        elif self.task is Task.BINARY:
            label = data.BINARY
        else:
            label = data.CLASS_PER_CHARACTER if SEQ in self.outputs else data.CLASSES
        classes = 0 if label in (data.VALUE, data.BINARY) else self.num_outputs
        kind = self.kind
        if kind is InputKind.IMAGE:  # the dataset's samples, before any padding step (lenet: 28 -> 32)
            side = PICTURE_PIPELINES[image_dataset(self.dataset).picture]["canvas"]
            return DataKind(data.PICTURES, label, (side, side), classes)
        if kind is InputKind.VECTOR:
            return DataKind(data.VECTOR, label, (len(self.features),), classes)
        if kind is InputKind.TEXT:
            step = next(s for s in self.preprocessing if isinstance(s, EncodeStep))
            if step.encoding == "vocab":  # a closed alphabet: strings of its characters
                return DataKind(data.CHARACTERS, label, (), classes, step.vocab)
            return DataKind(data.WORDS, label, (), classes, step.encoding)
        return DataKind(data.NUMBER, label, (), classes)

    def batch_shape(self, batch: int, seq: int = 5) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else seq if d == SEQ else d for d in self.input.shape)

    def example(self, batch: int, seq: int = 5):
        """A random input of this model (token ids for text models), for tests and tracing."""
        import torch

        shape = self.batch_shape(batch, seq)
        if self.input.dtype == "int64":
            return torch.randint(1, self.vocab_size or 4, shape)
        return torch.randn(shape)

    def contract(self, dataset: str | None = None) -> Contract:
        """The validated contract of this model trained on ``dataset`` (default: its own). An image
        dataset decides the labels and the picture pipeline; a folder of the user's pictures takes
        those of the model's default dataset."""
        dataset = dataset or self.dataset
        if dataset.startswith(FOLDER_PREFIX):
            dataset = self.dataset
        labels, steps = self.labels, self.preprocessing
        if self.kind is InputKind.IMAGE:
            info = image_dataset(dataset) or image_dataset(self.dataset)
            labels = info.labels
            steps = (PictureStep.make(info.picture),) + tuple(steps)
        out_axes = tuple(d if d in (BATCH, SEQ) else "class" if self.task is Task.CLASSIFICATION else "value"
                         for d in self.outputs)
        built = Contract(
            model=self.name, description=self.description, task=self.task, kind=self.kind, input=self.input,
            output=TensorSig(MEANING_OF_TASK[self.task], "float32", tuple(self.outputs),
                             self.outputs.index(BATCH), axes=out_axes),
            labels=tuple(labels), steps=tuple(steps), features=tuple(self.features),
            tolerances=tuple(self.tolerances.items()),
        )
        return Contract.from_dict(built.to_dict())  # validated like any contract read from a file



def mnist_model(**fields) -> ModelSpec:
    """A ModelSpec with the MNIST-style defaults (timm's ``_cfg``): 28x28 digit pictures as
    (batch, 1, 28, 28), MNIST's normalisation, trained on mnist; a model file gives the rest."""
    defaults = dict(input=IMAGE_28, preprocessing=MNIST_NORMALIZATION, dataset="mnist")
    return ModelSpec(**{**defaults, **fields})


def seed_recipe(epochs: int, *, optimizer: Optimizer = Optimizer.SGD, lr: float = 0.01, momentum: float | None = None,
                batch_size: int = 100, loss: Loss = Loss.CROSS_ENTROPY) -> Recipe:
    """Seed 000's recipe unless stated: batch 100, SGD lr 0.01 momentum 0.9 (Adam: no momentum term)."""
    if momentum is None:
        momentum = 0.9 if optimizer is Optimizer.SGD else 0.0
    return Recipe(loss=loss, optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=epochs, momentum=momentum)
