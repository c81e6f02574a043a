"""Text out of the one decoding: each answer's tokens detokenized as they come (whole characters only, less
what may begin a stop string), ended at an end-of-sequence id, a stop id or a stop string, with why it ended
(OpenAI's finish_reason: "stop", or "length" where it ran out of new tokens). ``ptx generate``,
``Model.generate_text`` and ``ptx serve``'s OpenAI API all call ``generate_text``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ptx.contract.sampling import Sampling

from .generation import chooser_of
from .text import Text


@dataclass
class Answer:
    """One answer: its text (cut before a stop string), its new token ids, why it ended ("stop": an
    end-of-sequence id, a stop id or string; "length": max_new_tokens), and its prompt's length in tokens."""

    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


class Answers(list):
    """The answers, in row order, and the decoding's record (``decoded``: its time)."""

    decoded = None


def end_ids(model, text: Text | None, eos: Sequence[int] | None = None) -> tuple[int, ...]:
    """The ids that end an answer: ``eos`` where given, else the file's and the generation config's (a chat
    model's end of turn is often there alone)."""
    if eos is not None:
        return tuple(eos)
    return tuple(dict.fromkeys((*model.generation.eos, *(text.eos if text is not None else ()))))


def generate_text(model, prompts: Sequence[Sequence[int]], text: Text, sampling: Sampling, *, n: int = 1,
                  eos: Sequence[int] | None = None, on_text: Callable[[int, str], None] | None = None,
                  wanted: Callable[[], bool] = lambda: True) -> Answers:
    """``n`` answers to each of ``prompts`` (token ids: ``text.encode(...)`` or ``text.chat(messages)``), in
    one batch (row ``k * n + j`` is prompt k's answer j; each row draws from its own seeded generator):
    ``on_text(row, piece)`` as each piece of text is whole. The decoding is pulled while ``wanted()`` says so
    (a server's client still there); an answer ends at an end-of-sequence or stop id, or at a stop string."""
    rows = [list(p) for p in prompts for _ in range(n)]
    streams = [text.stream(sampling.stop) for _ in rows]
    ends = end_ids(model, text, eos)
    decoding = model.decoding(rows, sampling.max_new_tokens, ends, sampling)
    choose = chooser_of(sampling)
    while not decoding.finished and wanted():
        for row, token in enumerate(decoding.next_tokens(choose)):
            if token is None or token in decoding.eos:  # ended, or its end: no text
                continue
            piece = streams[row].feed(token)
            if piece and on_text is not None:
                on_text(row, piece)
            if streams[row].stopped:
                decoding.end(row)
    decoded = decoding.decoded()
    stops = {*ends, *sampling.stop_ids}
    answers = Answers()
    answers.decoded = decoded
    for row, tokens in enumerate(decoded.tokens):
        rest = streams[row].finish()
        if rest and on_text is not None:
            on_text(row, rest)
        ended = streams[row].stopped or bool(tokens and tokens[-1] in stops)
        answers.append(Answer(streams[row].given, tokens, "stop" if ended else "length", len(rows[row])))
    return answers
