"""OpenAI's API as a protocol, for a model that generates: a chat or completion request's JSON parsed and
checked as OpenAI checks it (types, ranges, what ptx does not do refused by name), and the answers shaped
as OpenAI shapes them (``chat.completion``, ``text_completion``, their stream chunks, ``usage``, and the
error object ``{"error": {"message", "type", "param", "code"}}``), so that the clients people already have
(the ``openai`` package, LangChain, llama-index...) work unchanged. No Starlette and no model here: the
routes (openai_routes.py) join this to a served model's one generation function (answers.py).

ptx's own fields beside OpenAI's, as vLLM and llama.cpp's server take them: ``top_k``, ``min_p``,
``repetition_penalty`` (the openai client sends them with ``extra_body``).
"""
from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

import orjson

from .body import json_object
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
ROLES = ("system", "developer", "user", "assistant", "tool")
# Fields whose other values ptx does not implement: (field, the values that change nothing).
NOT_DONE = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "presence_penalty": (None, 0),
            "frequency_penalty": (None, 0), "logit_bias": (None, {}), "tools": (None, []), "functions": (None, []),
            "tool_choice": (None, "none"), "function_call": (None, "none"), "echo": (None, False), "suffix": (None, ""),
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
    config fills the others); ``max_tokens`` None: the default of its kind."""

    kind: str
    model: str
    messages: list[dict] | None = None
    prompts: list | None = None
    given: dict = field(default_factory=dict)
    max_tokens: int | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False


def parse_request(body: bytes, kind: str) -> TextRequest:
    """``kind`` "chat" or "completion": the request's JSON, checked; else an OpenAIError naming the field."""
    doc = json_object(body, '{"model": ..., "messages" or "prompt": ...}')
    fields = CHAT if kind == "chat" else COMPLETION
    unknown = [k for k in doc if k not in fields]
    if unknown:
        raise OpenAIError(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError("you must provide a model parameter (the served model's name: GET /v1/models lists them)",
                          param="model")
    for name, harmless in NOT_DONE.items():
        if name in doc and doc[name] not in harmless:
            raise OpenAIError(f"{name} {_json(doc[name])}: ptx serve does not support it; leave it out", param=name)
    if kind == "chat" and doc.get("response_format") not in (None, {"type": "text"}):
        raise OpenAIError("response_format: ptx serve answers text only; leave it out", param="response_format")
    asked = TextRequest(kind, model, given=_sampling(doc), n=_int(doc, "n", 1, 1))
    if kind == "chat":
        asked.messages = _messages(doc.get("messages"))
    else:
        asked.prompts = _prompts(doc.get("prompt"))
        best_of = _int(doc, "best_of", asked.n, 1)
        if best_of != asked.n:
            raise OpenAIError(f"best_of {best_of}: ptx serve returns every answer it makes: leave best_of out (or "
                              "equal to n)", param="best_of")
    asked.max_tokens = _max_tokens(doc, kind)
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
    given = {"temperature": _float(doc, "temperature", 0, MAX_TEMPERATURE), "top_p": _float(doc, "top_p", 0, 1, True),
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
    return {k: v for k, v in given.items() if v is not None}


def _max_tokens(doc: dict, kind: str) -> int | None:
    names = ("max_tokens", "max_completion_tokens") if kind == "chat" else ("max_tokens",)
    given = {name: _int(doc, name, None, 1) for name in names if doc.get(name) is not None}
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
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise OpenAIError(f"{where}.content: ptx serve takes text parts only ({{\"type\": \"text\", \"text\": "
                                  "...}})", param=f"{where}.content")
            content = "\n".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise OpenAIError(f"{where}.content {_json(content)}: give text", param=f"{where}.content")
        role = "system" if message["role"] == "developer" else message["role"]
        messages.append({"role": role, "content": content})
    return messages


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

    def whole(self, choices: list[tuple[str, str]], counted: dict) -> dict:
        """The non-streamed answer: ``choices`` (text, finish_reason) in order, and the usage."""
        if self.kind == "chat":
            listed = [{"index": k, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": reason} for k, (text, reason) in enumerate(choices)]
        else:
            listed = [{"index": k, "text": text, "logprobs": None, "finish_reason": reason}
                      for k, (text, reason) in enumerate(choices)]
        return {**self._head(False), "choices": listed, "usage": counted}

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None, first: bool = False) -> bytes:
        """One server-sent event: choice ``index``'s new text (a chat's first says the role), or its end."""
        if self.kind == "chat":
            delta = {"role": "assistant", "content": text or ""} if first else (
                {"content": text} if text is not None else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return event({**self._head(True), "choices": [choice]})

    def usage_chunk(self, counted: dict) -> bytes:
        return event({**self._head(True), "choices": [], "usage": counted})


def event(doc: dict) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"
