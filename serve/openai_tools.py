"""OpenAI's function calling as a protocol (openai_api.py's part for tools): a chat request's ``tools`` and
``tool_choice`` checked as OpenAI checks them, an assistant message's ``tool_calls`` and a ``tool`` message's
answer read back into the conversation the chat template renders (arguments as objects, as vLLM hands them to
templates), and the calls an answer makes shaped as OpenAI shapes them, whole and streamed (a call's id, type
and name first, then its arguments). What a model's own syntax says is infer/model/tool_calls.py's."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import orjson

from .tensors import RequestError

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for a function's name
FUNCTION_FIELDS = ("name", "description", "parameters", "strict")


class ToolsError(RequestError):
    """A bad tools field: openai_api.py says it as OpenAI's error, naming ``param``."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass
class Tools:
    """The functions a chat may call (OpenAI's [{"type": "function", "function": {...}}]) and how: ``choice``
    "auto" (the model decides), "none" (no call is read), "required" (one call, of any of them) or "function"
    (one call of ``name``); ``parallel`` False (parallel_tool_calls): an answer's first call alone is kept."""

    functions: list[dict]
    choice: str = "auto"
    name: str | None = None
    parallel: bool = True

    def kept(self, calls: list) -> list:
        """The calls an answer returns of those it made: its first alone where calls are not parallel."""
        return calls if self.parallel else calls[:1]

    @property
    def forced(self) -> bool:
        return self.choice in ("required", "function")


def _json(value) -> str:
    return orjson.dumps(value).decode()[:80]


def parse_tools(doc: dict) -> Tools | None:
    """The request's tools and tool_choice, checked; None where it gives no tools."""
    tools, choice = doc.get("tools"), doc.get("tool_choice")
    parallel = doc.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ToolsError(f"parallel_tool_calls {_json(parallel)}: give true or false", "parallel_tool_calls")
    if tools is None or tools == []:
        if choice not in (None, "none"):
            raise ToolsError(f"tool_choice {_json(choice)} needs tools: give the functions in tools", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise ToolsError(f'tools {_json(tools)}: give a list of {{"type": "function", "function": {{"name": ...}}}}',
                         "tools")
    functions = [_function(tool, f"tools[{k}]") for k, tool in enumerate(tools)]
    names = [f["function"]["name"] for f in functions]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ToolsError(f"tools: the function {twice!r} is given twice; give each name once", "tools")
    return Tools(functions, *_choice(choice, names), parallel=parallel is not False)


def _function(tool, where: str) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise ToolsError(f'{where} {_json(tool)}: give {{"type": "function", "function": {{"name": ...}}}}', where)
    function = tool["function"]
    unknown = [k for k in function if k not in FUNCTION_FIELDS]
    if unknown:
        raise ToolsError(f"{where}.function: unexpected {unknown[0]!r} (a function has {', '.join(FUNCTION_FIELDS)})",
                         f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ToolsError(f"{where}.function.name {_json(name)}: give 1 to 64 letters, digits, _ or -",
                         f"{where}.function.name")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ToolsError(f"{where}.function.parameters {_json(parameters)}: give a JSON schema (an object)",
                         f"{where}.function.parameters")
    if not isinstance(function.get("description", ""), str):
        raise ToolsError(f"{where}.function.description: give text", f"{where}.function.description")
    return {"type": "function", "function": dict(function)}


def _choice(choice, names: list[str]) -> tuple[str, str | None]:
    if choice is None:
        return "auto", None
    if choice in ("auto", "none", "required"):
        return choice, None
    shape = 'give "auto", "none", "required" or {"type": "function", "function": {"name": ...}}'
    if not (isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict)):
        raise ToolsError(f"tool_choice {_json(choice)}: {shape}", "tool_choice")
    name = choice["function"].get("name")
    if name not in names:
        raise ToolsError(f"tool_choice names {_json(name)}, which is not among tools ({', '.join(names)})",
                         "tool_choice")
    return "function", name


def assistant_calls(message: dict, where: str) -> list[dict]:
    """An assistant message's tool_calls as the template reads them: each {"id", "type", "function": {"name",
    "arguments"}}, the arguments an object (OpenAI sends them as JSON text)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        raise ToolsError(f"{where}.tool_calls: give a list of calls", f"{where}.tool_calls")
    read = []
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or \
                not isinstance(function.get("arguments"), str):
            raise ToolsError(f'{at}: give {{"id": ..., "type": "function", "function": {{"name": ..., "arguments": '
                             '"{...}"}}}', at)
        try:
            arguments = json.loads(function["arguments"])
        except ValueError:
            raise ToolsError(f"{at}.function.arguments: not JSON text ({function['arguments'][:40]!r})",
                             f"{at}.function.arguments") from None
        read.append({"id": call.get("id"), "type": "function",
                     "function": {"name": function["name"], "arguments": arguments}})
    return read


def tool_message(message: dict, content: str, where: str) -> dict:
    """A tool's answer as the template reads it: its content, the call it answers, its name where given."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise ToolsError(f"{where}.tool_call_id: give the id of the call this message answers", f"{where}.tool_call_id")
    read = {"role": "tool", "content": content, "tool_call_id": call_id}
    if isinstance(message.get("name"), str):
        read["name"] = message["name"]
    return read


def listed(calls) -> list[dict]:
    """An answer's calls (infer/model/tool_calls.py's ToolCall) as a message's tool_calls."""
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def streamed(index: int, call) -> list[dict]:
    """A call as OpenAI streams it: a delta with its id, type and name (arguments ""), then one with its
    arguments; ``index``: its place among the answer's calls."""
    return [{"tool_calls": [{"index": index, "id": call.id, "type": "function",
                             "function": {"name": call.name, "arguments": ""}}]},
            {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}]
