"""`ptx verify URL` (issue 59): a served model is one more row of verify, held to a local reference.
`ptx serve` (REST and gRPC) serving the file must pass; a planted-drift server of the tests' own
(tests/oip_planted.py, over http.server) must be caught, and its drift named: an input scale, bf16
rounding, one replica of another version, a batch-dependent answer, a 401 without the token. Every
server runs on a free loopback port and is stopped by its own process id whatever the outcome."""
from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ptx.cli import cli

import serving

PLANTED = Path(__file__).with_name("oip_planted.py")
START_S = 30


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> tuple[Path, Path]:
    """A two-layer MLP as ONNX (batch x 4 -> batch x 3, tanh between) and its weights as npz."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(0)
    w = {"W1": rng.normal(size=(4, 8)), "b1": rng.normal(size=8), "W2": rng.normal(size=(8, 3)),
         "b2": rng.normal(size=3)}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    np.savez(folder / "weights.npz", **w)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Tanh", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(a, n) for n, a in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "mlp.onnx")
    return folder / "mlp.onnx", folder / "weights.npz"


@contextlib.contextmanager
def planted(weights: Path, mode: str, tls: tuple = ()):
    """The planted server in ``mode``, on a free port (it prints it); killed by its pid at the end.
    ``tls``: (certificate, key) files to serve https with."""
    process = subprocess.Popen([sys.executable, str(PLANTED), str(weights), mode,
                                *(("--tls", *map(str, tls)) if tls else ())], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=START_S)
        assert line.startswith("listening "), line
        yield f"http{'s' * bool(tls)}://{'localhost' if tls else '127.0.0.1'}:{int(line.split()[1])}/v2/models/mlp"
    finally:
        process.kill()
        process.wait(5)


def verify(url, against, *more):
    result = CliRunner().invoke(cli, ["verify", url, "--against", str(against), "--timeout", "10", "--json", *more])
    doc = json.loads(result.stdout[result.stdout.index("{"):]) if "{" in result.stdout else None
    return result, doc


def served_row(doc):
    return next(r for r in doc["rows"] if r["backend"].startswith("served "))


def test_ptx_serve_answers_as_its_file_over_rest_json_binary_and_grpc(mlp):
    onnx_file, _ = mlp
    with serving.running(onnx_file.parent, str(onnx_file)) as server:
        for url, more in ((f"{server.url}/v2/models/mlp", ()), (f"{server.url}/v2/models/mlp", ("--json-data",)),
                          (f"grpc://{server.grpc}/mlp", ()), (f"{server.url}/v2/models/mlp/versions/1",
                                                               ("--max-batch", "2", "--concurrency", "3"))):
            result, doc = verify(url, onnx_file, *more)
            assert result.exit_code == 0, result.output
            row = served_row(doc)
            assert row["status"] == "PASS" and row["cases"] and not row["kinds"], row
            assert row["composition"]["ok"], row
            # held to the file at its own precision: the file's int8 twins are no rows (nor skip lines) here
            assert [r["label"] for r in doc["rows"]] == ["ort-cpu", row["label"]] and not doc["skipped"], doc["skipped"]


@pytest.mark.parametrize("mode, kind", [
    ("scale", "a constant scale or offset of input 'x'"),
    ("bf16", "are bf16 values"),
    ("replica", "answers that differ for some requests"),
    ("batch", "a batch-composition dependence"),
])
def test_a_planted_drift_is_caught_and_named(mlp, mode, kind):
    onnx_file, weights = mlp
    with planted(weights, mode) as url:
        result, doc = verify(url, onnx_file)
    assert result.exit_code == 1, result.output
    row = served_row(doc)
    assert row["status"] == "FAIL", row
    assert any(kind in k for k in row["kinds"]), row["kinds"]
    if mode == "scale":  # the fitted scale and offset are the planted ones
        assert "0.5 * x + 0.1" in row["kinds"][0], row["kinds"]


def test_the_exact_planted_server_passes_and_its_batches_are_cut_to_its_max_batch_size(mlp):
    onnx_file, weights = mlp
    with planted(weights, "exact") as url:
        result, doc = verify(url, onnx_file, "--batch-sizes", "3,20")  # 20 > its max_batch_size of 8
    assert result.exit_code == 0, result.output
    assert served_row(doc)["status"] == "PASS"
    assert any("max_batch_size 8" in n for n in doc["notes"]), doc["notes"]


def test_a_token_server_refuses_without_the_token_in_one_line_and_passes_with_it(mlp):
    onnx_file, weights = mlp
    with planted(weights, "token") as url:
        refused, _ = verify(url, onnx_file)
        result, doc = verify(url, onnx_file, "--token", "s3cret")
    assert refused.exit_code == 2
    assert "401 unauthorized" in refused.output and "give --token" in refused.output, refused.output
    assert len([line for line in refused.output.splitlines() if line.startswith("error:")]) == 1
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("url, said", [
    ("http://127.0.0.1:{free}/v2/models/mlp", "nothing is listening"),
    ("grpc://127.0.0.1:{free}/mlp", "nothing answers gRPC"),
    ("{rest}/v2/models/nope", "has no model 'nope'"),
    ("{rest}/v2/models/mlp/versions/7", "has no model 'mlp' version '7'"),
    ("grpc://{grpc}/nope", "has no model 'nope'"),
    ("http://127.0.0.1:80/v2/mdls/mlp", "a REST endpoint is a model's address"),
    ("ftp://127.0.0.1:21/v2/models/mlp", "a served model's URL is http://"),  # was: "--timeout ... is for a served model"
])
def test_each_failure_is_one_line_within_the_timeout(mlp, url, said):
    import socket

    onnx_file, _ = mlp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]  # closed before use: nothing listens there
    with serving.running(onnx_file.parent, str(onnx_file)) as server:
        started = time.monotonic()
        result, _ = verify(url.format(free=free, rest=server.url, grpc=server.grpc), onnx_file, "--timeout", "3")
    assert time.monotonic() - started < 20
    assert result.exit_code == 2 and said in result.output, result.output


def test_a_server_that_does_not_answer_times_out_in_one_line(mlp):
    import socket

    onnx_file, _ = mlp
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        result, _ = verify(f"http://127.0.0.1:{silent.getsockname()[1]}/v2/models/mlp", onnx_file, "--timeout", "1")
    assert time.monotonic() - started < 10
    assert result.exit_code == 2 and "no answer within 1 s" in result.output, result.output


def test_a_draining_server_is_asked_again_within_the_timeout(mlp):
    onnx_file, weights = mlp
    with planted(weights, "drain") as url:  # 503 to its first three infer requests
        result, doc = verify(url, onnx_file)
    assert result.exit_code == 0, result.output
    assert served_row(doc)["status"] == "PASS"


def test_a_body_over_the_servers_limit_is_the_rows_one_line(mlp):
    onnx_file, _ = mlp
    with serving.running(onnx_file.parent, str(onnx_file), args=("--max-request-bytes", 1024)) as server:
        result, doc = verify(f"{server.url}/v2/models/mlp", onnx_file, "--batch-sizes", "3,200")
        cut, _ = verify(f"{server.url}/v2/models/mlp", onnx_file, "--batch-sizes", "3,200", "--max-batch", "16")
    assert result.exit_code == 1, result.output
    error = served_row(doc)["error"]
    assert "over the server's limit (413" in error and "--max-batch" in error and "\n" not in error, error
    assert cut.exit_code == 0, cut.output  # requests of 16 samples fit under its limit


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl), and its key."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_checks_the_certificate_unless_told_whom_to_trust(mlp, certificate):
    onnx_file, weights = mlp
    cert, _ = certificate
    with planted(weights, "exact", tls=certificate) as url:
        untrusted, _ = verify(url, onnx_file)
        trusted, doc = verify(url, onnx_file, "--ca-file", str(cert))
        insecure, _ = verify(url, onnx_file, "--insecure")
    assert untrusted.exit_code == 2 and "certificate is not trusted" in untrusted.output, untrusted.output
    assert trusted.exit_code == 0, trusted.output
    assert served_row(doc)["status"] == "PASS"
    assert insecure.exit_code == 0, insecure.output


def picture_row(doc):
    return next(r for r in doc["rows"] if r["backend"].startswith("served ") and r["backend"].endswith(" (image)"))


def test_a_served_tutorial_model_is_held_to_its_local_run_on_real_samples(runs):
    """The URL's model name is a tutorial model: its run under --root is the reference (eager), its
    real test samples go through the server's tensor input, and (ptx serve) through its picture route
    as PNG files, over REST (binary and JSON) and gRPC."""
    root = runs.ready("mlp")
    with serving.running(root, "mlp") as server:
        for url, more in ((f"{server.url}/v2/models/mlp", ()), (f"{server.url}/v2/models/mlp", ("--json-data",)),
                          (f"grpc://{server.grpc}/mlp", ())):
            result = CliRunner().invoke(cli, ["verify", url, "--root", str(root), "--samples", "200", "--json", *more])
            assert result.exit_code == 0, result.output
            doc = json.loads(result.stdout[result.stdout.index("{"):])
            row = served_row(doc)
            assert row["status"] == "PASS" and row["against"].startswith("eager"), row
            assert row["argmax_agreement"] == 1.0 and row["accuracy"] == row["reference_accuracy"], row
            pictures = picture_row(doc)  # the server's own preprocessing, held to ptx's pipeline here
            assert pictures["status"] == "PASS" and pictures["cases"] == ["16 real samples as PNG files"], pictures
            assert pictures["argmax_agreement"] == 1.0 and not pictures["kinds"], pictures
            assert [o["name"] for o in pictures["outputs"]] == ["probabilities"], pictures["outputs"]
            left = next(n for n in doc["notes"] if "not compared" in n)  # the labels' strings alone
            assert left.endswith(": label"), doc["notes"]
    kept = json.loads((root / "mlp" / "served.json").read_text())["endpoints"]  # the verdicts, by endpoint
    assert {kept[u]["status"] for u in (f"{server.url}/v2/models/mlp", f"grpc://{server.grpc}/mlp")} == {"PASS"}


def test_a_picture_route_that_prepares_pictures_otherwise_is_caught_as_a_preprocessing_drift(runs, tmp_path):
    """The server serves the run's export; the reference is the same file with its pixels' scale
    changed (its contract re-signed, as an export with another normalisation would be): the same tensors
    agree, so the tensor row passes, and the same pictures do not, which the picture row names."""
    import dataclasses

    import onnx

    from ptx.contract.metadata import from_strings, to_strings
    from ptx.contract.schema import ScaleStep

    root = runs.ready("mlp")
    model = onnx.load(root / "mlp" / "model.onnx")
    strings = {p.key[4:]: p.value for p in model.metadata_props if p.key.startswith("ptx.")}
    info = from_strings(strings)
    steps = tuple(ScaleStep(s.factor * 0.8) if isinstance(s, ScaleStep) else s for s in info.contract.steps)
    assert steps != info.contract.steps, info.contract.steps
    drifted = to_strings(dataclasses.replace(info.contract, steps=steps), info.provenance, info.raw_input)
    for p in model.metadata_props:
        if p.key.startswith("ptx.") and p.key[4:] in drifted:
            p.value = drifted[p.key[4:]]
    onnx.save(model, tmp_path / "drifted.onnx")
    with serving.running(root, "mlp") as server:
        result = CliRunner().invoke(cli, ["verify", f"{server.url}/v2/models/mlp", "--against",
                                          str(tmp_path / "drifted.onnx"), "--samples", "200", "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout[result.stdout.index("{"):])
    assert served_row(doc)["status"] == "PASS", served_row(doc)  # the tensors meet no preprocessing
    pictures = picture_row(doc)
    assert pictures["status"] == "FAIL" and any("a preprocessing drift" in k for k in pictures["kinds"]), pictures


def test_bench_url_times_the_served_model_at_its_concurrency_beside_the_local_file(mlp):
    onnx_file, _ = mlp
    with serving.running(onnx_file.parent, str(onnx_file)) as server:
        result = CliRunner().invoke(cli, ["bench", f"grpc://{server.grpc}/mlp", "--against", str(onnx_file),
                                          "--concurrency", "3", "--seconds", "0.2", "--batch-sizes", "1,16", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("{"):])["rows"]
    assert [(r["runner"], r["batch"]) for r in rows] == [("ort-cpu (local)", 1), ("served (x3)", 1),
                                                         ("ort-cpu (local)", 16), ("served (x3)", 16)]
    for r in rows:
        assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"] and r["images_per_s"] > 0 and r["iterations"] >= 3, r
    assert all(r["overhead"] > 0 for r in rows if r["runner"].startswith("served")), rows


def test_ptx_serve_with_a_token_refuses_rest_and_grpc_in_one_line_and_answers_with_it(mlp):
    onnx_file, _ = mlp
    with serving.running(onnx_file.parent, str(onnx_file), env={"PTX_SERVE_TOKEN": "s3cret"}) as server:
        for url in (f"{server.url}/v2/models/mlp", f"grpc://{server.grpc}/mlp"):
            refused, _ = verify(url, onnx_file)
            assert refused.exit_code == 2 and "give --token" in refused.output, refused.output
            passed, _ = verify(url, onnx_file, "--token", "s3cret")
            assert passed.exit_code == 0, passed.output


def test_a_reference_that_is_no_file_and_no_tutorial_model_is_one_line_before_the_server_is_reached(tmp_path):
    """`ptx verify URL --against X`: X is a model file, a tutorial model's name or a run folder (as --run);
    anything else is said in one line before the URL is reached (port 9 answers nothing)."""
    url = "http://127.0.0.1:9/v2/models/convnet"
    for against in (tmp_path / "nope.onnx", "convnett"):
        result = CliRunner().invoke(cli, ["verify", url, "--against", str(against)])
        assert result.exit_code == 2 and result.output.strip().endswith(
            f"{url}: {str(against)!r} is not a tutorial model: give --against the model file the server serves (or a "
            "tutorial model NAME, or its run folder)"), result.output
    result = CliRunner().invoke(cli, ["verify", url, "--against", str(tmp_path)])  # a folder: read as --run
    assert result.exit_code == 2 and f"{tmp_path} holds no readable ptx run" in result.output, result.output
