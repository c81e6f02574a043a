"""OpenAI's API as a protocol, for a model that generates: a chat or completion request's JSON parsed and
checked as OpenAI checks it (types, ranges, what ptx does not do refused by name), and the answers shaped
as OpenAI shapes them (``chat.completion``, ``text_completion``, their stream chunks, ``usage``, and the
error object ``{"error": {"message", "type", "param", "code"}}``), so that the clients people already have
(the ``openai`` package, LangChain, llama-index...) work unchanged. No Starlette and no model here: the
routes (openai_routes.py) join this to a served model's one generation function (answers.py).

ptx's own fields beside OpenAI's, as vLLM and llama.cpp's server take them: ``top_k``, ``min_p``,
``repetition_penalty`` (the openai client sends them with ``extra_body``).

Log-probabilities are OpenAI's two shapes: a chat's ``{"content": [{"token", "logprob", "bytes",
"top_logprobs"}]}`` and a completion's ``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` (its
``top_logprobs`` per token: the most probable ones and the chosen one, as OpenAI's legacy API lists them). A
token that is not whole characters is spelt as OpenAI spells it, its bytes escaped (``\\xe6``).
"""
from __future__ import annotations

import math
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import orjson

from ptx.contract.grammar import Grammar, GrammarError

from .body import json_object
from .openai_tools import Tools, ToolsError, assistant_calls, parse_tools, tool_message
from .tensors import RequestError

# What each kind of request takes. Unknown fields are refused, as OpenAI refuses them ("Unrecognized
# request argument supplied"), so that a misspelt option is never silently ignored.
COMMON = ("model", "stream", "stream_options", "n", "max_tokens", "temperature", "top_p", "seed", "stop", "user",
          "logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "top_k", "min_p", "repetition_penalty")
CHAT = COMMON + ("messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
                 "functions", "function_call", "response_format", "store", "metadata", "service_tier", "modalities",
                 "reasoning_effort")
COMPLETION = COMMON + ("prompt", "echo", "suffix", "best_of")
MAX_STOP = 4  # stop strings per request, as OpenAI allows
MAX_TEMPERATURE = 2.0  # OpenAI's range is 0 to 2
MAX_PENALTY = 2.0  # presence_penalty and frequency_penalty: OpenAI's -2 to 2
MAX_BIAS = 100  # logit_bias: OpenAI's -100 to 100
# top_logprobs (a chat) and logprobs (a completion): OpenAI's chat takes 0 to 20 and its legacy completions 0 to
# 5; ptx takes 20 for both, as vLLM does, so that an evaluation harness may ask for more alternatives.
MAX_LOGPROBS = 20
ROLES = ("system", "developer", "user", "assistant", "tool")
# Fields whose other values ptx does not implement: (field, the values that change nothing).
NOT_DONE = {"functions": (None, []), "function_call": (None, "none"), "suffix": (None, ""),
            "modalities": (None, ["text"]), "reasoning_effort": (None,)}


class OpenAIError(RequestError):
    """A refused request as OpenAI says it: the status, the message, and the parameter at fault."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message, status)
        self.param, self.code = param, code

    @property
    def type(self) -> str:
        return "server_error" if self.status >= 500 else "invalid_request_error"  # OpenAI's 401 is one too

    def document(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class TextRequest:
    """A chat (``messages``) or completion (``prompts``: strings or token-id lists) request, checked. ``given``:
    the sampling fields the client set, by ptx.contract.sampling.Sampling's names (the model's generation
    config fills the others; ``logprobs`` there: the most probable tokens listed beside each chosen one, where
    log-probabilities are asked); ``max_tokens`` None: the default of its kind (0: a completion's ``echo`` of
    its prompt alone); ``echo``: a completion's answer begins with its prompt."""

    kind: str
    model: str
    messages: list[dict] | None = None
    prompts: list | None = None
    given: dict = field(default_factory=dict)
    max_tokens: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    tools: Tools | None = None


def request_document(body: bytes, shape: str, fields) -> tuple[dict, str]:
    """Any OpenAI request's JSON object and its ``model``, its fields among ``fields``; else an OpenAIError naming
    the field as OpenAI names it (``shape``: what to send, said where the body is no object)."""
    doc = json_object(body, shape)
    unknown = [k for k in doc if k not in fields]
    if unknown:
        raise OpenAIError(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError("you must provide a model parameter (the served model's name: GET /v1/models lists them)",
                          param="model")
    return doc, model


@contextmanager
def about(model: str):
    """An OpenAIError raised inside names the request's ``model`` (``exc.model``): the routes count a refusal under
    the model it asked for, not as a request for a model not served."""
    try:
        yield
    except OpenAIError as exc:
        exc.model = model
        raise


def parse_request(body: bytes, kind: str) -> TextRequest:
    """``kind`` "chat" or "completion": the request's JSON, checked; else an OpenAIError naming the field (and the
    model, where the request names one)."""
    doc, model = request_document(body, '{"model": ..., "messages" or "prompt": ...}',
                                  CHAT if kind == "chat" else COMPLETION)
    with about(model):
        return _text_request(doc, model, kind)


def _text_request(doc: dict, model: str, kind: str) -> TextRequest:
    for name, harmless in NOT_DONE.items():
        if name in doc and doc[name] not in harmless:
            raise OpenAIError(f"{name} {_json(doc[name])}: ptx serve does not support it; leave it out", param=name)
    asked = TextRequest(kind, model, given={**_sampling(doc), **_logprobs(doc, kind)}, n=_int(doc, "n", 1, 1))
    grammar = _response_format(doc.get("response_format")) if kind == "chat" else None
    if grammar is not None:
        asked.given["grammar"] = grammar
    if kind == "chat":
        asked.messages = _messages(doc.get("messages"))
        try:
            asked.tools = parse_tools(doc)
        except ToolsError as exc:
            raise OpenAIError(str(exc), param=exc.param) from None
        if grammar is not None and asked.tools is not None and asked.tools.forced:
            raise OpenAIError("response_format and a required tool call each say what the answer is: give one",
                              param="response_format")
    else:
        asked.prompts = _prompts(doc.get("prompt"))
        best_of = _int(doc, "best_of", asked.n, 1)
        if best_of != asked.n:
            raise OpenAIError(f"best_of {best_of}: ptx serve returns every answer it makes: leave best_of out (or "
                              "equal to n)", param="best_of")
        asked.echo = _bool(doc, "echo")
    asked.max_tokens = _max_tokens(doc, kind, asked.echo)
    asked.stream = _bool(doc, "stream")
    options = doc.get("stream_options")
    if options is not None:
        if not asked.stream:
            raise OpenAIError("stream_options is only for stream: true", param="stream_options")
        if not isinstance(options, dict) or any(k != "include_usage" for k in options):
            raise OpenAIError('stream_options is {"include_usage": true|false}', param="stream_options")
        asked.include_usage = _bool(options, "include_usage", "stream_options.include_usage")
    return asked


def _json(value) -> str:
    return orjson.dumps(value).decode()[:80]


def _bool(doc: dict, name: str, param: str | None = None) -> bool:
    value = doc.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise OpenAIError(f"{param or name} {_json(value)}: give true or false", param=param or name)
    return value


def _int(doc: dict, name: str, default: int | None, low: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise OpenAIError(f"{name} {_json(value)}: give a whole number of at least {low}", param=name)
    return value


def _float(doc: dict, name: str, low: float, high: float | None, low_open: bool = False) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
        (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'above' if low_open else 'from'} {low:g}" + (f" to {high:g}" if high is not None else "")
        raise OpenAIError(f"{name} {_json(value)}: give a number {bound}", param=name)
    return float(value)


def _sampling(doc: dict) -> dict:
    """The sampling fields the client set, checked, by Sampling's names."""
    given = {"temperature": _float(doc, "temperature", 0, MAX_TEMPERATURE), "top_p": _float(doc, "top_p", 0, 1),
             "min_p": _float(doc, "min_p", 0, 1), "repetition_penalty": _float(doc, "repetition_penalty", 0, None, True)}
    top_k = doc.get("top_k")
    if top_k is not None:  # vLLM's -1 (and 0) mean every token
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < -1:
            raise OpenAIError(f"top_k {_json(top_k)}: give a whole number (-1 or 0: every token)", param="top_k")
        given["top_k"] = max(top_k, 0)
    seed = doc.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise OpenAIError(f"seed {_json(seed)}: give a whole number", param="seed")
        given["seed"] = seed
    stop = doc.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
            raise OpenAIError(f"stop {_json(stop)}: give a string or a list of up to {MAX_STOP} non-empty strings",
                              param="stop")
        given["stop"] = tuple(stops)
    given["presence_penalty"] = _float(doc, "presence_penalty", -MAX_PENALTY, MAX_PENALTY)
    given["frequency_penalty"] = _float(doc, "frequency_penalty", -MAX_PENALTY, MAX_PENALTY)
    if doc.get("logit_bias") is not None:
        given["logit_bias"] = _logit_bias(doc["logit_bias"])
    return {k: v for k, v in given.items() if v is not None}


def _logit_bias(value) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias: {"token id": bias from -100 to 100}, as (id, bias) pairs (ids checked against the
    vocabulary where the model is known)."""
    shape = 'give {"token id": bias, ...}, each bias a number from -100 to 100'
    if not isinstance(value, dict):
        raise OpenAIError(f"logit_bias {_json(value)}: {shape}", param="logit_bias")
    pairs = []
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise OpenAIError(f"logit_bias: {key!r} is not a token id; {shape}", param="logit_bias")
        ok = isinstance(bias, (int, float)) and not isinstance(bias, bool) and math.isfinite(bias)
        if not ok or not -MAX_BIAS <= bias <= MAX_BIAS:
            raise OpenAIError(f"logit_bias[{key!r}] {_json(bias)}: {shape}", param="logit_bias")
        pairs.append((int(key), float(bias)))
    return tuple(pairs)


def _response_format(value) -> Grammar | None:
    """OpenAI's response_format: text (None), {"type": "json_object"}, or {"type": "json_schema", "json_schema":
    {"name", "schema", "strict", "description"}}: the grammar every answer is held to."""
    shape = ('give {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name": ..., '
             '"schema": {...}}}')
    if value is None or value == {"type": "text"}:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise OpenAIError(f"response_format {_json(value)}: {shape}", param="response_format")
    extra = [k for k in value if k not in ("type", "json_schema")]
    if extra or (value["type"] != "json_schema" and "json_schema" in value):
        raise OpenAIError(f"response_format: unexpected {(extra or ['json_schema'])[0]!r}; {shape}",
                          param="response_format")
    if value["type"] == "json_object":
        return Grammar.json_object()
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise OpenAIError(f"response_format.json_schema {_json(spec)}: give an object with a name and a schema",
                          param="response_format.json_schema")
    unknown = [k for k in spec if k not in ("name", "schema", "strict", "description")]
    if unknown:
        raise OpenAIError(f"response_format.json_schema: unexpected {unknown[0]!r} (it takes name, schema, strict, "
                          "description)", param="response_format.json_schema")
    schema = spec.get("schema")
    if schema is None:
        return Grammar.json_object()
    try:
        return Grammar.json_schema(schema)
    except GrammarError as exc:
        raise OpenAIError(f"response_format.json_schema.schema: {exc}", param="response_format") from None


def _logprobs(doc: dict, kind: str) -> dict:
    """{"logprobs": the most probable tokens listed beside each chosen one} where the request asks for
    log-probabilities (a chat: logprobs true, with top_logprobs; a completion: logprobs 0 or more), else {}."""
    if kind == "completion":
        top = _int(doc, "logprobs", None, 0)
        if top is not None and top > MAX_LOGPROBS:
            raise OpenAIError(f"logprobs {top}: give a whole number from 0 to {MAX_LOGPROBS}", param="logprobs")
        return {} if top is None else {"logprobs": top}
    wanted = _bool(doc, "logprobs")
    top = _int(doc, "top_logprobs", None, 0)
    if top is not None and top > MAX_LOGPROBS:
        raise OpenAIError(f"top_logprobs {top}: give a whole number from 0 to {MAX_LOGPROBS}", param="top_logprobs")
    if top and not wanted:
        raise OpenAIError("top_logprobs needs logprobs: true", param="top_logprobs")
    return {"logprobs": top or 0} if wanted else {}


def _max_tokens(doc: dict, kind: str, echo: bool = False) -> int | None:
    """max_tokens (or a chat's max_completion_tokens): 1 or more; 0 too for a completion's echo (its prompt's
    log-probabilities alone, as evaluation harnesses ask)."""
    names = ("max_tokens", "max_completion_tokens") if kind == "chat" else ("max_tokens",)
    given = {name: _int(doc, name, None, 0 if echo else 1) for name in names if doc.get(name) is not None}
    if len(set(given.values())) > 1:
        raise OpenAIError("max_tokens and max_completion_tokens differ: give one", param="max_completion_tokens")
    return next(iter(given.values()), None)


def _messages(value) -> list[dict]:
    """The conversation as chat templates take it: role and text content (OpenAI's content parts of type
    text joined by newlines, as vLLM joins them; a developer message is the system's)."""
    if not isinstance(value, list) or not value:
        raise OpenAIError('messages: give a non-empty list of {"role": ..., "content": ...}', param="messages")
    messages = []
    for k, message in enumerate(value):
        where = f"messages[{k}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise OpenAIError(f"{where}: give an object with a role ({', '.join(ROLES)}) and a content", param=where)
        content = message.get("content")
        if message["role"] == "assistant" and message.get("tool_calls") is not None:
            messages.append(_with_calls(message, content, where))
            continue
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise OpenAIError(f"{where}.content: ptx serve takes text parts only ({{\"type\": \"text\", \"text\": "
                                  "...}})", param=f"{where}.content")
            content = "\n".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise OpenAIError(f"{where}.content {_json(content)}: give text", param=f"{where}.content")
        role = "system" if message["role"] == "developer" else message["role"]
        if role == "tool":
            messages.append(_read(tool_message, message, content, where))
        else:
            messages.append({"role": role, "content": content})
    return messages


def _with_calls(message: dict, content, where: str) -> dict:
    """An assistant message that called tools: its calls, and its text where it has some."""
    if content is not None and not isinstance(content, str):
        raise OpenAIError(f"{where}.content {_json(content)}: give text or null", param=f"{where}.content")
    return {"role": "assistant", "content": content, "tool_calls": _read(assistant_calls, message, where)}


def _read(read, *args):
    try:
        return read(*args)
    except ToolsError as exc:
        raise OpenAIError(str(exc), param=exc.param) from None


def _prompts(value) -> list:
    """A completion's prompts: a string, a list of strings, a list of token ids, or a list of such lists."""
    def ids(item) -> bool:
        return isinstance(item, list) and bool(item) and all(isinstance(t, int) and not isinstance(t, bool) for t in item)

    if isinstance(value, str):
        return [value]
    if ids(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) or ids(p) for p in value):
        return value
    raise OpenAIError(f"prompt {_json(value)}: give a string, a list of strings, a list of token ids, or a list of such "
                      "lists", param="prompt")


# -- answers ----------------------------------------------------------------------------------------

def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class Reply:
    """What every document of one answer shares: its id, its time, the model's name and the kind."""

    kind: str
    model: str
    id: str = ""
    created: int = 0

    def __post_init__(self):
        self.id = self.id or new_id(self.kind)
        self.created = self.created or int(time.time())

    def _head(self, chunk: bool) -> dict:
        what = ("chat.completion" + ".chunk" * chunk) if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": what, "created": self.created, "model": self.model}

    def whole(self, choices: list[tuple], counted: dict) -> dict:
        """The non-streamed answer: ``choices`` (text, finish_reason, logprobs or None, and for a chat its
        tool_calls or None) in order, and the usage."""
        if self.kind == "chat":
            listed = [{"index": k, "message": _message(text, calls), "logprobs": logprobs, "finish_reason": reason}
                      for k, (text, reason, logprobs, calls) in enumerate(choices)]
        else:
            listed = [{"index": k, "text": text, "logprobs": logprobs, "finish_reason": reason}
                      for k, (text, reason, logprobs, _) in enumerate(choices)]
        return {**self._head(False), "choices": listed, "usage": counted}

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None, first: bool = False,
              logprobs: dict | None = None) -> bytes:
        """One server-sent event: choice ``index``'s new text (a chat's first says the role), or its end;
        ``logprobs``: those of the text's tokens, where asked."""
        if self.kind == "chat":
            delta = {"role": "assistant", "content": text or ""} if first else (
                {"content": text} if text is not None else {})
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
        return event({**self._head(True), "choices": [choice]})

    def delta_chunk(self, index: int, delta: dict) -> bytes:
        """A chat's event of choice ``index`` whose delta is ``delta`` (a tool call's parts)."""
        return event({**self._head(True), "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                        "finish_reason": None}]})

    def usage_chunk(self, counted: dict) -> bytes:
        return event({**self._head(True), "choices": [], "usage": counted})


def _message(text: str | None, calls: list[dict] | None) -> dict:
    """A chat answer's message: its text, and the tools it calls where it calls some."""
    return {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}


def spelt(token_bytes: bytes) -> str:
    """A token's text as OpenAI writes it: its characters, a byte that is no whole character escaped (\\xe6)."""
    return token_bytes.decode("utf-8", errors="backslashreplace")


def chat_logprobs(taken: list, spell: Callable[[int], bytes]) -> dict:
    """A chat's logprobs: each token (ptx.contract.logprobs.TokenLogprob) with its bytes and its top ones
    (``spell``: a token id's bytes)."""
    def entry(token: int, logprob: float) -> dict:
        raw = spell(token)
        return {"token": spelt(raw), "logprob": logprob, "bytes": list(raw)}

    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(i, v) for i, v in t.top]} for t in taken],
            "refusal": None}


def completion_logprobs(taken: list, spell: Callable[[int], bytes], offset: int = 0, lead: int | None = None) -> dict:
    """A completion's logprobs: ``taken`` (a TokenLogprob per token), their text, and each one's place in the
    answer's text counted from ``offset``; each token's top log-probabilities list the most probable ones and
    the chosen one. ``lead``: an echoed prompt's first token, listed first with no log-probability (nothing
    before it predicts it), as OpenAI lists it."""
    tokens, values, tops, offsets = [], [], [], []
    if lead is not None:
        tokens, values, tops, offsets = [spelt(spell(lead))], [None], [None], [offset]
        offset += len(tokens[0])
    for entry in taken:
        tokens.append(spelt(spell(entry.token)))
        values.append(entry.logprob)
        tops.append({spelt(spell(i)): v for i, v in (*entry.top, (entry.token, entry.logprob))})
        offsets.append(offset)
        offset += len(tokens[-1])
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def event(doc: dict) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"
