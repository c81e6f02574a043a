"""Continuous batching: several decodings (one per request) run as one batch, each joining between two steps
and leaving when it is done or no longer wanted, so that every step reads the weights once for all of them
(decoding is bound by that read on a CPU). That batch is the one decoding (infer/model/generation.py's Decoding,
multi-row: ``Batch`` is its name for one with no prompts of its own), its cache the runner's (IO binding, the
in-place buffer, OpenVINO's state kept as a decoding alone keeps them):

    batch = Batch(None, model.signature, model.generation, cache=model.runner.new_cache(model.generation))
    first = batch.join(decoding)             # its prompts run alone (its prefill), its rows join next step
    decoding.append(GREEDY(first.logits, decoding.history))
    for decoding, step in batch.step():      # one run of every member's rows
        decoding.take(step, choose)
    batch.leave(decoding)                    # a client gone: its rows go before the next step
    firsts = batch.join_together([a, b])     # several new ones in one prefill (each left-padded, as one
                                             # decoding's prompts are)

``Apart`` runs decodings that cannot share a batch one after another, with the same interface.
"""
from __future__ import annotations

from typing import Sequence

from ptx.errors import PtxError

from .generation import Batch, Decoding, Step
from .rows import _running

__all__ = ["Apart", "Batch"]


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
        if decoding.index or decoding.host is not decoding:
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
