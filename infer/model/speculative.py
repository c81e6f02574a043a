"""Speculative decoding's drafters: what guesses the tokens after each row's next one, so that one step of the
decoding (infer/model/generation.py) runs the guesses after the next token and keeps those the choice confirms,
giving several tokens for one read of the weights and the tokens greedy gives one step at a time, exactly.

``PromptLookup`` (``--speculate ngram``) is prompt-lookup decoding (transformers' PromptLookupCandidateGenerator,
vLLM's ngram proposer): the row's last few tokens are looked for earlier in its prompt and answer, and the tokens
that followed them there are the guesses. It costs no model, and pays where the answer repeats its context (a
document quoted, code edited, a summary's names).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ptx.errors import InputError

NGRAM = "ngram"
DRAFT_TOKENS = 10  # transformers' prompt_lookup_num_tokens
LONGEST_NGRAM = 3  # the longest run of last tokens looked for (transformers: max_matching_ngram_size, 2 by default)


class PromptLookup:
    """Prompt-lookup guesses: the ``tokens`` (at most) that followed the latest earlier place where the row's last
    n tokens appear, n from ``longest`` down to 1 (a longer match is a better guess); a place whose continuation is
    ``tokens`` long is preferred to a later one cut short by the history's end. No guess where nothing matches."""

    def __init__(self, tokens: int = DRAFT_TOKENS, longest: int = LONGEST_NGRAM):
        if tokens < 1 or longest < 1:
            raise InputError(f"prompt lookup guesses at least 1 token after a match of at least 1: not {tokens} "
                             f"after {longest}")
        self.tokens, self.longest = int(tokens), int(longest)

    def propose(self, histories: Sequence[Sequence[int]], limits: Sequence[int]) -> list[list[int]]:
        return [self.draft(history, limit) for history, limit in zip(histories, limits)]

    def draft(self, history: Sequence[int], limit: int | None = None) -> list[int]:
        """The guesses after ``history`` (a row's prompt, its tokens and its next one), at most ``limit``."""
        most = self.tokens if limit is None else min(self.tokens, int(limit))
        ids = np.asarray(history, dtype=np.int64)
        if most <= 0 or len(ids) < 2:
            return []
        for n in range(min(self.longest, len(ids) - 1), 0, -1):
            # each earlier place the last n tokens appear, the last n themselves left out
            hits = np.flatnonzero((sliding_window_view(ids[:-1], n) == ids[-n:]).all(axis=1))
            if not len(hits):
                continue
            starts = hits + n
            full = starts[starts + most <= len(ids)]
            start = int(full[-1] if len(full) else starts[-1])
            return ids[start:start + most].tolist()
        return []


def drafter_of(speculate: str | None, tokens: int = DRAFT_TOKENS):
    """The drafter ``--speculate`` names: None (no guesses) or ``ngram`` (prompt lookup); else one line."""
    if speculate is None or speculate in ("", "off", "none"):
        return None
    if speculate == NGRAM:
        return PromptLookup(tokens)
    raise InputError(f"--speculate {speculate}: give {NGRAM} (prompt lookup: guesses from the prompt and answer)")
