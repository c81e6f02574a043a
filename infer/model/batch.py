"""Continuous batching: several decodings (infer/model/generation.py's Decoding, one per request) run as one
batch, each joining between two steps and leaving when it is done or no longer wanted, so that every step
reads the weights once for all of them (decoding is bound by that read on a CPU).

    batch = Batch(model.runner.run, model.signature, model.generation)
    first = batch.join(decoding)             # its prompts run alone (its prefill), its rows join next step
    decoding.append(GREEDY(first.logits, decoding.history))
    for decoding, step in batch.step():      # one run of every member's rows
        decoding.append(choose(step.logits, decoding.history))
    batch.leave(decoding)                    # a client gone: its rows go before the next step
    firsts = batch.join_together([a, b])     # several new ones in one prefill (each left-padded, as one
                                             # decoding's prompts are), their padding cut from their cache

A joining decoding's prompts run alone, from an empty past, then its cache joins the batch's: running it
with the batch instead would give every row the joiner's prompt length of new columns (held in the cache
for good, masked) and make the others' step as long as a prefill. Alone, the others wait one prefill, the
joiner's, between two of their steps.

The rows have different past lengths. The decoder takes one past length for the batch and a mask over
past and new, so each member's cache sits at the right end of the batch's, left-padded with zeros that
its mask hides: each step's mask is the members' own masks, left-padded to the batch's length with 0, and
each row's positions are its own, so a row's tokens are those it gets alone (up to ties: sums over padding
may round differently). A member that leaves takes its rows out of every cache tensor (the batch axis);
when the longest leaves, the batch's past is cut to the longest member's, so padding never grows the
cache past what its members need.

The cache is numpy arrays here (``Past``); a runner that keeps it inside its runtime does the same four
things to its own: take the rows a batch keeps, pad or cut the past axis on the left, join two batches'
rows, and hand a prefilled decoding's cache to the batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature
from ptx.errors import PtxError

from .generation import Decoding, Run, Step, empty_past


@dataclass(frozen=True)
class Past:
    """A batch's cache as numpy arrays: each past input's array, with its batch axis and its past axis."""

    arrays: dict[str, np.ndarray]
    batch_axes: dict[str, int]
    past_axis: int

    @property
    def length(self) -> int:
        return next(iter(self.arrays.values())).shape[self.past_axis] if self.arrays else 0

    def rows(self, kept: np.ndarray) -> "Past":
        """Only the rows ``kept`` (their indices, in order)."""
        return self._with({name: np.take(a, kept, axis=self.batch_axes[name]) for name, a in self.arrays.items()})

    def fitted(self, length: int) -> "Past":
        """The past axis made ``length`` long on its left: cut (the oldest columns, which every row's mask
        hides) or padded with zeros (hidden by the mask likewise)."""
        have = self.length
        if length == have:
            return self
        if length < have:
            cut = slice(have - length, None)
            return self._with({name: np.ascontiguousarray(a[(slice(None),) * self.past_axis + (cut,)])
                               for name, a in self.arrays.items()})
        padded = {}
        for name, a in self.arrays.items():
            widths = [(0, 0)] * a.ndim
            widths[self.past_axis] = (length - have, 0)
            padded[name] = np.pad(a, widths)
        return self._with(padded)

    def joined(self, *others: "Past") -> "Past":
        """This past's rows, then each of ``others``' (of the same length), in one copy."""
        return self._with({name: np.concatenate([a, *(o.arrays[name] for o in others)], axis=self.batch_axes[name])
                           for name, a in self.arrays.items()})

    def _with(self, arrays: dict[str, np.ndarray]) -> "Past":
        return Past(arrays, self.batch_axes, self.past_axis)


class Batch:
    """Decodings of one decoder (``run``: its runner's, ``signature``, ``generation``: its contract) that
    run as one batch. ``join(decoding)`` runs a new decoding's prompts alone and returns that first step;
    its rows run with the others from the next ``step()``, which runs every member's rows once and returns
    each member's Step (its rows' logits). The caller appends each decoding's tokens, as for a decoding run
    alone; a member that is finished, or that ``leave`` named, is dropped before the next step.
    ``members``, ``rows`` and ``past_length`` say where it stands."""

    def __init__(self, run: Run, signature: Signature, generation: Generation):
        self._run, self.signature, self.generation = run, signature, generation
        self._batch_axes = {}
        for past, _ in generation.cache:
            axis = signature.input(past).batch_axis
            self._batch_axes[past] = 0 if axis is None else axis
        self.members: list[Decoding] = []  # their rows are the cache's, in this order
        self._joining: list[tuple[Decoding, Past | None]] = []  # prefilled (their past, where run together),
        # merged at the next step
        self._leaving: list[Decoding] = []  # dropped at the next step
        self._past = Past({}, self._batch_axes, generation.past_axis)

    @property
    def rows(self) -> int:
        """The rows the next step runs (the members' and the joining decodings')."""
        joining = [d for d, _ in self._joining]
        return sum(len(d.prompts) for d in (*self.members, *joining) if _running(d, self._leaving))

    @property
    def past_length(self) -> int:
        return self._past.length

    def join(self, decoding: Decoding) -> Step:
        """Run ``decoding``'s prompts alone (its prefill, from an empty past) and return that step, whose tokens
        its caller appends; its rows join the batch's at the next ``step()``."""
        self._check_joining(decoding)
        first = decoding.step()
        self._joining.append((decoding, None))
        return first

    def join_together(self, decodings: Sequence[Decoding]) -> list[Step]:
        """Several new decodings' prompts in one run (their prefill, each left-padded to the longest as one
        decoding's prompts are), so that the members wait one prefill for all of them rather than one per
        joiner, and a burst of requests gets its first tokens together: each one's first Step, whose tokens its
        caller appends; their rows join the batch's at the next ``step()``."""
        if len(decodings) == 1:
            return [self.join(decodings[0])]
        for decoding in decodings:
            self._check_joining(decoding)
        gen, pending = self.generation, [d.pending for d in decodings]
        width = max(feeds[gen.input_ids].shape[1] for feeds in pending)

        def stacked(name: str, pad: int) -> np.ndarray:  # each decoding's feeds left-padded to the widest
            return np.concatenate([np.pad(f[name], [(0, 0), (width - f[name].shape[1], 0)], constant_values=pad)
                                   for f in pending])

        feeds = {gen.input_ids: stacked(gen.input_ids, gen.pad), gen.attention_mask: stacked(gen.attention_mask, 0)}
        if gen.position_ids:
            feeds[gen.position_ids] = stacked(gen.position_ids, 0)
        rows = sum(len(d.prompts) for d in decodings)
        start = time.perf_counter()
        out = self._run({**feeds, **gen.kept_logits(width), **empty_past(self.signature, gen, rows)})
        spent = time.perf_counter() - start
        present = Past({past: out[present] for past, present in gen.cache}, self._batch_axes, gen.past_axis)
        logits = np.asarray(out[gen.logits])[:, -1, :]
        steps, row = [], 0
        for decoding, own in zip(decodings, pending):
            n = len(decoding.prompts)
            steps.append(decoding.ran(logits[row:row + n], spent))
            decoding.hand_over_past()  # its own (empty) past: its rows' are the joint run's, its padding cut
            kept = present.rows(np.arange(row, row + n)).fitted(own[gen.attention_mask].shape[1])
            self._joining.append((decoding, kept))
            row += n
        return steps

    def _check_joining(self, decoding: Decoding) -> None:
        if decoding.index or decoding.batched:
            raise PtxError("a decoding joins a batch before its first step: make a new one")
        if decoding.generation != self.generation:
            raise PtxError("a decoding joins the batch of its own model only")

    def leave(self, decoding: Decoding) -> None:
        """``decoding``'s rows go before the next step (its client is gone); its record stays its own."""
        self._leaving.append(decoding)

    def step(self) -> list[tuple[Decoding, Step]]:
        """One run of every member's rows: each member and its Step (its rows' logits), in row order."""
        self._regroup()
        if not self.members:
            return []
        ids, mask, positions = [], [], []
        width = self._past.length + 1
        for decoding in self.members:
            feeds = decoding.pending
            ids.append(feeds[self.generation.input_ids])
            own = feeds[self.generation.attention_mask]
            mask.append(np.pad(own, [(0, 0), (width - own.shape[1], 0)]))  # hidden: the batch's longer past
            if self.generation.position_ids:
                positions.append(feeds[self.generation.position_ids])
        feeds = {self.generation.input_ids: np.concatenate(ids), self.generation.attention_mask: np.concatenate(mask)}
        if self.generation.position_ids:
            feeds[self.generation.position_ids] = np.concatenate(positions)
        start = time.perf_counter()
        out = self._run({**feeds, **self.generation.kept_logits(1), **self._past.arrays})
        spent = time.perf_counter() - start
        self._past = self._past._with({past: out[present] for past, present in self.generation.cache})
        logits = np.asarray(out[self.generation.logits])[:, -1, :]
        steps, row = [], 0
        for decoding in self.members:
            rows = len(decoding.prompts)
            steps.append((decoding, decoding.ran(logits[row:row + rows], spent)))
            row += rows
        return steps

    def _regroup(self) -> None:
        """The cache holds the rows of the members still running, then the joining ones', at the past length
        the longest of them needs (cut where the longest left, padded where a joiner is longer)."""
        staying = [d for d in self.members if _running(d, self._leaving)]
        joining = [(d, past) for d, past in self._joining if _running(d, self._leaving)]
        if len(staying) < len(self.members):
            starts = np.cumsum([0] + [len(d.prompts) for d in self.members])
            kept = [np.arange(starts[k], starts[k + 1]) for k, d in enumerate(self.members)
                    if _running(d, self._leaving)]
            self._past = self._past.rows(np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64))
        self._joining, self._leaving = [], []
        length = max((d.past_length for d in (*staying, *(d for d, _ in joining))), default=0)
        parts = [self._past.fitted(length)] if staying else []
        for decoding, given in joining:
            if given is None:  # prefilled alone: its cache is still its own
                given = Past(decoding.hand_over_past(), self._batch_axes, self.generation.past_axis)
            parts.append(given.fitted(length))
        self._past = parts[0].joined(*parts[1:]) if parts else self._past._with({})
        self.members = staying + [d for d, _ in joining]


class Apart:
    """Batch's interface over decodings that each run alone: an encoder-decoder's (infer/model/encoder_decoding.py),
    and a decoder's that takes no position ids (it counts its own from a row's first id, so a row left-padded to
    join others would count the padding too: onnxruntime-genai's builder output).
    Its cross-attention past is each request's own (its encoder's answers on its own sources, as long as its
    source), fed at every step beside the decoder's past, and Batch does not merge it: rows of several requests
    would need their sources' past padded to one length and masked, which Batch's cache of the decoder's own
    past alone does not do. So each member runs its own step, one after another, and the server's requests
    still join and leave between two steps as they do with a Batch."""

    def __init__(self):
        self.members: list[Decoding] = []
        self._leaving: list[Decoding] = []

    @property
    def rows(self) -> int:
        """The rows the next step runs (the members' still running)."""
        return sum(len(d.prompts) for d in self._staying())

    def join(self, decoding: Decoding) -> Step:
        """Run ``decoding``'s first step (its encoder, then its prompts) and return it; it runs with the others from
        the next ``step()``."""
        if decoding.index or decoding.batched:
            raise PtxError("a decoding joins a batch before its first step: make a new one")
        first = decoding.step()
        self.members.append(decoding)
        return first

    def join_together(self, decodings: Sequence[Decoding]) -> list[Step]:
        """Each new decoding's first step, one after another (no joint prefill: their pasts are their own)."""
        return [self.join(d) for d in decodings]

    def leave(self, decoding: Decoding) -> None:
        """``decoding`` runs no more steps (its client is gone); its record stays its own."""
        self._leaving.append(decoding)

    def step(self) -> list[tuple[Decoding, Step]]:
        """Each unfinished member's own step, in the order they joined: each member and its Step."""
        self.members, self._leaving = self._staying(), []
        if not self.members:
            return []
        return [(d, d.step()) for d in self.members]

    def _staying(self) -> list[Decoding]:
        return [d for d in self.members if _running(d, self._leaving)]


def _running(decoding: Decoding, leaving: Sequence[Decoding]) -> bool:
    """Whether ``decoding`` runs at the next step: not finished, and not one whose client left (``leaving``)."""
    return not decoding.finished and not any(decoding is gone for gone in leaving)
