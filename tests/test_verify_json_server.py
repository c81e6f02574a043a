"""A server that speaks the Open Inference Protocol's JSON only (issue 69): ptx reads the server's
extensions (GET /v2) once per endpoint and sends binary tensor data only where the server lists
binary_tensor_data, JSON otherwise; a server that lists it and still answers a binary request with 400
is asked again in JSON once, said in one line, and in JSON from then on. A request the server refuses
is its own outcome: `ptx verify URL` exits 2 with the server's words, never DISAGREE.

The server is the tests' own (tests/oip_json_only.py: http.server in a thread, ONNX Runtime computing
the file's answers), on a free loopback port, each request bounded, shut down whatever the outcome."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ptx.cli import cli
from ptx.infer.runtime.oip_transport import BINARY_EXTENSION, Connection, Endpoint, RestTransport, ServerRefusedError

import oip_json_only
from oip_json_only import BINARY_REFUSED, REFUSAL


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A two-layer MLP as ONNX (batch x 4 -> batch x 3), made here: the transport's own tests need no run."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"W1": rng.normal(size=(4, 8)), "b1": rng.normal(size=8), "W2": rng.normal(size=(8, 3)), "b2": rng.normal(size=3)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Tanh", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(a.astype(np.float32), n) for n, a in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("json-only") / "mlp.onnx"
    onnx.save(model, path)
    return path


def _answers(onnx_file, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def _infers(server) -> list[bool]:
    """Whether each infer request the server received carried binary tensor data, in order."""
    return [binary for path, binary in server.requests if path.endswith("/infer")]


def test_a_server_that_lists_no_extensions_never_receives_binary_data(mlp):
    x = np.random.default_rng(1).random((5, 4), dtype=np.float32)
    said = []
    with oip_json_only.running(mlp, "mlp") as server:
        transport = RestTransport(Endpoint.parse(server.url), Connection(timeout_s=10), said.append)
        for batch in (1, 5, 3):
            got = transport.infer({"x": x[:batch]}, ["y"])["y"]
            np.testing.assert_array_equal(got, _answers(mlp, x[:batch]))
    assert _infers(server) == [False, False, False], server.requests
    assert [p for p, _ in server.requests].count("/v2") == 1, server.requests  # its extensions read once
    assert not said and not transport.notes  # nothing refused: nothing to say


def test_a_server_that_lists_binary_and_refuses_it_is_asked_in_json_once_and_in_json_from_then_on(mlp):
    x = np.random.default_rng(2).random((4, 4), dtype=np.float32)
    said = []
    with oip_json_only.running(mlp, "mlp", extensions=(BINARY_EXTENSION, "model_configuration")) as server:
        transport = RestTransport(Endpoint.parse(server.url), Connection(timeout_s=10), said.append)
        for batch in (4, 2, 1):
            got = transport.infer({"x": x[:batch]}, ["y"])["y"]
            np.testing.assert_array_equal(got, _answers(mlp, x[:batch]))
    assert _infers(server) == [True, False, False, False], server.requests  # one binary request, refused
    assert len(said) == 1 and said == transport.notes, said
    assert f"the server refused binary tensor data (400: {BINARY_REFUSED})" in said[0], said
    assert "asked again in JSON" in said[0] and "\n" not in said[0], said


def test_binary_data_goes_where_the_server_lists_it_and_reads_it_and_never_with_json_data(mlp):
    x = np.random.default_rng(3).random((3, 4), dtype=np.float32)
    with oip_json_only.running(mlp, "mlp", extensions=(BINARY_EXTENSION,), binary=True) as server:
        for connection, sent in ((Connection(timeout_s=10), True), (Connection(timeout_s=10, binary=False), False)):
            transport = RestTransport(Endpoint.parse(server.url), connection)
            np.testing.assert_array_equal(transport.infer({"x": x}, ["y"])["y"], _answers(mlp, x))
            assert _infers(server)[-1] is sent, server.requests
            assert not transport.notes


@pytest.mark.parametrize("extensions", [(), (BINARY_EXTENSION,)])
def test_a_refused_request_is_a_server_refusal_in_the_servers_words_after_the_fallback(mlp, extensions):
    x = np.ones((2, 4), np.float32)
    with oip_json_only.running(mlp, "mlp", mode="refuse", extensions=extensions) as server:
        transport = RestTransport(Endpoint.parse(server.url), Connection(timeout_s=10))
        with pytest.raises(ServerRefusedError) as refused:
            transport.infer({"x": x}, ["y"])
    assert f"the server refused the request (400: {REFUSAL})" in str(refused.value), refused.value
    assert _infers(server) == ([True, False] if extensions else [False]), server.requests  # binary refused: JSON once


# `ptx verify URL --against FILE` against the JSON-only server serving a ptx ONNX file (the tutorial
# convnet's export): 0 where it answers as the file does, 1 naming the output where it does not, 2 with
# the server's words where it refuses every request.

def verify(url, onnx_file):
    result = CliRunner().invoke(cli, ["verify", url, "--against", str(onnx_file), "--samples", "64", "--timeout", "10",
                                      "--json"])
    doc = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else None
    return result, doc


def served_row(doc):
    return next(r for r in doc["rows"] if r["backend"].startswith("served "))


@pytest.fixture(scope="module")
def convnet(runs):
    return runs.trained("convnet") / "model.onnx"


def test_verify_url_passes_a_json_only_server_that_answers_as_the_file_does(convnet):
    with oip_json_only.running(convnet, "convnet") as server:
        result, doc = verify(server.url, convnet)
    assert result.exit_code == 0, result.output
    assert served_row(doc)["status"] == "PASS", served_row(doc)
    assert _infers(server) and not any(_infers(server)), server.requests  # JSON only: never a binary request


@pytest.mark.parametrize("mode", ["scale-input", "scale-output"])
def test_verify_url_names_the_output_a_json_only_server_answers_otherwise(convnet, mode):
    import onnxruntime as ort

    output = ort.InferenceSession(str(convnet), providers=["CPUExecutionProvider"]).get_outputs()[0].name
    with oip_json_only.running(convnet, "convnet", mode=mode) as server:
        result, doc = verify(server.url, convnet)
    assert result.exit_code == 1, result.output
    row = served_row(doc)
    assert row["status"] == "FAIL" and not row.get("error"), row
    assert doc["summary"].startswith(f"DISAGREE: served {server.url} vs ") and f"output {output}:" in doc["summary"], \
        doc["summary"]
    if mode == "scale-input":  # and the kind of difference is named: the planted scale, fitted
        assert any("0.9 * input" in k for k in row["kinds"]), row["kinds"]
    assert not any(_infers(server)), server.requests


@pytest.mark.parametrize("extensions", [(), (BINARY_EXTENSION,)])
def test_verify_url_exits_2_with_the_servers_words_where_it_refuses_every_request(convnet, extensions):
    with oip_json_only.running(convnet, "convnet", mode="refuse", extensions=extensions) as server:
        result, _ = verify(server.url, convnet)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the server refused the request (400:" in errors[0] and REFUSAL in errors[0], \
        result.output
    assert "DISAGREE" not in result.output, result.output
    if extensions:  # it listed binary data and refused it: asked again in JSON, said so on the way
        assert "asked again in JSON" in result.stderr, result.stderr
