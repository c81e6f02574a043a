"""A served model's generation (Triton's generate extension, serve/generate.py, and the OpenAI API,
serve/text_answers.py): every request's decoding (ptx.infer.model.generation.Decoding: the prompts checked
where it is made) runs in the model's one batch (ptx.infer.model.generation.Batch, the multi-row decoding:
continuous batching, its cache the runner's: IO binding, the in-place buffer, OpenVINO's state), on a thread of
its own.

A request joins at the next step: its prompts run (its prefill) between two steps of the batch, together
with those of the requests that arrived meanwhile (up to PREFILL_TOKENS tokens, padded; a longer prompt
alone), its first token goes out, and its rows run with the others' from the next step; it leaves when it
is done (an end id, its max_tokens, a stop string) or no longer wanted (its client went away, the server
stops): its rows are dropped before the next step. So the running requests wait one prefill of at most
PREFILL_TOKENS tokens (or one long prompt's) between two of their steps, and a burst of new requests gets
its first tokens from one run rather than one after another. The batch holds at most ``max_rows`` rows (--max-batch-size);
a request that does not fit waits its turn in arrival order. Each request's tokens are those it gets alone
(greedy, up to ties) or with its seed (each row draws from its own generator): the batch changes when a
token comes, not which. The event loop never waits on a step; inference requests keep their own batcher
and threads meanwhile. An encoder-decoder's requests run apart (ptx.infer.model.batch.Apart: each one's
cross-attention past is its own), joining and leaving between two steps likewise.
"""
from __future__ import annotations

import asyncio
import collections
import threading
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Sequence

from ptx.contract.generation import Generation
from ptx.errors import InputError
from ptx.infer.model.batch import Apart
from ptx.infer.model.decoding_memory import vocabulary
from ptx.infer.model.generation import GREEDY, Batch, Choose, Decoding, Step
from ptx.infer.model.model import Model
from ptx.infer.model.speculative import drafter_of
from ptx.infer.runtime.memory_plan import OutOfMemoryPlan

from .tensors import RequestError

DEFAULT_MAX_TOKENS = 4096  # new tokens one request may ask for at most (--max-tokens)
DEFAULT_MAX_ROWS = 64  # rows the batch runs together at most (--max-batch-size)
# Prompt tokens (padded) that join in one prefill at most: a burst of requests gets its first tokens from one
# run, while the running rows wait no longer than about one long prompt's prefill between two of their steps.
PREFILL_TOKENS = 512
_END = object()


@dataclass
class _Failed:
    error: BaseException


@dataclass
class _Ride:
    """A request in the batch: its decoding, how its tokens are chosen, what each step's tokens say to its
    client (``say(tokens) -> items``), how the items reach it (``emit``), and whether it is still wanted."""

    decoding: Decoding
    choose: Choose
    say: Callable[[list[int | None]], list]
    emit: Callable[[object], None]
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return len(self.decoding.prompts)

    def take(self, step: Step) -> None:
        """The step's tokens chosen and appended (drafts the choice confirms among them, one position after
        another), and what each position's say sent to the client."""
        def said(tokens: list[int | None]) -> None:
            for item in self.say(tokens):
                self.emit(item)

        self.decoding.take(step, self.choose, said)

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.emit(_Failed(error))
        self.emit(_END)


class Generator:
    """``model``'s generation for the server: ``start`` a request's decoding (on the event loop, so a bad
    one fails at once), then ``await generate(decoding)``, ``async for`` over ``stream(decoding)``, or over
    ``events(decoding, choose, say)``; ``describe()`` for the model's metadata; ``close()``."""

    def __init__(self, name: str, model: Model, generation: Generation, max_tokens: int = DEFAULT_MAX_TOKENS,
                 choose: Choose = GREEDY, max_rows: int = DEFAULT_MAX_ROWS, speculate: str | None = None):
        self.name, self.model, self.generation, self.choose = name, model, generation, choose
        # the drafter (--speculate) whose guesses each request's steps run and keep where its choice confirms them
        self.speculate = drafter_of(speculate, target=model)
        self.vocab = vocabulary(model.signature, generation)
        positions = generation.max_positions
        # A prompt needs one position at least (an encoder-decoder's decoder, its start ids), so the model's
        # positions less that bound the new tokens too.
        first = len(generation.encoder.start) if generation.encoder is not None else 1
        self.max_tokens = max_tokens if positions is None else max(min(max_tokens, positions - first), 1)
        self.limit_is_the_models = positions is not None and positions - first < max_tokens
        self.max_rows = max_rows
        self.batch = self._new_batch()
        self.closing = threading.Event()
        self._waiting: collections.deque[_Ride] = collections.deque()
        self._riding: list[_Ride] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def _new_batch(self) -> Batch | Apart:
        """The batch every request's decoding runs in: one Batch, or for an encoder-decoder, each decoding apart
        (ptx.infer.model.batch.Apart: its cross-attention past is its own), as for a decoder that takes no
        position ids (rows of different lengths cannot share its batch)."""
        if self.generation.encoder is not None or self.generation.position_ids is None:
            return Apart()
        # the runner's own cache: a served model keeps IO binding, the in-place buffer and OpenVINO's state
        return Batch(None, self.model.signature, self.generation, cache=self.model.runner.new_cache(self.generation))

    def describe(self) -> dict:
        part = self.generation.encoder
        return {"input": part.source if part is not None else "input_ids", "output": "output_ids",
                "max_tokens": self.max_tokens,
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
        try:  # the model's own decoding: an encoder-decoder's runs its encoder at the first step
            guessing = getattr(self.choose, "speculates", self.choose is GREEDY)  # a choice that keeps guesses
            return self.model.decoding(prompts, max_tokens, eos, speculate=self.speculate if guessing else None)
        except InputError as exc:
            raise RequestError(str(exc)) from None
        except OutOfMemoryPlan as exc:  # its cache cannot fit beside what the server holds now: later, or less
            raise RequestError(str(exc), status=503) from None

    async def generate(self, decoding: Decoding) -> list[list[int]]:
        """Each prompt's new tokens, up to and with an end-of-sequence id."""
        async with aclosing(self.events(decoding)) as events:  # a cancelled request's rows leave at the next step
            async for _ in events:
                pass
        return decoding.tokens

    def stream(self, decoding: Decoding) -> AsyncIterator[list[int | None]]:
        """Each step's new token per prompt (None for a prompt that has ended), as the batch makes them.
        Leaving the iteration (the client went away) takes the decoding out of the batch at the next step:
        the events themselves, so that closing the stream closes them at once (a generator wrapped around them
        would leave them for the event loop to finalize, and their rows in the batch until then)."""
        return self.events(decoding)

    async def events(self, decoding: Decoding, choose: Choose | None = None,
                     say: Callable[[list[int | None]], list] | None = None) -> AsyncIterator:
        """Run ``decoding`` in the batch, its tokens chosen by ``choose`` (default the generator's), and yield
        what ``say(tokens)`` makes of each step's new tokens (called on the generation thread, where it may
        end a prompt: ``decoding.end(row)``; default: the tokens). The iteration ends where the decoding does;
        leaving it takes the decoding out of the batch at the next step. The runtime's refusal of the prompts
        is a RequestError; a failure of the batch's run fails every request in it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        def emit(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # its event loop has closed: nobody is there to tell
                pass

        ride = _Ride(decoding, choose or self.choose, say or (lambda tokens: [tokens]), emit)
        self._enter(ride)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, _Failed):
                    if isinstance(item.error, InputError):  # the runtime refused the prompts (ModelRunError)
                        raise RequestError(str(item.error)) from None
                    raise item.error
                yield item
        finally:
            ride.stop.set()  # gone (or done): its rows leave at the next step
            with self._wake:
                self._wake.notify()

    def _enter(self, ride: _Ride) -> None:
        with self._wake:
            if self.closing.is_set():
                ride.end()
                return
            self._waiting.append(ride)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ptx-generate", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        """The generation thread: until the server closes, drop the rides no longer wanted, let one waiting
        ride join (its prefill), and run one step of the batch."""
        while True:
            with self._wake:
                while not self.closing.is_set() and not self._waiting and not self._riding:
                    self._wake.wait()
                if self.closing.is_set():
                    break
            self._drop_unwanted()
            self._admit()
            self._step()
        with self._wake:
            for ride in [*self._riding, *self._waiting]:
                ride.end()  # the server stops: a clean stop after the step under way
            self._riding, self._waiting = [], collections.deque()

    def _drop_unwanted(self) -> None:
        for ride in [r for r in self._riding if r.stop.is_set()]:
            self.batch.leave(ride.decoding)
            self._riding.remove(ride)
            ride.end()
        with self._wake:
            gone = [r for r in self._waiting if r.stop.is_set()]
            for ride in gone:
                self._waiting.remove(ride)
                ride.end()

    def _admit(self) -> None:
        """The waiting rides that fit beside the running ones join, in arrival order: their prompts run
        together in one prefill of at most PREFILL_TOKENS (padded) tokens, or the first alone where it is
        longer. Where the joint run fails (the runtime refused a prompt), each runs alone: its error, its own."""
        with self._wake:
            group, rows, longest = [], 0, 0
            for ride in self._waiting:
                width = max(len(p) for p in ride.decoding.prompts)
                if group and (rows + ride.rows) * max(longest, width) > PREFILL_TOKENS:
                    break
                if (self._riding or group) and self.batch.rows + rows + ride.rows > self.max_rows:
                    break
                group.append(ride)
                rows, longest = rows + ride.rows, max(longest, width)
            for ride in group:
                self._waiting.remove(ride)
        # a decoding that keeps its prompt's logits at every position (an echo's log-probabilities) runs its
        # prompt alone: the joint prefill keeps the last position's only
        if len(group) > 1 and not any(ride.decoding.keep_prompt_logits for ride in group):
            try:
                firsts = self.batch.join_together([ride.decoding for ride in group])
            except Exception:  # noqa: BLE001 - nothing has joined: each prompt runs alone below, its error its own
                firsts = None
            if firsts is not None:
                for ride, first in zip(group, firsts):
                    self._took_first(ride, first)
                return
        for ride in group:
            try:
                first = self.batch.join(ride.decoding)
            except Exception as exc:  # noqa: BLE001 - its prompts alone failed: its request's error, no one else's
                self.batch.leave(ride.decoding)
                ride.end(exc)
                continue
            self._took_first(ride, first)

    def _took_first(self, ride: _Ride, first: Step) -> None:
        try:
            ride.take(first)
        except Exception as exc:  # noqa: BLE001 - its choice or its text failed: its request alone
            self.batch.leave(ride.decoding)
            ride.end(exc)
            return
        if ride.decoding.finished:
            self.batch.leave(ride.decoding)  # its rows' cache goes now, not at the next step
            ride.end()
        else:
            self._riding.append(ride)

    def _step(self) -> None:
        """One run of the batch; each ride's tokens chosen, appended and said; the rides that ended leave."""
        if not self._riding:
            return
        try:
            steps = dict((id(d), step) for d, step in self.batch.step())
        except Exception as exc:  # noqa: BLE001 - the batch's run failed: every request in it is told
            for ride in self._riding:
                ride.end(exc)
            self._riding = []
            self.batch = self._new_batch()
            return
        for ride in list(self._riding):
            try:
                ride.take(steps[id(ride.decoding)])
            except Exception as exc:  # noqa: BLE001 - its choice or its text failed: its request alone
                self.batch.leave(ride.decoding)
                self._riding.remove(ride)
                ride.end(exc)
                continue
            if ride.decoding.finished:
                self.batch.leave(ride.decoding)  # its rows' cache goes now, not at the next step
                self._riding.remove(ride)
                ride.end()

    def close(self) -> None:
        """A generation under way stops after its step instead of holding the exit; every request ends."""
        with self._wake:
            self.closing.set()
            if self._thread is None:
                for ride in self._waiting:
                    ride.end()
                self._waiting.clear()
            self._wake.notify()
