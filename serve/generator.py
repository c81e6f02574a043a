"""A served model's generation (Triton's generate extension, serve/generate.py): the model's one decoding
(ptx.infer.model.generation.Decoding: the prompts checked where it is made, greedy choice, the end of
each prompt), pulled step by step off the event loop.

One generation runs at a time per model, on a thread of its own: each step is a run of the whole
batch, which already uses the runtime's threads, so two generations interleaved would each take
about twice as long and answer nothing sooner. Others wait their turn there, never on the event loop;
inference requests keep their own batcher and threads meanwhile. A request that ends (its client went
away, the server stops) is a decoding no longer pulled: the step under way is its last.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Sequence

from ptx.contract.generation import Generation
from ptx.errors import InputError, ModelRunError
from ptx.infer.model.generation import GREEDY, Choose, Decoding, vocabulary
from ptx.infer.model.model import Model

from .tensors import RequestError

DEFAULT_MAX_TOKENS = 4096  # new tokens one request may ask for at most (--max-tokens)
_END = object()


class Generator:
    """``model``'s decoding for the server: ``start`` a request's decoding (on the event loop, so a bad
    one fails at once even while another generates), then ``await generate(decoding)`` or ``async for``
    over ``stream(decoding)``; ``describe()`` for the model's metadata."""

    def __init__(self, name: str, model: Model, generation: Generation, max_tokens: int = DEFAULT_MAX_TOKENS,
                 choose: Choose = GREEDY):
        self.name, self.model, self.generation, self.choose = name, model, generation, choose
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
        """The prompts as the decoding takes them (``start``'s checks): else a RequestError of one line."""
        return self.start(prompts, max_tokens, None, max_prompts).prompts

    def check_max_tokens(self, max_tokens: int) -> None:
        """max_tokens within the server's cap (the model's positions less one, or --max-tokens)."""
        if not 1 <= max_tokens <= self.max_tokens:
            why = "the model's positions less one" if self.limit_is_the_models else "this server's cap (--max-tokens)"
            raise RequestError(f"max_tokens {max_tokens}: {self.name} generates 1 to {self.max_tokens} new tokens a "
                               f"request ({why})")

    def start(self, prompts: list[list[int]], max_tokens: int, eos: Sequence[int] | None,
              max_prompts: int) -> Decoding:
        """The request's decoding, nothing run yet (``eos``: None, the file's): max_tokens within the server's
        cap and the prompts within its batch, the vocabulary and the positions, else a RequestError of one line."""
        self.check_max_tokens(max_tokens)
        if len(prompts) > max_prompts:
            raise RequestError(f"{len(prompts)} prompts in one request: this server runs at most {max_prompts} together "
                               "(--max-batch-size); send them in several requests")
        try:
            return Decoding(self.model.runner.run, self.model.signature, self.generation, prompts, max_tokens, eos,
                            name=self.name)
        except InputError as exc:
            raise RequestError(str(exc)) from None

    async def generate(self, decoding: Decoding) -> list[list[int]]:
        """Each prompt's new tokens, up to and with an end-of-sequence id."""
        stop = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._pull, decoding, stop)
        except ModelRunError as exc:  # the runtime refused the prompts (a batch the exporter fixed, ...): theirs
            raise RequestError(str(exc)) from None
        finally:
            stop.set()  # the request was cancelled while it waited its turn: it never starts

    async def stream(self, decoding: Decoding) -> AsyncIterator[list[int | None]]:
        """Each step's new token per prompt (None for a prompt that has ended), as the decoding makes them.
        Leaving the iteration (the client went away) ends the pulling after the step under way."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(tokens: list[int | None]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, tokens)

        future = loop.run_in_executor(self.pool, self._pull, decoding, stop, emit)
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
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failed pull's error: retrieved

    async def events(self, work: Callable[[Callable[[object], None], Callable[[], bool]], object]
                     ) -> AsyncIterator[tuple]:
        """Run ``work(emit, wanted)`` on the generation thread in its turn (``wanted()``: whether the client and
        the server still want the next step; a decoding pulled while it says so): ``("item", x)`` for each
        ``emit(x)`` as it comes, then ``("done", work's result)``. Leaving the iteration ends the pulling after
        the step under way."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        future = loop.run_in_executor(self.pool, work, emit, lambda: self._wanted(stop))
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
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failed work's error: retrieved

    def _pull(self, decoding: Decoding, stop: threading.Event,
              emit: Callable[[list[int | None]], None] | None = None) -> list[list[int]]:
        """``decoding``'s steps, on the generation thread, while the request and the server want them."""
        while not decoding.finished and self._wanted(stop):
            tokens = self._next(decoding)
            if emit is not None:
                emit(tokens)
        return decoding.tokens

    def _wanted(self, stop: threading.Event) -> bool:
        """Whether the request (``stop``: it ended) and the server still want the next step."""
        return not stop.is_set() and not self.closing.is_set()

    def _next(self, decoding: Decoding) -> list[int | None]:
        """One step of ``decoding``: each prompt's new token (None where it has ended)."""
        return decoding.next_tokens(self.choose)

    def close(self) -> None:
        self.closing.set()  # a generation under way stops after its step instead of holding the exit
        self.pool.shutdown(wait=False, cancel_futures=True)
