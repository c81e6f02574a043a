"""A served model's generation (Triton's generate extension, serve/generate.py): greedy decoding of
token-id prompts through the model's own runner, with the one loop every backend shares
(infer/model/generation.py), off the event loop.

One generation runs at a time per model, on a thread of its own: each step is a run of the whole
batch, which already uses the runtime's threads, so two generations interleaved would each take
about twice as long and answer nothing sooner. Others wait their turn there, never on the event loop;
inference requests keep their own batcher and threads meanwhile.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Sequence

import numpy as np

from ptx.contract.generation import Generation, check_prompts
from ptx.errors import InputError, ModelRunError
from ptx.infer.model.generation import greedy, vocabulary
from ptx.infer.model.model import Model

from .tensors import RequestError

DEFAULT_MAX_TOKENS = 4096  # new tokens one request may ask for at most (--max-tokens)
_END = object()


class Stopped(Exception):
    """The stream's client went away, or the server is stopping: the loop ends at its next step."""


class Generator:
    """``model``'s decoding for the server: ``check`` a request (on the event loop, so a bad one fails
    at once even while another generates), then ``await generate(...)`` or ``async for`` over
    ``stream(...)``; ``describe()`` for the model's metadata."""

    def __init__(self, name: str, model: Model, generation: Generation, max_tokens: int = DEFAULT_MAX_TOKENS):
        self.name, self.model, self.generation = name, model, generation
        self.vocab = vocabulary(model.signature, generation)
        positions = generation.max_positions
        # A prompt needs one position at least, so the model's positions less one bound the new tokens too.
        self.max_tokens = max_tokens if positions is None else max(min(max_tokens, positions - 1), 1)
        self.limit_is_the_models = positions is not None and positions - 1 < max_tokens
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ptx-generate")
        self.closing = threading.Event()

    def describe(self) -> dict:
        return {"input": "input_ids", "output": "output_ids", "max_tokens": self.max_tokens,
                "vocab_size": self.vocab, "eos": list(self.generation.eos), "max_positions": self.generation.max_positions}

    def check(self, prompts: list[list[int]], max_tokens: int, max_prompts: int) -> list[list[int]]:
        """The prompts, within the vocabulary and the positions, and max_tokens within the server's cap:
        else a RequestError of one line."""
        self.check_max_tokens(max_tokens)
        if len(prompts) > max_prompts:
            raise RequestError(f"{len(prompts)} prompts in one request: this server runs at most {max_prompts} together "
                               "(--max-batch-size); send them in several requests")
        try:
            return check_prompts(prompts, self.vocab, max_tokens, self.generation.max_positions)
        except InputError as exc:
            raise RequestError(str(exc)) from None

    def check_max_tokens(self, max_tokens: int) -> None:
        if not 1 <= max_tokens <= self.max_tokens:
            why = "the model's positions less one" if self.limit_is_the_models else "this server's cap (--max-tokens)"
            raise RequestError(f"max_tokens {max_tokens}: {self.name} generates 1 to {self.max_tokens} new tokens a "
                               f"request ({why})")

    async def generate(self, prompts: list[list[int]], max_tokens: int, eos: Sequence[int] | None) -> list[list[int]]:
        """Each prompt's new tokens, up to and with an end-of-sequence id (``eos``; None: the file's)."""
        stop = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.pool, self._decode, prompts, max_tokens, eos, self._step_watch(stop))
        except ModelRunError as exc:  # the runtime refused the prompts (a batch the exporter fixed, ...): theirs
            raise RequestError(str(exc)) from None
        finally:
            stop.set()  # the request was cancelled while it waited its turn: it never starts

    async def stream(self, prompts: list[list[int]], max_tokens: int,
                     eos: Sequence[int] | None) -> AsyncIterator[list[int | None]]:
        """Each step's new token per prompt (None for a prompt that has ended), as the loop makes them.
        Leaving the iteration (the client went away) stops the loop at its next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        stops = set(self.generation.eos if eos is None else eos)
        done = [False] * len(prompts)

        def emit(step: int, logits: np.ndarray) -> None:
            # The loop's own choice, before it records it: the first of equal maxima, as greedy's argmax.
            chosen = np.argmax(logits, axis=-1)
            tokens = [None if done[row] else int(chosen[row]) for row in range(len(prompts))]
            for row, token in enumerate(tokens):
                done[row] = done[row] or token in stops
            loop.call_soon_threadsafe(queue.put_nowait, tokens)

        future = loop.run_in_executor(self.pool, self._decode, prompts, max_tokens, eos, self._step_watch(stop, emit))
        # The future's end reaches the loop after every token it queued (both by call_soon_threadsafe, in order).
        future.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while (tokens := await queue.get()) is not _END:
                yield tokens
            try:
                future.result()
            except ModelRunError as exc:
                raise RequestError(str(exc)) from None
        finally:
            stop.set()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a Stopped loop's error: retrieved

    async def events(self, work: Callable[[Callable[[object], None], Callable], object]) -> AsyncIterator[tuple]:
        """Run ``work(emit, on_step)`` on the generation thread in its turn (``on_step``: the loop's hook that
        stops it where the client or the server goes away): ``("item", x)`` for each ``emit(x)`` as it comes,
        then ``("done", work's result)``. Leaving the iteration stops the work at its next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        future = loop.run_in_executor(self.pool, work, emit, self._step_watch(stop))
        future.add_done_callback(lambda _: queue.put_nowait(_END))  # after every item emitted (both queued in order)
        try:
            while (item := await queue.get()) is not _END:
                yield "item", item
            try:
                result = future.result()
            except InputError as exc:  # the runtime refused the prompts (ModelRunError), a template its messages
                raise RequestError(str(exc)) from None
            yield "done", result
        finally:
            stop.set()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a Stopped loop's error: retrieved

    def _step_watch(self, stop: threading.Event, then=None):
        """The loop's per-step hook: stop where the request or the server says so, then ``then``."""
        def on_step(step: int, logits: np.ndarray) -> None:
            if stop.is_set() or self.closing.is_set():
                raise Stopped()
            if then is not None:
                then(step, logits)
        return on_step

    def _decode(self, prompts, max_tokens, eos, on_step) -> list[list[int]]:
        return greedy(self.model.runner.run, self.model.signature, self.generation, prompts, max_tokens,
                      eos, on_step=on_step).tokens

    def close(self) -> None:
        self.closing.set()  # a generation under way stops at its next step instead of holding the exit
        self.pool.shutdown(wait=False, cancel_futures=True)
