"""Tool calls in a model's own syntax, torch-free: which syntax a chat template teaches its model (read from the
template itself), the calls an answer's text holds (OpenAI's ``tool_calls``: a name and its arguments as JSON
text), the same read piece by piece as an answer streams, and the grammar that forces a call where the caller
requires one (ptx.contract.grammar.Grammar, its arguments held to the function's JSON schema, masked by
infer/model/grammar.py), as vLLM's tool parsers and llama.cpp's server read them.

The syntax ptx reads: Hermes' ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, which Qwen2.5's
and Qwen3's templates (and Hermes') teach, each call in its own tags. A template that never reads ``tools``
has no tool syntax at all (its model was never shown one).
"""
from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field
from typing import Sequence

from ptx.contract.grammar import Grammar

from .text import Text

JSON_OPTIONS = {"whitespace_flexible": False}  # as infer/model/grammar.py writes JSON


@dataclass(frozen=True)
class ToolCall:
    """One call: the function's ``name``, its ``arguments`` as JSON text (OpenAI's form), and the call's id."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


class Hermes:
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, one block per call (Qwen2.5, Qwen3,
    Hermes). The tags may be one added token each (Qwen2.5's tokenizer) or plain text."""

    family = "hermes"
    open_tag, close_tag = "<tool_call>", "</tool_call>"

    def __init__(self, text: Text):
        self.text = text

    def stream(self) -> "HermesStream":
        return HermesStream(self)

    def parse(self, answer: str) -> tuple[str | None, list[ToolCall]]:
        """(the text outside the calls, None where there is none; the calls), read as a stream reads them."""
        stream = self.stream()
        events = [*stream.feed(answer), *stream.finish()]
        content = "".join(e for e in events if isinstance(e, str))
        return content or None, [e for e in events if isinstance(e, ToolCall)]

    def call(self, block: str) -> ToolCall | None:
        """A call block's JSON as a ToolCall, or None where it is not one (then it is text)."""
        try:
            doc = json.loads(block)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            return None
        arguments = doc.get("arguments", doc.get("parameters", {}))
        if isinstance(arguments, str):  # a model that wrote its arguments as JSON text
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        return ToolCall(doc["name"], json.dumps(arguments, ensure_ascii=False))

    def forced(self, tools: Sequence[dict], name: str | None) -> Grammar:
        """One call, of the function ``name`` (None: any of ``tools``), its arguments held to its parameters'
        schema, then the end of the answer."""
        chosen = [t for t in tools if name is None or t["function"]["name"] == name]
        options = [_call_schema(t["function"], f"#/anyOf/{k}/properties/arguments" if len(chosen) > 1 else
                                "#/properties/arguments") for k, t in enumerate(chosen)]
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        schema = {**schema, "x-guidance": JSON_OPTIONS}
        return Grammar.lark(f'start: {self._tag(self.open_tag)} "\\n" call "\\n" {self._tag(self.close_tag)}\n'
                            f"call: %json {json.dumps(schema)}")

    def _tag(self, word: str) -> str:
        """``word`` in the grammar: its added token where the tokenizer has one (the grammar library reads added
        tokens as special ones, referenced by id), else its text."""
        token = self.text.tokenizer.token_to_id(word)
        added = self.text.tokenizer.get_added_tokens_decoder()
        return f"<[{token}]>" if token is not None and token in added else json.dumps(word)


class HermesStream:
    """An answer's text as it streams, split into text and calls: ``feed(piece)`` returns what is now sure (text,
    and each call once its block is closed); ``finish()`` the rest. Text that may begin a call's tag, and
    whitespace that may stand before one, are held until the next piece says which."""

    def __init__(self, syntax: Hermes):
        self.syntax, self.pending, self.inside = syntax, "", False

    def feed(self, piece: str) -> list:
        self.pending += piece
        events: list = []
        while True:
            if self.inside:
                end = self.pending.find(self.syntax.close_tag)
                if end < 0:
                    return events
                events.append(self._block(self.pending[:end]))
                self.pending, self.inside = self.pending[end + len(self.syntax.close_tag):], False
                continue
            start = self.pending.find(self.syntax.open_tag)
            if start < 0:
                sure = len(self.pending) - _held(self.pending, self.syntax.open_tag)
                if sure:
                    events.append(self.pending[:sure])
                    self.pending = self.pending[sure:]
                return events
            if self.pending[:start].strip():
                events.append(self.pending[:start].rstrip())
            self.pending, self.inside = self.pending[start + len(self.syntax.open_tag):], True

    def finish(self) -> list:
        """The rest: a call left open at the end (a model stopped before its close tag) where it parses, else
        its text; text held for a tag that never came (whitespace at the end is dropped)."""
        rest, self.pending = self.pending, ""
        if self.inside:
            call = self.syntax.call(rest.strip())
            return [call] if call is not None else [self.syntax.open_tag + rest]
        return [rest] if rest.strip() else []

    def _block(self, block: str):
        call = self.syntax.call(block.strip())
        return call if call is not None else f"{self.syntax.open_tag}{block}{self.syntax.close_tag}"


def _held(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` may still become ``tag`` or stand before it: a prefix of the
    tag, and the whitespace before that."""
    prefix = max((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:n])), default=0)
    body = text[:len(text) - prefix]
    return prefix + len(body) - len(body.rstrip())


def _call_schema(function: dict, at: str) -> dict:
    """The JSON schema of one call of ``function``: {"name": its name, "arguments": its parameters}, the
    parameters' own references (#/$defs/...) moved to where they now sit (``at``)."""
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"name": {"const": function["name"]},
                                             "arguments": _rerooted(parameters, at)},
            "required": ["name", "arguments"], "additionalProperties": False}


def _rerooted(schema, at: str):
    """``schema`` with each local reference ("#/...") made relative to ``at``, where the schema is put."""
    if isinstance(schema, dict):
        return {k: (at + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#/") else _rerooted(v, at))
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rerooted(v, at) for v in schema]
    return schema


SYNTAXES = {"<tool_call>": Hermes}  # what a template writes -> the syntax it teaches


@functools.lru_cache(maxsize=16)
def reads_tools(template: str | None) -> bool:
    """Whether a chat template renders ``tools`` (else its model was never shown a function); kept per template,
    as a server asks at every request."""
    if not template:
        return False
    import jinja2
    from jinja2 import meta

    try:
        return "tools" in meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return False


def syntax_of(text: Text):
    """The tool-call syntax ``text``'s chat template teaches (Hermes), or None: a template that never reads
    ``tools``, or whose calls ptx does not read."""
    template = text.chat_template
    if not reads_tools(template):
        return None
    for mark, syntax in SYNTAXES.items():
        if mark in template:
            return syntax(text)
    return None


__all__ = ["Hermes", "ToolCall", "reads_tools", "syntax_of"]
