"""Text out of the one decoding: each answer's tokens detokenized as they come (whole characters only, less
what may begin a stop string), ended at an end-of-sequence id, a stop id or a stop string, with why it ended
(OpenAI's finish_reason: "stop", or "length" where it ran out of new tokens), and where the sampling asks
(``logprobs``) each token's log-probability, the prompt's own too where asked. ``ptx generate`` and
``Model.generate_text`` call ``generate_text``; ``ptx serve``'s OpenAI API pulls the same ``Answering`` in
its batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ptx.contract.logprobs import TokenLogprob, prompt_logprobs
from ptx.contract.sampling import Sampling

from .generation import chooser_of
from .text import Text


@dataclass
class Answer:
    """One answer: its text (cut before a stop string), its new token ids, why it ended ("stop": an
    end-of-sequence id, a stop id or string; "length": max_new_tokens), and its prompt's length in tokens.
    Where the sampling asked for them, ``logprobs``: each new token's log-probability but an end-of-sequence
    id's (the tokens of its text), and ``prompt_logprobs``: its prompt's (None for the first token)."""

    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None


class Answers(list):
    """The answers, in row order, and the decoding's record (``decoded``: its time)."""

    decoded = None


def end_ids(model, text: Text | None, eos: Sequence[int] | None = None) -> tuple[int, ...]:
    """The ids that end an answer: ``eos`` where given, else the file's and the generation config's (a chat
    model's end of turn is often there alone)."""
    if eos is not None:
        return tuple(eos)
    return tuple(dict.fromkeys((*model.generation.eos, *(text.eos if text is not None else ()))))


class Answering:
    """``n`` answers to each of ``prompts`` (token ids: ``text.encode(...)`` or ``text.chat(messages)``), being
    made: ``decoding`` (one batch: row ``k * n + j`` is prompt k's answer j) and ``choose`` (each row draws
    from its own seeded generator, keyed by j: a prompt's answers are those it gets alone, wherever it sits),
    pulled by its caller (``generate_text``, or a server's batch), who hands each step's new tokens to
    ``took``: the text of each answer as it is whole goes to ``on_text(row, piece)``, and an answer whose
    text reaches a stop string ends there; where ``sampling.logprobs`` asks, each token's log-probability goes
    to ``on_logprob(row, taken)`` (read by the chooser off the step's logits), and with ``prompt_logprobs`` the
    prompt's own are read off its run (teacher-forced). ``answers()``: the answers so far, each with why it
    ended."""

    def __init__(self, model, prompts: Sequence[Sequence[int]], text: Text, sampling: Sampling, *, n: int = 1,
                 eos: Sequence[int] | None = None, on_text: Callable[[int, str], None] | None = None,
                 on_logprob: Callable[[int, TokenLogprob], None] | None = None, prompt_logprobs: bool = False,
                 speculate=None):
        self.rows = [list(p) for p in prompts for _ in range(n)]
        self.streams = [text.stream(sampling.stop) for _ in self.rows]
        self.ends = end_ids(model, text, eos)
        self.stops = {*self.ends, *sampling.stop_ids}
        self.top = sampling.logprobs
        self.decoding = model.decoding(self.rows, sampling.max_new_tokens, self.ends, sampling,
                                       keep_prompt_logits=prompt_logprobs and self.top is not None,
                                       speculate=speculate)
        self.choose = chooser_of(sampling, [j for _ in prompts for j in range(n)], self._constraints(sampling, text))
        self.on_text = on_text or (lambda row, piece: None)
        self.on_logprob = on_logprob or (lambda row, taken: None)
        self.logprobs: list[list[TokenLogprob]] | None = None if self.top is None else [[] for _ in self.rows]
        self.prompt_logprobs: list[list[TokenLogprob | None]] | None = None

    def _constraints(self, sampling: Sampling, text: Text) -> list | None:
        """Each row's grammar (infer/model/grammar.py) where the sampling holds the answers to one."""
        if sampling.grammar is None:
            return None
        from .grammar import constraints

        vocab = self.decoding.vocab or text.vocab_size
        return constraints(sampling.grammar, text, vocab, sorted(self.decoding.eos), len(self.rows))

    def took(self, tokens: Sequence[int | None]) -> None:
        """One step's new token per row (None where ended): its text, and the rows it ends at a stop string."""
        if self.decoding.prompt_logits is not None:  # the prompt's run: read once, then let go (it is large)
            logits, self.decoding.prompt_logits = self.decoding.prompt_logits, None
            self.prompt_logprobs = [prompt_logprobs(logits[row], ids, self.top) for row, ids in enumerate(self.rows)]
        for row, token in enumerate(tokens):
            if token is None or token in self.decoding.eos:  # ended, or its end: no text
                continue
            if self.logprobs is not None:
                taken = self.choose.taken[row].pop(0)  # the step's tokens come in the order they were chosen
                self.logprobs[row].append(taken)
                self.on_logprob(row, taken)
            piece = self.streams[row].feed(token)
            if piece:
                self.on_text(row, piece)
            if self.streams[row].stopped:
                self.decoding.end(row)

    def answers(self) -> Answers:
        """Each answer: the rest of its text given to ``on_text``, its tokens, and why it ended."""
        decoded = self.decoding.decoded()
        answers = Answers()
        answers.decoded = decoded
        for row, tokens in enumerate(decoded.tokens):
            stream = self.streams[row]
            rest = stream.finish()
            if rest:
                self.on_text(row, rest)
            ended = stream.stopped or bool(tokens and tokens[-1] in self.stops)
            answers.append(Answer(stream.given, tokens, "stop" if ended else "length", len(self.rows[row]),
                                  None if self.logprobs is None else list(self.logprobs[row]),
                                  None if self.prompt_logprobs is None else self.prompt_logprobs[row]))
        return answers


def generate_text(model, prompts: Sequence[Sequence[int]], text: Text, sampling: Sampling, *, n: int = 1,
                  eos: Sequence[int] | None = None, on_text: Callable[[int, str], None] | None = None,
                  wanted: Callable[[], bool] = lambda: True, speculate=None) -> Answers:
    """``n`` answers to each of ``prompts`` in one batch (``Answering``), pulled while ``wanted()`` says so
    (a client still there); an answer ends at an end-of-sequence or stop id, or at a stop string. ``speculate``:
    a drafter (infer/model/speculative.py) whose guesses each answer keeps where its choice confirms them (greedy's
    tokens, a sampled answer's distribution, held to its grammar alike)."""
    answering = Answering(model, prompts, text, sampling, n=n, eos=eos, on_text=on_text, speculate=speculate)
    while not answering.decoding.finished and wanted():
        decoding = answering.decoding
        decoding.take(decoding.step(), answering.choose, answering.took)
    return answering.answers()
