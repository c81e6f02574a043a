"""A dataset as in-memory arrays, and the checks every loader of a user's file shares: its bad rows
refused or skipped in one message, a seeded split that leaves something to test on; ptx's cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.errors import DataError

from .download import datasets_dir

SAMPLE_SPLIT_SEED = 42  # every seeded split of a dataset ptx makes (mnist-sample, words, pima)
SHOWN_BAD_ROWS = 5  # a file with many bad rows lists this many, one per line, and counts the rest


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


def settle_bad_rows(path: Path, problems: list[str], rows: int, skip: bool,
                    notice: Callable[[str], None]) -> None:
    """Rows of a user's data file that cannot be used: refused, counted, the first few listed one
    per line; or, when the user asked to skip them (--skip-bad-rows), skipped with a notice that
    counts and lists them the same way."""
    if not problems:
        return
    listing = "".join(f"\n  {problem}" for problem in problems[:SHOWN_BAD_ROWS])
    if len(problems) > SHOWN_BAD_ROWS:
        listing += f"\n  ... and {len(problems) - SHOWN_BAD_ROWS} more"
    if skip:
        notice(f"notice: skipped {len(problems)} bad row(s) of {rows} in {path}:{listing}")
        return
    others = f"or pass --skip-bad-rows to train on the other {rows - len(problems)}"
    if len(problems) == 1:  # one line says it all
        raise DataError(f"{path}: 1 of {rows} row(s) cannot be used: {problems[0]}; fix it, {others}")
    raise DataError(f"{path}: {len(problems)} of {rows} row(s) cannot be used (the first "
                    f"{min(len(problems), SHOWN_BAD_ROWS)} below); fix them, {others}{listing}")


def require_split(dataset: str, path: Path, have: int, train: int) -> None:
    """A fixed seeded split takes ``train`` rows to train on and tests on the rest: a smaller
    file leaves nothing to test on."""
    if have <= train:
        raise DataError(f"{path} has {have:,} usable rows; {dataset}'s seeded split needs at least {train + 1:,} "
                        f"({train:,} to train on, at least 1 to test on)")


def cache_dir() -> Path:
    """ptx's dataset cache: $PTX_CACHE_DIR/datasets, else $XDG_CACHE_HOME/ptx/datasets, else
    ~/.cache/ptx/datasets."""
    return datasets_dir()
