"""A served model's text answers: the one generation function the OpenAI routes (openai_routes.py) call, so
that how answers are made (a request's rows in the model's running batch: serve/generator.py) changes under
the protocol and not in it."""
from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator

from ptx.contract.sampling import Sampling
from ptx.infer.model.text_generation import Answering, Answers


@dataclass
class Piece:
    """New text of one answer (``row``: prompt k's answer j is row k * n + j), whole characters only."""

    row: int
    text: str


async def answers(served, prompts: list[list[int]], sampling: Sampling, n: int) -> AsyncIterator[Piece | Answers]:
    """``n`` answers to each prompt (token ids) from ``served`` (a ServedModel with a generator and a
    tokenizer): each Piece as it is whole, then the Answers. The request's rows run in the model's batch;
    leaving the iteration (a client gone) takes them out of it at the next step."""
    pieces: list[Piece] = []
    answering = Answering(served.model, prompts, served.text, sampling, n=n,
                          on_text=lambda row, text: pieces.append(Piece(row, text)))

    def say(tokens) -> list[Piece]:  # on the generation thread, where a stop string ends its row
        answering.took(tokens)
        said = pieces[:]
        pieces.clear()
        return said

    # closed here, not when the loop gets round to finalizing it: until then its rows stay in the batch
    async with aclosing(served.generator.events(answering.decoding, answering.choose, say)) as events:
        async for piece in events:
            yield piece
    made = answering.answers()  # the decoding has left the batch: its streams' rest is read here
    for piece in pieces:
        yield piece
    yield made
