"""A served model's text answers: the one generation function the OpenAI routes (openai_routes.py) call, so
that how answers are made (a request's rows in the model's running batch: serve/generator.py) changes under
the protocol and not in it."""
from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field
from typing import AsyncIterator

from ptx.contract.logprobs import TokenLogprob
from ptx.contract.sampling import Sampling
from ptx.infer.model.text_generation import Answering, Answers


@dataclass
class Piece:
    """New text of one answer (``row``: prompt k's answer j is row k * n + j), whole characters only, and
    where log-probabilities were asked, those of the tokens taken since the last piece (a token whose
    character is not yet whole makes a piece of no text)."""

    row: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Prompted:
    """The prompts have run: each row's prompt's own log-probabilities (ptx.contract.logprobs.prompt_logprobs:
    None for the first token), given once before the first piece where ``answers`` was asked for them."""

    logprobs: list


async def answers(served, prompts: list[list[int]], sampling: Sampling, n: int,
                  prompt_logprobs: bool = False) -> AsyncIterator[Piece | Prompted | Answers]:
    """``n`` answers to each prompt (token ids) from ``served`` (a ServedModel with a generator and a
    tokenizer): each Piece as it is whole, then the Answers (with the prompts' own log-probabilities where
    ``prompt_logprobs`` and the sampling asks for log-probabilities). The request's rows run in the model's
    batch; leaving the iteration (a client gone) takes them out of it at the next step."""
    pieces: list[Piece] = []
    taken: dict[int, list[TokenLogprob]] = {}
    answering = Answering(served.model, prompts, served.text, sampling, n=n,
                          on_text=lambda row, text: pieces.append(Piece(row, text, taken.pop(row, []))),
                          on_logprob=lambda row, entry: taken.setdefault(row, []).append(entry),
                          prompt_logprobs=prompt_logprobs, speculate=served.generator.speculate)

    def say(tokens) -> list[Piece | Prompted]:  # on the generation thread, where a stop string ends its row
        first = answering.prompt_logprobs is None
        answering.took(tokens)
        said = [Prompted(answering.prompt_logprobs)] if first and answering.prompt_logprobs is not None else []
        said += pieces[:] + [Piece(row, "", entries) for row, entries in taken.items()]
        pieces.clear()
        taken.clear()
        return said

    # closed here, not when the loop gets round to finalizing it: until then its rows stay in the batch
    async with aclosing(served.generator.events(answering.decoding, answering.choose, say)) as events:
        async for piece in events:
            yield piece
    made = answering.answers()  # the decoding has left the batch: its streams' rest is read here
    for piece in pieces:
        yield piece
    yield made
