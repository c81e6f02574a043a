"""Tool calls in a model's own syntax, torch-free: which syntax a chat template teaches its model (read from the
template itself), the calls an answer's text holds (OpenAI's ``tool_calls``: a name and its arguments as JSON
text), the same read piece by piece as an answer streams, and the grammar that forces a call where the caller
requires one (ptx.contract.grammar.Grammar, its arguments held to the function's JSON schema, masked by
infer/model/grammar.py), as vLLM's tool parsers and llama.cpp's server read them.

The syntaxes ptx reads: Hermes' ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, which Qwen2.5's
and Qwen3's templates (and Hermes') teach, each call in its own tags; Llama 3.1's JSON, an answer that is
``{"name": ..., "parameters": {...}}`` alone (calls apart by ";", as Llama 3.2 writes several), which Meta's
Llama 3.1 and 3.2 templates teach; and Mistral's ``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]``, a list
of calls after the tag to the end of the answer, which Mistral 7B Instruct v0.3's template (and Mixtral 8x22B's,
Nemo's) teaches, its calls' ids nine letters or digits; and Mistral's later ``[TOOL_CALLS]name[ARGS]{...}``, one
tag per call (Mistral Small 3.2's, Ministral 3's and Magistral's templates; Mistral Small 3.1's writes each call's
id between, ``[CALL_ID]id``). A template that never reads ``tools`` has no tool syntax at all (its model was never
shown one).
"""
from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Sequence

from ptx.contract.grammar import Grammar
from ptx.errors import PtxError

from .text import Text

JSON_OPTIONS = {"whitespace_flexible": False}  # as infer/model/grammar.py writes JSON


@dataclass(frozen=True)
class ToolCall:
    """One call: the function's ``name``, its ``arguments`` as JSON text (OpenAI's form), and the call's id (its
    syntax's new_id)."""

    name: str
    arguments: str
    id: str


class Syntax:
    """A model's tool-call syntax for ``text``'s tokenizer: ``stream()`` reads an answer piece by piece (each
    piece's events: text, and ToolCall), ``parse(answer)`` the whole the same way, ``forced(tools, name)`` the
    grammar of one call."""

    family = ""

    def __init__(self, text: Text):
        self.text = text

    def new_id(self) -> str:
        """A new call's id, as OpenAI writes them."""
        return f"call_{uuid.uuid4().hex[:24]}"

    def conversation(self, messages: Sequence[dict]) -> list[dict]:
        """``messages`` as the template takes them (a syntax whose template refuses some ids renames them)."""
        return list(messages)

    def calls_in(self, block: str) -> list[ToolCall] | None:
        """The calls a block between the syntax's tags holds, or None where it is not calls (then it is text)."""
        call = _call_of(block, self.new_id())
        return None if call is None else [call]

    def stream(self) -> "TaggedStream":
        """The answer read piece by piece between the syntax's tags (``open_tag``, ``close_tag``)."""
        return TaggedStream(self)

    def forced(self, tools: Sequence[dict], name: str | None) -> Grammar:
        raise NotImplementedError

    def parse(self, answer: str) -> tuple[str | None, list[ToolCall]]:
        """(the text outside the calls, None where there is none; the calls), read as a stream reads them."""
        stream = self.stream()
        events = [*stream.feed(answer), *stream.finish()]
        content = "".join(e for e in events if isinstance(e, str))
        return content or None, [e for e in events if isinstance(e, ToolCall)]


class Hermes(Syntax):
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, one block per call (Qwen2.5, Qwen3,
    Hermes). The tags may be one added token each (Qwen2.5's tokenizer) or plain text."""

    family = "hermes"
    open_tag, close_tag = "<tool_call>", "</tool_call>"

    def forced(self, tools: Sequence[dict], name: str | None) -> Grammar:
        """One call, of the function ``name`` (None: any of ``tools``), its arguments held to its parameters'
        schema, then the end of the answer."""
        schema = {**_forced_schema(tools, name, "arguments"), "x-guidance": JSON_OPTIONS}
        return Grammar.lark(f'start: {_tag(self.text, self.open_tag)} "\\n" call "\\n" {_tag(self.text, self.close_tag)}\n'
                            f"call: %json {json.dumps(schema)}")


def _tag(text: Text, word: str) -> str:
    """``word`` in a grammar: its added token where ``text``'s tokenizer has one (the grammar library reads added
    tokens as special ones, referenced by id), else its text."""
    token = text.tokenizer.token_to_id(word)
    added = text.tokenizer.get_added_tokens_decoder()
    return f"<[{token}]>" if token is not None and token in added else json.dumps(word)


class LlamaJson(Syntax):
    """Llama 3.1's JSON tool calls: the answer is ``{"name": ..., "parameters": {...}}`` (several apart by ";"),
    or it is text. An answer that opens with "{" is held whole until it ends, then read."""

    family = "llama3_json"

    def stream(self) -> "WholeJsonStream":
        return WholeJsonStream(self)

    def calls(self, answer: str) -> list[ToolCall] | None:
        """The calls an answer that opened with "{" holds, or None where it is not calls (then it is text)."""
        calls = []
        for part in _json_parts(answer):
            call = _call_of(part, self.new_id())
            if call is None:
                return None
            calls.append(call)
        return calls or None

    def forced(self, tools: Sequence[dict], name: str | None) -> Grammar:
        """One call, of ``name`` (None: any of ``tools``), its "parameters" held to the function's schema."""
        schema = _forced_schema(tools, name, "parameters")
        return Grammar.lark(f"start: call\ncall: %json {json.dumps({**schema, 'x-guidance': JSON_OPTIONS})}")


class MistralCalls(Syntax):
    """Mistral's tool calls: ``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`` after any text, to the end
    of the answer (the tag one added token of its tokenizer). Its template refuses a call's id that is not nine
    letters or digits: ptx's calls get such ids, and a conversation's other ids (OpenAI's "call_...") are renamed
    for the template, the same id to the same name, so that a call and its tool's answer still pair (as vLLM does
    for Mistral)."""

    family = "mistral"
    open_tag, close_tag = "[TOOL_CALLS]", None
    ID_LENGTH = 9

    def __init__(self, text: Text):
        super().__init__(text)
        text.keep_special(self.open_tag)  # a special token of Mistral's tokenizers, else dropped from the text

    def new_id(self) -> str:
        return uuid.uuid4().hex[:self.ID_LENGTH]

    def calls_in(self, block: str) -> list[ToolCall] | None:
        try:
            doc = json.loads(block)
        except ValueError:
            return None
        calls = [_call_from(item, self.new_id()) for item in (doc if isinstance(doc, list) else [doc])]
        return calls if calls and all(c is not None for c in calls) else None

    def conversation(self, messages: Sequence[dict]) -> list[dict]:
        def renamed(call_id):
            text = str(call_id)
            if len(text) == self.ID_LENGTH and text.isalnum():
                return text
            return hashlib.sha256(text.encode()).hexdigest()[:self.ID_LENGTH]

        out = []
        for message in messages:
            message = dict(message)
            if message.get("tool_calls"):
                message["tool_calls"] = [{**c, "id": renamed(c.get("id", ""))} if isinstance(c, dict) else c
                                         for c in message["tool_calls"]]
            if message.get("role") == "tool" and "tool_call_id" in message:
                message["tool_call_id"] = renamed(message["tool_call_id"])
            out.append(message)
        return out

    def forced(self, tools: Sequence[dict], name: str | None) -> Grammar:
        """One call in the list, of ``name`` (None: any of ``tools``), its arguments held to the function's schema,
        written after the tag as the template writes a call (with its space, where it has one)."""
        schema = _forced_schema(tools, name, "arguments")
        space = '" "' if self.open_tag + " [" in (self.text.chat_template or "") else ""
        return Grammar.lark(f'start: {_tag(self.text, self.open_tag)} {space} "[" call "]"\n'
                            f"call: %json {json.dumps({**schema, 'x-guidance': JSON_OPTIONS})}")


class MistralArgs(MistralCalls):
    """Mistral's later tool calls: ``[TOOL_CALLS]name[ARGS]{...}`` for each call, after any text, to the end of the
    answer (``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` where the template writes ids); the tags are added tokens of
    its tokenizer (Tekken's), kept in the decoded text as v0.3's is."""

    family = "mistral_args"
    ARGS, CALL_ID = "[ARGS]", "[CALL_ID]"

    def __init__(self, text: Text, with_ids: bool | None = None):
        """``with_ids``: whether a forced call writes its id ([CALL_ID]); None: where the template writes one."""
        super().__init__(text)
        self.with_ids = self.CALL_ID in (text.chat_template or "") if with_ids is None else with_ids
        for tag in (self.ARGS, self.CALL_ID):  # read wherever the model writes them (a tokenizer without one: none)
            text.keep_special(tag)

    def calls_in(self, block: str) -> list[ToolCall] | None:
        """The calls after the first tag: each "name[ARGS]{...}" (with "[CALL_ID]id" before [ARGS] where the model
        writes one: kept where it is nine letters or digits and new, else a new id), the next after the next tag;
        the arguments read as one JSON object, so that a tag inside their text does not split them."""
        calls, rest, decoder = [], block, json.JSONDecoder()
        while True:
            head, args, rest = rest.partition(self.ARGS)
            name, _, given = head.partition(self.CALL_ID)
            rest = rest.lstrip()
            try:
                arguments, end = decoder.raw_decode(rest)
            except ValueError:
                return None
            if not args or not name.strip() or not isinstance(arguments, dict):
                return None
            given = given.strip()
            fresh = len(given) == self.ID_LENGTH and given.isalnum() and given not in {c.id for c in calls}
            calls.append(ToolCall(name.strip(), json.dumps(arguments, ensure_ascii=False),
                                  given if fresh else self.new_id()))
            rest = rest[end:].lstrip()
            if not rest:
                return calls
            if not rest.startswith(self.open_tag):
                return None
            rest = rest[len(self.open_tag):]

    def forced(self, tools: Sequence[dict], name: str | None) -> Grammar:
        """One call of ``name`` (None: any of ``tools``): the tag, the function's name, its id where the template
        writes ids (nine letters or digits), [ARGS], then its arguments held to its parameters' schema."""
        tag, args = _tag(self.text, self.open_tag), _tag(self.text, self.ARGS)
        call_id = f' {_tag(self.text, self.CALL_ID)} /[a-zA-Z0-9]{{{self.ID_LENGTH}}}/' if self.with_ids else ""
        chosen = _chosen(tools, name)
        rules = [f"start: {tag} ({' | '.join(f'call{k}' for k in range(len(chosen)))})"]
        for k, function in enumerate(chosen):
            rules += [f"call{k}: {json.dumps(function['name'])}{call_id} {args} arguments{k}",
                      f"arguments{k}: %json {json.dumps({**_parameters(function), 'x-guidance': JSON_OPTIONS})}"]
        return Grammar.lark("\n".join(rules))


def _call_of(block: str, call_id: str) -> ToolCall | None:
    """A call's JSON ({"name": ..., "arguments" or "parameters": {...}}) as a ToolCall with the id ``call_id``, or
    None where it is not one (then it is text)."""
    try:
        doc = json.loads(block)
    except ValueError:
        return None
    return _call_from(doc, call_id)


def _call_from(doc, call_id: str) -> ToolCall | None:
    """A call's parsed JSON as a ToolCall with the id ``call_id``, or None where it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        return None
    arguments = doc.get("arguments", doc.get("parameters", {}))
    if isinstance(arguments, str):  # a model that wrote its arguments as JSON text
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return ToolCall(doc["name"], json.dumps(arguments, ensure_ascii=False), call_id)


def _json_parts(answer: str) -> list[str]:
    """The JSON objects of an answer, apart by ";" (a ";" inside one does not split it)."""
    parts, start = [], 0
    for end in (i for i, c in enumerate(answer) if c == ";"):
        try:
            json.loads(answer[start:end])
        except ValueError:
            continue
        parts.append(answer[start:end])
        start = end + 1
    return [*parts, answer[start:]]


class WholeJsonStream:
    """An answer read by LlamaJson as it streams: text as it comes where it does not open with "{", else held
    whole and read at the end (calls, or its text where it is not calls)."""

    def __init__(self, syntax: LlamaJson):
        self.syntax, self.pending, self.held = syntax, "", None

    def feed(self, piece: str) -> list:
        if self.held is None:
            self.pending += piece
            if not self.pending.strip():
                return []
            self.held, piece = self.pending.lstrip().startswith("{"), self.pending
            self.pending = ""
            if not self.held:
                return [piece]
        if self.held:
            self.pending += piece
            return []
        return [piece] if piece else []

    def finish(self) -> list:
        rest, self.pending = self.pending, ""
        if not self.held:
            return [rest] if rest.strip() else []
        calls = self.syntax.calls(rest.strip())
        return calls if calls is not None else [rest]


class TaggedStream:
    """An answer's text as it streams, split into text and calls (Hermes' blocks, Mistral's calls after their first
    tag):
    ``feed(piece)`` returns what is now sure (text, and each block's calls once it is closed: a syntax with no
    close tag holds its block to the end of the answer); ``finish()`` the rest. Text that may begin a call's tag,
    and whitespace that may stand before one, are held until the next piece says which."""

    def __init__(self, syntax: Syntax):
        self.syntax, self.pending, self.inside = syntax, "", False

    def feed(self, piece: str) -> list:
        self.pending += piece
        events: list = []
        while True:
            if self.inside:
                if self.syntax.close_tag is None:
                    return events
                end = self.pending.find(self.syntax.close_tag)
                if end < 0:
                    return events
                events += self._block(self.pending[:end])
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
            calls = self.syntax.calls_in(rest.strip())
            return calls if calls is not None else [self.syntax.open_tag + rest]
        return [rest] if rest.strip() else []

    def _block(self, block: str) -> list:
        calls = self.syntax.calls_in(block.strip())
        return calls if calls is not None else [f"{self.syntax.open_tag}{block}{self.syntax.close_tag}"]


def _held(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` may still become ``tag`` or stand before it: a prefix of the
    tag, and the whitespace before that."""
    prefix = max((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:n])), default=0)
    body = text[:len(text) - prefix]
    return prefix + len(body) - len(body.rstrip())


def _chosen(tools: Sequence[dict], name: str | None) -> list[dict]:
    """The functions a forced call may be: the one named ``name``, or (None) every one of ``tools``; PtxError where
    there is none."""
    chosen = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    if not chosen:
        missing = "no tools given" if name is None else f"{name!r} is not among the tools given"
        raise PtxError(f"a forced tool call needs a function to call: {missing}")
    return chosen


def _parameters(function: dict) -> dict:
    """A function's parameters' JSON schema. One without parameters takes none, as OpenAI says ("omitting parameters
    defines a function with an empty parameter list"): the empty object alone, where an object schema with no
    properties listed would let a forced call's arguments be any object."""
    return function.get("parameters") or {"type": "object", "properties": {}, "additionalProperties": False}


def _forced_schema(tools: Sequence[dict], name: str | None, key: str) -> dict:
    """The JSON schema of one call of the function ``name`` (None: any of ``tools``), its parameters under ``key``
    (each function's own where there are several: anyOf)."""
    chosen = _chosen(tools, name)
    options = [_call_schema(function, f"#/anyOf/{k}/properties/{key}" if len(chosen) > 1 else
                            f"#/properties/{key}", key=key) for k, function in enumerate(chosen)]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _call_schema(function: dict, at: str, key: str = "arguments") -> dict:
    """The JSON schema of one call of ``function``: {"name": its name, ``key``: its parameters}, the
    parameters' own references (#/$defs/...) moved to where they now sit (``at``)."""
    parameters = _rerooted(_parameters(function), at)
    return {"type": "object", "properties": {"name": {"const": function["name"]}, key: parameters},
            "required": ["name", key], "additionalProperties": False}


def _rerooted(schema, at: str):
    """``schema`` with each local reference ("#/...") made relative to ``at``, where the schema is put."""
    if isinstance(schema, dict):
        return {k: (at + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#/") else _rerooted(v, at))
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rerooted(v, at) for v in schema]
    return schema


# what a template writes -> the syntax it teaches (Llama 3.1's: the format line its tools prompt spells out), the
# first that a template writes (Mistral's later templates write [TOOL_CALLS] too, then [ARGS])
SYNTAXES = {"<tool_call>": Hermes, "argument name and its value": LlamaJson, "[ARGS]": MistralArgs,
            "[TOOL_CALLS]": MistralCalls}


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
    """The tool-call syntax ``text``'s chat template teaches (one of SYNTAXES), or None: a template that never reads
    ``tools``, or whose calls ptx does not read."""
    template = text.chat_template
    if not reads_tools(template):
        return None
    for mark, syntax in SYNTAXES.items():
        if mark in template:
            return syntax(text)
    return None


__all__ = ["Hermes", "LlamaJson", "MistralArgs", "MistralCalls", "ToolCall", "reads_tools", "syntax_of"]
