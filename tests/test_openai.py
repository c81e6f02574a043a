"""`ptx serve` speaks OpenAI's API for a model exported with its tokenizer (a transformers folder, `ptx export
DIR`), tested with the real `openai` client against a server on a free loopback port: /v1/models, chat and
completions, whole and streamed, give the text the library gives for the same seed; usage, n, stop and
max_tokens as OpenAI means them; every malformed or hostile request is a 4xx in OpenAI's error shape, a
client that leaves mid-stream stops the decoding, and the server goes on answering."""
from __future__ import annotations

import http.client
import json
import shutil
import types
import urllib.error
import urllib.request

import pytest

import serving
from ptx.contract.sampling import Sampling
from ptx.infer import load
from ptx.infer.model.text_generation import end_ids, generate_text

openai = pytest.importorskip("openai")

TIMEOUT_S = 60
BATCH = 4  # the server's --max-batch-size: n times the prompts at most
HI = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def files(chat_export, tmp_path_factory):
    """The chat export, and the same file alone in a folder (no tokenizer: token ids only)."""
    alone = tmp_path_factory.mktemp("ids") / "model.onnx"
    shutil.copy(chat_export["file"], alone)
    return {"chat": chat_export["file"], "ids": alone}


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    with serving.named(tmp_path_factory.mktemp("no-runs"), {"chat": files["chat"], "ids": files["ids"]}, BATCH,
                       "(chat and completions: chat)") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return serving.openai_client(server, TIMEOUT_S)


@pytest.fixture(scope="module")
def local(files):
    model = load(files["chat"])
    yield model
    model.close()


def library_answer(local, ids, max_tokens: int, n: int = 1, **sampling):
    """What the library makes of the same request: the answers to match."""
    return generate_text(local, [ids], local.text, Sampling(max_new_tokens=max_tokens, **sampling), n=n,
                         eos=end_ids(local, local.text))


def test_models_lists_the_models_that_generate(client):
    assert [m.id for m in client.models.list().data] == ["chat", "ids"]
    assert client.models.retrieve("chat").owned_by == "ptx"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_a_chat_completion_is_the_library_s_answer_for_its_seed(client, local):
    want = library_answer(local, local.text.chat(HI), 16, temperature=0.7, seed=1)[0]
    got = client.chat.completions.create(model="chat", messages=HI, max_tokens=16, temperature=0.7, seed=1)
    choice = got.choices[0]
    assert got.object == "chat.completion" and got.model == "chat" and got.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert choice.finish_reason == want.finish_reason
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (len(local.text.chat(HI)), len(want.tokens))
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_a_streamed_chat_is_the_same_text_piece_by_piece(client):
    asked = dict(model="chat", messages=HI, max_tokens=16, temperature=0.7, seed=1)
    whole = client.chat.completions.create(**asked).choices[0]
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    ends = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert ends == [whole.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


def test_completions_give_n_answers_each_its_own_draws_streamed_or_not(client):
    asked = dict(model="chat", prompt="Once upon a time", max_tokens=8, n=2, temperature=1.0, seed=5)
    whole = client.completions.create(**asked)
    assert [c.index for c in whole.choices] == [0, 1] and whole.object == "text_completion"
    assert [c.text for c in whole.choices] == [c.text for c in client.completions.create(**asked).choices]
    assert whole.choices[0].text != whole.choices[1].text  # row 1 draws from its own generator
    pieces = {0: "", 1: ""}
    for chunk in client.completions.create(**asked, stream=True):
        for choice in chunk.choices:
            pieces[choice.index] += choice.text
    assert [pieces[0], pieces[1]] == [c.text for c in whole.choices]


def test_temperature_0_is_greedy_load_generate_s_tokens(client, local):
    ids = local.text.encode("Once upon a time")
    tokens = local.generate(ids, 8, eos=end_ids(local, local.text))[0]
    got = client.completions.create(model="chat", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert got.choices[0].text == local.text.decode(tokens) and got.usage.completion_tokens == len(tokens)
    by_ids = client.completions.create(model="chat", prompt=ids, max_tokens=8, temperature=0)  # a prompt of token ids
    assert by_ids.choices[0].text == got.choices[0].text
    # top_p 0, as apps send it to OpenAI for a deterministic answer: sampling from the most probable token alone
    nucleus = client.completions.create(model="chat", prompt="Once upon a time", max_tokens=8, temperature=1.5,
                                        top_p=0, seed=7)
    assert nucleus.choices[0].text == got.choices[0].text


def test_a_stop_string_ends_the_answer_before_it(client):
    asked = dict(model="chat", prompt="The quick brown", max_tokens=12, temperature=0)
    text = client.completions.create(**asked).choices[0].text
    stop = text[len(text) // 2:][:2]
    cut = client.completions.create(**asked, stop=[stop, "never-there"]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == text[:text.index(stop)]


def test_without_max_tokens_a_completion_makes_openai_s_16_at_most(client):
    got = client.completions.create(model="chat", prompt="Once", temperature=0)
    assert 1 <= got.usage.completion_tokens <= 16


def test_concurrent_clients_each_get_the_answer_they_get_alone(client, local):
    """Six clients at once in the server's one batch (of 4 rows: the others wait their turn, then join while
    it runs), greedy and seeded, streamed and not: each answer is the library's for that request alone."""
    from concurrent.futures import ThreadPoolExecutor

    asked = [("Once upon a time", 24, dict(temperature=0)), ("The quick brown", 12, dict(temperature=0.8, seed=3)),
             ("hello world", 30, dict(temperature=0)), ("café", 8, dict(temperature=1.0, seed=9)),
             ("Once", 16, dict(temperature=0.7, seed=1)), ("user assistant", 20, dict(temperature=0))]

    def ask(k):
        prompt, max_tokens, sampling = asked[k]
        request = dict(model="chat", prompt=prompt, max_tokens=max_tokens, **sampling)
        if k % 2:
            return "".join(c.choices[0].text for c in client.completions.create(**request, stream=True) if c.choices)
        return client.completions.create(**request).choices[0].text

    with ThreadPoolExecutor(len(asked)) as pool:
        got = list(pool.map(ask, range(len(asked))))
    want = [library_answer(local, local.text.encode(p), m, **sampling)[0].text for p, m, sampling in asked]
    assert got == want


def post(server, path: str, body, method: str = "POST", headers: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data if method == "POST" else None, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
OK_CHAT = {"model": "chat", "messages": HI, "max_tokens": 4}
OK_COMPLETION = {"model": "chat", "prompt": "Hi", "max_tokens": 4}
FUNCTION = {"type": "function", "function": {"name": "f"}}
# name -> (path, body, status, what the message says, the param it names)
HOSTILE = {
    "temperature-text": (CHAT, {**OK_CHAT, "temperature": "hot"}, 400, "temperature", "temperature"),
    "temperature-3": (CHAT, {**OK_CHAT, "temperature": 3}, 400, "from 0 to 2", "temperature"),
    "top-p-negative": (CHAT, {**OK_CHAT, "top_p": -0.5}, 400, "from 0 to 1", "top_p"),
    "max-tokens-text": (CHAT, {**OK_CHAT, "max_tokens": "10"}, 400, "whole number", "max_tokens"),
    "max-tokens-huge": (CHAT, {**OK_CHAT, "max_tokens": 10 ** 12}, 400, "new tokens a request", "max_tokens"),
    "max-tokens-0": (COMPLETIONS, {**OK_COMPLETION, "max_tokens": 0}, 400, "at least 1", "max_tokens"),
    "max-tokens-differ": (CHAT, {**OK_CHAT, "max_completion_tokens": 5}, 400, "give one", "max_completion_tokens"),
    "n-true": (CHAT, {**OK_CHAT, "n": True}, 400, "whole number", "n"),
    "n-past-batch": (CHAT, {**OK_CHAT, "n": BATCH + 1}, 400, "--max-batch-size", "n"),
    "seed-float": (CHAT, {**OK_CHAT, "seed": 1.5}, 400, "whole number", "seed"),
    "stop-number": (CHAT, {**OK_CHAT, "stop": [1]}, 400, "strings", "stop"),
    "stop-five": (CHAT, {**OK_CHAT, "stop": list("abcde")}, 400, "up to 4", "stop"),
    "stream-text": (CHAT, {**OK_CHAT, "stream": "yes"}, 400, "true or false", "stream"),
    "stream-options-alone": (CHAT, {**OK_CHAT, "stream_options": {"include_usage": True}}, 400, "stream: true",
                             "stream_options"),
    "unknown-model": (CHAT, {**OK_CHAT, "model": "gpt-4o"}, 404, "does not exist", "model"),
    "no-model": (CHAT, {"messages": HI}, 400, "model parameter", "model"),
    "no-tokenizer": (COMPLETIONS, {**OK_COMPLETION, "model": "ids"}, 400, "no tokenizer beside its file", "model"),
    "empty-messages": (CHAT, {**OK_CHAT, "messages": []}, 400, "non-empty list", "messages"),
    "messages-text": (CHAT, {**OK_CHAT, "messages": "hi"}, 400, "non-empty list", "messages"),
    "no-role": (CHAT, {**OK_CHAT, "messages": [{"content": "hi"}]}, 400, "a role", "messages[0]"),
    "content-number": (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": 5}]}, 400, "give text",
                       "messages[0].content"),
    "image-part": (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:,"}}]}]}, 400, "text parts only", "messages[0].content"),
    "prompt-number": (COMPLETIONS, {**OK_COMPLETION, "prompt": 5}, 400, "a string", "prompt"),
    "prompt-mixed": (COMPLETIONS, {**OK_COMPLETION, "prompt": [[1, 2], [True]]}, 400, "a string", "prompt"),
    "prompt-past-vocab": (COMPLETIONS, {**OK_COMPLETION, "prompt": [5, 10 ** 6]}, 400, "outside the vocabulary", None),
    "prompt-past-positions": (COMPLETIONS, {**OK_COMPLETION, "prompt": "hello " * 200}, 400, "shorten the prompt",
                              "prompt"),
    "prompt-and-tokens-past-positions": (COMPLETIONS, {**OK_COMPLETION, "prompt": "hello " * 20, "max_tokens": 100},
                                         400, "or ask for at most", "max_tokens"),
    "empty-prompt": (COMPLETIONS, {**OK_COMPLETION, "prompt": ""}, 400, "is empty", None),
    "unknown-field": (CHAT, {**OK_CHAT, "temprature": 1}, 400, "Unrecognized request argument", "temprature"),
    "logprobs-text": (CHAT, {**OK_CHAT, "logprobs": "yes"}, 400, "true or false", "logprobs"),
    "top-logprobs-21": (CHAT, {**OK_CHAT, "logprobs": True, "top_logprobs": 21}, 400, "from 0 to 20", "top_logprobs"),
    "top-logprobs-alone": (CHAT, {**OK_CHAT, "top_logprobs": 3}, 400, "needs logprobs: true", "top_logprobs"),
    "completion-logprobs-true": (COMPLETIONS, {**OK_COMPLETION, "logprobs": True}, 400, "whole number", "logprobs"),
    "completion-logprobs-21": (COMPLETIONS, {**OK_COMPLETION, "logprobs": 21}, 400, "from 0 to 20", "logprobs"),
    "presence-3": (CHAT, {**OK_CHAT, "presence_penalty": 3}, 400, "from -2 to 2", "presence_penalty"),
    "frequency-text": (COMPLETIONS, {**OK_COMPLETION, "frequency_penalty": "1"}, 400, "from -2 to 2",
                       "frequency_penalty"),
    "logit-bias-list": (CHAT, {**OK_CHAT, "logit_bias": [1, 2]}, 400, "token id", "logit_bias"),
    "logit-bias-word": (CHAT, {**OK_CHAT, "logit_bias": {"hello": 5}}, 400, "not a token id", "logit_bias"),
    "logit-bias-200": (CHAT, {**OK_CHAT, "logit_bias": {"5": 200}}, 400, "from -100 to 100", "logit_bias"),
    "logit-bias-past-vocab": (COMPLETIONS, {**OK_COMPLETION, "logit_bias": {"100000": 1}}, 400,
                              "outside chat's vocabulary", "logit_bias"),
    "echo-text": (COMPLETIONS, {**OK_COMPLETION, "echo": "yes"}, 400, "true or false", "echo"),
    "tools-without-syntax": (CHAT, {**OK_CHAT, "tools": [FUNCTION]}, 400, "has no tool syntax", "tools"),
    "tools-not-a-list": (CHAT, {**OK_CHAT, "tools": FUNCTION}, 400, "give a list", "tools"),
    "tool-not-a-function": (CHAT, {**OK_CHAT, "tools": [{"type": "code"}]}, 400, '"type": "function"', "tools[0]"),
    "tool-name-spaces": (CHAT, {**OK_CHAT, "tools": [{"type": "function", "function": {"name": "get weather"}}]}, 400,
                         "letters, digits", "tools[0].function.name"),
    "tool-parameters-list": (CHAT, {**OK_CHAT, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": [1]}}]}, 400, "JSON schema", "tools[0].function.parameters"),
    "tool-twice": (CHAT, {**OK_CHAT, "tools": [FUNCTION, FUNCTION]}, 400, "given twice", "tools"),
    "tool-choice-unknown": (CHAT, {**OK_CHAT, "tools": [FUNCTION], "tool_choice": {
        "type": "function", "function": {"name": "g"}}}, 400, "not among tools", "tool_choice"),
    "tool-choice-word": (CHAT, {**OK_CHAT, "tools": [FUNCTION], "tool_choice": "always"}, 400, '"required"',
                         "tool_choice"),
    "tool-choice-without-tools": (CHAT, {**OK_CHAT, "tool_choice": "required"}, 400, "needs tools", "tool_choice"),
    "parallel-text": (CHAT, {**OK_CHAT, "parallel_tool_calls": "yes"}, 400, "true or false", "parallel_tool_calls"),
    "call-arguments-not-json": (CHAT, {**OK_CHAT, "messages": [HI[0], {"role": "assistant", "tool_calls": [{
        "id": "c", "type": "function", "function": {"name": "f", "arguments": "{city"}}]}]}, 400, "not JSON text",
        "messages[1].tool_calls[0].function.arguments"),
    "tool-message-without-id": (CHAT, {**OK_CHAT, "messages": [HI[0], {"role": "tool", "content": "21"}]}, 400,
                                "tool_call_id", "messages[1].tool_call_id"),
    "response-format-xml": (CHAT, {**OK_CHAT, "response_format": {"type": "xml"}}, 400, '{"type": "json_object"}',
                            "response_format"),
    "response-format-text": (CHAT, {**OK_CHAT, "response_format": "json"}, 400, "give", "response_format"),
    "json-schema-no-name": (CHAT, {**OK_CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "schema": {"type": "object"}}}}, 400, "a name and a schema", "response_format.json_schema"),
    "json-schema-unknown-key": (CHAT, {**OK_CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}, "strictly": True}}}, 400, "unexpected 'strictly'",
        "response_format.json_schema"),
    "json-schema-not-a-schema": (CHAT, {**OK_CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": [1]}}}, 400, "is an object", "response_format"),
    "json-schema-bad-type": (CHAT, {**OK_CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "objectx"}}}}, 400, "cannot hold an answer", "response_format"),
    "response-format-on-completions": (COMPLETIONS, {**OK_COMPLETION, "response_format": {"type": "json_object"}},
                                       400, "Unrecognized", "response_format"),
    "suffix": (COMPLETIONS, {**OK_COMPLETION, "suffix": "end"}, 400, "does not support", "suffix"),
    "best-of": (COMPLETIONS, {**OK_COMPLETION, "best_of": 3}, 400, "best_of", "best_of"),
    "chat-field-on-completions": (COMPLETIONS, {**OK_COMPLETION, "messages": HI}, 400, "Unrecognized", "messages"),
    "not-json": (CHAT, b"{model: chat", 400, "not valid JSON", None),
    "json-list": (CHAT, b"[1, 2]", 400, "the request JSON is an object", None),
    "empty-body": (CHAT, b"", 400, "empty request body", None),
    "long-chat": (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": "x"}] * 40}, 400,
                  "context is 128 tokens", "messages"),
    # megabytes of text are refused before they are encoded ("at least": counted from their bytes), where encoding
    # them held the server seconds, its health checks too
    "chat-of-megabytes": (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": "a b " * 500_000}]}, 400,
                          "take at least", "messages"),
    "prompt-of-megabytes": (COMPLETIONS, {**OK_COMPLETION, "prompt": ["Hi", "x" * 2_000_000]}, 400, "take at least",
                            "prompt"),
    # 600 optional properties pass llguidance's 2,000 items a row at the first "{": said before the answer starts,
    # where each answer was "{" and finish_reason "stop"
    "json-schema-past-the-engine": (CHAT, {**OK_CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(600)}}}}},
        400, "past what the grammar engine (llguidance) holds", "response_format"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_requests_are_a_4xx_in_openai_s_shape_and_the_server_goes_on(server, case):
    path, body, want_status, says, param = HOSTILE[case]
    status, raw = post(server, path, body)
    error = json.loads(raw)["error"]
    assert status == want_status, error
    assert says in error["message"] and "\n" not in error["message"], error
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert set(error) == {"message", "type", "param", "code"}
    status, raw = post(server, COMPLETIONS if path == COMPLETIONS else CHAT,
                       OK_COMPLETION if path == COMPLETIONS else OK_CHAT)
    assert status == 200, raw  # the next request is answered


@pytest.mark.parametrize("path, method, status, says", [
    (CHAT, "GET", 405, "takes POST"), ("/v1/audio/speech", "POST", 404, "ptx serve has no POST /v1/audio/speech"),
    ("/v1/embeddings", "POST", 400, "Unrecognized request argument supplied: messages"),
    ("/v1/models/nope", "GET", 404, "does not exist"),
])
def test_other_paths_and_methods_are_openai_errors(server, path, method, status, says):
    got, raw = post(server, path, OK_CHAT, method=method)
    error = json.loads(raw)["error"]
    assert got == status and says in error["message"], error


def metric(server, line: str) -> float:
    """The value of ``line`` (a metric and its labels) on the server's /metrics, 0 where it is not there yet."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=TIMEOUT_S) as response:
        text = response.read().decode()
    return next((float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line + " ")), 0.0)


def test_a_refused_field_counts_under_the_model_it_names_and_an_unknown_model_apart(server):
    """A 400 for a field of the body (temperature 3) is counted under the model the request names, as a refusal of
    the model's (ptx_inference_errors_total); only a model the server does not serve counts as unknown."""
    refused = 'ptx_inference_errors_total{code="400",model="chat",protocol="openai"}'
    unknown = 'ptx_inference_unknown_model_requests_total{protocol="openai"}'
    before = metric(server, refused), metric(server, unknown)
    assert post(server, CHAT, {**OK_CHAT, "temperature": 3})[0] == 400
    assert post(server, COMPLETIONS, {**OK_COMPLETION, "logit_bias": {"5": 200}})[0] == 400
    assert post(server, CHAT, {**OK_CHAT, "model": "gpt-4o"})[0] == 404
    assert (metric(server, refused), metric(server, unknown)) == (before[0] + 2, before[1] + 1)


def test_the_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="chat", messages=[], max_tokens=4)
    assert caught.value.body["param"] == "messages"


def test_a_client_that_leaves_mid_stream_is_a_clean_stop(server, client):
    host, port = server.http.rsplit(":", 1)
    for _ in range(3):
        connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
        connection.request("POST", COMPLETIONS, json.dumps({**OK_COMPLETION, "max_tokens": 100, "stream": True}),
                           {"content-type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: {")
        connection.close()  # gone after the first event
    assert client.completions.create(**OK_COMPLETION).choices[0].text is not None
    status, raw = post(server, "/metrics", None, method="GET")
    assert 'ptx_inference_requests_total{model="chat",protocol="openai"}' in raw.decode()


def test_leaving_a_stream_stops_the_decoding_at_its_next_step(local):
    """In-process: the answers' iteration is left after the first piece; the batch runs a step or two more."""
    import asyncio
    import time
    from contextlib import aclosing

    from ptx.serve.generator import Generator
    from ptx.serve.text_answers import Piece, answers

    generator = Generator("chat", local, local.generation)
    steps = []
    run_step = generator.batch.step
    generator.batch.step = lambda: steps.append(1) or run_step()
    served = types.SimpleNamespace(model=local, text=local.text, generator=generator)
    ids = local.text.encode("Once upon a time")

    async def leave_after_one():
        async with aclosing(answers(served, [ids], Sampling(max_new_tokens=60), 1)) as items:
            async for item in items:
                if isinstance(item, Piece):
                    return item

    try:
        assert isinstance(asyncio.run(leave_after_one()), Piece)
        deadline = time.monotonic() + TIMEOUT_S
        while generator.batch.rows and time.monotonic() < deadline:  # the generation thread drops its rows
            time.sleep(0.01)
        assert generator.batch.rows == 0 and len(steps) < 10  # of 60: stopped within a step or two of leaving
    finally:
        generator.close()


def test_the_token_and_the_body_limit_apply(files):
    """In-process, with a token: the openai client's api_key is the bearer token."""
    from starlette.testclient import TestClient

    from ptx.serve.rest import build_app
    from ptx.serve.service import ServeOptions, Service

    service = Service(ServeOptions(token="s3cret", max_request_bytes=2048))
    service.add("chat", load(files["chat"]))
    try:
        with TestClient(build_app(service)) as http:
            wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=http, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as caught:
                wrong.chat.completions.create(model="chat", messages=HI, max_tokens=2)
            assert caught.value.body["code"] == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                wrong.models.list()
            right = openai.OpenAI(base_url="http://testserver/v1", api_key="s3cret", http_client=http, max_retries=0)
            assert right.chat.completions.create(model="chat", messages=HI, max_tokens=2).choices[0].message.role
            with pytest.raises(openai.APIStatusError) as caught:
                right.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x" * 4000}])
            assert caught.value.status_code == 413
    finally:
        service.close()
