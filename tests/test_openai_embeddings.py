"""`ptx serve` answers OpenAI's /v1/embeddings for a sentence-transformers model's export (tests/embedding_models.py's
MiniLM-shaped folder, `ptx export DIR`), tested with the real `openai` client against a server on a free loopback
port, beside a chat model: the vectors are the library's (Model.embed) for texts, token ids and lists of either,
written as floats or base64 alike; 16 clients at once are batched, each vector as it is alone; usage counts the
tokens; every malformed request is a 4xx in OpenAI's error shape and the server goes on."""
from __future__ import annotations

import base64
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import embedding_models
import serving
from ptx.contract import Tolerance
from ptx.contract.embedding import compare_embedding
from ptx.infer import load
from test_openai import TIMEOUT_S, post

openai = pytest.importorskip("openai")

EMBEDDINGS = "/v1/embeddings"
BATCH = 8  # the server's --max-batch-size
CLIENTS = 16
F32 = Tolerance(1e-4, 1e-3)


@pytest.fixture(scope="module")
def server(embedding_export, chat_export, tmp_path_factory):
    with serving.named(tmp_path_factory.mktemp("no-runs"), {"mini": embedding_export["onnx"], "chat": chat_export["file"]},
                       BATCH, "(chat and completions: chat; embeddings: mini)") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return serving.openai_client(server, TIMEOUT_S)


@pytest.fixture(scope="module")
def local(embedding_export):
    model = load(embedding_export["onnx"])
    yield model
    model.close()


def vectors(answer) -> np.ndarray:
    assert [d.index for d in answer.data] == list(range(len(answer.data)))
    return np.array([d.embedding for d in answer.data], np.float32)


def agrees(got, want) -> bool:
    judged = compare_embedding("sentence_embedding", got, want, F32)
    assert judged.ok, judged.summary()
    return True


def test_models_lists_the_model_that_embeds_beside_the_one_that_chats(client):
    assert [m.id for m in client.models.list().data] == ["mini", "chat"]
    assert client.models.retrieve("mini").id == "mini"


def test_the_vectors_are_the_library_s_for_texts_and_token_ids(client, local):
    texts = embedding_models.sentences(5)
    answer = client.embeddings.create(model="mini", input=texts)  # the client asks for base64 and decodes it
    assert answer.object == "list" and answer.model == "mini" and len(answer.data) == 5
    want = local.embed(texts)
    assert agrees(vectors(answer), want)
    ids = [local.text.encode(t) for t in texts]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(map(len, ids))
    floats = client.embeddings.create(model="mini", input=texts, encoding_format="float")
    assert np.array_equal(vectors(floats), vectors(answer))  # float32 both ways, to the bit
    assert np.array_equal(vectors(client.embeddings.create(model="mini", input=ids)), vectors(answer))
    one = client.embeddings.create(model="mini", input=ids[0], dimensions=384)  # one list of ids: one input
    assert len(one.data) == 1 and agrees(vectors(one), want[:1])
    alone = client.embeddings.create(model="mini", input=texts[2], encoding_format="float")
    assert agrees(vectors(alone), want[2:3])


def test_base64_is_the_vectors_little_endian_float32_bytes(server, local):
    status, raw = post(server, EMBEDDINGS, {"model": "mini", "input": "hello world", "encoding_format": "base64"})
    assert status == 200, raw
    doc = json.loads(raw)
    assert set(doc) == {"object", "data", "model", "usage"} and set(doc["usage"]) == {"prompt_tokens", "total_tokens"}
    assert doc["data"][0]["object"] == "embedding"
    got = np.frombuffer(base64.b64decode(doc["data"][0]["embedding"]), "<f4")
    assert got.shape == (384,) and agrees(got[None], local.embed("hello world"))


def test_a_request_larger_than_the_batch_runs_in_parts_each_vector_as_alone(client, local):
    texts = embedding_models.sentences(3 * BATCH + 1, seed=3)
    got = vectors(client.embeddings.create(model="mini", input=texts))
    assert agrees(got, np.concatenate([local.embed(t) for t in texts]))


def test_16_concurrent_clients_are_batched_each_vector_as_alone(server, client, local):
    """Sixteen clients at once, texts of other lengths (padded to join one batch): each answer is the vector its text
    gets alone, and the batcher joined requests (the metrics' batch sizes sum past their count)."""
    def batches() -> tuple[float, float]:
        text = post(server, "/metrics", None, method="GET")[1].decode()
        found = {kind: float(re.search(rf'^ptx_batch_size_{kind}{{model="mini"}} (\S+)$', text, re.M).group(1))
                 for kind in ("sum", "count")}
        return found["sum"], found["count"]

    texts = embedding_models.sentences(CLIENTS, seed=7)
    rows_before, runs_before = batches()
    with ThreadPoolExecutor(CLIENTS) as pool:
        got = list(pool.map(lambda t: vectors(client.embeddings.create(model="mini", input=t)), texts))
    for text, vector in zip(texts, got):
        assert agrees(vector, local.embed(text))
    rows, runs = batches()
    assert rows - rows_before == CLIENTS and runs - runs_before < CLIENTS, (rows, runs)


def test_texts_of_other_lengths_join_one_batch_padded_each_vector_as_alone(local):
    """The batcher's join of two requests of other lengths (the embedder's pads: ids and mask padded with 0 at the
    end) answers each as alone; padding the mask with 1 instead (the padding attended to) is caught."""
    from ptx.infer.model.embedding import embedder_of
    from ptx.serve.batcher import Merge

    embedder = embedder_of(local)
    short, long = (embedder.feeds([embedder.ids(t, "text")]) for t in ("hello", embedding_models.LINES[2]))
    alone = [local.run(f)["sentence_embedding"] for f in (short, long)]
    for pads, holds in ((embedder.pads, True), ({**embedder.pads, "attention_mask": (1, 1)}, False)):
        merge = Merge.of(local.signature, pads)
        assert merge.key(short) == merge.key(long)  # the lengths may differ within one batch
        joined = merge.split(local.run(merge.join([short, long])), [1, 1])
        judged = compare_embedding("sentence_embedding", joined[0]["sentence_embedding"], alone[0], F32)
        assert judged.ok is holds, judged.summary()
        assert agrees(joined[1]["sentence_embedding"], alone[1])  # the longest row has no padding either way


OK = {"model": "mini", "input": "hello"}
# name -> (path, body, status, what the message says, the param it names)
HOSTILE = {
    "dimensions-other": (EMBEDDINGS, {**OK, "dimensions": 128}, 400, "mini's vectors have 384", "dimensions"),
    "dimensions-text": (EMBEDDINGS, {**OK, "dimensions": "384"}, 400, "whole number", "dimensions"),
    "dimensions-0": (EMBEDDINGS, {**OK, "dimensions": 0}, 400, "at least 1", "dimensions"),
    "encoding-hex": (EMBEDDINGS, {**OK, "encoding_format": "hex"}, 400, "float or base64", "encoding_format"),
    "input-empty-text": (EMBEDDINGS, {**OK, "input": ""}, 400, "input[0] is empty", "input"),
    "input-empty-list": (EMBEDDINGS, {**OK, "input": []}, 400, "give a string", "input"),
    "input-number": (EMBEDDINGS, {**OK, "input": 5}, 400, "give a string", "input"),
    "input-mixed": (EMBEDDINGS, {**OK, "input": ["a", 5]}, 400, "give a string", "input"),
    "input-bool-ids": (EMBEDDINGS, {**OK, "input": [[1, True]]}, 400, "give a string", "input"),
    "input-missing": (EMBEDDINGS, {"model": "mini"}, 400, "give a string", "input"),
    "input-too-many": (EMBEDDINGS, {**OK, "input": ["a"] * 2049}, 400, "at most 2048", "input"),
    "ids-past-vocab": (EMBEDDINGS, {**OK, "input": [5, 10 ** 6]}, 400, "outside mini's vocabulary", "input"),
    "ids-negative": (EMBEDDINGS, {**OK, "input": [[5, -1]]}, 400, "token id -1", "input"),
    "too-long": (EMBEDDINGS, {**OK, "input": ["fine", "hello " * 300]}, 400, "input[1] is 302 tokens", "input"),
    "user-number": (EMBEDDINGS, {**OK, "user": 5}, 400, "give a string", "user"),
    "unknown-field": (EMBEDDINGS, {**OK, "dimension": 384}, 400, "Unrecognized request argument", "dimension"),
    "no-model": (EMBEDDINGS, {"input": "hi"}, 400, "model parameter", "model"),
    "unknown-model": (EMBEDDINGS, {**OK, "model": "text-embedding-3-small"}, 404, "does not exist", "model"),
    "chat-model": (EMBEDDINGS, {**OK, "model": "chat"}, 400, "chat generates text and has no embeddings", "model"),
    "embedder-on-chat": ("/v1/chat/completions", {"model": "mini", "messages": [{"role": "user", "content": "hi"}]},
                         400, "mini embeds texts", "model"),
    "embedder-on-completions": ("/v1/completions", {"model": "mini", "prompt": "hi"}, 400, "ask /v1/embeddings",
                                "model"),
    "not-json": (EMBEDDINGS, b"{model: mini", 400, "not valid JSON", None),
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
    assert error["code"] == ("context_length_exceeded" if case == "too-long" else
                             "model_not_found" if case == "unknown-model" else None), error
    status, raw = post(server, EMBEDDINGS, OK)
    assert status == 200, raw  # the next request is answered


def test_the_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="mini", input="hi", dimensions=256)
    assert caught.value.body["param"] == "dimensions"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="hi")


def test_a_get_is_openai_s_405(server):
    status, raw = post(server, EMBEDDINGS, None, method="GET")
    assert status == 405 and "takes POST" in json.loads(raw)["error"]["message"]
