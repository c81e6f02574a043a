"""Answers held to a grammar (ptx.contract.grammar.Grammar: a JSON schema, any JSON object, a regular
expression): one constraint per row for the one chooser (ptx.contract.sampling.Chooser), which masks at each
step the tokens that cannot continue a match, so that the answer parses whatever the model would rather say,
greedy or sampled. Made with llguidance for the model's tokenizer: it reads the tokenizer.json beside the file
itself (its added tokens too), and an end-of-sequence id is allowed only where the grammar is complete.

Why llguidance, of the three libraries that mask tokens against a JSON schema (scripts/grammar_cost.py on a
32k-token byte-level BPE, 2 cores, docs/openai.md#json-that-parses): xgrammar's mask is the fastest but it
needs torch (and triton), which ptx's ONNX Runtime path never imports; outlines-core's is fast too but it
builds its whole index when the schema comes, seconds at 32k tokens (every request with a new schema would
hold the server's batch that long); llguidance compiles a schema in milliseconds and masks in about 0.2 ms a
token, under 2% of a 0.5B model's token on a CPU, with numpy only. JSON is written without free whitespace
(``whitespace_flexible`` off), as OpenAI's structured answers are: a model cannot then pad an answer with
spaces until its tokens run out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from ptx.contract.grammar import Grammar, GrammarError
from ptx.extras import MissingExtraError, missing_part

from .text import Text

_TOKENIZERS: dict[tuple, object] = {}  # (tokenizer.json, vocabulary, end ids) -> llguidance's tokenizer: a second
# to build on a 150k vocabulary, so built once per served model
_GRAMMARS: OrderedDict[tuple, str] = OrderedDict()  # (tokenizer key, grammar) -> its checked llguidance grammar
_KEPT_GRAMMARS = 64  # a server's recent schemas: checked where the request is read, used where its answer is made
JSON_OPTIONS = {"whitespace_flexible": False}


def _llguidance():
    why = missing_part("llguidance")
    if why:
        raise MissingExtraError(why)
    import llguidance
    import llguidance.numpy

    return llguidance


def _tokenizer(text: Text, vocab: int, eos: Sequence[int]):
    key = (str(text.folder), int(vocab), tuple(int(e) for e in eos))
    if key not in _TOKENIZERS:
        llguidance = _llguidance()
        _TOKENIZERS[key] = llguidance.LLTokenizer(text.tokenizer.to_str(), n_vocab=int(vocab),
                                                  eos_token=[int(e) for e in eos])
    return key, _TOKENIZERS[key]


def _compiled(grammar: Grammar, text: Text, vocab: int, eos: Sequence[int]) -> tuple[object, str]:
    """(llguidance's tokenizer, the grammar in llguidance's form), checked: else GrammarError in one line."""
    key, tokenizer = _tokenizer(text, vocab, eos)
    if (key, grammar) in _GRAMMARS:
        _GRAMMARS.move_to_end((key, grammar))
        return tokenizer, _GRAMMARS[(key, grammar)]
    matcher = _llguidance().LLMatcher
    try:
        if grammar.kind == "regex":
            source = matcher.grammar_from_regex(grammar.source)
        elif grammar.kind == "lark":
            source = matcher.grammar_from_lark(grammar.source)
        else:
            source = matcher.grammar_from_json_schema(grammar.schema, defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise GrammarError(f"{grammar.describe()}: {exc}") from None
    error = matcher.validate_grammar(source, tokenizer)
    if error:
        raise GrammarError(f"{_what(grammar)} cannot hold an answer: {' '.join(error.split())[:300]}")
    _first_steps(grammar, matcher(tokenizer, source, log_level=0), vocab, eos)
    _GRAMMARS[(key, grammar)] = source
    while len(_GRAMMARS) > _KEPT_GRAMMARS:
        _GRAMMARS.popitem(last=False)
    return tokenizer, source


def _what(grammar: Grammar) -> str:
    return {"regex": "the regular expression", "lark": "the grammar"}.get(grammar.kind, "the JSON schema")


# llguidance's words for a token its grammar refuses (a caller's own token): any other error of a matcher is the
# engine giving up on the grammar itself, a limit of its parser (Earley items in a row, lexer fuel) passed
REFUSED = "doesn't satisfy the grammar"
FIRST_STEPS = 4  # tokens a new grammar is walked before a request is taken: a schema past the parser's limits
# (600 optional properties passed its 2,000 items a row at the first "{") gives up within its first tokens


def _gave_up(grammar: Grammar, matcher) -> GrammarError | None:
    """The GrammarError where llguidance's ``matcher`` gave up on ``grammar`` (its parser's limits), else None."""
    if not matcher.is_error() or REFUSED in matcher.get_error():
        return None
    reason = matcher.get_error().split("\n")[0].removeprefix("Parser Error: ").split("; consider")[0]
    return GrammarError(f"{_what(grammar)} is past what the grammar engine (llguidance) holds: {reason[:200]}: "
                        "give fewer optional properties or alternatives")


def _first_steps(grammar: Grammar, matcher, vocab: int, eos: Sequence[int]) -> None:
    """``matcher`` walked ``FIRST_STEPS`` tokens as a row's Matcher (each time the lowest id it allows that is no
    end): GrammarError where the engine gives up on the way, so that a request is refused before its answer starts,
    not cut short in it."""
    walk = Matcher(matcher, vocab, eos, grammar)
    for _ in range(FIRST_STEPS):
        token = next((int(t) for t in np.flatnonzero(walk.allowed() & ~walk._end)), None)
        if token is None:  # complete, or nothing but an end
            return
        walk.advance(token)
    walk.allowed()  # GrammarError where the last token took the engine past its limits


def check(grammar: Grammar, text: Text, vocab: int, eos: Sequence[int]) -> None:
    """GrammarError (one line, llguidance's reason) where ``grammar`` cannot constrain an answer of ``text``'s
    tokens; kept, so that the constraints made next for it are not compiled twice."""
    _compiled(grammar, text, vocab, eos)


def constraints(grammar: Grammar, text: Text, vocab: int, eos: Sequence[int], rows: int) -> list["Matcher"]:
    """One constraint per row (ptx.contract.grammar.Constraint) over a vocabulary of ``vocab`` tokens (the
    model's logits), ``eos`` allowed where the grammar is complete."""
    tokenizer, source = _compiled(grammar, text, vocab, eos)
    llguidance = _llguidance()
    return [Matcher(llguidance.LLMatcher(tokenizer, source, log_level=0), vocab, eos, grammar) for _ in range(rows)]


class Matcher:
    """One row's llguidance matcher as the chooser asks it: the allowed tokens (a boolean array over the
    vocabulary), and the tokens the row took. A row whose grammar is complete (or that took a token it
    refused: a caller's own) may end and nothing else: its end-of-sequence ids alone."""

    def __init__(self, matcher, vocab: int, eos: Sequence[int], grammar: Grammar):
        import llguidance.numpy

        self._fill = llguidance.numpy.fill_next_token_bitmask
        self.matcher, self.vocab, self.grammar = matcher, int(vocab), grammar
        self._bits = llguidance.numpy.allocate_token_bitmask(1, self.vocab)
        self._end = np.zeros(self.vocab, dtype=bool)
        self._end[[int(e) for e in eos if 0 <= int(e) < self.vocab]] = True

    def allowed(self) -> np.ndarray:
        """The tokens that may come next; GrammarError where llguidance gave up on the grammar mid-answer (a limit
        of its parser passed past the first steps that ``check`` walks): the answer fails in one line, where ending
        it would hand on text that does not parse as if it were whole."""
        if self.matcher.is_error():
            failed = _gave_up(self.grammar, self.matcher)
            if failed is not None:
                raise failed
        if self.matcher.is_stopped():
            return self._end
        self._fill(self.matcher, self._bits, 0)
        allowed = np.unpackbits(self._bits[0].view(np.uint8), bitorder="little")[:self.vocab].astype(bool)
        return allowed if allowed.any() else self._end

    def advance(self, token: int) -> None:
        self.matcher.consume_token(int(token))

    def copy(self) -> "Matcher":
        """A matcher in this one's state that goes on alone (llguidance's deep copy: rolling back is not an inverse
        of advancing here, as an end id after a complete answer is not counted as a token)."""
        return Matcher(self.matcher.deep_copy(), self.vocab, np.flatnonzero(self._end), self.grammar)

    @property
    def error(self) -> str | None:
        """llguidance's reason where the matcher refused a token, else None."""
        return self.matcher.get_error() if self.matcher.is_error() else None


__all__ = ["Matcher", "check", "constraints"]
