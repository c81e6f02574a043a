"""Speculative decoding's drafters: what guesses the tokens after each row's next one, so that one step of the
decoding (infer/model/generation.py) runs the guesses after the next token and keeps those the choice confirms,
giving several tokens for one read of the weights and the tokens greedy gives one step at a time, exactly.

``PromptLookup`` (``--speculate ngram``) is prompt-lookup decoding (transformers' PromptLookupCandidateGenerator,
vLLM's ngram proposer): the row's last few tokens are looked for earlier in its prompt and answer, and the tokens
that followed them there are the guesses. It costs no model, and pays where the answer repeats its context (a
document quoted, code edited, a summary's names).

``DraftModel`` (``--speculate FILE``) is a draft model's greedy guesses (transformers' assisted generation,
onnxruntime-genai's and openvino-genai's speculative decoding): a small LM exported by ptx with the target's
tokenizer decodes a few tokens ahead of each row; the target's step keeps those its own greedy choice confirms.
Each row's draft is a Decoding of the draft model of its own, kept between steps: the guesses the target did not
keep are cut from its cache (``Decoding.rewind``) and the target's own token run in (``Decoding.force``), so a
step costs the draft one run of a few positions and one run per further guess, never a prompt's run again.
"""
from __future__ import annotations

from typing import Sequence

import weakref
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ptx.errors import InputError, PtxError

NGRAM = "ngram"
DRAFT_TOKENS = 10  # transformers' prompt_lookup_num_tokens
MODEL_TOKENS = 4  # a draft model's guesses a step (each one more run of the draft)
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

    def propose(self, histories: Sequence[Sequence[int]], limits: Sequence[int], owner=None) -> list[list[int]]:
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


class DraftModel:
    """A draft model's greedy guesses: ``model`` (ptx.infer.load's, a causal LM exported with its cache, of the
    target's vocabulary) decodes ``tokens`` ahead of each row. ``close()`` closes the model."""

    def __init__(self, model, tokens: int = MODEL_TOKENS):
        self.model, self.tokens = model, int(tokens)
        # each owner's (a target decoding's) rows' draft decodings, gone with the owner
        self._rows: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def propose(self, histories: Sequence[Sequence[int]], limits: Sequence[int], owner=None) -> list[list[int]]:
        key = owner if owner is not None else self
        drafts = self._rows.setdefault(key, [None] * len(histories))
        guesses = []
        for row, (history, limit) in enumerate(zip(histories, limits)):
            most = min(self.tokens, int(limit))
            if most <= 0:
                guesses.append([])
                continue
            drafts[row] = self._caught_up(drafts[row], list(history), most)
            for _ in range(most - 1):
                drafts[row].take(drafts[row].step())
            guesses.append(drafts[row].tokens[0][-most:])
        return guesses

    def _caught_up(self, draft, history: list[int], most: int):
        """``draft`` (the row's draft decoding, or None) having run ``history`` and chosen its first guess after
        it: its guesses after the longest prefix it shares with ``history`` let go, the rest of ``history`` run in
        one step. A new one (a prompt's run) where it has none, shares less than its prompt, or lacks the room."""
        seen = draft.history[0] if draft is not None else []
        common = 0
        for a, b in zip(seen, history):
            if a != b:
                break
            common += 1
        if draft is None or common < len(draft.prompts[0]) or \
                len(history) - len(draft.prompts[0]) + most >= draft.max_new_tokens:
            draft = self.model.decoding([history], self._room(len(history)), eos=())
            draft.take(draft.step())
            return draft
        draft.rewind(common)
        if len(history) > common:
            draft.force([history[common:]])
        draft.take(draft.step())
        return draft

    def _room(self, prompt: int) -> int:
        """New tokens a row's draft decoding may hold before a new one is made: its positions' room, 2,048 at most
        (its cache is planned for them)."""
        positions = self.model.generation.max_positions
        return max(min(2048, positions - prompt) if positions else 2048, 1)

    def close(self) -> None:
        self._rows.clear()
        self.model.close()


def draft_model(path: str | Path, target, backend: str | None = None, tokens: int = MODEL_TOKENS) -> DraftModel:
    """The draft model in ``path`` for ``target`` (a loaded causal LM): a decoder exported with its cache whose
    vocabulary is the target's; else one line."""
    from .target import load

    draft = load(path, backend=backend)
    try:
        generation, own = draft.generation, target.generation
        if generation is None or generation.encoder is not None:
            raise PtxError(f"--speculate {path}: a draft model is a causal LM exported with its cache (ptx export "
                           "--task text-generation)")
        vocab, want = (m.signature.output(g.logits).shape[-1] for m, g in ((draft, generation), (target, own)))
        if vocab != want:
            raise PtxError(f"--speculate {path}: its vocabulary has {vocab} ids, the model's {want}: a draft model "
                           "shares the model's tokenizer")
        words, theirs = (getattr(m, "text", None) for m in (draft, target))
        if words is not None and theirs is not None and words.tokenizer.get_vocab() != theirs.tokenizer.get_vocab():
            # as many ids, other words: every guess would be another word than the model's, refused at each step
            raise PtxError(f"--speculate {path}: its tokenizer gives its {vocab} ids other words than the model's: a "
                           "draft model shares the model's tokenizer")
    except BaseException:
        draft.close()
        raise
    return DraftModel(draft, tokens)


def speculate_label(speculate: str) -> str:
    """How a row or a line names ``--speculate``: ngram, or the draft model's file name."""
    return speculate if speculate == NGRAM else Path(speculate).name


def drafter_of(speculate: str | None, tokens: int | None = None, target=None):
    """The drafter ``--speculate`` names: None (no guesses), ``ngram`` (prompt lookup), or a draft model's file
    (for ``target``, a loaded causal LM: opened on its backend); else one line."""
    if speculate is None or speculate in ("", "off", "none"):
        return None
    if speculate == NGRAM:
        return PromptLookup(tokens or DRAFT_TOKENS)
    if target is not None and Path(speculate).is_file():
        return draft_model(speculate, target, target.backend, tokens or MODEL_TOKENS)
    raise InputError(f"--speculate {speculate}: give {NGRAM} (prompt lookup: guesses from the prompt and answer) or a "
                     "draft model's file (a small LM exported by ptx with the model's tokenizer)")
