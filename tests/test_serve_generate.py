"""`ptx serve` answers Triton's generate extension for a causal LM exported with its key/value cache: the
served tokens are `ptx.infer.load(FILE).generate`'s for one prompt and for a left-padded batch of
prompts of different lengths, generate_stream sends them one event per step, the metadata says the
model generates, and every bad request is a 4xx of one line (a model without a cache among them)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

import serving
from ptx.infer import load

VOCAB, POSITIONS = 200, 64
PROMPT, SHORT = [5, 17, 23, 42], [9]
REQUEST_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny random-weight Llama exported with its cache (once for the module), and a small ONNX file
    without one."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ptx.export import export_module

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                                      initializer_range=0.2, eos_token_id=None, bos_token_id=None)
    out = tmp_path_factory.mktemp("lm")
    export_module(transformers.LlamaForCausalLM(config).eval(), None, out / "export", log=lambda line: None)
    plain = out / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), plain)
    return {"lm": out / "export" / "model.onnx", "plain": plain}


@pytest.fixture(scope="module")
def server(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("no-runs")
    with serving.running(root, files["lm"], files["plain"], args=("--name", "lm", "--name", "plain")) as running:
        yield running


@pytest.fixture(scope="module")
def local(files):
    """The file as the library opens it: the answers to match."""
    model = load(files["lm"])
    yield model
    model.close()


def post(server, path, body, method="POST"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.headers.get("content-type"), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type"), exc.read()


def generate(server, body, path="/v2/models/lm/generate"):
    status, _, raw = post(server, path, body)
    return status, json.loads(raw)


def events(raw: bytes) -> list[dict]:
    """The Server-Sent Events of a generate_stream answer, each a JSON object."""
    return [json.loads(block[len(b"data: "):]) for block in raw.split(b"\n\n") if block.startswith(b"data: ")]


# -- answers -------------------------------------------------------------------------------------


def test_one_prompt_gets_what_load_generate_gives(server, local):
    want = local.generate(PROMPT, max_new_tokens=12)[0]
    assert len(want) == 12
    for path in ("/v2/models/lm/generate", "/v2/models/lm/versions/1/generate"):
        status, doc = generate(server, {"input_ids": PROMPT, "max_tokens": 12}, path)
        assert status == 200, doc
        assert doc == {"model_name": "lm", "model_version": "1", "output_ids": want}


def test_two_prompts_of_different_lengths_are_one_batch_each_as_load_generates_it(server, local):
    want = local.generate([PROMPT, SHORT], max_new_tokens=10)
    assert want[1] == local.generate(SHORT, max_new_tokens=10)[0]  # left padding changes nothing (the file's loop)
    status, doc = generate(server, {"input_ids": [PROMPT, SHORT], "parameters": {"max_tokens": 10}, "id": "two"})
    assert status == 200, doc
    assert doc["output_ids"] == want and doc["id"] == "two"


def test_eos_ends_a_prompt_with_that_id(server, local):
    tokens = local.generate(PROMPT, max_new_tokens=12)[0]
    stop = tokens[3]
    status, doc = generate(server, {"input_ids": PROMPT, "max_tokens": 12, "parameters": {"eos": [stop]}})
    assert status == 200, doc
    assert doc["output_ids"] == tokens[:tokens.index(stop) + 1]


def test_stream_sends_one_event_per_token_and_the_same_tokens(server, local):
    want = local.generate([PROMPT, SHORT], max_new_tokens=6)
    status, content_type, raw = post(server, "/v2/models/lm/generate_stream", {"input_ids": PROMPT, "max_tokens": 6})
    assert status == 200 and content_type.startswith("text/event-stream"), raw
    one = events(raw)
    assert [e["output_ids"] for e in one] == [[t] for t in want[0]]
    assert all(e["model_name"] == "lm" and e["model_version"] == "1" for e in one)
    status, _, raw = post(server, "/v2/models/lm/generate_stream", {"input_ids": [PROMPT, SHORT], "max_tokens": 6})
    steps = [e["output_ids"] for e in events(raw)]
    assert status == 200 and [[s[k][0] for s in steps if s[k]] for k in range(2)] == want


def test_metadata_says_the_model_generates(server):
    status, _, raw = post(server, "/v2", None, method="GET")
    assert status == 200 and "generate" in json.loads(raw)["extensions"]
    _, _, raw = post(server, "/v2/models/lm", None, method="GET")
    assert json.loads(raw)["generate"] == {"input": "input_ids", "output": "output_ids", "max_tokens": POSITIONS - 1,
                                           "vocab_size": VOCAB, "eos": [], "max_positions": POSITIONS}
    _, _, raw = post(server, "/v2/models/plain", None, method="GET")
    assert "generate" not in json.loads(raw)
    meta = grpcclient.InferenceServerClient(server.grpc).get_model_metadata("lm")  # gRPC's message: no such field
    assert meta.name == "lm" and meta.inputs[0].name == "input_ids"


def test_infer_still_runs_the_decoder_file(server, local):
    ids = np.array([PROMPT], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(len(PROMPT))[None],
             "logits_to_keep": np.array([len(PROMPT) - 1])}  # the last position's logits only
    client = grpcclient.InferenceServerClient(server.grpc)
    tensors = []
    for name in local.signature.input_names:
        value = feeds.get(name, np.zeros((1, 2, 0, 8), np.float32))
        tensors.append(grpcclient.InferInput(name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32"))
        tensors[-1].set_data_from_numpy(value)
    logits = client.infer("lm", tensors).as_numpy("logits")
    assert int(logits[0, -1].argmax()) == local.generate(PROMPT, max_new_tokens=1)[0][0]


# -- refusals ------------------------------------------------------------------------------------

BAD = {
    "no-input-ids": ({"max_tokens": 4}, 400, 'no "input_ids"'),
    "float-id": ({"input_ids": [5, 1.5], "max_tokens": 4}, 400, "1.5 is not a token id"),
    "string-id": ({"input_ids": [5, "7"], "max_tokens": 4}, 400, '"7" is not a token id'),
    "bool-id": ({"input_ids": [[5], [True]], "max_tokens": 4}, 400, "input_ids[1]: true is not a token id"),
    "nested-mix": ({"input_ids": [[5], 6], "max_tokens": 4}, 400, "a list of token ids, or a list of such lists"),
    "past-vocab": ({"input_ids": [5, VOCAB], "max_tokens": 4}, 400, f"token id {VOCAB} is outside the vocabulary"),
    "negative-id": ({"input_ids": [-1], "max_tokens": 4}, 400, "token id -1 is outside the vocabulary"),
    "empty-prompt": ({"input_ids": [[5], []], "max_tokens": 4}, 400, "prompt 2 is empty"),
    "no-max-tokens": ({"input_ids": [5]}, 400, 'no "max_tokens"'),
    "zero-tokens": ({"input_ids": [5], "max_tokens": 0}, 400, "max_tokens 0: lm generates 1 to 63"),
    "too-many-tokens": ({"input_ids": [5], "max_tokens": 10_000}, 400, "max_tokens 10000: lm generates 1 to 63"),
    "too-many-prompts": ({"input_ids": [[5]] * 65, "max_tokens": 1}, 400, "at most 64 together (--max-batch-size)"),
    "past-positions": ({"input_ids": list(range(60)), "max_tokens": 10}, 400, "ask for at most 4 new tokens"),
    "text-tokens": ({"input_ids": [5], "max_tokens": "4"}, 400, 'max_tokens "4": give a whole number'),
    "two-max-tokens": ({"input_ids": [5], "max_tokens": 3, "parameters": {"max_tokens": 4}}, 400, "give one"),
    "sampling": ({"input_ids": [5], "max_tokens": 3, "parameters": {"temperature": 0.7}}, 400, "decodes greedily"),
    "text-input": ({"text_input": "hello", "max_tokens": 3}, 400, "has no tokenizer"),
    "unknown-field": ({"input_ids": [5], "max_tokens": 3, "top_k": 1}, 400, "unknown field 'top_k'"),
    "bad-eos": ({"input_ids": [5], "max_tokens": 3, "parameters": {"eos": "x"}}, 400, 'eos "x"'),
    "stream-here": ({"input_ids": [5], "max_tokens": 3, "parameters": {"stream": True}}, 400, "generate_stream"),
    "not-json": (b"{input_ids", 400, "not valid JSON"),
    "not-an-object": ([5, 17], 400, "the request JSON is an object"),
    "empty-body": (b"", 400, "empty request body"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_a_4xx_of_one_line(server, case):
    body, want_status, want = BAD[case]
    status, content_type, raw = post(server, "/v2/models/lm/generate", body)
    doc = json.loads(raw)
    assert (status, content_type) == (want_status, "application/json"), doc
    assert want in doc["error"] and "\n" not in doc["error"], doc


@pytest.mark.parametrize("path, method, want_status, want", [
    ("/v2/models/nope/generate", "POST", 404, "unknown model 'nope'; this server serves lm, plain"),
    ("/v2/models/lm/versions/7/generate", "POST", 404, "has no version '7'"),
    ("/v2/models/lm/generate", "GET", 405, "generate takes POST"),
    ("/v2/models/plain/generate", "POST", 400, "without its key/value cache, so it cannot generate: export the model "
                                               "with `ptx export --module FILE.py:FACTORY --task text-generation`"),
    ("/v2/models/plain/generate_stream", "POST", 400, "without its key/value cache"),
    ("/v2/models/lm/generate_stream", "POST", 400, "outside the vocabulary"),  # refused before the stream starts
])
def test_unknown_models_and_models_without_a_cache_are_refused(server, path, method, want_status, want):
    body = {"input_ids": [5, VOCAB if "stream" in path and "lm" in path else 6], "max_tokens": 3}
    status, content_type, raw = post(server, path, body, method=method)
    assert (status, content_type) == (want_status, "application/json"), raw
    error = json.loads(raw)["error"]
    assert want in error and "\n" not in error, error


def test_the_server_is_still_ready_and_counted_every_request(server):
    status, _, raw = post(server, "/v2/health/ready", None, method="GET")
    assert status == 200 and json.loads(raw) == {"ready": True}
    status, _, raw = post(server, "/metrics", None, method="GET")
    assert 'ptx_inference_requests_total{model="lm",protocol="rest"}' in raw.decode()


def test_a_stream_whose_client_leaves_stops_decoding_at_the_next_step(local):
    """In-process: the batch's first step waits until the client has left; no step runs after it, and its
    row is out of the batch."""
    import asyncio
    import threading
    import time

    from ptx.serve.generator import Generator

    left = threading.Event()
    generator = Generator("lm", local, local.generation)
    steps = []
    run_step = generator.batch.step

    def step():
        if not steps:  # the first token is on its way: the next step runs once the client has left
            left.wait(REQUEST_TIMEOUT_S)
        steps.append(generator.batch.rows)
        return run_step()

    generator.batch.step = step

    async def leave_after_one():
        stream = generator.stream(generator.start([PROMPT], 30, None, 8))
        first = await stream.__anext__()
        await stream.aclose()  # what Starlette's cancellation does when the client hangs up
        left.set()
        return first

    try:
        assert asyncio.run(leave_after_one()) == [local.generate(PROMPT, max_new_tokens=1)[0][0]]
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while generator.batch.rows and time.monotonic() < deadline:  # the generation thread drops its row
            time.sleep(0.01)
        time.sleep(0.1)  # a step pulled after the drop would have begun by now
        assert generator.batch.rows == 0 and steps == [1]  # the step under way was its last
    finally:
        generator.close()
