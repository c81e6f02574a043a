"""What a decoding holds beside the runtime's weights, as the memory plan counts it (its cache at its longest and the
prompt's run's logits), and the one-line refusal of a decoding that cannot fit before its first step."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature

from ..runtime import memory_plan


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


class DecodingOutOfMemory(memory_plan.OutOfMemoryPlan):
    """A decoding refused before its first step: ``shortfall`` says what it needs and what is available, the message
    adds what its caller can ask for instead (a judge, whose prompts are recorded, says its own)."""

    def __init__(self, shortfall: str, advice: str):
        super().__init__(f"{shortfall}: {advice}")
        self.shortfall = shortfall


def require_decoding_room(signature: Signature, generation: Generation, prompts: Sequence[Sequence[int]],
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
        raise DecodingOutOfMemory(why, "ask for fewer prompts at once or fewer new tokens")
