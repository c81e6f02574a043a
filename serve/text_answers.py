"""A served model's text answers: the one generation function the OpenAI routes (openai_routes.py) call, so
that how answers are made (one request at a time through the model's Generator today, a batch that requests
join at each step tomorrow) changes under the protocol and not in it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from ptx.contract.sampling import Sampling
from ptx.infer.model.text_generation import Answers, generate_text


@dataclass
class Piece:
    """New text of one answer (``row``: prompt k's answer j is row k * n + j), whole characters only."""

    row: int
    text: str


async def answers(served, prompts: list[list[int]], sampling: Sampling, n: int) -> AsyncIterator[Piece | Answers]:
    """``n`` answers to each prompt (token ids) from ``served`` (a ServedModel with a generator and a
    tokenizer): each Piece as it is whole, then the Answers. Leaving the iteration (a client gone) stops
    pulling the decoding after the step under way."""
    def work(emit, wanted) -> Answers:
        return generate_text(served.model, prompts, served.text, sampling, n=n,
                             on_text=lambda row, text: emit(Piece(row, text)), wanted=wanted)

    async for _, item in served.generator.events(work):
        yield item
