"""`ptx serve`'s OpenAI API answers agent frameworks' `tools`, tested with the real `openai` client on a tiny
random Qwen2 with Qwen2.5's chat template: a required or named call gives `tool_calls` whose arguments validate
against the function's schema in 100 of 100 sampled answers (finish_reason "tool_calls"), a streamed call
reassembles to the same call, `tool` messages are taken back into the conversation as the template renders
them, "auto" answers text where the model calls nothing, and LangChain's bind_tools and with_structured_output
return parsed objects where langchain-openai is installed. A template without tool syntax and bad tools
fields are in test_openai.py's hostile battery."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_openai_structured import client, local, server  # noqa: F401 - the same server fixtures
from test_tool_calls import CONVERSATION, TOOLS, WEATHER

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

ASK = CONVERSATION[:1]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def call(client, seed: int, choice="required", **extra):
    return client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, tool_choice=choice,
                                          temperature=1.0, seed=seed, max_tokens=200, **extra).choices[0]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_a_forced_call_s_arguments_validate_in_100_of_100(client, choice):
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda seed: call(client, seed, choice), range(100)))
    for answer in got:
        assert answer.finish_reason == "tool_calls" and answer.message.content is None
        [made] = answer.message.tool_calls
        assert made.type == "function" and made.id.startswith("call_")
        jsonschema.validate(json.loads(made.function.arguments), SCHEMAS[made.function.name])
    names = {a.message.tool_calls[0].function.name for a in got}
    assert names == ({"get_weather", "get_time"} if choice == "required" else {"get_time"})


def test_a_streamed_call_reassembles_to_the_same_call(client):
    whole = call(client, 3).message.tool_calls[0]
    parts: dict[int, dict] = {}
    ends = []
    for chunk in client.chat.completions.create(model="qwen", messages=ASK, tools=TOOLS, tool_choice="required",
                                                temperature=1.0, seed=3, max_tokens=200, stream=True):
        choice = chunk.choices[0]
        ends += [choice.finish_reason] if choice.finish_reason else []
        for delta in choice.delta.tool_calls or ():
            part = parts.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            part["id"] = delta.id or part["id"]
            part["name"] += delta.function.name or ""
            part["arguments"] += delta.function.arguments or ""
    assert ends == ["tool_calls"] and list(parts) == [0]
    assert (parts[0]["name"], parts[0]["arguments"]) == (whole.function.name, whole.function.arguments)
    assert parts[0]["id"].startswith("call_")


def test_tool_messages_are_taken_back_as_the_template_renders_them(client, local):
    """The assistant's call (its arguments as JSON text, as OpenAI sends them) and the tool's answer: the prompt
    is the template's rendering of them, counted in usage."""
    arguments = '{"city": "Paris", "unit": "celsius"}'
    sent = [ASK[0], {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21"}]
    got = client.chat.completions.create(model="qwen", messages=sent, tools=TOOLS, temperature=0, max_tokens=8)
    assert got.usage.prompt_tokens == len(local.text.chat(CONVERSATION, tools=TOOLS))
    assert got.usage.prompt_tokens != len(local.text.chat(ASK, tools=TOOLS))


def test_auto_answers_text_where_the_model_calls_nothing_and_none_reads_no_call(client):
    auto = call(client, 1, "auto")
    assert auto.message.tool_calls is None and auto.message.content and auto.finish_reason in ("stop", "length")
    plain = call(client, 1, "none")
    assert plain.message.tool_calls is None


def test_langchain_binds_tools_and_returns_structured_output(server):
    """LangChain's ChatOpenAI against ptx serve: bind_tools with tool_choice gives a parsed call, and
    with_structured_output (its json_schema method) a parsed object."""
    langchain_openai = pytest.importorskip("langchain_openai", reason="langchain-openai is not installed")
    model = langchain_openai.ChatOpenAI(model="qwen", base_url=server.url + "/v1", api_key="unused",
                                        temperature=1.0, seed=2, max_tokens=200, max_retries=0)
    message = model.bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Paris?")
    [made] = message.tool_calls
    assert made["name"] == "get_weather"
    jsonschema.validate(made["args"], SCHEMAS["get_weather"])
    schema = {"title": "Place", "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
              "required": ["city"], "additionalProperties": False}
    place = model.with_structured_output(schema, method="json_schema").invoke("Where?")
    assert isinstance(place, dict) and isinstance(place["city"], str)
