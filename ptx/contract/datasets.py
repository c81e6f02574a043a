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


def image_dataset(name: str) -> ImageDataset | None:
    return IMAGE_DATASETS.get(name)
