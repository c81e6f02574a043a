"""A decoding's record (``Decoding.decoded()``, ``Model.decode``): each prompt's new tokens, what the judge
compares of them, and the time the prompt's run and the steps after it took."""
from __future__ import annotations

from dataclasses import dataclass

from ptx.contract.generation import Steps


@dataclass
class Decoded:
    """A decoding: each prompt's new tokens (up to and with the end-of-sequence id where one came), the
    record the judge compares (tokens and top-2 margins), and its time: the prompt's run and the steps
    after it (``decode_s`` over ``decode_steps`` runs of the whole batch, which gave ``decode_tokens``), and an encoder-decoder's encoder
    run apart (``encode_s``, before the prompt's run; 0 for a causal LM)."""

    tokens: list[list[int]]
    steps: Steps
    prefill_s: float
    decode_s: float
    decode_steps: int
    encode_s: float = 0.0

    @property
    def decode_tokens(self) -> int:
        """The tokens the steps after the prompt's run gave the longest answer: as many as the steps, one a step,
        or more where a step kept drafts."""
        return max((len(t) - 1 for t in self.tokens), default=0)

    @property
    def decode_ms_per_token(self) -> float | None:
        """Milliseconds per token of every prompt after the prompt's run (a step's, where each step gives one)."""
        return 1000 * self.decode_s / self.decode_tokens if self.decode_tokens > 0 else None
