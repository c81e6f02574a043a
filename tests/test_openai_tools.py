"""`ptx serve`'s OpenAI API answers agent frameworks' `tools`, tested with the real `openai` client on a tiny
random Qwen2 with Qwen2.5's chat template: a required or named call gives `tool_calls` whose arguments validate
against the function's schema in 100 of 100 sampled answers (finish_reason "tool_calls"), a streamed call
reassembles to the same call, `tool` messages are taken back into the conversation as the template renders
them, "auto" answers text where the model calls nothing, and LangChain's bind_tools and with_structured_output
return parsed objects where langchain-openai is installed. A model whose template writes Mistral Small 3.1's calls
([TOOL_CALLS]name[CALL_ID]id[ARGS]{...}, control tokens of its tokenizer) answers the same client alike, its own ids
kept and OpenAI's renamed for its template. A template without tool syntax and bad tools
fields are in test_openai.py's hostile battery."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import serving
from test_openai_structured import TIMEOUT_S, client, local, server  # noqa: F401 - the same server fixtures
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


def test_a_function_without_parameters_is_called_with_none(client):
    """OpenAI: "omitting parameters defines a function with an empty parameter list". A forced call of such a
    function has the arguments {} in each of 10 sampled answers (before, any object: the random model filled it with
    keys of its own, or never closed it)."""
    ping = {"type": "function", "function": {"name": "ping", "description": "Ping the server"}}
    for seed in range(10):
        got = client.chat.completions.create(model="qwen", messages=ASK, tools=[ping], tool_choice="required",
                                             temperature=1.0, seed=seed, max_tokens=200).choices[0]
        assert got.finish_reason == "tool_calls", got
        assert [(c.function.name, c.function.arguments) for c in got.message.tool_calls] == [("ping", "{}")]


def test_parallel_tool_calls_false_keeps_an_answer_s_first_call_whole_and_streamed(local):
    """An answer of two calls (Hermes' blocks, Qwen2.5's syntax) returns both by default, and its first alone where
    the request says parallel_tool_calls false: as a whole answer lists its calls (Tools.kept) and as a stream sends
    them (the server's chunks)."""
    from ptx.infer.model.tool_calls import Hermes
    from ptx.serve.openai_api import Reply
    from ptx.serve.openai_routes import _CallChunks
    from ptx.serve.openai_tools import parse_tools

    answer = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
              '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>')
    for parallel, names in ((None, ["get_weather", "get_time"]), (True, ["get_weather", "get_time"]),
                            (False, ["get_weather"])):
        tools = parse_tools({"tools": TOOLS, **({} if parallel is None else {"parallel_tool_calls": parallel})})
        syntax = Hermes(local.text)
        assert [c.name for c in tools.kept(syntax.parse(answer)[1])] == names
        chunks = _CallChunks(Reply("chat", "qwen"), syntax, 1, tools.parallel)
        sent = [json.loads(c.decode().removeprefix("data: ")) for c in chunks.feed(0, answer, None) + chunks.finish()]
        streamed = [d["function"]["name"] for doc in sent for d in doc["choices"][0]["delta"].get("tool_calls", [])
                    if d.get("id")]
        assert streamed == names


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


@pytest.fixture(scope="module")
def mistral_client(tmp_path_factory):
    """A tiny random Qwen2 behind a tokenizer laid out as Mistral's, with Mistral Small 3.1's template, exported by
    `ptx export DIR` and served: the real client against it."""
    import text_models
    from ptx_command import ptx
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("mistral-served")
    folder = text_models.mistral_tokenizer_folder(root / "folder", text_models.MISTRAL_CALL_ID_TEMPLATE)
    text_models.qwen2(len(AutoTokenizer.from_pretrained(str(folder)))).save_pretrained(str(folder))
    done = ptx("export", folder, "--out", root / "export", "--format", "onnx")
    assert done.returncode == 0, done.stdout + done.stderr
    with serving.named(root / "no-runs", {"mistral": root / "export" / "model.onnx"}, 8) as running:
        yield serving.openai_client(running, TIMEOUT_S)


def test_a_mistral_model_s_calls_come_back_whole_and_streamed_with_its_own_ids(mistral_client):
    def ask(seed, **extra):
        return mistral_client.chat.completions.create(model="mistral", messages=ASK, tools=TOOLS,
                                                      tool_choice="required", temperature=1.0, seed=seed,
                                                      max_tokens=200, **extra)

    with ThreadPoolExecutor(8) as pool:
        got = [r.choices[0] for r in pool.map(ask, range(20))]
    for answer in got:
        assert answer.finish_reason == "tool_calls" and answer.message.content is None
        [made] = answer.message.tool_calls
        assert re.fullmatch("[A-Za-z0-9]{9}", made.id)  # nine letters or digits, as its template demands
        jsonschema.validate(json.loads(made.function.arguments), SCHEMAS[made.function.name])
    parts = {"id": None, "name": "", "arguments": ""}
    for chunk in ask(3, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or ():
            parts["id"] = delta.id or parts["id"]
            parts["name"] += delta.function.name or ""
            parts["arguments"] += delta.function.arguments or ""
    whole = got[3].message.tool_calls[0]
    assert (parts["id"], parts["name"], parts["arguments"]) == (whole.id, whole.function.name, whole.function.arguments)
    # the call sent back with OpenAI's id, and its tool's answer: renamed to nine characters, the two still paired
    call_1 = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    sent = [ASK[0], {"role": "assistant", "content": None, "tool_calls": [call_1]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21"}]
    back = mistral_client.chat.completions.create(model="mistral", messages=sent, tools=TOOLS, max_tokens=4)
    assert back.usage.prompt_tokens > mistral_client.chat.completions.create(
        model="mistral", messages=ASK, tools=TOOLS, max_tokens=4).usage.prompt_tokens
