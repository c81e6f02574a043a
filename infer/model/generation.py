"""Decoding over any runner of a decoder file, once for every backend: a step object the caller pulls,
in the shape of onnxruntime-genai's Generator (append tokens, generate the next, ask whether it is done).

    decoding = Decoding(model.run, model.signature, model.generation, prompts, max_new_tokens=16)
    for step in decoding:                  # the prompt's run (prefill) first, then one run per new token
        tokens = GREEDY(step.logits, decoding.history)  # a sampler (chooser_of), or the reference's tokens
        decoding.append(tokens)            # a prompt that ends (an end-of-sequence id) is done
    decoding.decoded()                     # each prompt's tokens, its record for the judge, the time

Stopping is stopping to pull: nothing runs that the caller did not ask for; a caller that ends one prompt
itself (a stop string in its text) says so with ``end(row)``. The prompts are checked once, where the
decoding is made, as is the refusal of a file exported without its cache.

Several prompts of different lengths go in one batch, left-padded: their attention mask is 0 over the
padding and their positions count only the tokens they have, so each prompt's tokens are those it
would get alone (up to ties). The first step's past is empty (length 0); each run's present key/values
are the next run's past (``Decoding.forward``), held where the runtime made them where the runner can
(ONNX Runtime's OrtValues through IO binding: ``hold``, the runner's cache_holding()); a decoder whose
attention is ONNX Runtime's GroupQueryAttention (exported with --ort-attention) keeps each layer's cache in one
buffer the operator writes each step into, where the runner writes in place (ort-cpu). numpy only: the ONNX
Runtime and OpenVINO paths never import torch; eager (a module exported with its cache) is a runner like
the others.

An encoder-decoder's decoding (infer/model/encoder_decoding.py) is this one, its encoder run once where
the first step runs and the cross-attention past it answers fed to every step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from ptx.contract.generation import Generation, Steps, check_prompts, left_padded, positions
from ptx.contract.sampling import Chooser, Sampling
from ptx.contract.tensors import Signature
from ptx.errors import InputError, PtxError

from ..runtime import memory_plan
from ..runtime.runner import Holding, as_array

Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def no_cache(what: str) -> PtxError:
    """The one refusal of a model that cannot generate: ``what`` (its name) was exported without its cache."""
    return PtxError(f"{what} was exported without its key/value cache, so it cannot generate: export the model with "
                    "`ptx export --module FILE.py:FACTORY --task text-generation`")


@dataclass(frozen=True)
class Step:
    """One run of the decoder: ``index`` (0: the prompt's run), the last position's ``logits``
    [batch, vocab], and ``done`` [batch]: the prompts that had ended before it (their rows run on,
    unread). Read-only: the decoding keeps ``logits`` until the step's tokens are appended."""

    index: int
    logits: np.ndarray
    done: np.ndarray


# How a step's tokens are chosen: ``choose(logits [batch, vocab], history) -> ids [batch]``, where ``history``
# is each prompt's ids and the tokens appended to it so far (GREEDY, or ptx.contract.sampling.Chooser).
Choose = Callable[[np.ndarray, Sequence[Sequence[int]]], np.ndarray]


def GREEDY(logits: np.ndarray, history: Sequence[Sequence[int]]) -> np.ndarray:  # noqa: N802 - a constant choice
    """The largest logit's token per row: the first of equal maxima, as torch.argmax."""
    return np.argmax(logits, axis=-1)


def chooser_of(sampling: Sampling | None, keys: Sequence[int] | None = None,
               constraints: Sequence | None = None) -> Choose:
    """The choice ``sampling`` asks for: GREEDY by default (temperature 0 and nothing else that changes the
    argmax or asks for log-probabilities), else its chooser (ptx.contract.sampling.Chooser: one numpy Generator
    per row, of ``keys[row]``; by default each prompt draws as it would alone), with each row's grammar
    ``constraints`` where its answer must match one (infer/model/grammar.py makes them: a tokenizer's)."""
    if sampling is not None and sampling.grammar is not None and constraints is None:
        raise PtxError(f"an answer of {sampling.grammar.describe()} is masked against the tokenizer's tokens: decode "
                       "it with its text (ptx.infer.model.text_generation.generate_text, or ptx generate with a "
                       "tokenizer)")
    if sampling is None or sampling.plain:
        return GREEDY
    return Chooser(sampling, keys, constraints)


@dataclass
class Decoded:
    """A decoding: each prompt's new tokens (up to and with the end-of-sequence id where one came), the
    record the judge compares (tokens and top-2 margins), and its time: the prompt's run and the steps
    after it (``decode_s`` over ``decode_steps`` runs of the whole batch), and an encoder-decoder's encoder
    run apart (``encode_s``, before the prompt's run; 0 for a causal LM)."""

    tokens: list[list[int]]
    steps: Steps
    prefill_s: float
    decode_s: float
    decode_steps: int
    encode_s: float = 0.0

    @property
    def decode_ms_per_token(self) -> float | None:
        return 1000 * self.decode_s / self.decode_steps if self.decode_steps else None


class Decoding:
    """The decoding of ``prompts`` (token id lists; one prompt may be given flat) for at most
    ``max_new_tokens`` each through ``run`` (a runner's: {name: array} -> {name: array}) of a decoder whose
    tensors ``generation`` names (None: the model has no cache, refused in one line naming ``name``). A
    prompt ends at an id of ``eos`` (default: the file's; ``()`` runs every step) or at its last token.

    ``step()`` runs the decoder on what is pending and returns its Step; ``append(tokens)`` gives one token
    per prompt for it (ignored for a prompt already done) and returns each prompt's new token (None where
    it had ended); iterating yields steps until every prompt is done; ``end(row)`` ends one prompt where
    its caller says (a stop string). ``next_tokens(choose)`` and ``to_end(choose)`` pull with a Choose
    (GREEDY by default). ``tokens``, ``history``, ``done``, the time (``prefill_s``, ``decode_s``) and
    ``decoded()`` say where it stands."""

    def __init__(self, run: Run, signature: Signature, generation: Generation | None, prompts,
                 max_new_tokens: int, eos: Sequence[int] | None = None, *, name: str = "the model",
                 keep_prompt_logits: bool = False, hold: Holding | None = None):
        if generation is None:
            raise no_cache(name)
        self.generation, self.signature, self._run = generation, signature, run
        # where the runner holds its cache in its runtime (cache_holding), each present stays there as the next past
        if hold is not None and not isinstance(hold, Holding):  # a runner's run_holding, as callers gave it before
            hold = Holding(hold)
        self._hold, self._presents = hold, [present for _, present in generation.cache]
        self._buffers: dict[str, np.ndarray] | None = None  # a GroupQueryAttention decoder's cache, kept in place
        self.vocab = vocabulary(signature, generation)
        self.prompts = check_prompts(prompts, self.vocab, max_new_tokens, generation.max_positions)
        if generation.position_ids is None and generation.encoder is None and len({len(p) for p in self.prompts}) > 1:
            raise InputError(f"{name} takes no position ids, so prompts of different lengths cannot share a batch (left "
                             "padding would move their positions): decode them one at a time")
        self.max_new_tokens = int(max_new_tokens)
        _require_decoding_room(signature, generation, self.prompts, self.max_new_tokens, keep_prompt_logits)
        self.eos = frozenset(generation.eos if eos is None else (int(e) for e in eos))
        batch = len(self.prompts)
        ids, self._mask = left_padded(self.prompts, generation.pad)
        position = positions(self._mask)
        self._pending = self._feeds(ids, position)
        self._next_position = position[:, -1:] + 1
        self._past = empty_past(signature, generation, batch)
        if generation.in_place and hold is not None and hold.in_place:
            reach = self._mask.shape[1] + self.max_new_tokens
            self._buffers = in_place_buffers(self._past, generation.past_axis, reach)
        self.batched = False  # its cache handed over to a batch (hand_over_past), which runs its rows
        self.tokens: list[list[int]] = [[] for _ in self.prompts]
        self.history: list[list[int]] = [list(p) for p in self.prompts]
        self._margins: list[list[float]] = [[] for _ in self.prompts]
        self._tops: list[list[float]] = [[] for _ in self.prompts]
        self.done = np.zeros(batch, dtype=bool)
        self.index = 0  # the steps run
        self._logits: np.ndarray | None = None  # the last step's, until its tokens are appended
        self.prefill_s = self.decode_s = self.encode_s = 0.0
        # the prompt's run's logits at every position [batch, positions, vocab], for a judge that reads the
        # prompt's own positions (infer/model/generation_check.py asks with keep_prompt_logits); not kept unless
        # asked, as they are large (a 2,000-token prompt on a 152k vocabulary: 1.2 GB), nor computed where the
        # file takes logits_to_keep (Generation.kept_logits)
        self.keep_prompt_logits = keep_prompt_logits
        self.prompt_logits: np.ndarray | None = None

    @property
    def finished(self) -> bool:
        """Every prompt is done: nothing is left to pull."""
        return bool(self.done.all())

    def __iter__(self) -> Iterator[Step]:
        while not self.finished:
            yield self.step()

    def step(self) -> Step:
        """Run the decoder once: the prompts (the first step) or the tokens appended last, with the cache."""
        self._check_runnable()
        start = time.perf_counter()
        logits = self.forward(self._pending)
        return self.ran(logits, time.perf_counter() - start)

    def _check_runnable(self) -> None:
        if self._logits is not None:
            raise PtxError(f"step {self.index} has no tokens yet: append() them before the next step")
        if self.finished:
            raise PtxError(f"the decoding is done (after {self.index} steps): nothing is left to run")

    def ran(self, logits: np.ndarray, seconds: float) -> Step:
        """The step whose run gave ``logits`` [batch, vocab] for the pending feeds, in ``seconds``: this
        decoding's own run (``step``), or its rows of a batch's (infer/model/batch.py). Append its tokens next."""
        self._check_runnable()
        logits = self._suppressed(logits)
        if self.index == 0:
            self.prefill_s = seconds
        else:
            self.decode_s += seconds
        self._logits = logits
        return Step(self.index, logits, self.done.copy())

    def _suppressed(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` with the ids the contract suppresses (at the first step, those it suppresses there too)
        at the lowest float: never chosen, greedy or sampled; at the last step a decoding that ends at
        end-of-sequence ids has, every id but the contract's forced one (transformers' SuppressTokens and
        ForcedEOSToken processors set -inf; the lowest finite value keeps two runtimes' logits comparable)."""
        vocab = logits.shape[-1]
        ids = [i for i in (*self.generation.suppress, *(self.generation.begin_suppress if self.index == 0 else ()))
               if 0 <= i < vocab]
        forced = self.generation.forced_eos
        last = forced is not None and 0 <= forced < vocab and bool(self.eos) and self.index == self.max_new_tokens - 1
        if not ids and not last:
            return logits
        logits = np.array(logits)
        lowest = np.finfo(logits.dtype).min if np.issubdtype(logits.dtype, np.floating) else logits.min()
        if last:
            logits[:, np.arange(vocab) != forced] = lowest
        logits[:, ids] = lowest
        return logits

    @property
    def pending(self) -> dict[str, np.ndarray]:
        """The next run's feeds, the cache aside: the new ids [batch, new], the mask over past and new [batch,
        past + new] (0 over padding, on the left only), the positions [batch, new] where the file takes them."""
        return self._pending

    @property
    def past_length(self) -> int:
        """The positions of cache the next run attends to (left padding included)."""
        return self._mask.shape[1] - self._pending[self.generation.input_ids].shape[1]

    def hand_over_past(self) -> dict[str, np.ndarray]:
        """This decoding's cache, given to a batch that runs its rows from now on (infer/model/batch.py):
        its own ``step()`` refuses to run after, as its cache is no longer its own."""
        if self.batched:
            raise PtxError("this decoding's cache was handed over already: pull the batch that holds it")
        self.batched = True
        if self._buffers is not None:  # the positions filled so far, out of each buffer
            filled = self._first(self.past_length)
            self._past = {name: np.ascontiguousarray(buffer[filled]) for name, buffer in self._buffers.items()}
            self._buffers = None
        past, self._past = self._past, {}
        arrays = {name: as_array(value) for name, value in past.items()}
        self._release_held()  # its copy in the runtime goes now
        return arrays

    def forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One run of the decoder on ``feeds`` (the new ids, the mask, the positions) and the cache so far:
        the last position's logits [batch, vocab]. Each present comes back as the next run's past: as arrays,
        or where the runner holds them (``hold``, its cache_holding()) as its runtime's own values, never copied
        into numpy and back; a GroupQueryAttention decoder's, after its prompt's run, written by the operator into
        the buffer each layer's past and present are bound to (Generation.in_place), where the runner writes in
        place."""
        if self.batched:
            raise PtxError("this decoding runs in a batch, which holds its cache: pull the batch (Batch.step)")
        every = self.index == 0 and self.keep_prompt_logits
        width = feeds[self.generation.input_ids].shape[1]
        fed = {**feeds, **self.generation.kept_logits(width, every)}
        if self._buffers is not None and self.index:
            out = self._hold.run({**fed, **self._buffers}, (),
                                 {present: self._buffers[past] for past, present in self.generation.cache})
        elif self._buffers is not None:  # the prompt's run from its empty past, its present copied into the buffers:
            # the operator's scratch spans the positions it is given (the prompt's, not the buffer's)
            out = self._hold.run({**fed, **self._past}, ())
            for past, present in self.generation.cache:
                self._buffers[past][self._first(width)] = as_array(out[present])
        else:
            fed.update(self._past)
            out = self._run(fed) if self._hold is None else self._hold.run(fed, self._presents)
            self._past = {past: out[present] for past, present in self.generation.cache}
        logits = np.asarray(out[self.generation.logits])
        if every:
            self.prompt_logits = logits
        return logits[:, -1, :]

    def append(self, tokens) -> list[int | None]:
        """The tokens of the step just run, one per prompt (a prompt already done: its entry is ignored);
        each prompt's new token is returned (None where it had ended). A prompt ends at an id of ``eos``,
        every prompt at ``max_new_tokens``; the rest are fed back on the next step."""
        if self._logits is None:
            raise PtxError("append() gives the tokens of the step just run: call step() first")
        batch = len(self.prompts)
        chosen = np.asarray(tokens).reshape(-1)
        if chosen.shape != (batch,) or not np.issubdtype(chosen.dtype, np.integer):
            raise InputError(f"append() takes {batch} token id{'s' * (batch != 1)} (one per prompt), not "
                             f"{np.asarray(tokens).dtype} {list(np.asarray(tokens).shape)}")
        outside = [row for row in np.flatnonzero(~self.done)
                   if chosen[row] < 0 or (self.vocab is not None and chosen[row] >= self.vocab)]
        if outside:
            raise InputError(f"append(): token id {chosen[outside[0]]} for prompt {outside[0] + 1} is outside the "
                             f"vocabulary (0 to {self.vocab - 1 if self.vocab else '...'})")
        logits, self._logits = self._logits, None
        top, other = _logit_and_best_other(logits, chosen)
        new: list[int | None] = []
        for row in range(batch):
            if self.done[row]:
                new.append(None)
                continue
            token = int(chosen[row])
            self.tokens[row].append(token)
            self.history[row].append(token)
            self._margins[row].append(float(top[row] - other[row]))
            self._tops[row].append(float(top[row]))
            new.append(token)
            if token in self.eos:
                self.done[row] = True
        self.index += 1
        if self.index >= self.max_new_tokens:
            self.done[:] = True
        if self.finished:
            self._release()  # nothing runs again: the cache goes now, not with the decoding
            return new
        fed = np.where(self.done, self.generation.pad, chosen).astype(np.int64)[:, None]  # a done row runs, unread
        self._mask = np.concatenate([self._mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        self._pending = self._feeds(fed, self._next_position)
        self._next_position = self._next_position + 1
        return new

    def end(self, row: int) -> None:
        """End prompt ``row`` after the tokens it has (its caller's reason: a stop string in its text); its
        row runs on, unread, fed the pad id."""
        if self.done[row]:
            return
        self.done[row] = True
        if self.finished:
            self._release()
        elif self._logits is None and self.index:  # its last token is pending: the pad id instead
            self._pending[self.generation.input_ids][row] = self.generation.pad

    def _first(self, positions: int) -> tuple:
        """The index of a cache tensor's first ``positions`` on its past axis."""
        return (slice(None),) * self.generation.past_axis + (slice(0, positions),)

    def _release(self) -> None:
        """Let the cache go: nothing runs again."""
        self._past, self._buffers = {}, None
        self._release_held()

    def _release_held(self) -> None:
        """Let go of the cache where the runtime keeps it for this decoding (OpenVINO's variables)."""
        if self._hold is not None and self._hold.release is not None:
            self._hold.release()

    def next_tokens(self, choose: Choose = GREEDY) -> list[int | None]:
        """One step, its tokens chosen by ``choose`` and appended: each prompt's new token (None where ended)."""
        step = self.step()
        return self.append(choose(step.logits, self.history))

    def to_end(self, choose: Choose = GREEDY) -> Decoded:
        """Every step left, each one's tokens chosen by ``choose``: the decoding's record."""
        for step in self:
            self.append(choose(step.logits, self.history))
        return self.decoded()

    def decoded(self) -> Decoded:
        """The decoding so far: each prompt's tokens, their record, the time."""
        tokens = [list(t) for t in self.tokens]
        return Decoded(tokens, Steps(tokens, [list(m) for m in self._margins], [list(t) for t in self._tops]),
                       self.prefill_s, self.decode_s, max(self.index - 1, 0), self.encode_s)

    def _feeds(self, ids: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {self.generation.input_ids: ids}
        if self.generation.attention_mask:
            feeds[self.generation.attention_mask] = self._mask
        if self.generation.position_ids:
            feeds[self.generation.position_ids] = position
        return feeds


def _logit_and_best_other(logits: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the chosen token's logit, the largest logit of any other token) per row, as float64: their
    difference is the chosen token's top-2 margin where it is the argmax (0 at a tie), below 0 where not.
    The largest of a copy with the chosen entries at -inf, not a partition: on a 152k vocabulary
    np.partition takes 0.8 ms a step, 5% of an int4 0.5B model's token on 2 cores."""
    rows = np.arange(len(logits))
    index = np.clip(chosen, 0, logits.shape[-1] - 1)
    top = logits[rows, index]
    if logits.shape[-1] < 2:
        return top.astype(np.float64), top.astype(np.float64)
    others = logits.astype(np.float64)  # a copy; integer logits too, which take no -inf
    others[rows, index] = -np.inf
    return top.astype(np.float64), others.max(axis=-1)


def empty_past(signature: Signature, generation: Generation, batch: int) -> dict[str, np.ndarray]:
    """Each past input with a past length of 0, the batch ``batch`` and its fixed sizes (heads, head size)."""
    feeds = {}
    for past, _ in generation.cache:
        sig = signature.input(past)
        shape = []
        for axis, dim in enumerate(sig.shape):
            if axis == generation.past_axis:
                shape.append(0)
            elif axis == sig.batch_axis or (axis == 0 and isinstance(dim, str)):
                shape.append(batch)
            elif isinstance(dim, str):
                raise PtxError(f"{past}: its axis {axis} ({dim}) is neither the batch nor the past length; ptx decodes a "
                               "cache of [batch, heads, past, head size]")
            else:
                shape.append(int(dim))
        feeds[past] = np.zeros(shape, dtype=sig.dtype)
    return feeds


def in_place_buffers(empty: Mapping[str, np.ndarray], past_axis: int, positions: int) -> dict[str, np.ndarray]:
    """A buffer per past input of ``positions`` on its past axis (the most a decoding reaches), for a decoder
    whose GroupQueryAttention writes each step's keys and values after the past in place; zeros, which the
    operating system gives as pages are first written (a buffer costs the positions filled, not its length)."""
    buffers = {}
    for name, past in empty.items():
        shape = list(past.shape)
        shape[past_axis] = positions
        buffers[name] = np.zeros(shape, dtype=past.dtype)
    return buffers


def vocabulary(signature: Signature, generation: Generation) -> int | None:
    size = signature.output(generation.logits).shape[-1]
    return size if isinstance(size, int) else None


def cache_bytes_per_position(signature, generation: Generation) -> int:
    """The bytes one position of one sequence takes in the whole cache (every layer's key and value)."""
    total = 0
    for past, _ in generation.cache:
        sig = signature.input(past)
        size = 1
        for axis, dim in enumerate(sig.shape):
            if axis == generation.past_axis or axis == sig.batch_axis or isinstance(dim, str):
                continue
            size *= int(dim)
        total += size * np.dtype(sig.dtype).itemsize
    return total


def decoding_need(signature: Signature, generation: Generation, batch: int, prompt_length: int,
                  new_tokens: int, every_position: bool = False) -> float:
    """The bytes a decoding of ``batch`` prompts of ``prompt_length`` tokens and ``new_tokens`` more holds beyond
    the runtime's weights, as the memory plan counts them (memory_plan.decoding_need): its cache at its longest
    and the prompt's run's logits: the last position's where the file takes logits_to_keep and no judge reads
    every position (``every_position``: then every one's, and the judge's copy of them), else every one's."""
    cache = cache_bytes_per_position(signature, generation) * batch * (prompt_length + new_tokens)
    vocab = vocabulary(signature, generation) or 0
    row = batch * vocab * np.dtype(signature.output(generation.logits).dtype).itemsize  # one position's logits
    computed = 1 if generation.logits_to_keep and not every_position else prompt_length
    return memory_plan.decoding_need(cache, computed * row, prompt_length * row if every_position else 0.0)


def _require_decoding_room(signature: Signature, generation: Generation, prompts: Sequence[Sequence[int]],
                           new_tokens: int, every_position: bool) -> None:
    """OutOfMemoryPlan, in one line, where the cache of ``prompts`` decoded ``new_tokens`` further cannot fit in
    the memory available now: a request for a batch of long decodings is refused before its first step, not
    ended by the kernel once its cache has grown."""
    longest = max(map(len, prompts))
    why = memory_plan.shortfall(f"decoding {len(prompts)} prompt{'s' * (len(prompts) != 1)} of up to {longest} "
                                f"tokens and {new_tokens} new ones",
                                decoding_need(signature, generation, len(prompts), longest, new_tokens,
                                              every_position))
    if why:
        raise memory_plan.OutOfMemoryPlan(f"{why}: ask for fewer prompts at once or fewer new tokens")
