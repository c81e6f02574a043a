"""Tool calls in a model's own syntax (infer/model/tool_calls.py): Qwen2.5's chat template renders tools, calls
and tools' answers as transformers renders them; Hermes' <tool_call> blocks are read out of an answer whole or
piece by piece alike (text around them kept, a block that is no call left as text); the grammar that forces a
call gives, on a tiny random Qwen2, calls whose arguments validate against the function's schema, sampled; a
template that never renders tools has no syntax. Mistral v0.3's template: its [TOOL_CALLS] list read whole or
piece by piece alike, its control token kept in the decoded text (its other special tokens still dropped), and a
conversation's OpenAI ids renamed to the nine characters its template demands, a call and its answer still
paired. Mistral's later templates alike: each call's [TOOL_CALLS]name[ARGS]{...}, with its [CALL_ID] where the
template writes ids."""
from __future__ import annotations

import functools
import json
import re
import types

import pytest

from ptx.contract.sampling import Sampling
from ptx.errors import PtxError
from ptx.infer import load
from ptx.infer.model.text import Text, TextStream
from ptx.infer.model.text_generation import end_ids, generate_text
from ptx.infer.model.tool_calls import Hermes, LlamaJson, MistralArgs, MistralCalls, reads_tools, syntax_of

transformers = pytest.importorskip("transformers")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]},
                                                    "days": {"type": "array", "items": {"$ref": "#/$defs/day"},
                                                             "maxItems": 3}},
                   "required": ["city", "unit"], "additionalProperties": False,
                   "$defs": {"day": {"type": "integer", "minimum": 1, "maximum": 7}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}}, "required": ["zone"],
    "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21"},
]


@pytest.fixture(scope="module")
def words(tool_chat_export):
    return Text.open(tool_chat_export["folder"])


@pytest.mark.parametrize("messages", [CONVERSATION[:1], CONVERSATION])
def test_tools_calls_and_answers_render_as_transformers_renders_them(words, tool_chat_export, messages):
    theirs = transformers.AutoTokenizer.from_pretrained(str(tool_chat_export["folder"]))
    want = theirs.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert words.render(messages, tools=TOOLS) == want
    assert "<tools>" in want and ("<tool_response>" in want) == (len(messages) > 1)
    assert words.render(messages[:1]) != want  # without tools, another prompt


def test_hermes_blocks_are_read_whole_or_piece_by_piece_alike(words):
    syntax = Hermes(words)
    answer = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
              '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\"}"}\n</tool_call>')
    content, calls = syntax.parse(answer)
    assert content == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"zone": "CET"})]
    assert calls[0].id != calls[1].id and calls[0].id.startswith("call_")
    stream, events = syntax.stream(), []
    for char in answer:  # one character at a time: a tag split anywhere
        events += stream.feed(char)
    events += stream.finish()
    assert "".join(e for e in events if isinstance(e, str)) == content
    assert [(c.name, c.arguments) for c in events if not isinstance(c, str)] == [(c.name, c.arguments) for c in calls]
    # a block that is no call stays text; a call left open at the end is read; plain text is text
    assert syntax.parse("<tool_call>\nnot json\n</tool_call>") == ("<tool_call>\nnot json\n</tool_call>", [])
    assert syntax.parse('<tool_call>{"name": "get_time", "arguments": {}}')[1][0].name == "get_time"
    assert syntax.parse("Just text, <tool_ not a tag.  ") == ("Just text, <tool_ not a tag.", [])


def test_llama_3_1_s_json_calls_are_read_whole_or_piece_by_piece_alike(words):
    syntax = LlamaJson(words)
    answer = ' {"name": "get_weather", "parameters": {"city": "Paris; France", "unit": "celsius"}}; ' \
             '{"name": "get_time", "parameters": {"zone": "CET"}}'
    content, calls = syntax.parse(answer)
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris; France", "unit": "celsius"}), ("get_time", {"zone": "CET"})]
    stream, events = syntax.stream(), []
    for char in answer:
        events += stream.feed(char)
    assert events == []  # an answer that opens with "{" is held whole
    assert [(c.name, c.arguments) for c in stream.finish()] == [(c.name, c.arguments) for c in calls]
    assert syntax.parse("It is sunny {really}.") == ("It is sunny {really}.", [])  # text streams as text
    assert syntax.parse('{"not": "a call"}') == ('{"not": "a call"}', [])


def test_which_templates_have_a_tool_syntax(words, chat_export):
    assert isinstance(syntax_of(words), Hermes)
    plain = Text.open(chat_export["folder"])  # ChatML without tools
    assert not reads_tools(plain.chat_template) and syntax_of(plain) is None
    # Llama 3.1's tools prompt spells out its format (a template that renders tools and says it)
    llama = ("{% if tools %}Respond in the format {\"name\": function name, \"parameters\": dictionary of argument "
             "name and its value}.{% for t in tools %}{{ t | tojson(indent=4) }}{% endfor %}{% endif %}")
    assert isinstance(syntax_of(types.SimpleNamespace(chat_template=llama)), LlamaJson)
    assert syntax_of(types.SimpleNamespace(chat_template="{% for t in tools %}{{ t.name }}{% endfor %}")) is None
    # Mistral's later syntax, [TOOL_CALLS]name[ARGS]{...}, is read as itself, not as v0.3's list
    later = "{% for t in tools %}{{ t.name }}{% endfor %}[TOOL_CALLS]{{ name }}[ARGS]{{ arguments }}"
    assert type(syntax_of(types.SimpleNamespace(chat_template=later, keep_special=lambda tag: None))) is MistralArgs
    unread = "{% for t in tools %}{{ t.name }}{% endfor %}<function_call>{{ name }}"
    assert syntax_of(types.SimpleNamespace(chat_template=unread)) is None


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    import text_models

    folder = text_models.mistral_tokenizer_folder(tmp_path_factory.mktemp("mistral"))
    return folder, Text.open(folder)


def test_mistral_s_calls_are_read_whole_or_piece_by_piece_alike_and_its_tag_is_kept_in_the_text(mistral):
    folder, words = mistral
    assert isinstance(syntax_of(words), MistralCalls)
    syntax = MistralCalls(words)
    answer = ('Let me look.[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
              '{"name": "get_time", "arguments": {"zone": "CET"}}]')
    content, calls = syntax.parse(answer)
    assert content == "Let me look." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"zone": "CET"})]
    assert all(re.fullmatch("[0-9A-Za-z]{9}", c.id) for c in calls) and calls[0].id != calls[1].id
    stream, events = syntax.stream(), []
    for char in answer:
        events += stream.feed(char)
    assert "".join(events) == "Let me look."  # the list is held to the end of the answer
    assert [(c.name, c.arguments) for c in stream.finish()] == [(c.name, c.arguments) for c in calls]
    assert syntax.parse("[TOOL_CALLS] [not json") == ("[TOOL_CALLS] [not json", [])
    # [TOOL_CALLS] is a special token, which decoding drops: the syntax keeps it, and only it
    ids = words.encode("<s>" + answer + "</s>", special=False)
    assert words.tokenizer.token_to_id("[TOOL_CALLS]") in ids
    assert words.decode(ids) == answer
    pieces = TextStream(words)
    assert "".join(pieces.feed(t) for t in ids) + pieces.finish() == answer
    assert syntax.parse(words.decode(ids))[1][1].name == "get_time"


def test_mistral_s_template_gets_ids_of_nine_characters_a_call_and_its_answer_paired(mistral):
    folder, words = mistral
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    with pytest.raises(Exception, match="length 9"):  # OpenAI's ids, as the template refuses them
        theirs.apply_chat_template(CONVERSATION, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    sent = MistralCalls(words).conversation(CONVERSATION)
    ids = {sent[1]["tool_calls"][0]["id"], sent[2]["tool_call_id"]}
    assert len(ids) == 1 and re.fullmatch("[0-9a-f]{9}", ids.pop())
    assert CONVERSATION[1]["tool_calls"][0]["id"] == "call_1"  # the caller's messages unchanged
    assert words.render(sent, tools=TOOLS) == theirs.apply_chat_template(sent, tools=TOOLS, add_generation_prompt=True,
                                                                         tokenize=False)
    kept = [{**CONVERSATION[1], "tool_calls": [{**CONVERSATION[1]["tool_calls"][0], "id": "abcDEF123"}]}]
    assert MistralCalls(words).conversation(kept)[0]["tool_calls"][0]["id"] == "abcDEF123"  # a right id stays


@pytest.fixture(scope="module", params=["MISTRAL_ARGS_TEMPLATE", "MISTRAL_CALL_ID_TEMPLATE"])
def mistral_later(request, tmp_path_factory):
    """A tokenizer laid out as Mistral's later ones, with Small 3.2's template ([ARGS]) or 3.1's ([CALL_ID] too)."""
    import text_models

    folder = text_models.mistral_tokenizer_folder(tmp_path_factory.mktemp("mistral-later"),
                                                  getattr(text_models, request.param))
    return folder, Text.open(folder)


def test_mistral_s_later_calls_are_read_whole_or_piece_by_piece_alike_their_tags_kept_in_the_text(mistral_later):
    folder, words = mistral_later
    syntax = syntax_of(words)
    assert type(syntax) is MistralArgs and syntax.with_ids == ("[CALL_ID]" in words.chat_template)
    ids = ["[CALL_ID]abcDEF123", "[CALL_ID]x1y2z3w4v"] if syntax.with_ids else ["", ""]
    answer = (f'Let me look.[TOOL_CALLS]get_weather{ids[0]}[ARGS]{{"city": "Paris", "unit": "celsius"}}'
              f'[TOOL_CALLS]get_time{ids[1]}[ARGS]{{"zone": "CET"}}')
    content, calls = syntax.parse(answer)
    assert content == "Let me look." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {"zone": "CET"})]
    if syntax.with_ids:  # the model's own ids kept, as its template pairs them with the tools' answers
        assert [c.id for c in calls] == ["abcDEF123", "x1y2z3w4v"]
    else:
        assert all(re.fullmatch("[0-9A-Za-z]{9}", c.id) for c in calls) and calls[0].id != calls[1].id
    stream, events = syntax.stream(), []
    for char in answer:
        events += stream.feed(char)
    assert "".join(events) == "Let me look."
    assert [(c.name, c.arguments) for c in stream.finish()] == [(c.name, c.arguments) for c in calls]
    for broken in ('[TOOL_CALLS]get_time[ARGS]{"zone": ', "[TOOL_CALLS]get_time", '[TOOL_CALLS][ARGS]{"zone": "CET"}',
                   '[TOOL_CALLS]get_time[ARGS]{"zone": "CET"} and more'):
        assert syntax.parse(broken) == (broken, [])  # no call where any part of one is missing, or text follows
    # a tag inside the arguments' text does not split them; ids that are not nine letters or digits, or repeat one,
    # are replaced (a client pairs each tool's answer with its call by id)
    _, [quoted] = syntax.parse('[TOOL_CALLS]get_time[ARGS]{"zone": "[TOOL_CALLS]x[ARGS]{}"}')
    assert json.loads(quoted.arguments) == {"zone": "[TOOL_CALLS]x[ARGS]{}"}
    _, calls = syntax.parse('[TOOL_CALLS]a[CALL_ID]short[ARGS]{}[TOOL_CALLS]b[CALL_ID]abcDEF123[ARGS]{}'
                            '[TOOL_CALLS]c[CALL_ID]abcDEF123[ARGS]{}')
    assert calls[1].id == "abcDEF123" and len({c.id for c in calls}) == 3 and calls[0].id != "short"
    with pytest.raises(PtxError, match="'get_date' is not among the tools given"):
        syntax.forced(TOOLS, "get_date")
    # the tags are special tokens, which decoding drops: the syntax keeps its own, and only them
    tokens = words.encode("<s>" + answer + "</s>", special=False)
    assert {words.tokenizer.token_to_id("[TOOL_CALLS]"), words.tokenizer.token_to_id("[ARGS]")} <= set(tokens)
    assert words.decode(tokens) == answer
    pieces = TextStream(words)
    assert "".join(pieces.feed(t) for t in tokens) + pieces.finish() == answer


def test_mistral_s_later_templates_render_calls_and_answers_as_transformers_does(mistral_later):
    folder, words = mistral_later
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    sent = syntax_of(words).conversation(CONVERSATION)
    want = theirs.apply_chat_template(sent, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert words.render(sent, tools=TOOLS) == want
    assert '[TOOL_CALLS]get_weather' in want and '[ARGS]{"city": "Paris", "unit": "celsius"}' in want
    if "[CALL_ID]" in words.chat_template:  # OpenAI's "call_1" renamed for the template, the call and answer paired
        paired = re.findall(r"\[CALL_ID\](\w+)\[ARGS\].*\[TOOL_RESULTS\](\w+)\[TOOL_CONTENT\]", want)
        assert len(paired) == 1 and paired[0][0] == paired[0][1] and len(paired[0][0]) == 9


@pytest.mark.parametrize("family, name", [(Hermes, None), (Hermes, "get_weather"), (LlamaJson, None),
                                          (MistralCalls, "get_time"), (MistralArgs, "get_weather"),
                                          pytest.param(functools.partial(MistralArgs, with_ids=True), None,
                                                       id="MistralArgs-ids-None")])
def test_a_forced_call_s_arguments_validate_against_its_function_s_schema(tool_chat_export, family, name):
    """100 sampled answers at temperature 1.0, each a call (of any tool, or of the one named) whose arguments
    validate; unforced, the same draws make no call. The grammar holds any model to the syntax: Llama 3.1's is
    forced on the same tiny Qwen2."""
    model = load(tool_chat_export["file"])
    try:
        syntax = family(model.text)
        ids = model.text.chat(CONVERSATION[:1], tools=TOOLS)
        forced = Sampling(temperature=1.0, seed=0, max_new_tokens=200, grammar=syntax.forced(TOOLS, name))
        answers = generate_text(model, [ids], model.text, forced, n=100, eos=end_ids(model, model.text))
        schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
        for answer in answers:
            content, calls = syntax.parse(answer.text)
            assert content is None and len(calls) == 1, answer.text
            assert name is None or calls[0].name == name
            jsonschema.validate(json.loads(calls[0].arguments), schemas[calls[0].name])
        if name is None:
            assert {syntax.parse(a.text)[1][0].name for a in answers} == {"get_weather", "get_time"}
        free = generate_text(model, [ids], model.text, Sampling(temperature=1.0, seed=0, max_new_tokens=200), n=10,
                             eos=end_ids(model, model.text))
        assert not any(syntax.parse(a.text)[1] for a in free)
    finally:
        model.close()


def test_the_server_reads_mistral_s_syntax_and_refuses_one_it_does_not_read_in_one_400(mistral):
    """The OpenAI route's choice of syntax: Mistral v0.3's template is read; a template whose calls ptx does not
    read is OpenAI's 400 on tools, naming the syntaxes ptx reads."""
    from ptx.serve.openai_api import OpenAIError
    from ptx.serve.openai_routes import _tool_syntax
    from ptx.serve.openai_tools import Tools

    asked = types.SimpleNamespace(tools=Tools([WEATHER["function"]]))
    assert isinstance(_tool_syntax(types.SimpleNamespace(name="mistral", text=mistral[1]), asked), MistralCalls)
    unread = types.SimpleNamespace(chat_template="{% for t in tools %}{{ t }}{% endfor %}<function_call>{{ n }}")
    with pytest.raises(OpenAIError, match="in a call syntax ptx does not read .*Mistral v0.3") as caught:
        _tool_syntax(types.SimpleNamespace(name="unread", text=unread), asked)
    assert caught.value.status == 400 and caught.value.param == "tools"
