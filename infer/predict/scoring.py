"""`ptx predict`'s loop: many user inputs at once (bad ones reported by name, the rest still
predicted), answers streamed to standard output or to a file of answers, with a progress bar on a
terminal, resumable. Returns how many inputs had no answer (the exit status says so)."""
from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections import Counter
from typing import Callable, Iterable, Iterator

from ptx.contract import InputKind, Task
from ptx.errors import InputError

from ..model.head import Prediction
from ..model.inputs import expand_csv_rows, expand_inputs
from ..model.model import Model
from ..model.target import load
from .outputs import as_written, columns_for, done_inputs, open_output
from .stream import Input, stream_answers


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


def iter_inputs(predictor: Model, args: list[str], *, recursive: bool, stdin: bytes | None, notices: list[str],
                folders: list) -> Iterator[Input]:
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
            if kind is InputKind.TEXT and os.path.isfile(arg):
                # `ptx predict --model gru-classifier words.txt` answered for the word "words.txt".
                notices.append(f"{arg} is also a file; it was read as a word, not as the file's lines: "
                               f"`ptx predict --model {predictor.contract.model} - < {arg}` reads them")
            yield Input(arg, arg)
        else:
            expanded = expand_inputs([arg], recursive=recursive)
            yield from (Input(item, item) for item in expanded.items)
            yield from (Input(None, src, error=err) for src, err in expanded.errors)
            folders.append(expanded)


def skip_done(inputs: Iterable[Input], done: Counter, skipped: list[int]) -> Iterator[Input]:
    """The inputs an output file does not answer yet: an input given twice and answered once is
    answered once more."""
    for item in inputs:
        key = as_written(item.source)  # the name as the file holds it
        if done[key] > 0:
            done[key] -= 1
            skipped[0] += 1
            continue
        yield item


def _count(predictor, args: list[str], recursive: bool) -> int | None:
    """How many inputs the arguments hold, for the progress bar's time left (pictures only: the
    listing is read again, cheap next to scoring)."""
    if predictor.contract.kind is not InputKind.IMAGE:
        return None
    return sum(len(expand_inputs([a], recursive=recursive).items) or 1 for a in args)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt  # `kill` closes the open Parquet part as Ctrl-C does


def score(args: list[str], *, target="convnet", output: str | None = None, resume: bool = False,
          workers: int | None = None, quiet: bool = False, as_json: bool = False, topk: int = 0,
          backend: str | None = None, device: str | None = None, precision: str | None = None, raw: bool = False,
          recursive: bool = False, stdin: bytes | None = None, min_confidence: float | None = None,
          echo: Callable = print, field: Callable = str) -> int:
    """``args`` answered through ``target`` (a Target, decided where the argument entered, or what
    load() takes), each bad input reported by name; returns how many had no answer."""
    predictor = load(target, backend=backend, device=device, precision=precision)
    contract = predictor.contract
    notices, folders, skipped = [], [], [0]
    done = done_inputs(output) if resume else Counter()  # inputs answered already, which are skipped
    already = sum(done.values())
    inputs = skip_done(iter_inputs(predictor, args, recursive=recursive, stdin=stdin, notices=notices,
                                   folders=folders), done, skipped)
    writer = None
    if output:
        writer = open_output(output, columns_for(contract.task is Task.REGRESSION, topk),
                             per_position=contract.per_position, resume=resume)
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        total = _count(predictor, args, recursive)
        bar = tqdm(total=None if total is None else max(0, total - already), unit="pic", file=sys.stderr,
                   dynamic_ncols=True, smoothing=0.1)
    say = bar.write if bar else (lambda text: echo(text, err=True))
    shown_notices = 0
    errors: list[dict] = []
    answered = kept = 0  # kept: rows handed to the writer, which closing it keeps
    asked = []  # a signal, with --output: taken between two answers

    def stop(signum, frame):
        """With --output, Ctrl-C and SIGTERM take effect between two answers: raised anywhere, the
        interrupt could land inside a write (a Parquet part half made, a row taken but not counted), and
        the count of answers kept would be off. A second signal stops at once."""
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)

    handler = stop if writer is not None else _sigterm_as_interrupt
    try:
        previous = {sig: signal.signal(sig, handler) for sig in
                    ((signal.SIGINT, signal.SIGTERM) if writer is not None else (signal.SIGTERM,))}
    except ValueError:  # not the main thread (a library caller's worker thread): leave signals alone
        previous = {}
    if as_json:
        # the file that answered, as a model file's --json says it (the int8 file a precision opened)
        head = {"model": contract.model, "file": str(predictor.path), "backend": predictor.backend,
                "precision": predictor.precision}
        sys.stdout.write(json.dumps(head, indent=2)[:-2] + ',\n  "results": [')
    try:
        for answer in stream_answers(predictor, inputs, raw=raw, workers=workers, min_confidence=min_confidence):
            answered += 1
            while shown_notices < len(notices):
                say(f"notice: {field(notices[shown_notices])}")
                shown_notices += 1
            if writer is not None:
                writer.write(answer.to_dict(topk))
                kept += 1
                writer.flush()
            if answer.error is not None:
                errors.append({"input": answer.source, "error": answer.error})
                say(f"error: {field(answer.error)}")  # a file name with a newline stays one line
            elif as_json:
                sys.stdout.write(("\n" if answered - len(errors) == 1 else ",\n")
                                 + textwrap.indent(json.dumps(answer.to_dict(topk), indent=2), "    "))
            elif writer is None:
                sys.stdout.write(result_line(answer.prediction, topk) + "\n")
                sys.stdout.flush()
            if bar is not None:
                bar.update(1)
            if asked:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        if writer is None:
            raise
        writer.close()  # the open part or line is completed first: what is counted below is in the file
        writer = None
        held = f" ({kept + skipped[0]:,} in all)" if resume and skipped[0] else ""
        raise KeyboardInterrupt(f"interrupted: {kept:,} answers are kept in {output}{held}; the same command "
                                "with --resume goes on from there") from None
    finally:
        for sig, was in previous.items():
            signal.signal(sig, was)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    refused = {error["input"] for error in errors}
    notices += [line for expanded in folders for line in expanded.folder_notices(refused)]
    while shown_notices < len(notices):
        say(f"notice: {field(notices[shown_notices])}")
        shown_notices += 1
    if as_json:
        sys.stdout.write(("\n  ]" if answered > len(errors) else "]")
                         + ",\n" + json.dumps({"errors": errors, "notices": notices}, indent=2)[2:] + "\n")
        sys.stdout.flush()
    if writer is not None and not quiet:
        resumed = f" ({skipped[0]:,} already there)" if resume else ""
        say(f"wrote {answered:,} answers to {output}{resumed}, {len(errors):,} of them errors")
    return len(errors)
