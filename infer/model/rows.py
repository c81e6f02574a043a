"""The rows a decoding runs (infer/model/generation.py's Decoding is one of these): its own prompts' and those of the
decodings that joined it (continuous batching: a server's requests), in one cache the runner made
(infer/runtime/cache.py). A joiner's prompts run alone (its prefill, from an empty cache of the same form) and its
cache joins the others' at the longer past length, the shorter left-padded with zeros its mask hides; each step
runs every member's rows once (each row's next token and the guesses its member's drafter makes after it); the
positions a row did not keep are cut from the cache before the next run (a row that kept fewer than another has
them hidden by its mask); a member that is done or that leaves takes its rows out, and the past is cut where no
row needs its oldest positions. The mask and the positions are the rows'; the cache's form is the cache's.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.generation import left_padded, positions
from ptx.errors import PtxError

from ..runtime.cache import Cache

# Decoding and Step (generation.py, which builds on this module) are named in annotations only: importing them here
# would close a circle.
# The most tokens a drafter guesses for one step (transformers' prompt lookup guesses 10): the cache is kept with
# that many positions of room past what a decoding's tokens need.
DRAFT_ROOM = 10


class Rows:
    """The multi-row part of a Decoding: ``members`` (the decodings whose rows it runs, in row order), ``join`` and
    ``join_together`` (their prompts' run), ``leave``, and ``steps()`` (one run of every member's rows). Its
    ``cache``, ``generation``, ``members``, mask and positions are set by Decoding's constructor."""

    def join(self, decoding: "Decoding") -> Step:
        """Run ``decoding``'s prompts alone (its prefill, from an empty cache) and return that step, whose tokens
        its caller appends; its rows run in this decoding's steps from the next one."""
        return self._prefill([decoding])[0]

    def join_together(self, decodings: Sequence["Decoding"]) -> list[Step]:
        """Several new decodings' prompts in one run (their prefill, each left-padded to the longest as one
        decoding's prompts are), so that the members wait one prefill for all of them rather than one per joiner:
        each one's first Step, whose tokens its caller appends; their rows run in this decoding's next steps."""
        return self._prefill(decodings)

    def _prefill(self, decodings: Sequence["Decoding"]) -> list[Step]:
        """The joiners' prompts run in one run from an empty cache of this one's form, which then joins it."""
        for decoding in decodings:
            if decoding.index or decoding in self.members or (decoding.host is not decoding):
                raise PtxError("a decoding joins a batch before its first step: make a new one")
            if decoding.generation != self.generation:
                raise PtxError("a decoding joins the batch of its own model only")
        self._settle()
        gen, prompts = self.generation, [p for d in decodings for p in d.prompts]
        ids, mask = left_padded(prompts, gen.pad)
        position = positions(mask)
        width = ids.shape[1]
        every = any(d.keep_prompt_logits for d in decodings)
        fresh = self.cache.empty(len(prompts))
        fresh.reserve(width + max(d.max_new_tokens for d in decodings) + DRAFT_ROOM)
        start = time.perf_counter()
        out = self._run(fresh, {**self._feeds(ids, mask, position), **gen.kept_logits(width, every)})
        spent = time.perf_counter() - start
        logits = np.asarray(out[gen.logits])
        self._merge(decodings, fresh, mask, position[:, -1] + 1)
        steps, row = [], 0
        for decoding in decodings:
            rows = slice(row, row + len(decoding.prompts))
            if decoding.keep_prompt_logits:
                decoding.prompt_logits = logits[rows]
            steps.append(decoding._ran(logits[rows, -1:, :], spent))
            row = rows.stop
        return steps

    def _merge(self, decodings: Sequence["Decoding"], fresh: Cache, mask: np.ndarray, position: np.ndarray) -> None:
        """The joiners' rows (their cache ``fresh``, ``mask`` and next ``position``) after this decoding's, both at
        the longer past length (the shorter padded on its left, hidden by its mask)."""
        length = max(self.cache.length, fresh.length)
        self.cache.fit(length)
        fresh.fit(length)
        self.cache.add(fresh)
        self._mask = np.concatenate([_left_padded(self._mask, length), _left_padded(mask, length)])
        self._position = np.concatenate([self._position, position])
        self.members.extend(decodings)
        for decoding in decodings:
            decoding.host = self
        self._trim()

    def leave(self, decoding: "Decoding") -> None:
        """``decoding``'s rows go (its client is gone, or it is done), with their cache: at once where no member's
        tokens of the last step are awaited, else before the next step; its record stays its own."""
        self._leaving.append(decoding)
        if all(member._ahead is None for member in self.members):
            self._settle()
            self._regroup()

    def steps(self) -> list[tuple["Decoding", Step]]:
        """One run of every member's rows (each row's next token, and the drafts its member's drafter guesses after
        it): each member and its Step, in row order."""
        self._settle()
        self._regroup()
        if not self.members:
            return []
        guessing = self.cache.widest() != 1
        for member in self.members:
            member._check_runnable()
            member._draft(guessing)
        width = 1 + max(len(d) for m in self.members for d in m._drafts)
        ids = np.concatenate([m._fed(width) for m in self.members])
        mask = np.concatenate([self._mask, np.ones((len(ids), width), dtype=np.int64)], axis=1)
        position = self._position[:, None] + np.arange(width)
        start = time.perf_counter()
        out = self._run(self.cache, {**self._feeds(ids, mask, position),
                                     **self.generation.kept_logits(width, every=width > 1)})
        spent = time.perf_counter() - start
        self._mask, self._width = mask, width
        logits = np.asarray(out[self.generation.logits])
        steps, row = [], 0
        for member in self.members:
            rows = slice(row, row + len(member.prompts))
            steps.append((member, member._ran(logits[rows], spent)))
            row = rows.stop
        return steps

    def _run(self, cache: Cache, feeds: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """One run of the decoder with ``cache`` as its past (an encoder-decoder adds its encoder's answers)."""
        return cache.run(feeds)

    def _settle(self) -> None:
        """The last run's positions each row did not keep let go: the cache cut after the most any row kept, and a
        row that kept fewer has the rest hidden by its mask; each row's next position past the ones it kept."""
        if not self._width:
            return
        if any(m._ahead is not None for m in self.members):
            raise PtxError("a member's tokens of the last step were not taken: append() them before the next step")
        kept = np.concatenate([m._kept for m in self.members]) if self.members else np.zeros(0, dtype=np.int64)
        before = self.cache.length - self._width
        most = max(int(kept.max()) if len(kept) else 0, 1)
        kept[kept == 0] = most  # a row that took no token (done before the step) is unread: none of its own hidden
        if most < self._width:
            self.cache.truncate(before + most)
            self._mask = self._mask[:, :before + most]
        for row in np.flatnonzero(kept < most):
            self._mask[row, before + kept[row]:] = 0
        self._position = self._position + kept
        self._width = 0

    def _regroup(self) -> None:
        """The rows of the members that are done or leaving taken out (their cache with them), and the past cut
        where no row needs its oldest positions."""
        staying = [d for d in self.members if _running(d, self._leaving)]
        self._leaving = []
        if len(staying) == len(self.members):
            return
        starts = np.cumsum([0] + [len(d.prompts) for d in self.members])
        kept = [np.arange(starts[k], starts[k + 1]) for k, d in enumerate(self.members) if d in staying]
        rows = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
        self.cache.keep(rows)
        self._mask, self._position = self._mask[rows], self._position[rows]
        self.members = staying
        self._trim()

    def _trim(self) -> None:
        """The oldest positions that no row's mask keeps cut from the cache (a longer member gone, padding)."""
        if not len(self._mask):
            self._mask = np.zeros((0, 0), dtype=np.int64)
            if self.cache.rows:
                self.cache.release()
            return
        needed = self._mask.any(axis=0)
        first = int(needed.argmax()) if needed.any() else self._mask.shape[1]
        if first:
            self.cache.fit(self.cache.length - first)
            self._mask = np.ascontiguousarray(self._mask[:, first:])

    def _feeds(self, ids: np.ndarray, mask: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {self.generation.input_ids: ids}
        if self.generation.attention_mask:
            feeds[self.generation.attention_mask] = mask
        if self.generation.position_ids:
            feeds[self.generation.position_ids] = position
        return feeds


def _left_padded(mask: np.ndarray, length: int) -> np.ndarray:
    """``mask`` [rows, n] with zeros before it, ``length`` columns (n at most)."""
    return np.pad(mask, [(0, 0), (length - mask.shape[1], 0)])


def _running(decoding: Decoding, leaving: Sequence[Decoding]) -> bool:
    """Whether ``decoding`` runs at the next step: not finished, and not one whose client left (``leaving``)."""
    return not decoding.finished and not any(decoding is gone for gone in leaving)
