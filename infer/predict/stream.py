"""Stream answers for any number of inputs: in input order, as each chunk finishes, in bounded memory.

Pictures are decoded and run through the artifact's picture pipeline in worker processes (a
multiprocessing pool, ``workers`` of them) while the main process runs the backend on the chunks
they have finished: at most ``2 * workers`` chunks are in flight, so however many inputs a generator
yields, only those chunks' samples are held. Numbers, rows and words are cheap: they are prepared
in-process.
"""
from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass
from itertools import chain, islice
from typing import Callable, Iterable, Iterator

import numpy as np

from ptx.contract import InputKind
from ptx.errors import InputError, quoted
from ptx.machine import usable_cores

from ..model.head import Prediction, mark_low_confidence, prepare_pictures
from ..model.model import Model

CHUNK = 64  # inputs per worker task and per backend run: a worker's task is ~50 ms of pictures
IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker: one being made, one ready when it is asked for


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, which a container or `taskset` narrows)."""
    return usable_cores()


@dataclass
class Input:
    """One input to answer: ``value`` (a path, bytes, array, number, row or word) named ``source`` in
    its answer; or an argument that names none, with why (``error``)."""

    value: object
    source: str
    error: str | None = None
    name: str | None = None  # the name prepare_one gives it in errors (``-`` for standard input)


@dataclass
class Answer:
    """One input's answer: its prediction, or the reason it has none."""

    source: str
    prediction: Prediction | None = None
    error: str | None = None

    def to_dict(self, topk: int = 0) -> dict:
        """The fields of `ptx predict --json`: a result's, or ``{"input", "error"}``."""
        if self.prediction is None:
            return {"input": self.source, "error": self.error}
        return self.prediction.to_dict(k=topk)


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the main process stops the pool; workers must not
    # each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _prepare_pictures(step, raw: bool, items: list[tuple[object, str | None]]) -> tuple[np.ndarray | None, dict]:
    """A worker's task: (value, name) pairs -> one uint8 array of the samples made, in order, and
    {position: why} for the pairs that made none. One array per chunk: the main process unpickles
    one buffer, not a tuple and an array per picture, and runs the backend on it as it is."""
    made = prepare_pictures(items, step, raw=raw)
    samples = [sample for sample in made if not isinstance(sample, InputError)]
    errors = {i: str(sample) for i, sample in enumerate(made) if isinstance(sample, InputError)}
    return (np.stack(samples) if samples else None), errors


def _pool(workers: int):
    """A pool whose workers import only the picture code (forkserver: forked from a clean server
    process, not from this one, whose backend may hold threads and a GPU context)."""
    import multiprocessing  # here: one picture (no pool) starts without it

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["ptx.infer.model.head"])
    else:
        context = multiprocessing.get_context("spawn")
    return context.Pool(workers, initializer=_ignore_sigint)


def stream_answers(predictor: Model, inputs: Iterable[Input], *, raw: bool = False, workers: int | None = None,
                   chunk: int = CHUNK, min_confidence: float | None = None) -> Iterator[Answer]:
    """Answers for ``inputs``, one per input and in their order, each chunk's as soon as it is done.
    ``workers``: processes that prepare pictures (None: one per core; 0: in this process). A pool is
    started only when the inputs fill more than one chunk, so one picture costs no start-up."""
    workers = default_workers() if workers is None else workers
    it = iter(inputs)
    first = list(islice(it, chunk))
    more = list(islice(it, 1))
    if not (predictor.contract.kind is InputKind.IMAGE and workers > 0 and more):
        yield from _answer_in_process(predictor, [first, more, it], raw, chunk, min_confidence)
        return
    pool = _pool(workers)
    try:
        yield from _answer_with_pool(predictor, pool, first, [more, it], raw, chunk, workers, min_confidence)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _chunks(parts: list[Iterable[Input]], chunk: int) -> Iterator[list[Input]]:
    items = chain.from_iterable(parts)
    while inputs := list(islice(items, chunk)):
        yield inputs


def _answer_in_process(predictor, parts, raw, chunk, min_confidence) -> Iterator[Answer]:
    """Each chunk's inputs prepared together here, its samples through the backend in one run."""
    for inputs in _chunks(parts, chunk):
        given = _given(inputs)
        made = predictor.prepare_many([(inputs[i].value, inputs[i].name) for i in given], raw=raw)
        why = {i: str(sample) for i, sample in zip(given, made) if isinstance(sample, InputError)}
        samples = [sample for sample in made if not isinstance(sample, InputError)]
        yield from _answers(inputs, why, lambda sources: predictor.predict_samples(samples, sources), min_confidence)


def _given(inputs: list[Input]) -> list[int]:
    """The positions of the inputs that name something to prepare (the others carry their error)."""
    return [i for i, item in enumerate(inputs) if item.error is None]


def _answer_with_pool(predictor, pool, first, parts, raw, chunk, workers, min_confidence) -> Iterator[Answer]:
    """The first chunk is answered here while the workers start (the first answer waits for no
    process start-up); the others go to the pool, at most ``workers * IN_FLIGHT_PER_WORKER`` ahead."""
    step = predictor.contract.picture
    pending: deque = deque()

    def submit(inputs):
        # Arguments that name no file are answered here; the others go to a worker.
        todo = [(inputs[i].value, inputs[i].name) for i in _given(inputs)]
        pending.append((inputs, pool.apply_async(_prepare_pictures, (step, raw, todo))))

    chunks = _chunks(parts, chunk)
    for inputs in islice(chunks, workers * IN_FLIGHT_PER_WORKER):
        submit(inputs)
    yield from _answer_in_process(predictor, [first], raw, chunk, min_confidence)
    for inputs in chunks:
        yield from _collect(predictor, *pending.popleft(), min_confidence)
        submit(inputs)
    while pending:
        yield from _collect(predictor, *pending.popleft(), min_confidence)


def _collect(predictor, inputs, task, min_confidence) -> Iterator[Answer]:
    """A worker's finished chunk: its samples through the backend in one run, answers in input order."""
    batch, errors = task.get()
    given = _given(inputs)  # what the worker was handed, in order
    why = {given[j]: reason for j, reason in errors.items()}
    yield from _answers(inputs, why, lambda sources: predictor.predict_raw(batch, sources), min_confidence)


def _answers(inputs: list[Input], why: dict[int, str], predict: Callable[[list[str]], list[Prediction]],
             min_confidence) -> Iterator[Answer]:
    """A chunk's answers in input order: ``predict``'s for the inputs that made a sample (given their
    sources), else why none."""
    ok = [i for i in _given(inputs) if i not in why]
    results = predict([inputs[i].source for i in ok]) if ok else []
    predictions = dict(zip(ok, mark_low_confidence(results, min_confidence)))
    for i, item in enumerate(inputs):
        if i in predictions and not np.isfinite(predictions[i].logits).all():
            # A finite input whose answer overflowed float32 (linreg of 3e38 is inf): no answer to act
            # on, and --json would have written Infinity, which JSON does not have.
            yield Answer(item.source, error=f"{quoted(item.source)}: the model's output is not a finite number "
                                            f"({_not_finite(predictions[i].logits)}): the input is too large for "
                                            "float32, which it computes in; give smaller numbers")
        elif i in predictions:
            yield Answer(item.source, prediction=predictions[i])
        else:
            yield Answer(item.source, error=item.error if item.error is not None else why[i])


def _not_finite(logits) -> str:
    """The first value of ``logits`` that is NaN or infinite, as numpy prints it ("inf", "nan")."""
    values = np.asarray(logits, dtype=np.float64).reshape(-1)
    return str(values[~np.isfinite(values)][0])
