"""The small datasets, read from files a machine already has or makes: the seeds' own points (a line,
hours, "hello"), word lists by language (Debian's /usr/share/dict), Pima Indians diabetes rows
(Debian's r-cran-mlbench, unpacked by scripts/setup.sh), and the CSV reading they share."""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.errors import DataError
from ptx.files import read_text

from . import dataset
from .dataset import SAMPLE_SPLIT_SEED, Dataset, require_split, settle_bad_rows

PIMA_RDA = "usr/lib/R/site-library/mlbench/data/PimaIndiansDiabetes.rda"
PIMA_TRAIN = 614  # of 768 rows: a fixed, seeded 80/20 split


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
    """One word per line; the words a model can read (2-20 letters, Latin-1), composed (NFC) as
    a user's typed word is before it is encoded."""
    text = unicodedata.normalize("NFC", read_text(path, DataError).lower())  # the whole list at once: 1.4M words
    return {word for word in map(str.strip, text.splitlines())
            if 2 <= len(word) <= WORD_MAX_LEN and word.isalpha() and max(word) < "\u0100"}  # Latin-1


def load_words(labels: tuple[str, ...], dict_dir: Path = Path("/usr/share/dict"), data_dir: str | None = None) -> Dataset:
    """Words -> language: seeded 4,000/1,000 words per language; words in several lists are dropped
    because no model could tell their language. A list in ``data_dir`` comes before ``dict_dir``'s."""
    lists, paths = {}, {}
    for language in labels:
        file_name, package = WORD_LISTS[language]
        path = dict_dir / file_name
        if data_dir and (Path(data_dir) / file_name).is_file():
            path = Path(data_dir) / file_name
        if not path.is_file():
            raise DataError(f"word list {path} not found: run scripts/setup.sh (or apt-get install {package}), "
                            f"or put {file_name} in --data-dir")
        lists[language], paths[language] = _read_words(path), path
    seen_twice = set()
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            seen_twice |= lists[a] & lists[b]
    rng = np.random.default_rng(SAMPLE_SPLIT_SEED)
    splits = {"train": ([], []), "test": ([], [])}
    for index, language in enumerate(labels):
        words = sorted(lists[language] - seen_twice)
        if len(words) < WORDS_TRAIN + WORDS_TEST:
            raise DataError(f"the {language} word list {paths[language]} has {len(words):,} usable words (2-{WORD_MAX_LEN} "
                            f"letters, Latin-1, in no other list); the words dataset needs {WORDS_TRAIN + WORDS_TEST:,} "
                            f"per language ({WORDS_TRAIN:,} to train on, {WORDS_TEST:,} to test on)")
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
    return dataset.cache_dir().parent / "debian"


def _pima_csv(data_dir: str | None) -> tuple[Path, str]:
    """The seed reads diabetes.csv (8 features, then 0/1); make one from Debian's mlbench if needed."""
    if data_dir and (Path(data_dir) / "diabetes.csv").is_file():
        return Path(data_dir) / "diabetes.csv", "--data-dir/PTX_DATA_DIR"
    cached = dataset.cache_dir() / "diabetes.csv"
    if cached.is_file():
        return cached, "Debian package r-cran-mlbench, converted"
    candidates = [debian_extract_dir() / PIMA_RDA, Path("/") / PIMA_RDA]
    rda = next((p for p in candidates if p.is_file()), None)
    if rda is None:
        raise DataError("Pima Indians diabetes data not found: run scripts/setup.sh (it unpacks the Debian package "
                        "r-cran-mlbench), or pass --data-dir DIR with the seed's diabetes.csv")
    from ptx.extras import missing

    why = missing("diabetes")
    if why:
        raise DataError(why)
    import rdata
    import warnings

    from ptx.atomic import write_text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown encoding. Assumed ASCII.": the file is ASCII
        frame = rdata.read_rda(str(rda))["PimaIndiansDiabetes"]
    rows = [",".join(f"{v:g}" for v in row[:8]) + f",{int(str(row[8]) == 'pos')}" for row in frame.itertuples(index=False)]
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_text(cached, "\n".join(rows) + "\n")
    return cached, "Debian package r-cran-mlbench, converted"


def read_number_rows(path: Path, lines: list[str], columns: int, number: Callable[[str], float],
                     check: Callable[[list], str], skip_bad_rows: bool, notice: Callable[[str], None],
                     header: bool = False) -> list[list]:
    """Lines of ``columns`` comma-separated numbers (read by ``number``: float or int), each also
    judged by ``check`` (why the row is bad, or ''); blank lines skipped, and with ``header`` a first
    line of ``columns`` cells that are not all numbers. Bad rows are settled by settle_bad_rows."""
    rows, problems = [], []
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    for index, (line_no, line) in enumerate(numbered):
        cells = [c.strip() for c in line.split(",")]
        try:
            values = [number(c) for c in cells]
        except ValueError:
            if header and index == 0 and len(cells) == columns:
                continue  # a header row
            other = next((sep for sep in ";\t|" if sep in line), None)
            hint = f"; separated by {other!r}? ptx reads commas" if other and len(cells) == 1 else ""
            kind = "numbers" if number is float else "whole numbers"
            problems.append(f"line {line_no}: not {columns} {kind} ({line[:40]!r}{hint})")
            continue
        why = f"{len(values)} values, expected {columns}" if len(values) != columns else check(values)
        if why:
            problems.append(f"line {line_no}: {why}")
        else:
            rows.append(values)
    settle_bad_rows(path, problems, len(rows) + len(problems), skip_bad_rows, notice)
    return rows


def read_feature_csv(path: Path, columns: int, skip_bad_rows: bool = False,
                     notice: Callable[[str], None] = print, outcome: bool = False) -> np.ndarray:
    """The seed's CSV layout (as its np.loadtxt reads it), checked: text as ptx.files reads it (UTF-8
    with or without BOM, UTF-16/32 with BOM), an optional header row, ``columns`` finite numbers per
    row (with ``outcome``, the last one 0 or 1). Errors name the line."""
    def check(values: list) -> str:
        if not np.isfinite(values).all():
            return "NaN or infinite value"
        return f"the outcome (last column) is {values[-1]:g}, not 0 or 1" if outcome and values[-1] not in (0, 1) else ""

    lines = read_text(path, DataError).splitlines()
    rows = read_number_rows(path, lines, columns, float, check, skip_bad_rows, notice, header=True)
    return np.array(rows, dtype=np.float32).reshape(-1, columns)


def load_pima(data_dir: str | None = None, skip_bad_rows: bool = False,
              notice: Callable[[str], None] = print) -> Dataset:
    path, how = _pima_csv(data_dir)
    table = read_feature_csv(path, 9, skip_bad_rows, notice, outcome=True)  # 8 features, then the 0/1 outcome
    require_split("pima", path, len(table), PIMA_TRAIN)
    x, y = table[:, :-1], table[:, [-1]]
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(y))
    train, test = order[:PIMA_TRAIN], order[PIMA_TRAIN:]
    return Dataset("pima", f"Pima Indians diabetes, {len(y)} rows, seeded {len(train)}/{len(test)} split "
                   f"({how}: {path})", x[train], y[train], x[test], y[test])
