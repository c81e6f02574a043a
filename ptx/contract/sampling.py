"""How the next token is chosen from a step's logits, torch-free: greedy (the argmax) by default, or drawn
with a temperature, top-k, top-p and min-p, after a repetition penalty, as transformers' logits processors
do it (generation/logits_process.py: RepetitionPenaltyLogitsProcessor, then TemperatureLogitsWarper,
TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, in the order its generate() applies them). OpenAI's
``logit_bias`` is added before them and its ``presence_penalty`` and ``frequency_penalty`` (over the answer's
own tokens) applied after the repetition penalty, as vLLM orders them; the chooser also reads the chosen
token's log-probability and the most probable others' off the same logits where asked (ptx.contract.logprobs).
Where an answer must match a grammar (ptx.contract.grammar), every token that cannot continue it is masked
first, greedy or sampled, so that nothing after can choose it.

The draws are the seed's, not the runtime's: each prompt (each row of a batch) has a numpy Generator of its
own, seeded from the request's seed and the row's key (SeedSequence's spawn key: 0 for a prompt's first
answer, j for its answer j where several are asked), never from its place in a batch, and draws one
uniform number per step. The token is where that number falls in the cumulative distribution of the kept tokens,
most probable first: two backends whose logits agree within their tolerance move each boundary of that
distribution by about as much, so they choose the same token unless the draw falls within that distance of
a boundary (rare, and said as a tie would be). A row's tokens are those it gets alone with that seed,
whatever else runs in its batch. ``torch.multinomial`` would draw from torch's generator instead, which
ONNX Runtime and OpenVINO do not have: hence this module rather than transformers' sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from ptx.errors import InputError

from .grammar import Constraint, Grammar
from .logprobs import TokenLogprob, chosen_logprobs

SEED_BITS = 64  # a seed is taken modulo 2**64: numpy's SeedSequence takes non-negative integers
MAX_PENALTY = 2.0  # presence_penalty and frequency_penalty: OpenAI's range is -2 to 2
MAX_BIAS = 100.0  # logit_bias: OpenAI's range is -100 to 100
MAX_LOGPROBS = 20  # the most probable tokens listed per step at most (OpenAI's top_logprobs cap)


class SamplingError(InputError):
    """A sampling parameter out of its range; ``param`` names it (the OpenAI API's error says which)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Sampling:
    """How each new token is chosen. ``temperature`` 0 (the default) is greedy: the argmax, after the repetition penalty
    where one is set. Otherwise each step draws from the logits divided by the temperature, kept to the ``top_k``
    most probable (0: all), to the smallest set whose probability reaches ``top_p`` (1: all; 0: the most probable
    token alone), and to those at least ``min_p`` times the most probable one's probability (0: all).
    ``repetition_penalty`` (>1 discourages) divides a positive logit of a token already in the prompt or the
    answer, and multiplies a negative one (transformers' and CTRL's rule). ``seed``: the draws' seed (None: fresh
    entropy each call). ``stop_ids`` end a prompt beside the file's end-of-sequence ids; ``stop`` strings end it
    once its text holds one (the text is cut before it); ``max_new_tokens`` bounds each answer.

    OpenAI's fields: ``presence_penalty`` (-2 to 2) is taken off the logit of every token the answer already
    holds, and ``frequency_penalty`` (-2 to 2) once per time it holds it (the prompt's tokens do not count, as
    OpenAI's formula says); ``logit_bias`` ((token id, -100 to 100), ...) is added to those tokens' logits
    first (-100 bans a token, 100 all but forces it); ``logprobs``: None, or the chosen token's log-probability
    with the ``logprobs`` most probable tokens' (0 to 20), read off the model's own logits at each step.
    ``grammar``: what the answer must match (ptx.contract.grammar.Grammar: a JSON schema, JSON, a regex)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 32
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    grammar: Grammar | None = None

    def __post_init__(self):
        _number("temperature", self.temperature, 0, None)
        if not _is_int(self.top_k) or self.top_k < 0:
            raise SamplingError(f"top_k {self.top_k!r}: give a whole number, 0 (every token) or more", "top_k")
        _number("top_p", self.top_p, 0, 1)  # 0: the most probable token alone, as OpenAI's API takes it
        _number("min_p", self.min_p, 0, 1)
        _number("repetition_penalty", self.repetition_penalty, 0, None, low_open=True)
        if self.seed is not None and not _is_int(self.seed):
            raise SamplingError(f"seed {self.seed!r}: give a whole number", "seed")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens {self.max_new_tokens!r}: give a whole number of at least 1",
                                "max_new_tokens")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise SamplingError(f"stop {list(stop)!r}: give non-empty strings", "stop")
        stop_ids = tuple(self.stop_ids)
        if not all(_is_int(t) and t >= 0 for t in stop_ids):
            raise SamplingError(f"stop ids {list(stop_ids)!r}: give token ids (whole numbers, 0 or more)", "stop_ids")
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_ids", tuple(int(t) for t in stop_ids))
        _number("presence_penalty", self.presence_penalty, -MAX_PENALTY, MAX_PENALTY)
        _number("frequency_penalty", self.frequency_penalty, -MAX_PENALTY, MAX_PENALTY)
        object.__setattr__(self, "logit_bias", _logit_bias(self.logit_bias))
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise SamplingError(f"logprobs {self.logprobs!r}: give a whole number from 0 to {MAX_LOGPROBS} (the most "
                                "probable tokens listed beside the chosen one)", "logprobs")
        if self.grammar is not None and not isinstance(self.grammar, Grammar):
            raise SamplingError(f"grammar {self.grammar!r}: give a ptx.contract.grammar.Grammar", "grammar")

    @property
    def plain(self) -> bool:
        """Greedy with nothing that changes the argmax or asks more of the choice: the plain argmax does."""
        return (self.greedy and self.repetition_penalty == 1.0 and not self.presence_penalty
                and not self.frequency_penalty and not self.logit_bias and self.logprobs is None
                and self.grammar is None)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def but(self, **changes) -> "Sampling":
        """This record with ``changes`` (None values left as they are)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        """One phrase: "greedy", or the sampling's settings that differ from the defaults."""
        default = Sampling()
        changed = [f"{f.name} {getattr(self, f.name)}" for f in fields(self)
                   if f.name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                                 "frequency_penalty", "seed")
                   and getattr(self, f.name) != getattr(default, f.name)]
        head = "greedy" if self.greedy else "sampled"
        return head + (f" ({', '.join(changed)})" if changed else "")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(name: str, value, low: float, high: float | None, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
        raise SamplingError(f"{name} {value!r}: give a number {bound}", name)


def _logit_bias(value) -> tuple[tuple[int, float], ...]:
    """``value`` ({id: bias} or (id, bias) pairs) as sorted (token id, bias) pairs, each checked."""
    pairs = value.items() if isinstance(value, dict) else value
    try:
        pairs = [(token, bias) for token, bias in pairs]
    except (TypeError, ValueError):
        raise SamplingError(f"logit_bias {value!r}: give token ids and their bias ({{id: bias}})",
                            "logit_bias") from None
    for token, bias in pairs:
        if not _is_int(token) or token < 0:
            raise SamplingError(f"logit_bias: {token!r} is not a token id (a whole number, 0 or more)", "logit_bias")
        _number("logit_bias", bias, -MAX_BIAS, MAX_BIAS)
    return tuple(sorted((int(t), float(b)) for t, b in pairs))


def row_generators(seed: int | None, keys: Sequence[int]) -> list[np.random.Generator]:
    """One numpy Generator per row, of ``keys[row]``: a row's draws depend on the seed and its key alone
    (SeedSequence's spawn key), so a prompt draws the same numbers alone, at any place of a batch, or
    beside other requests. No seed: fresh entropy, shared by the rows, which then need keys of their own."""
    entropy = None if seed is None else int(seed) % (1 << SEED_BITS)
    root = np.random.SeedSequence(entropy)
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(root.entropy, spawn_key=(int(k),))))
            for k in keys]


def processed(logits: np.ndarray, history: Sequence[Sequence[int]], params: Sampling,
              answer_starts: Sequence[int] | None = None, allowed: np.ndarray | None = None) -> np.ndarray:
    """The scores each token is chosen by, float64 [batch, vocab]: -inf where ``allowed`` (boolean [batch,
    vocab], a grammar's mask) is False, then the logit bias, the repetition penalty over
    each row's ``history`` (its prompt and the tokens chosen so far), the presence and frequency penalties over
    its answer (``history[row][answer_starts[row]:]``; default: all of it), then, when sampling, the
    temperature and the top-k, top-p and min-p filters (a filtered token's score is -inf), as transformers
    applies them."""
    scores = np.array(logits, dtype=np.float64, copy=True)
    if scores.ndim != 2:
        raise ValueError(f"logits of shape {scores.shape}: give [batch, vocab]")
    if allowed is not None:
        scores[~allowed] = -np.inf  # before anything else: no bias or penalty brings a masked token back
    if params.logit_bias:
        ids, bias = np.array([t for t, _ in params.logit_bias]), np.array([b for _, b in params.logit_bias])
        inside = ids < scores.shape[1]
        scores[:, ids[inside]] += bias[inside]
    if params.repetition_penalty != 1.0:
        for row, seen in enumerate(history):
            ids = np.unique(np.asarray(seen, dtype=np.int64))
            ids = ids[(ids >= 0) & (ids < scores.shape[1])]
            picked = scores[row, ids]
            scores[row, ids] = np.where(picked < 0, picked * params.repetition_penalty,
                                        picked / params.repetition_penalty)
    if params.presence_penalty or params.frequency_penalty:
        _penalized(scores, history, params, answer_starts)
    if params.greedy:
        return scores
    return _warped(scores, params)


def _penalized(scores: np.ndarray, history: Sequence[Sequence[int]], params: Sampling,
               answer_starts: Sequence[int] | None) -> None:
    """OpenAI's penalties, in place: ``mu[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty``,
    ``c[j]`` the times token j is in the row's answer so far."""
    for row, seen in enumerate(history):
        answer = np.asarray(seen[answer_starts[row] if answer_starts is not None else 0:], dtype=np.int64)
        answer = answer[(answer >= 0) & (answer < scores.shape[1])]
        if not len(answer):
            continue
        ids, counts = np.unique(answer, return_counts=True)
        scores[row, ids] -= counts * params.frequency_penalty + params.presence_penalty


def _warped(scores: np.ndarray, params: Sampling) -> np.ndarray:
    """The temperature, then the top-k, top-p and min-p filters, as transformers' warpers apply them."""
    if params.temperature != 1.0:
        scores = scores / params.temperature
    if params.top_k:
        k = min(params.top_k, scores.shape[1])
        kth = np.partition(scores, -k, axis=1)[:, -k:].min(axis=1, keepdims=True)
        scores = np.where(scores < kth, -np.inf, scores)  # ties with the k-th are kept, as torch.topk's bound keeps them
    if params.top_p == 0.0:  # the most probable token alone: the first of a tie, as greedy's argmax takes
        # it (the nucleus's stable ascending sort would keep the last)
        kept = np.zeros(scores.shape, dtype=bool)
        kept[np.arange(len(scores)), scores.argmax(axis=1)] = True
        scores = np.where(kept, scores, -np.inf)
    elif params.top_p < 1.0:
        order = np.argsort(scores, axis=1, kind="stable")  # ascending, as TopPLogitsWarper sorts
        ascending = np.take_along_axis(scores, order, axis=1)
        cumulative = np.cumsum(_softmax(ascending), axis=1)
        remove = cumulative <= 1 - params.top_p
        remove[:, -1] = False  # the most probable token is always kept (min_tokens_to_keep 1)
        removed = np.zeros_like(remove)
        np.put_along_axis(removed, order, remove, axis=1)
        scores = np.where(removed, -np.inf, scores)
    if params.min_p > 0:
        probs = _softmax(scores)
        remove = probs < params.min_p * probs.max(axis=1, keepdims=True)
        remove[np.arange(len(scores)), probs.argmax(axis=1)] = False
        scores = np.where(remove, -np.inf, scores)
    return scores


def _softmax(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(scores - top)
    return e / e.sum(axis=1, keepdims=True)


def choose(logits: np.ndarray, history: Sequence[Sequence[int]], params: Sampling,
           rngs: Sequence[np.random.Generator] | None = None, answer_starts: Sequence[int] | None = None,
           allowed: np.ndarray | None = None) -> np.ndarray:
    """The next token of each row of ``logits`` [batch, vocab], int64 [batch]: the argmax of the processed
    scores when greedy (the first of equal maxima, as torch.argmax), else the token where the row's uniform
    draw (one from ``rngs[row]`` per call) falls in the cumulative distribution of its kept tokens, most
    probable first (equal probabilities by token id). ``answer_starts``: where each row's answer begins in its
    history (the presence and frequency penalties count the answer's tokens); ``allowed``: a grammar's mask
    (boolean [batch, vocab]), each row keeping one token at least."""
    scores = processed(logits, history, params, answer_starts, allowed)
    if params.greedy:
        return np.argmax(scores, axis=-1).astype(np.int64)
    if rngs is None or len(rngs) != len(scores):
        raise ValueError(f"sampling {len(scores)} rows needs one numpy Generator per row")
    probs = _softmax(scores)
    return np.array([_drawn(p, rng.random()) for p, rng in zip(probs, rngs)], dtype=np.int64)


def _drawn(p: np.ndarray, draw: float) -> int:
    """The token where ``draw`` (uniform in [0, 1)) falls in the cumulative distribution of ``p``'s kept tokens
    (most probable first, equal probabilities by token id; ``p`` need not sum to 1)."""
    kept = np.flatnonzero(p > 0)
    order = kept[np.lexsort((kept, -p[kept]))]
    cdf = np.cumsum(p[order])
    return int(order[min(int(np.searchsorted(cdf, draw * cdf[-1], side="right")), len(order) - 1)])


class Chooser:
    """The decoding loop's choice for one request (infer/model/generation.py's ``choose`` hook):
    ``chooser(logits, history) -> ids``, with the request's parameters and one Generator per row (made at
    the first step, for as many rows as it has). ``keys``: each row's draws (row_generators); by default,
    with a seed, every row draws as its prompt would alone (key 0), and without one each its own.

    Its first call is the prompt's step: each row's history then is its prompt, so the answer's tokens (which
    the presence and frequency penalties count) are what comes after. Where ``params.logprobs`` asks, ``taken``
    holds each row's chosen tokens' log-probabilities (ptx.contract.logprobs) after each call, in the order
    chosen: one, or a step's kept guesses and the token after them (``speculated``). A decoding may keep fewer
    (an end id, a stop string): the next call replaces them.

    ``constraints``: one per row (ptx.contract.grammar.Constraint), where the answer must match a grammar. Each
    call first gives every row's constraint the tokens its history took since the last call (what the decoding
    appended: a row that had ended took none), then masks what it does not allow: the mask is applied here, in
    the one choice, for every backend and every row of a server's batch, with no further run of the model."""

    def __init__(self, params: Sampling, keys: Sequence[int] | None = None,
                 constraints: Sequence[Constraint] | None = None):
        self.params, self.keys = params, None if keys is None else [int(k) for k in keys]
        self.constraints = None if constraints is None else list(constraints)
        self.rngs: list[np.random.Generator] | None = None
        self.answer_starts: list[int] | None = None
        self._fed: list[int] | None = None  # each row's history length its constraint has seen
        self.taken: list[list[TokenLogprob]] | None = None  # each row's tokens' of the last call, in order

    def __call__(self, logits: np.ndarray, history: Sequence[Sequence[int]]) -> np.ndarray:
        self._start(history)
        chosen = choose(logits, history, self.params, self.rngs, self.answer_starts, self._allowed(logits, history))
        if self.params.logprobs is not None:
            self.taken = [[taken] for taken in chosen_logprobs(logits, chosen, self.params.logprobs)]
        return chosen

    def _start(self, history: Sequence[Sequence[int]]) -> None:
        """At the first call (the prompt's step): where each row's answer starts, and its Generator."""
        if self.answer_starts is None:
            self.answer_starts = [len(h) for h in history]
            self._fed = list(self.answer_starts)
        if self.rngs is None and not self.params.greedy:
            keys = self.keys
            if keys is None:
                keys = [0] * len(history) if self.params.seed is not None else range(len(history))
            self.rngs = row_generators(self.params.seed, keys)

    @property
    def speculates(self) -> bool:
        """Whether a decoding may run a drafter's guesses for this choice: ``speculated`` keeps its tokens
        (greedy's) or their distribution (sampled), with log-probabilities too, and held to a grammar whose
        constraints can be copied to walk the guesses (Constraint.copy; one without decodes a token a step)."""
        return self.constraints is None or all(callable(getattr(c, "copy", None)) for c in self.constraints)

    def speculated(self, ahead: np.ndarray, drafts: Sequence[Sequence[int]], history: Sequence[Sequence[int]],
                   rows: Sequence[int]) -> list[list[int]]:
        """Speculative sampling (Leviathan et al. 2023, Chen et al. 2023) over a step that ran each row's ``drafts``
        (guesses made without a draw: each one certain, as prompt lookup's and a greedy draft model's are) after its
        next token, ``ahead`` [batch, positions, vocab] the logits after each: for each of ``rows``, its guesses
        kept while its draw falls under the probability this choice gives the guess there (its scores as
        ``processed`` makes them, over the history with the guesses kept so far, under the row's grammar's mask
        after them), then a draw from that distribution with the refused guess taken out (renormalized), or after
        every guess kept, a draw from the distribution after the last. Each token is distributed as plain
        sampling's would be, given the ones before (the draws are others). Greedy (with a logit bias, penalties or
        a grammar alike) keeps each guess that is its argmax there, then its argmax where one is not. The grammar
        walks the guesses on a copy of the row's constraint: the row's own takes what the decoding appends, at the
        next call. Where log-probabilities are asked, ``taken`` holds each kept token's, in order. The other rows
        take none ([])."""
        self._start(history)
        self._feed(history)
        taken: list[list[int]] = [[] for _ in drafts]
        logprobs: list[list[TokenLogprob]] = [[] for _ in drafts]
        for row in rows:
            seen = list(history[row])
            walk = None if self.constraints is None else self.constraints[row].copy()
            for j in range(len(drafts[row]) + 1):
                allowed = None if walk is None else walk.allowed()[None, :ahead.shape[-1]]
                scores = processed(ahead[row, j][None], [seen], self.params, [self.answer_starts[row]], allowed)
                guess = int(drafts[row][j]) if j < len(drafts[row]) else None
                token, kept = self._verdict(scores, guess, row)
                taken[row].append(token)
                if self.params.logprobs is not None:
                    logprobs[row] += chosen_logprobs(ahead[row, j][None], [token], self.params.logprobs)
                if not kept:
                    break
                seen.append(token)
                if walk is not None:
                    walk.advance(token)
        if self.params.logprobs is not None:
            self.taken = logprobs
        return taken

    def _verdict(self, scores: np.ndarray, guess: int | None, row: int) -> tuple[int, bool]:
        """(the token this choice takes at a position whose processed ``scores`` [1, vocab] follow the guesses kept
        so far, whether it is ``guess``, kept): greedy's argmax, or the guess kept by the row's draw (else a draw
        without it)."""
        if self.params.greedy:
            if guess is not None and confirms(scores[0], guess):
                return guess, True
            return int(np.argmax(scores[0])), False
        p, rng = _softmax(scores)[0], self.rngs[row]
        if guess is not None:
            if keeps(p, guess, rng.random()):
                return guess, True
            p = refused(p, guess)
        return _drawn(p, rng.random()), False

    def _allowed(self, logits: np.ndarray, history: Sequence[Sequence[int]]) -> np.ndarray | None:
        """The constraints' masks [batch, vocab], each advanced by what its row took since the last call."""
        if self.constraints is None:
            return None
        self._feed(history)
        allowed = np.empty(logits.shape, dtype=bool)
        for row, constraint in enumerate(self.constraints):
            allowed[row] = constraint.allowed()[:logits.shape[1]]
        return allowed

    def _feed(self, history: Sequence[Sequence[int]]) -> None:
        """Each row's constraint advanced by what its row took since the last call."""
        if self.constraints is None:
            return
        if len(self.constraints) != len(history):
            raise ValueError(f"{len(self.constraints)} constraints for {len(history)} rows: give one per row")
        for row, (constraint, seen) in enumerate(zip(self.constraints, history)):
            for token in seen[self._fed[row]:]:
                constraint.advance(int(token))
            self._fed[row] = len(seen)


def confirms(scores: np.ndarray, guess: int) -> bool:
    """Whether greedy keeps a certain guess: it is the argmax of the scores there."""
    return int(np.argmax(scores)) == guess


def refused(p: np.ndarray, guess: int) -> np.ndarray:
    """The distribution to draw from where a certain guess was not kept: ``p`` without it (max(0, p - q) for q all
    on the guess; ``_drawn`` renormalizes), so that the token is ``guess`` with probability p[guess] in all."""
    p = p.copy()
    p[guess] = 0.0
    return p


def keeps(p: np.ndarray, guess: int, draw: float) -> bool:
    """Whether a certain guess is kept where the choice gives it probability p[guess]: the draw falls under it."""
    return draw < p[guess]


__all__ = ["Chooser", "Sampling", "SamplingError", "choose", "processed", "row_generators"]
