"""`ptx predict`'s loop: answers streamed to standard output or to a file of answers, with a progress
bar on a terminal, resumable. Returns how many inputs had no answer (the exit status says so)."""
from __future__ import annotations

import json
import signal
import sys
import textwrap
from collections import Counter
from typing import Callable, Iterable, Iterator

from ptx.contract import DEFAULT_RUNS_ROOT, InputKind, Task

from ..model.opening import load
from .batch import iter_inputs, result_line
from ..model.inputs import expand_inputs
from .outputs import as_written, columns_for, done_inputs, open_output
from .stream import Input, stream_answers


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


class _StopBetweenAnswers:
    """With --output, Ctrl-C and SIGTERM take effect between two answers: raised anywhere, the
    interrupt could land inside a write (a Parquet part half made, a row taken but not counted), and
    the count of answers kept would be off. A second signal stops at once."""

    def __init__(self):
        self.asked = False

    def __call__(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True


def score(args: list[str], *, output: str | None = None, resume: bool = False, workers: int | None = None,
          quiet: bool = False, as_json: bool = False, topk: int = 0, model: str = "convnet",
          backend: str | None = None, device: str | None = None, precision: str | None = None,
          artifact: str | None = None, root: str = DEFAULT_RUNS_ROOT, raw: bool = False, run: str | None = None,
          recursive: bool = False, stdin: bytes | None = None, min_confidence: float | None = None,
          echo: Callable = print, field: Callable = str) -> int:
    predictor = load(artifact or model, backend=backend, root=root, device=device, precision=precision, run=run)
    contract = predictor.contract
    notices: list[str] = []
    folders: list = []
    inputs: Iterable[Input] = iter_inputs(predictor, args, recursive=recursive, stdin=stdin, notices=notices,
                                          folders=folders)
    skipped = [0]
    if resume:
        inputs = skip_done(inputs, done_inputs(output), skipped)
    writer = None
    if output:
        writer = open_output(output, columns_for(contract.task is Task.REGRESSION, topk),
                             per_position=contract.per_position, resume=resume)
    show_bar = not quiet and sys.stderr.isatty()
    bar = None
    if show_bar:
        from tqdm import tqdm

        total = _count(predictor, args, recursive)
        bar = tqdm(total=None if total is None else max(0, total - sum(done_inputs(output).values()) if resume
                                                           else total),
                   unit="pic", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    say = bar.write if bar else (lambda text: echo(text, err=True))
    shown_notices = 0
    errors: list[dict] = []
    answered = kept = 0  # kept: rows handed to the writer, which closing it keeps
    stop = _StopBetweenAnswers()
    handler = stop if writer is not None else _sigterm_as_interrupt
    try:
        previous = {sig: signal.signal(sig, handler) for sig in
                    ((signal.SIGINT, signal.SIGTERM) if writer is not None else (signal.SIGTERM,))}
    except ValueError:  # not the main thread (a library caller's worker thread): leave signals alone
        previous = {}
    if as_json:
        head = {"model": contract.model, "backend": predictor.backend, "precision": predictor.precision}
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
            if stop.asked:
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
