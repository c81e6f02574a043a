"""Decoding over any runner of a decoder file, once for every backend: a step object the caller pulls, in the
shape of onnxruntime-genai's Generator (append tokens, generate the next, ask whether it is done).

    decoding = Decoding(model.run, model.signature, model.generation, prompts, max_new_tokens=16,
                        cache=model.runner.new_cache(model.generation))
    for step in decoding:                  # the prompt's run (prefill) first, then one run per new token
        tokens = GREEDY(step.logits, decoding.history)  # a sampler (chooser_of), or the reference's tokens
        decoding.append(tokens)            # a prompt that ends (an end-of-sequence id) is done
    decoding.decoded()                     # each prompt's tokens, its record for the judge, the time

Stopping is stopping to pull: nothing runs that the caller did not ask for; a caller that ends one prompt
itself (a stop string in its text) says so with ``end(row)``. The prompts are checked once, where the
decoding is made, as is the refusal of a file exported without its cache.

Several prompts of different lengths go in one batch, left-padded: their attention mask is 0 over the
padding and their positions count only the tokens they have, so each prompt's tokens are those it
would get alone (up to ties). The cache is one object the runner makes (infer/runtime/cache.py: numpy arrays,
ONNX Runtime's OrtValues, a GroupQueryAttention decoder's buffer in place, OpenVINO's state); the decoding asks
it to run, to take rows in and let them go, to fit and to truncate, and never knows its form. numpy only: the
ONNX Runtime and OpenVINO paths never import torch; eager (a module exported with its cache) is a runner like
the others.

The decoding is multi-row, its rows joining and leaving (continuous batching: a server's requests, each its own
Decoding of its prompts, join one Decoding that runs them all; ``Batch`` is that decoding, with no prompts of its
own): a joiner's prompts run alone (its prefill, from an empty cache of the same form) and its cache joins the
others' at the longer past length, the shorter left-padded with zeros its mask hides; a member that is done or
that leaves takes its rows out, and the past is cut where no row needs its oldest positions.

A step may run more than one position per row (``Step.ahead``): each row's next token and the tokens a drafter
(``speculate``: infer/model/speculative.py) guesses after it; ``take(step, choose)`` keeps the guesses the choice
confirms and the choice after them, and the positions not kept are cut from the cache before the next run (a row
that kept fewer than another has them hidden by its mask), so the tokens are the choice's exactly.

An encoder-decoder's decoding (infer/model/encoder_decoding.py) is this one, its encoder run once where
the first step runs and the cross-attention past it answers fed to every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from ptx.contract.generation import Generation, Steps, check_prompts, logit_and_best_other
from ptx.contract.sampling import Chooser, Sampling
from ptx.contract.tensors import Signature
from ptx.errors import InputError, PtxError

from ..runtime.buffer_cache import cache_for
from ..runtime.cache import Cache, empty_past  # noqa: F401 - empty_past: export's feeds read it here
from .decoded import Decoded
from .decoding_memory import require_decoding_room, vocabulary
from .rows import DRAFT_ROOM, Rows, _running

Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def no_cache(what: str) -> PtxError:
    """The one refusal of a model that cannot generate: ``what`` (its name) was exported without its cache."""
    return PtxError(f"{what} was exported without its key/value cache, so it cannot generate: export the model with "
                    "`ptx export --module FILE.py:FACTORY --task text-generation`")


@dataclass(frozen=True)
class Step:
    """One run of the decoder: ``index`` (0: the prompt's run), the next token's ``logits`` [batch, vocab], and
    ``done`` [batch]: the prompts that had ended before it (their rows run on, unread). Where drafts were run
    after each row's next token (``drafts``: each row's, [] for none), ``ahead`` [batch, 1 + longest draft, vocab]
    holds the logits after the next token and after each draft (``ahead[:, 0]`` is ``logits``). Read-only: the
    decoding keeps them until the step's tokens are taken."""

    index: int
    logits: np.ndarray
    done: np.ndarray
    ahead: np.ndarray | None = None
    drafts: tuple = field(default=())
    forced: bool = False  # the drafts were given (``Decoding.force``): all kept, the choice made after the last


class Drafter(Protocol):
    """What guesses the tokens after each row's next one (infer/model/speculative.py): ``propose(histories,
    limits, owner)`` gives each row at most ``limits[row]`` token ids to follow its prompt and tokens so far
    (``histories``, the last of them the next token the step runs first); ``owner``: the decoding whose rows they
    are, the same at each of its steps (a drafter that keeps a state per row keys it so)."""

    def propose(self, histories: Sequence[Sequence[int]], limits: Sequence[int], owner=None) -> list[list[int]]: ...


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


class Decoding(Rows):
    """The decoding of ``prompts`` (token id lists; one prompt may be given flat) for at most
    ``max_new_tokens`` each through ``run`` (a runner's: {name: array} -> {name: array}) of a decoder whose
    tensors ``generation`` names (None: the model has no cache, refused in one line naming ``name``), its cache
    ``cache`` (the runner's new_cache(); default numpy arrays through ``run``). A prompt ends at an id of ``eos``
    (default: the file's; ``()`` runs every step) or at its last token. ``speculate``: a Drafter whose guesses
    each step runs after each row's next token, kept as far as the choice confirms them (``take``).

    ``step()`` runs the decoder on what is pending and returns its Step; ``append(tokens)`` gives one token
    per prompt for it (ignored for a prompt already done) and returns each prompt's new token (None where
    it had ended); ``take(step, choose)`` chooses them, keeping the drafts the choice confirms; iterating yields
    steps until every prompt is done; ``end(row)`` ends one prompt where its caller says (a stop string).
    ``next_tokens(choose)`` and ``to_end(choose)`` pull with a Choose (GREEDY by default). ``tokens``,
    ``history``, ``done``, the time (``prefill_s``, ``decode_s``) and ``decoded()`` say where it stands.

    Other decodings join this one (``join``, ``join_together``: their prompts' run, then their rows run in this
    one's steps, ``steps()``), and ``leave`` it; ``members`` are the decodings whose rows it runs, in row order."""

    def __init__(self, run: Run | None, signature: Signature, generation: Generation | None, prompts,
                 max_new_tokens: int, eos: Sequence[int] | None = None, *, name: str = "the model",
                 keep_prompt_logits: bool = False, cache: Cache | None = None, speculate: Drafter | None = None):
        if generation is None:
            raise no_cache(name)
        self.generation, self.signature = generation, signature
        self.cache = cache if cache is not None else cache_for(run, signature, generation)
        self.vocab = vocabulary(signature, generation)
        self.prompts = [] if prompts is None else check_prompts(prompts, self.vocab, max_new_tokens,
                                                                generation.max_positions)
        if generation.position_ids is None and generation.encoder is None and len({len(p) for p in self.prompts}) > 1:
            raise InputError(f"{name} takes no position ids, so prompts of different lengths cannot share a batch (left "
                             "padding would move their positions): decode them one at a time")
        self.max_new_tokens = int(max_new_tokens)
        if self.prompts:
            require_decoding_room(signature, generation, self.prompts, self.max_new_tokens, keep_prompt_logits)
        self.eos = frozenset(generation.eos if eos is None else (int(e) for e in eos))
        self.speculate = speculate
        batch = len(self.prompts)
        self.tokens: list[list[int]] = [[] for _ in self.prompts]
        self.history: list[list[int]] = [list(p) for p in self.prompts]
        self._margins: list[list[float]] = [[] for _ in self.prompts]
        self._tops: list[list[float]] = [[] for _ in self.prompts]
        self.done = np.zeros(batch, dtype=bool)
        self.index = 0  # the steps run
        self._ahead: np.ndarray | None = None  # the last step's logits [batch, positions, vocab], until taken
        self._drafts: list[list[int]] = [[] for _ in self.prompts]  # the guesses the last step ran
        self._forced: list[list[int]] | None = None  # ids the next step runs after each row's next token, all kept
        self._next = np.full(batch, generation.pad, dtype=np.int64)  # each row's token for the next run
        self._kept = np.ones(batch, dtype=np.int64)  # the positions of the last run each row keeps
        self.prefill_s = self.decode_s = self.encode_s = 0.0
        # the prompt's run's logits at every position [batch, positions, vocab], for a judge that reads the
        # prompt's own positions (infer/model/generation_check.py asks with keep_prompt_logits); not kept unless
        # asked, as they are large (a 2,000-token prompt on a 152k vocabulary: 1.2 GB), nor computed where the
        # file takes logits_to_keep (Generation.kept_logits)
        self.keep_prompt_logits = keep_prompt_logits
        self.prompt_logits: np.ndarray | None = None
        # as the decoding that runs rows (its own, and those of the decodings that joined it)
        self.host = self  # the decoding whose steps run this one's rows
        self.members: list[Decoding] = []
        self._mask = np.zeros((0, 0), dtype=np.int64)  # [rows, cache length]: 0 over padding and positions let go
        self._position = np.zeros(0, dtype=np.int64)  # each row's next position
        self._width = 0  # the positions each row was fed at the last run, until its members took their tokens
        self._leaving: list[Decoding] = []

    @property
    def finished(self) -> bool:
        """Every prompt is done: nothing is left to pull."""
        return bool(self.done.all())

    @property
    def rows(self) -> int:
        """The rows the next step runs: its members' still running."""
        return sum(len(d.prompts) for d in self.members if _running(d, self._leaving))

    @property
    def past_length(self) -> int:
        """The positions of cache this decoding's rows attend to at the next run (left padding among them)."""
        host = self.host
        if self not in host.members:
            return 0
        start = sum(len(d.prompts) for d in host.members[:host.members.index(self)])
        kept = host._mask[start:start + len(self.prompts)].any(axis=0)
        return int(len(kept) - kept.argmax()) if kept.any() else 0

    def __iter__(self) -> Iterator[Step]:
        while not self.finished:
            yield self.step()

    def step(self) -> Step:
        """Run the decoder once: the prompts (the first step) or each row's next token (and its drafts), with the
        cache."""
        self._check_runnable()
        if self.host is not self:
            raise PtxError("this decoding runs in a batch, which holds its cache: pull the batch (its steps())")
        if not self.index:
            return self._prefill([self])[0]
        (_, step), = self.steps()
        return step

    def _check_runnable(self) -> None:
        if self._ahead is not None:
            raise PtxError(f"step {self.index} has no tokens yet: append() them before the next step")
        if self.finished:
            raise PtxError(f"the decoding is done (after {self.index} steps): nothing is left to run")

    # -- its own rows ---------------------------------------------------------------------------------------------------
    def _draft(self, guessing: bool = True) -> None:
        """Each running row's guesses for the next step, where a drafter is set and the cache runs them
        (``guessing``): at most as many as leave room for the token chosen after them within max_new_tokens."""
        self._drafts = [[] for _ in self.prompts]
        if self._forced is not None:  # given ids run instead (force)
            self._drafts = self._forced
            return
        if self.speculate is None or not guessing:
            return
        limits = [0 if done else min(DRAFT_ROOM, self.max_new_tokens - len(t) - 1)
                  for done, t in zip(self.done, self.tokens)]
        if max(limits, default=0) <= 0:
            return
        proposed = self.speculate.propose(self.history, limits, self)
        self._drafts = [[int(t) for t in guess[:limit]] for guess, limit in zip(proposed, limits)]

    def _fed(self, width: int) -> np.ndarray:
        """Each row's ids for a run of ``width`` positions [batch, width]: its next token, its drafts, then the pad
        id (a done row runs on that, unread)."""
        ids = np.full((len(self.prompts), width), self.generation.pad, dtype=np.int64)
        for row, (token, drafts) in enumerate(zip(self._next, self._drafts)):
            if not self.done[row]:
                ids[row, 0] = token
                ids[row, 1:1 + len(drafts)] = drafts
        return ids

    def _ran(self, logits: np.ndarray, seconds: float) -> Step:
        """The step whose run gave ``logits`` [batch, positions, vocab] for this decoding's rows, in ``seconds``."""
        ahead = self._suppressed(logits)
        if self.index == 0:
            self.prefill_s = seconds
        else:
            self.decode_s += seconds
        self._ahead = ahead
        forced, self._forced = self._forced is not None, None
        drafts = tuple(tuple(d) for d in self._drafts)
        return Step(self.index, ahead[:, 0], self.done.copy(), ahead if ahead.shape[1] > 1 else None,
                    drafts if any(drafts) else (), forced and any(drafts))

    def _suppressed(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` [batch, positions, vocab] with the ids the contract suppresses (at the first step, those it
        suppresses there too) at the lowest float: never chosen, greedy or sampled; at the position of a row's last
        token max_new_tokens allows, where a decoding ends at end-of-sequence ids, every id but the contract's
        forced one (transformers' SuppressTokens and ForcedEOSToken processors set -inf; the lowest finite value
        keeps two runtimes' logits comparable)."""
        vocab = logits.shape[-1]
        ids = [i for i in (*self.generation.suppress, *(self.generation.begin_suppress if self.index == 0 else ()))
               if 0 <= i < vocab]
        forced = self.generation.forced_eos
        last = []
        if forced is not None and 0 <= forced < vocab and self.eos:
            counts = np.array([len(t) for t in self.tokens])
            last = [(row, j) for j in range(logits.shape[1]) for row in np.flatnonzero(counts + j == self.max_new_tokens - 1)]
        if not ids and not last:
            return logits
        logits = np.array(logits)
        lowest = np.finfo(logits.dtype).min if np.issubdtype(logits.dtype, np.floating) else logits.min()
        for row, j in last:
            logits[row, j, np.arange(vocab) != forced] = lowest
        logits[..., ids] = lowest
        return logits

    def append(self, tokens) -> list[int | None]:
        """The tokens of the step just run, one per prompt (a prompt already done: its entry is ignored);
        each prompt's new token is returned (None where it had ended). A prompt ends at an id of ``eos``,
        every prompt at ``max_new_tokens``; the rest are fed back on the next step (a step that ran drafts keeps
        its first position alone: ``take`` keeps the drafts the choice confirms)."""
        if self._ahead is None:
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
        self._kept = np.zeros(batch, dtype=np.int64)
        new = self._keep_position(0, chosen, ~self.done)
        self._end_step()
        return new

    def take(self, step: Step, choose: "Choose" = None, each: Callable[[list], None] | None = None
             ) -> list[list[int]]:
        """The tokens of ``step`` chosen by ``choose`` (GREEDY by default) and appended: where the step ran drafts,
        position by position, each row's drafts kept as far as the choice keeps them (``_verified``), then the
        choice after them. ``each(tokens)`` is given each position's new token per row (None where a row takes
        none) as it is appended, where its caller may end a row (a stop string), which takes no more. Each row's
        new tokens."""
        choose = choose or GREEDY
        if step.ahead is None:
            new = self.append(choose(step.logits, self.history))
            if each is not None:
                each(new)
            return [[] if t is None else [t] for t in new]
        rows = self._verified(step, choose)
        running = ~self.done
        if self.generation.position_ids is None and running.any():  # no positions to skip a row's let-go ones by
            shortest = min(len(rows[r]) for r in np.flatnonzero(running))
            rows = [row[:shortest] for row in rows]
        self._kept = np.zeros(len(self.prompts), dtype=np.int64)
        taken: list[list[int]] = [[] for _ in self.prompts]
        for j in range(max(map(len, rows), default=0)):
            active = running & ~self.done & np.array([len(row) > j for row in rows])
            chosen = np.array([row[j] if len(row) > j else 0 for row in rows], dtype=np.int64)
            new = self._keep_position(j, chosen, active)
            for row, token in enumerate(new):
                if token is not None:
                    taken[row].append(token)
            if each is not None:
                each(new)
        self._end_step()
        return taken

    def _verified(self, step: Step, choose: "Choose") -> list[list[int]]:
        """Each running row's tokens of a step that ran more than one position: given ids all kept and greedy's
        choice after them (``force``); greedy's drafts kept up to the first its choice parts from, and its choice
        there; a Chooser's that speculates by Chooser.speculated (greedy's over a bias or penalties alike, a sampled
        choice's distribution kept); any other choice's at the first position alone."""
        batch = len(self.prompts)
        running = [row for row in range(batch) if not self.done[row]]
        greedy = np.argmax(step.ahead, axis=-1)  # [batch, positions]: greedy's token after each
        if step.forced:
            rows = [[*d, int(greedy[r, len(d)])] for r, d in enumerate(step.drafts)]
        elif choose is GREEDY:
            counts = _confirmed(step.ahead, step.drafts) if step.drafts else np.ones(batch, dtype=np.int64)
            rows = [greedy[r, :n].tolist() for r, n in enumerate(counts)]
        elif getattr(choose, "speculates", False) and step.drafts:
            return choose.speculated(step.ahead, step.drafts, self.history, running)
        else:
            rows = [[int(t)] for t in choose(step.logits, self.history)]
        return [row if not self.done[r] else [] for r, row in enumerate(rows)]

    def force(self, ids: Sequence[Sequence[int]]) -> None:
        """The next step runs each row's ``ids`` after its next token, all kept as its tokens (teacher-forced, in
        one run), and ``take`` chooses the token after the last of them: a draft model catching up with what its
        target kept."""
        if len(ids) != len(self.prompts) or self._ahead is not None or not self.index:
            raise PtxError("force() gives each row's ids for the next step, between two steps after the first")
        self._forced = [[int(t) for t in row] for row in ids]

    def rewind(self, length: int) -> None:
        """One row run alone: its prompt and tokens cut to their first ``length`` ids (its prompt at least), the last
        of them its next token again, the positions after it let go from the cache (a draft model's guesses that
        its target did not keep)."""
        if len(self.prompts) != 1 or self.host is not self or self._ahead is not None or not self.index \
                or self.finished:
            raise PtxError("rewind() is for a decoding of one row run alone, between two of its steps")
        kept = length - len(self.prompts[0])
        if not 0 <= kept <= len(self.tokens[0]):
            raise PtxError(f"rewind({length}): the row holds its prompt of {len(self.prompts[0])} ids and "
                           f"{len(self.tokens[0])} tokens")
        self._settle()
        drop = len(self.tokens[0]) - kept
        if drop:
            self.cache.truncate(self.cache.length - drop)
            self._mask = self._mask[:, :self.cache.length]
            self._position = self._position - drop
            del self.tokens[0][kept:], self.history[0][length:], self._margins[0][kept:], self._tops[0][kept:]
            self._next[0] = self.history[0][-1]

    def _keep_position(self, j: int, chosen: np.ndarray, active: np.ndarray) -> list[int | None]:
        """Position ``j``'s ``chosen`` token appended to each ``active`` row (the record read off that position's
        logits), which ends at an end-of-sequence id or at max_new_tokens; None for the others."""
        top, other = logit_and_best_other(self._ahead[:, j], chosen)
        new: list[int | None] = []
        for row in range(len(self.prompts)):
            if not active[row] or self.done[row]:
                new.append(None)
                continue
            token = int(chosen[row])
            self.tokens[row].append(token)
            self.history[row].append(token)
            self._margins[row].append(float(top[row] - other[row]))
            self._tops[row].append(float(top[row]))
            self._next[row], self._kept[row] = token, j + 1
            new.append(token)
            if token in self.eos or len(self.tokens[row]) >= self.max_new_tokens:
                self.done[row] = True
        return new

    def _end_step(self) -> None:
        self._ahead = None
        self.index += 1
        self._next[self.done] = self.generation.pad
        if self.finished:
            self._release()  # nothing runs again: the cache goes now, not with the decoding

    def end(self, row: int) -> None:
        """End prompt ``row`` after the tokens it has (its caller's reason: a stop string in its text); its
        row runs on, unread, fed the pad id."""
        if self.done[row]:
            return
        self.done[row] = True
        self._next[row] = self.generation.pad
        if self.finished and self._ahead is None:
            self._release()

    def _release(self) -> None:
        """Let the cache go where it is this decoding's own (a batch's member leaves it at the batch's next step)."""
        if self.host is self:
            self.cache.release()
            self._mask = np.zeros((0, 0), dtype=np.int64)
            self.members, self._width = [], 0

    def next_tokens(self, choose: "Choose" = None) -> list[int | None]:
        """One step, its tokens chosen by ``choose`` (GREEDY by default) and appended: each prompt's new token
        (None where ended); where the step kept drafts, its last one."""
        taken = self.take(self.step(), choose)
        return [row[-1] if row else None for row in taken]

    def to_end(self, choose: "Choose" = None) -> Decoded:
        """Every step left, each one's tokens chosen by ``choose`` (GREEDY by default): the decoding's record."""
        for step in self:
            self.take(step, choose)
        return self.decoded()

    def decoded(self) -> Decoded:
        """The decoding so far: each prompt's tokens, their record, the time."""
        tokens = [list(t) for t in self.tokens]
        return Decoded(tokens, Steps(tokens, [list(m) for m in self._margins], [list(t) for t in self._tops]),
                       self.prefill_s, self.decode_s, max(self.index - 1, 0), self.encode_s)


class Batch(Decoding):
    """Continuous batching's name for a Decoding with no prompts of its own, which other decodings (a server's
    requests) ``join`` and ``leave`` between two of its ``step()``s: each step runs every member's rows once and
    returns each member and its Step (its rows' logits), so that the weights are read once for all of them."""

    def __init__(self, run: Run | None, signature: Signature, generation: Generation, *, cache: Cache | None = None):
        super().__init__(run, signature, generation, None, 1, cache=cache)

    def step(self) -> list[tuple[Decoding, Step]]:  # type: ignore[override] - a batch's step is its members'
        return self.steps()


def _confirmed(ahead: np.ndarray, drafts: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row's positions greedy keeps of a step that ran its ``drafts`` after its next token: 1, and one more
    for each draft the largest logit before it confirms, up to the first it does not."""
    chosen = np.argmax(ahead, axis=-1)  # [batch, positions]: greedy's token after each fed position
    counts = np.ones(len(ahead), dtype=np.int64)
    for row, guess in enumerate(drafts):
        for j, token in enumerate(guess):
            if chosen[row, j] != token:
                break
            counts[row] += 1
    return counts
