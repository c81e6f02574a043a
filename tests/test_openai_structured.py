"""`ptx serve`'s OpenAI API answers extraction code's `response_format`, tested with the real `openai` client on a
tiny random Qwen2 with Qwen2.5's chat template (tests/text_models.py): a JSON schema of nested objects, enums,
arrays and required fields gives JSON that validates in 100 of 100 sampled answers (temperature 1.0, seeds
0-99, many at once in the server's batch), each the library's answer for its seed alone; the stream reassembles
to the whole; `json_object` gives objects. Bad response_format values are in test_openai.py's battery."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_grammar import SCHEMA, TOKENS, valid

import serving
from ptx.contract.grammar import Grammar
from ptx.contract.sampling import Sampling
from ptx.infer import load
from ptx.infer.model.text_generation import end_ids, generate_text

openai = pytest.importorskip("openai")
pytest.importorskip("llguidance")

TIMEOUT_S = 120
ASK = [{"role": "user", "content": "Describe someone as JSON."}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "someone", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def server(tool_chat_export, tmp_path_factory):
    with serving.named(tmp_path_factory.mktemp("no-runs"), {"qwen": tool_chat_export["file"]}, 8) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return serving.openai_client(server, TIMEOUT_S)


@pytest.fixture(scope="module")
def local(tool_chat_export):
    model = load(tool_chat_export["file"])
    yield model
    model.close()


def test_100_sampled_answers_validate_each_the_library_s_for_its_seed(client, local):
    def ask(seed):
        return client.chat.completions.create(model="qwen", messages=ASK, max_tokens=TOKENS, temperature=1.0,
                                              seed=seed, response_format=FORMAT).choices[0]

    with ThreadPoolExecutor(8) as pool:  # the server's batch holds 8 rows: masks in a batch of others
        got = list(pool.map(ask, range(100)))
    assert [c.message.content for c in got if not valid(c.message.content)] == []
    assert all(c.finish_reason == "stop" for c in got)
    ids = local.text.chat(ASK)
    for seed in (0, 41, 99):
        want = generate_text(local, [ids], local.text, Sampling(temperature=1.0, seed=seed, max_new_tokens=TOKENS,
                                                                grammar=Grammar.json_schema(SCHEMA)),
                             eos=end_ids(local, local.text))[0]
        assert got[seed].message.content == want.text
    free = client.chat.completions.create(model="qwen", messages=ASK, max_tokens=TOKENS, temperature=1.0, seed=0)
    assert not valid(free.choices[0].message.content)  # the same draws without the schema


def test_greedy_json_schema_and_a_streamed_answer_reassembles(client):
    greedy = client.chat.completions.create(model="qwen", messages=ASK, max_tokens=TOKENS, temperature=0,
                                            response_format=FORMAT).choices[0].message.content
    assert valid(greedy)
    asked = dict(model="qwen", messages=ASK, max_tokens=TOKENS, temperature=1.0, seed=7, response_format=FORMAT)
    whole = client.chat.completions.create(**asked).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(**asked, stream=True)
              if c.choices]
    assert "".join(pieces) == whole and len(pieces) > 3


def test_json_object_answers_are_objects(client):
    got = [client.chat.completions.create(model="qwen", messages=ASK, max_tokens=TOKENS, temperature=1.0, seed=seed,
                                          response_format={"type": "json_object"}).choices[0] for seed in range(6)]
    ended = [c.message.content for c in got if c.finish_reason == "stop"]
    assert ended and all(isinstance(json.loads(text), dict) for text in ended), ended
