"""`ptx serve` as clients meet it: NVIDIA's tritonclient (HTTP and gRPC) against a real server on
loopback, the model's own tensors and users' pictures and words, bad requests, load and SIGTERM."""
from __future__ import annotations

import base64
import concurrent.futures
import gzip
import importlib.util
import io
import json
import signal
import struct
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from conftest import outputs
from ptx.contract import compare
from ptx.contract.protocol import TritonBackend, model_config
from ptx.contract.transforms import to_model_input
from ptx.infer import load

import serving

TENSOR_MODELS = ("convnet", "lstm")
SERVED = (*TENSOR_MODELS, "gru-classifier", "rnn-hello", "diabetes", "linreg")


@pytest.fixture(scope="module")
def server(runs):
    with serving.running(runs.ready(*SERVED), *SERVED) as running:
        yield running


def post(server, path, body: bytes, headers=None, timeout=30):
    """(status, parsed JSON) of a raw POST: the bad requests tritonclient would never send."""
    request = urllib.request.Request(server.url + path, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(server, path, headers=None):
    request = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def image_request(*files: bytes, outputs=("label", "probabilities")) -> tuple[bytes, dict]:
    """A v2 request carrying encoded picture files as one BYTES tensor, binary extension."""
    data = b"".join(struct.pack("<I", len(f)) + f for f in files)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)],
                                     "parameters": {"binary_data_size": len(data)}}],
                         "outputs": [{"name": o} for o in outputs]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def clients(server):
    return [(httpclient, httpclient.InferenceServerClient(server.http)),
            (grpcclient, grpcclient.InferenceServerClient(server.grpc))]


# -- the model's own tensors, as a client written for the triton export sends them ----------------------

@pytest.mark.parametrize("name", TENSOR_MODELS)
def test_metadata_and_config_match_the_triton_export(server, runs, name):
    contract = load(name, root=runs.ready(name)).contract
    exported = text_format.Parse(model_config(name, contract, TritonBackend.ONNXRUNTIME), model_config_pb2.ModelConfig())
    batch = [-1] if exported.max_batch_size else []
    for module, client in clients(server):
        meta = client.get_model_metadata(name)
        config = client.get_model_config(name)
        if module is grpcclient:
            meta = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs],
                    "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs]}
            config = json.loads(__import__("google.protobuf.json_format", fromlist=["x"]).MessageToJson(
                config.config, preserving_proto_field_name=True))
        for declared, offered in ((exported.input[0], meta["inputs"][0]), (exported.output[0], meta["outputs"][0])):
            assert offered["name"] == declared.name
            assert offered["datatype"] == model_config_pb2.DataType.Name(declared.data_type)[len("TYPE_"):]
            assert offered["shape"] == batch + list(declared.dims)
        assert [t["name"] for t in config["input"]] == [t.name for t in exported.input]
        assert [int(d) for d in config["input"][0]["dims"]] == list(exported.input[0].dims)
        assert [int(d) for d in config["output"][0]["dims"]] == list(exported.output[0].dims)


@pytest.mark.parametrize("name", TENSOR_MODELS)
def test_a_batch_of_8_digits_gets_predict_raw_labels_and_logits_within_tolerance(server, runs, name):
    predictor = load(name, root=runs.ready(name))
    raw, _ = runs.test_samples(name, 8)
    x = to_model_input(raw, predictor.contract)  # (8, 1, 28, 28); lstm (28, 8, 28)
    want = outputs(predictor, x)
    labels = [p.label for p in predictor.predict(raw, raw=True)]  # what `ptx predict --raw` answers
    for module, client in clients(server):
        tensor = module.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(name, [tensor], outputs=[module.InferRequestedOutput("logits")]).as_numpy("logits")
        assert got.shape == want.shape
        assert compare(got, want, predictor.contract).ok
        assert got.argmax(-1).tolist() == labels
        top = client.infer(name, [tensor], outputs=[module.InferRequestedOutput("logits", class_count=3)])
        first = [row[0].decode().split(":") for row in top.as_numpy("logits")]
        assert [int(index) for _, index, _ in first] == labels  # Triton's classification extension


def test_a_png_sent_as_bytes_gets_the_label_ptx_predict_gives_that_file(server, runs, tmp_path):
    predictor = load("convnet", root=runs.ready("convnet"))
    raw, _ = runs.test_samples("convnet", 3)
    files = []
    for i, digit in enumerate(raw):  # dark on white paper, off-centre, larger: as people photograph digits
        page = Image.new("L", (120, 100), 255)
        page.paste(Image.fromarray(255 - digit).resize((70, 70)), (10 + 10 * i, 5))
        path = tmp_path / f"digit{i}.png"
        page.save(path)
        files.append(path)
    expected = predictor.predict([str(f) for f in files])
    body, headers = image_request(*(f.read_bytes() for f in files))
    status, doc = post(server, "/v2/models/convnet/infer", body, headers)
    assert status == 200, doc
    out = {t["name"]: t for t in doc["outputs"]}
    assert out["label"]["data"] == [p.label_name for p in expected]
    probabilities = np.array(out["probabilities"]["data"], dtype=np.float32).reshape(out["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities, np.stack([p.probabilities for p in expected]), atol=1e-5)
    for module, client in clients(server):  # the same through tritonclient's BYTES tensors
        tensor = module.InferInput("image", [len(files)], "BYTES")
        tensor.set_data_from_numpy(np.array([f.read_bytes() for f in files], dtype=np.object_))
        labels = client.infer("convnet", [tensor], outputs=[module.InferRequestedOutput("label")]).as_numpy("label")
        assert [v.decode() for v in labels] == [p.label_name for p in expected]
    # Plain JSON, as curl sends it: the files base64-encoded, the input's content_type saying so.
    body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)],
                                   "parameters": {"content_type": "base64"},
                                   "data": [base64.b64encode(f.read_bytes()).decode() for f in files]}]}).encode()
    status, doc = post(server, "/v2/models/convnet/infer", body, {"Content-Type": "application/json"})
    assert status == 200 and {t["name"]: t["data"] for t in doc["outputs"]}["label"] == [p.label_name for p in expected]


def test_phone_photos_a_48_mp_jpeg_and_a_heic_are_predicted_and_a_jpeg_bomb_refused(server):
    from test_photos import bomb_jpeg, encoded, seven  # the photos of tests/test_photos.py

    photos = [encoded(seven(8000, 6000), "JPEG", quality=50)]  # decoded at 1/8 (ptx.contract.decode)
    if importlib.util.find_spec("pillow_heif"):
        import pillow_heif

        buffer = io.BytesIO()
        pillow_heif.from_pillow(seven(800, 600, "RGB")).save(buffer, format="HEIF", quality=70)
        photos.append(buffer.getvalue())
    status, doc = post(server, "/v2/models/convnet/infer", *image_request(*photos, outputs=("label",)))
    assert status == 200 and doc["outputs"][0]["data"] == ["7"] * len(photos), doc
    status, doc = post(server, "/v2/models/convnet/infer", *image_request(bomb_jpeg()))
    assert status == 400 and "too large" in doc["error"], doc


@pytest.mark.parametrize("name,texts", [("gru-classifier", ["bonjour", "gracias", "hallo", "goedemorgen", "ciao"]),
                                        ("rnn-hello", ["hello", "hell", "oh", "hello"]),
                                        ("diabetes", ["6,148,72,35,0,33.6,0.627,50", "1,85,66,29,0,26.6,0.351,31"]),
                                        ("linreg", ["0.5", "-1.5"])])
def test_text_inputs_get_what_ptx_predict_answers(server, runs, name, texts):
    expected = load(name, root=runs.ready(name)).predict(texts)
    status, doc = post(server, f"/v2/models/{name}/infer", json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}).encode())
    assert status == 200, doc
    out = {t["name"]: t["data"] for t in doc["outputs"]}
    if "value" in out:
        np.testing.assert_allclose(out["value"], [p.value for p in expected], rtol=1e-5)
    else:
        assert out["label"] == [p.label_name for p in expected]


def test_concurrent_requests_of_different_lengths_batch_and_answer_as_alone(server, runs):
    """gru-classifier's words are padded into one batch; rnn-hello's batch by length; lstm's batch
    axis is 1: concurrent requests still get exactly what each gets alone."""
    words = ["bonjour", "gracias", "hallo", "goedemorgen", "ciao", "arrivederci", "dag", "buenos"] * 4
    alone = load("gru-classifier", root=runs.ready("gru-classifier")).predict(words)

    def one(word):
        _, doc = post(server, "/v2/models/gru-classifier/infer", json.dumps(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [word]}],
             "outputs": [{"name": "label"}]}).encode())
        return doc["outputs"][0]["data"][0]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, words)) == [p.label_name for p in alone]
    predictor = load("lstm", root=runs.ready("lstm"))
    raw, _ = runs.test_samples("lstm", 24)
    want = outputs(predictor, to_model_input(raw, predictor.contract))
    client = grpcclient.InferenceServerClient(server.grpc)

    def lstm_one(i):
        x = to_model_input(raw[i:i + 1], predictor.contract)
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer("lstm", [tensor]).as_numpy("logits")[0]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        got = np.stack(list(pool.map(lstm_one, range(24))))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


# -- bad requests: a 4xx naming what was wrong, and the server stays ready -----------------------------

def tensor_body(name, datatype, shape, data, **extra):
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}], **extra}).encode()


def binary_tensor(name: str, x: np.ndarray) -> tuple[bytes, dict]:
    """One FP32 tensor as tritonclient sends it: JSON header, then its bytes (NaN cannot be JSON)."""
    header = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def bomb_png() -> bytes:
    """A small PNG that declares 30000 x 30000 pixels (900 million): a decompression bomb."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 30001 * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


BAD_REQUESTS = {
    "wrong-shape": ("/v2/models/convnet/infer", tensor_body("input", "FP32", [1, 28, 28], [0.0] * 784), {}, 400, "shape"),
    "wrong-datatype": ("/v2/models/convnet/infer", tensor_body("input", "FP64", [1, 1, 28, 28], [0.0] * 784), {}, 400,
                       "FP32"),
    "data-count": ("/v2/models/convnet/infer", tensor_body("input", "FP32", [2, 1, 28, 28], [0.0] * 784), {}, 400,
                   "elements"),
    "non-finite": ("/v2/models/convnet/infer", *binary_tensor("input", np.full((1, 1, 28, 28), np.nan, np.float32)),
                   400, "NaN or infinite"),
    "token-out-of-range": ("/v2/models/gru-classifier/infer", tensor_body("input", "INT64", [3, 1], [72, 999, 105]), {},
                           400, "token ids"),
    "unknown-input": ("/v2/models/convnet/infer", tensor_body("pixels", "FP32", [1], [0.0]), {}, 400, "no input"),
    "undecodable-image": ("/v2/models/convnet/infer", *image_request(b"not a picture at all"), 400, "not an image"),
    "empty-image": ("/v2/models/convnet/infer", *image_request(b""), 400, "empty"),
    "image-bomb": ("/v2/models/convnet/infer", *image_request(bomb_png()), 400, "too large"),
    "empty-body": ("/v2/models/convnet/infer", b"", {}, 400, "empty request body"),
    "not-json": ("/v2/models/convnet/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    "truncated-binary": ("/v2/models/convnet/infer", image_request(b"x" * 100)[0][:-40],
                         image_request(b"x" * 100)[1], 400, "truncated"),
    "header-longer-than-body": ("/v2/models/convnet/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "999"},
                                400, "Inference-Header-Content-Length"),
    "over-max-request-bytes": ("/v2/models/convnet/infer", b"{" + b" " * (17 * 1024 * 1024) + b"}", {}, 413,
                               "limit"),
    "gzip-bomb": ("/v2/models/convnet/infer", gzip.compress(b" " * (64 * 1024 * 1024)), {"Content-Encoding": "gzip"},
                  413, "decompressed"),
    "unknown-model": ("/v2/models/convnett/infer", tensor_body("input", "FP32", [1], [0.0]), {}, 404, "convnett"),
    "unknown-version": ("/v2/models/convnet/versions/7/infer", tensor_body("input", "FP32", [1], [0.0]), {}, 404,
                        "version"),
    "bad-text": ("/v2/models/diabetes/infer", tensor_body("text", "BYTES", [1], ["1,2"]), {}, 400, "takes 8"),
    "answer-overflows-float32": ("/v2/models/linreg/infer", tensor_body("text", "BYTES", [2], ["1.5", "3.4e38"]), {},
                                 400, "text[1]: the model's output is not a finite number"),
    "not-base64": ("/v2/models/convnet/infer", json.dumps({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"content_type": "base64"},
         "data": ["not base64!"]}]}).encode(), {}, 400, "not base64"),
    "base64-without-its-content-type": ("/v2/models/convnet/infer", tensor_body(
        "image", "BYTES", [1], [base64.b64encode(bomb_png()).decode()]), {}, 400, '"content_type": "base64"'),
    "unknown-content-type": ("/v2/models/convnet/infer", json.dumps({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"content_type": "pd"},
         "data": ["x"]}]}).encode(), {}, 400, "content_type"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_is_a_4xx_naming_what_was_wrong_and_the_server_stays_ready(server, case):
    path, body, headers, status, words = BAD_REQUESTS[case]
    got, doc = post(server, path, body, headers)
    assert got == status, doc
    assert set(doc) == {"error"} and words in doc["error"], doc
    assert get(server, "/v2/health/ready")[0] == 200


def test_grpc_bad_requests_carry_the_matching_status_codes(server):
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("input", [1, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(InferenceServerException) as wrong:
        client.infer("convnet", [tensor])
    assert wrong.value.status() == "StatusCode.INVALID_ARGUMENT" and "shape" in wrong.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("convnett", [tensor])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert client.is_server_ready()


# -- metrics, page, security ----------------------------------------------------------------------------

def test_metrics_count_requests_errors_latency_and_batch_sizes(server):
    body, headers = image_request(b"junk")
    post(server, "/v2/models/convnet/infer", body, headers)
    status, text = get(server, "/metrics")
    text = text.decode()
    assert status == 200
    for line in ('ptx_inference_requests_total{model="convnet",protocol="rest"}',
                 'ptx_inference_errors_total{code="400",model="convnet",protocol="rest"}',
                 'ptx_inference_request_duration_seconds_bucket{le="0.001",model="convnet",protocol="grpc"}',
                 'ptx_batch_size_count{model="convnet"}'):
        assert line in text
    # A name the server does not serve is counted apart, never as a model label (issue 30, point 7).
    post(server, "/v2/models/no-such-model/infer", b"{}")
    text = get(server, "/metrics")[1].decode()
    assert 'model=""' not in text and "no-such-model" not in text
    assert 'ptx_inference_unknown_model_requests_total{protocol="rest"}' in text


def test_the_page_is_served_without_anything_from_the_internet(server):
    status, html = get(server, "/")
    assert status == 200 and b"<canvas" in html
    assert b"http://" not in html and b"https://" not in html  # no CDN, no fonts, nothing fetched


def test_a_token_guards_everything_but_health(runs):
    root = runs.ready("convnet")
    with serving.running(root, "convnet", env={"PTX_SERVE_TOKEN": "s3cret"}) as guarded:
        assert get(guarded, "/v2/health/ready")[0] == 200
        assert get(guarded, "/v2/models/convnet")[0] == 401
        assert get(guarded, "/v2/models/convnet", {"Authorization": "Bearer s3cret"})[0] == 200
        status, doc = post(guarded, "/v2/models/convnet/infer", b"{}", {"Authorization": "Bearer wrong"})
        assert status == 401 and "token" in doc["error"]
        client = grpcclient.InferenceServerClient(guarded.grpc)
        assert client.is_server_live()
        with pytest.raises(InferenceServerException, match="token"):
            client.get_model_metadata("convnet")
        assert client.get_model_metadata("convnet", headers={"authorization": "Bearer s3cret"}).name == "convnet"


def test_a_run_folder_is_served_by_run_as_the_model_it_holds(runs, tmp_path):
    # `ptx train linreg --out exp1` then `ptx serve --run exp1`: the other commands take --run, and the
    # one-line errors every command shares told serve's users to give it
    import shutil

    from ptx_command import ptx

    run = tmp_path / "exp1"
    shutil.copytree(runs.ready("linreg") / "linreg", run)
    with serving.running(tmp_path / "empty-root", args=("--run", run)) as served:
        status, _ = get(served, "/v2/models/linreg")
        assert status == 200 and any("linreg" in line for line in served.lines), served.lines
    shutil.copytree(run, tmp_path / "exp2")
    twice = ptx("serve", "--run", run, "--run", tmp_path / "exp2", "--http-port", "0", "--grpc-port", "0")
    assert twice.returncode == 2 and "two runs of linreg would be served as 'linreg'" in twice.stderr, twice.stderr
    nothing = ptx("serve")
    assert nothing.returncode == 2 and "give a tutorial model's NAME, a model FILE, or --run DIR" in nothing.stderr


def test_a_non_loopback_host_without_a_token_is_refused_in_one_line(runs):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "ptx", "serve", "convnet", "--root", str(runs.ready("convnet")),
                             "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --host 0.0.0.0 is reachable") and "--token" in result.stderr
    assert result.stderr.count("\n") == 1


# -- load and SIGTERM ---------------------------------------------------------------------------------

def hammer(server, clients: int, requests: int, stop: threading.Event | None = None):
    """``clients`` threads, each with its own tritonclient HTTP connection, ``requests`` each.
    Returns (answers, errors as strings)."""
    x = np.zeros((1, 1, 28, 28), np.float32)
    answers, errors, lock = [0], [], threading.Lock()

    def client_loop():
        client = httpclient.InferenceServerClient(server.http, connection_timeout=30, network_timeout=30)
        tensor = httpclient.InferInput("input", [1, 1, 28, 28], "FP32")
        tensor.set_data_from_numpy(x)
        for _ in range(requests):
            try:
                result = client.infer("convnet", [tensor])
                assert result.as_numpy("logits").shape == (1, 10)
                with lock:
                    answers[0] += 1
            except Exception as exc:  # noqa: BLE001 - counted and shown by the test
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                if stop is not None and stop.is_set():
                    return
        client.close()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads, answers, errors


def test_64_clients_200_requests_each_without_an_error(server):
    threads, answers, errors = hammer(server, 64, 200)
    for t in threads:
        t.join(300)
    assert not errors, errors[:5]
    assert answers[0] == 64 * 200


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(runs):
    server = serving.start(runs.ready("convnet"), "convnet", args=("--drain-seconds", 1))
    stop = threading.Event()
    try:
        threads, answers, errors = hammer(server, 32, 10_000, stop)
        time.sleep(2.0)
        stop.set()
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=12)
        took = time.monotonic() - started
        for t in threads:
            t.join(60)
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0 and took < 10, (code, took, server.lines)
    answered = next(line for line in server.lines if line.startswith("stopped"))
    # Every request the server took in was answered: the clients received exactly as many answers
    # as the server counted; their errors are refused or closed connections, never a broken answer.
    assert f"answered {answers[0]} inference request" in answered, (answered, answers[0])
    assert all("Connection" in e or "connect" in e or "closed" in e.lower() or "reset" in e.lower() for e in errors), \
        errors[:5]


def test_base64_wrapped_in_lines_is_read_and_other_characters_are_refused_saying_what_to_send():
    # `base64 digit.png` (no -w0) wraps every 76 characters: that was refused as "not base64".
    from ptx.serve.tensors import RequestError, from_json_data

    payload = bytes(range(256)) * 3
    wrapped = base64.encodebytes(payload).decode()
    assert "\n" in wrapped
    for text in (wrapped, wrapped.replace("\n", "\r\n")):
        tensor = from_json_data("image", "BYTES", [1], [text], "base64")
        assert tensor.data == [payload]
    with pytest.raises(RequestError, match=r"not base64 .*base64 -w0 FILE"):
        from_json_data("image", "BYTES", [1], [wrapped.replace("\n", " ")], "base64")


def test_a_json_number_beyond_fp32s_range_is_named_so_not_as_nan_or_infinity():
    # 1e39 as FP32 (JSON has no NaN or Infinity) was refused as "holds NaN or infinite values", with a
    # numpy RuntimeWarning in the server's log.
    import warnings

    from ptx.serve.tensors import RequestError, from_json_data

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RequestError, match=r"input 'input': data holds values outside FP32's range \(about ±3.4e\+38\)"):
            from_json_data("input", "FP32", [1, 1], [1e39])
        assert from_json_data("input", "FP64", [1, 1], [1e39]).data[0, 0] == 1e39
