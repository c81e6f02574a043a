"""Predict many user inputs at once: bad ones are reported by name, the rest still predicted."""
from __future__ import annotations

import os
from typing import Iterator

from ptx.contract import InputKind
from ptx.errors import InputError

from ..model.inputs import expand_csv_rows, expand_inputs
from ..model.head import Prediction
from ..model.model import Model
from .stream import Input


def tsv_field(text) -> str:
    """A file name with a tab or newline in it must not break the one-line-per-input output."""
    return str(text).replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def result_line(r: Prediction, topk: int = 0) -> str:
    """One answer as `ptx predict` prints it: input, label, probability (tab-separated)."""
    source = tsv_field(r.source)
    if r.value is not None:
        return f"{source}\ty={r.value:.6g}"
    label = f"? (low confidence: {r.label_name})" if r.low_confidence else r.label_name
    line = f"{source}\t{label}\t{r.probability:.4f}"
    if topk and r.label is not None:  # per-position outputs (a predicted string) have no top k
        line += "\t" + ", ".join(f"{name}:{p:.4f}" for name, p in r.topk(topk))
    return line


STDIN = "-"  # the argument that means: read one input from standard input


def iter_inputs(predictor: Model, args: list[str], *, recursive: bool = False, stdin: bytes | None = None,
                notices: list[str] | None = None, folders: list | None = None) -> Iterator[Input]:
    """Command-line arguments -> inputs, lazily and in order: files, folders and globs (pictures),
    numbers, CSV rows or files, words; ``-`` is ``stdin``'s bytes (a picture file, or text: one input
    per line). An argument that names nothing is an Input with its error, in its place. Other notices
    are appended to ``notices``; each expanded picture argument to ``folders``, whose count of what was
    read (``folder_notices``) is known once the inputs are answered."""
    kind = predictor.contract.kind
    for arg in args:
        if arg == STDIN and stdin is not None:
            if kind is InputKind.IMAGE:
                yield Input(stdin, arg, name=STDIN)
                continue
            try:
                yield from (Input(line, line) for line in predictor.text_lines(stdin, STDIN))
            except InputError as exc:
                yield Input(None, arg, error=str(exc))
        elif kind is InputKind.VECTOR:
            rows, unreadable = expand_csv_rows([arg], predictor.contract.features)
            yield from (Input(row, row) for row in rows)
            yield from (Input(None, src, error=err) for src, err in unreadable)
        elif kind in (InputKind.NUMBER, InputKind.TEXT):
            if kind is InputKind.TEXT and notices is not None and os.path.isfile(arg):
                # `ptx predict --model gru-classifier words.txt` answered for the word "words.txt".
                notices.append(f"{arg} is also a file; it was read as a word, not as the file's lines: "
                               f"`ptx predict --model {predictor.contract.model} - < {arg}` reads them")
            yield Input(arg, arg)
        else:
            expanded = expand_inputs([arg], recursive=recursive)
            yield from (Input(item, item) for item in expanded.items)
            yield from (Input(None, src, error=err) for src, err in expanded.errors)
            if folders is not None:
                folders.append(expanded)
