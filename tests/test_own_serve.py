"""`ptx serve FILE` and `ptx export FILE --format triton` on users' own models (tests/own_models.py):
tritonclient (HTTP with the binary extension, gRPC) and plain JSON against a real server on
loopback, answers equal to a bare onnxruntime.InferenceSession's to the bit, the model's own
metadata and config, bad requests, and batching only where every tensor has a batch axis."""
from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

import own_models as zoo
import serving
from ptx.contract.tensor_inputs import make_feeds, plan_inputs
from ptx.contract.tensors import DTYPES
from ptx.infer import load
from ptx_command import ptx

STATE = "state"  # stateful.onnx is served under this --name; the others under their file's name
# The rest of the zoo: a residual CNN, a MobileNet-like block with dynamic height and width, a batch
# fixed to 1, float16 (issue 36's acceptance: each is served with answers equal to a bare session's).
OTHERS = ["residual", "mobile", "fixed1", "half"]


@pytest.fixture(scope="module")
def server(own_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("no-runs")  # no tutorial model is served: --root is never read
    with serving.running(root, own_models["stateful"], own_models["two_io"], *[own_models[n] for n in OTHERS],
                         args=("--name", STATE, "--max-delay-ms", 5)) as running:
        yield running


@pytest.fixture(scope="module")
def bare(own_models):
    """A bare InferenceSession per model, as a user would write it: the answers to match."""
    return {"two_io": onnxruntime.InferenceSession(str(own_models["two_io"])),
            STATE: onnxruntime.InferenceSession(str(own_models["stateful"])),
            **{name: onnxruntime.InferenceSession(str(own_models[name])) for name in OTHERS}}


def sample(own_models, name, batch, seed, **shapes):
    model = load(own_models[name], probe=False)
    return make_feeds(model.signature, plan_inputs(model.signature, shapes=shapes), batch, seed)


def v2(dtype) -> str:
    return DTYPES[np.dtype(dtype).name].v2


def clients(server):
    return [(httpclient, httpclient.InferenceServerClient(server.http)),
            (grpcclient, grpcclient.InferenceServerClient(server.grpc))]


def infer(module, client, model, feeds, outputs=None):
    tensors = []
    for name, value in feeds.items():
        tensor = module.InferInput(name, list(value.shape), v2(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    wanted = [module.InferRequestedOutput(n) for n in outputs] if outputs else None
    return client.infer(model, tensors, outputs=wanted)


def post(server, path, doc):
    request = urllib.request.Request(server.url + path, data=json.dumps(doc).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def json_request(feeds):
    return {"inputs": [{"name": n, "datatype": v2(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()}
                       for n, v in feeds.items()]}


def batch_stats(server, model):
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode()
    found = [re.search(rf'ptx_batch_size_{part}{{model="{model}"}} (\S+)', text) for part in ("sum", "count")]
    return tuple(float(m.group(1)) if m else 0.0 for m in found)


# -- what the server says the model is -----------------------------------------------------------


def test_metadata_names_the_models_own_tensors_with_minus_one_for_symbols(server):
    want = {"two_io": ("onnxruntime_onnx", [("picture", "FP32", [-1, 1, 16, 16]), ("ids", "INT64", [-1, -1])],
                       [("scores", "FP32", [-1, 4]), ("joint", "FP32", [-1, 16])]),
            STATE: ("onnxruntime_onnx", [("x", "FP32", [-1, -1, 6]), ("h0", "FP32", [1, -1, 12]), ("mode", "INT64", [])],
                    [("scores", "FP32", [-1, 3]), ("h", "FP32", [1, -1, 12])])}
    for module, client in clients(server):
        for name, (platform, inputs, outputs) in want.items():
            meta = client.get_model_metadata(name)
            if module is grpcclient:
                meta = json_format.MessageToDict(meta, preserving_proto_field_name=True)
                for t in (*meta["inputs"], *meta["outputs"]):
                    t["shape"] = [int(d) for d in t.get("shape", [])]
            assert meta["platform"] == platform
            assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == inputs
            assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == outputs


def test_config_batches_in_triton_only_where_every_batch_is_axis_0(server):
    for module, client in clients(server):
        for name, batched in (("two_io", True), (STATE, False)):
            config = client.get_model_config(name)
            if module is grpcclient:
                config = json.loads(json_format.MessageToJson(config.config, preserving_proto_field_name=True))
            message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
            assert (message.max_batch_size > 0) == batched and message.HasField("dynamic_batching") == batched
            dims = {t.name: list(t.dims) for t in message.input}
            assert dims == ({"picture": [1, 16, 16], "ids": [-1]} if batched else
                            {"x": [-1, -1, 6], "h0": [1, -1, 12], "mode": [1]})


# -- answers: a bare InferenceSession's, to the bit ----------------------------------------------------


@pytest.mark.parametrize("name", ["two_io", STATE, *OTHERS])
def test_rest_json_binary_and_grpc_answers_equal_a_bare_session_to_the_bit(server, bare, own_models, name):
    feeds = sample(own_models, "stateful" if name == STATE else name, 3, 21)
    if name == STATE:
        feeds["mode"] = np.array(1, np.int64)
    names = [o.name for o in bare[name].get_outputs()]
    want = dict(zip(names, bare[name].run(None, feeds)))
    for module, client in clients(server):  # tritonclient: binary tensor data over HTTP, raw contents over gRPC
        result = infer(module, client, name, feeds)
        for n in names:
            got = result.as_numpy(n)
            assert got.dtype == want[n].dtype and np.array_equal(got, want[n]), (module.__name__, n)
    status, doc = post(server, f"/v2/models/{name}/infer", json_request(feeds))  # plain JSON, as curl sends it
    assert status == 200, doc
    assert sorted(out["name"] for out in doc["outputs"]) == sorted(names)
    for out in doc["outputs"]:
        assert out["datatype"] == v2(want[out["name"]].dtype)
        got = np.array(out["data"], want[out["name"]].dtype).reshape(out["shape"])
        assert np.array_equal(got, want[out["name"]])


def test_outputs_are_answered_by_name(server, bare, own_models):
    feeds = sample(own_models, "two_io", 2, 22)
    for module, client in clients(server):
        result = infer(module, client, "two_io", feeds, outputs=["joint"])
        names = ([o["name"] for o in result.get_response()["outputs"]] if module is httpclient
                 else [o.name for o in result.get_response().outputs])
        assert names == ["joint"]
        assert np.array_equal(result.as_numpy("joint"), bare["two_io"].run(["joint"], feeds)[0])
    status, doc = post(server, "/v2/models/two_io/infer", {**json_request(feeds), "outputs": [{"name": "nope"}]})
    assert status == 400 and "no output 'nope'; its outputs are scores, joint" in doc["error"]


def test_a_scalar_input_is_taken_as_triton_sends_it_too(server, bare, own_models):
    """Triton's config has no empty dims: a scalar is dims [1], reshaped; ptx takes both."""
    feeds = {**sample(own_models, "stateful", 2, 23), "mode": np.array(0, np.int64)}
    want = bare[STATE].run(["scores"], feeds)[0]
    as_triton = {**feeds, "mode": np.array([0], np.int64)}
    for module, client in clients(server):
        assert np.array_equal(infer(module, client, STATE, as_triton).as_numpy("scores"), want)


# -- requests that do not fit: a 400 naming the input -------------------------------------------------


def bad_requests(own_models):
    feeds = sample(own_models, "two_io", 2, 24)
    return {
        "wrong-datatype": ({**feeds, "ids": feeds["ids"].astype(np.int32)},
                           "input 'ids' of two_io is INT32; it takes INT64 [-1, -1]"),
        "wrong-shape": ({**feeds, "picture": feeds["picture"][:, :, :8]}, "axis 2 must be 16"),
        "wrong-rank": ({**feeds, "ids": feeds["ids"][0]}, "it takes [batch, tokens] (2 axes)"),
        "batches-differ": ({**feeds, "ids": feeds["ids"][:1]}, "one batch for every input"),
        "unknown-input": ({**feeds, "pixels": feeds["picture"]}, "two_io has no input 'pixels'; it takes picture"),
        "missing-input": ({"picture": feeds["picture"]}, "input 'ids' of two_io is missing"),
    }


def test_a_request_that_does_not_fit_is_a_400_naming_the_input_and_grpc_invalid_argument(server, own_models):
    for case, (feeds, words) in bad_requests(own_models).items():
        status, doc = post(server, "/v2/models/two_io/infer", json_request(feeds))
        assert status == 400 and words in doc["error"], (case, doc)
        with pytest.raises(InferenceServerException) as refused:
            infer(grpcclient, grpcclient.InferenceServerClient(server.grpc), "two_io", feeds)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and words in refused.value.message(), case
    feeds = {**sample(own_models, "stateful", 2, 25), "mode": np.array(0, np.int64)}
    status, doc = post(server, f"/v2/models/{STATE}/infer", json_request({**feeds, "mode": np.zeros(2, np.int64)}))
    assert status == 400 and "input 'mode' of state has shape [2]; it takes []" in doc["error"]
    # Token ids past the embedding fit the signature; the runtime's refusal is still this request's 400.
    feeds = sample(own_models, "two_io", 1, 26)
    feeds["ids"][0, 0] = 999
    status, doc = post(server, "/v2/models/two_io/infer", json_request(feeds))
    assert status == 400 and "ort-cpu failed running two_io" in doc["error"]
    assert grpcclient.InferenceServerClient(server.grpc).is_server_ready()


def test_json_data_a_dtype_cannot_hold_is_refused_not_truncated_or_overflowed():
    """A REST client sent 1.5 for an INT64 input and got an answer for 1 (numpy truncates without a
    word; `ptx predict` refuses the same fraction), and 1e6 for an FP16 input came back as NaN with
    status 200. Whole numbers written as floats are still taken."""
    from ptx.serve.tensors import RequestError, from_json_data

    with pytest.raises(RequestError, match="input 'ids': INT64 data holds a fraction; send whole numbers"):
        from_json_data("ids", "INT64", [1, 2], [[1.5, 2]])
    with pytest.raises(RequestError, match="input 'scale': data holds values outside FP16's range"):
        from_json_data("scale", "FP16", [2], [1e6, 1])
    with pytest.raises(RequestError, match="input 'ids': data holds values outside INT32's range"):
        from_json_data("ids", "INT32", [1], [2**40])
    assert from_json_data("ids", "INT64", [2], [1.0, 2]).data.tolist() == [1, 2]
    assert from_json_data("scale", "FP16", [2], [65504, 1]).data.dtype == np.float16


def test_serve_passes_input_to_an_onnx_file_whose_graph_gives_an_input_no_shape(tmp_path):
    """`ptx serve unranked.onnx --input x=batchx3` dropped the --input (kept for TorchScript and pt2
    files only) and refused the file asking for that very --input."""
    import onnx
    from onnx import TensorProto, helper

    from ptx.contract.tensors import parse_declaration
    from ptx.infer.model.target import Target
    from ptx.serve.server import load_files
    from ptx.serve.service import ServeOptions, Service

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
              tmp_path / "u.onnx")
    service = Service(ServeOptions(max_batch_size=8))
    try:
        declared = {"inputs": [parse_declaration("x=batchx3"), parse_declaration("other=batchx2")]}
        load_files(service, [("u", Target.of(tmp_path / "u.onnx", options=declared))], backend="auto",
                   precision=None, device=None, log=lambda line: None)
        assert service.models["u"].model.signature.inputs[0].shape == ("batch", 3)
    finally:
        service.close()


def test_a_served_models_errors_name_it_as_it_is_served_not_as_its_file_does(own_models, tmp_path):
    """Issue 43 item 7: a file named for its factory (`ptx export --module net.py:build` records
    `build`; here the file's name says it) and served under another name answered a runtime refusal
    with "failed running build", a name the client never asked for."""
    import asyncio
    import shutil

    from ptx.serve.model import InferRequest
    from ptx.serve.service import ServeOptions, Service
    from ptx.serve.tensors import RequestError, Tensor

    path = tmp_path / "build.onnx"
    shutil.copy2(own_models["two_io"], path)
    model = load(path, probe=False)
    assert model.name == "build"
    service = Service(ServeOptions(max_batch_size=8))
    served = service.add("classifier", model)
    feeds = sample(own_models, "two_io", 1, 26)
    feeds["ids"][0, 0] = 999  # past the embedding: the runtime refuses it
    request = InferRequest([Tensor(n, v2(v.dtype), list(v.shape), v) for n, v in feeds.items()])
    try:
        with pytest.raises(RequestError, match="ort-cpu failed running classifier") as refused:
            asyncio.run(served.infer(request))
        assert "build" not in str(refused.value)
    finally:
        service.close()


# -- batching only where every tensor has a batch axis -------------------------------------------------


def test_concurrent_requests_are_batched_for_two_io_and_not_for_the_stateful_model(server, bare, own_models):
    # two token counts: only requests of one count can share a batch; both are answered as alone
    requests = [sample(own_models, "two_io", 1, 100 + i, ids=f"1x{4 if i % 2 else 6}") for i in range(48)]
    states = [{**sample(own_models, "stateful", 2, 200 + i), "mode": np.array(i % 2, np.int64)} for i in range(16)]
    before = batch_stats(server, "two_io"), batch_stats(server, STATE)

    def one(i):
        client = httpclient.InferenceServerClient(server.http, network_timeout=60)
        try:
            return (infer(httpclient, client, "two_io", requests[i]).as_numpy("scores"),
                    infer(httpclient, client, STATE, states[i % 16]).as_numpy("h") if i < 16 else None)
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(len(requests))))
    for feeds, (scores, _) in zip(requests, answers):
        np.testing.assert_allclose(scores, bare["two_io"].run(["scores"], feeds)[0], rtol=1e-5, atol=1e-6)
    for feeds, (_, h) in zip(states, answers[:16]):
        assert np.array_equal(h, bare[STATE].run(["h"], feeds)[0])  # run alone: exactly the bare answer
    (rows, batches), (state_rows, state_batches) = [tuple(a - b for a, b in zip(after, was)) for after, was in
                                                    zip((batch_stats(server, "two_io"), batch_stats(server, STATE)),
                                                        before)]
    assert rows == len(requests) and batches < rows, (rows, batches)  # some requests shared a batch
    assert (state_rows, state_batches) == (0, 0)  # the batcher never saw the stateful model


def test_a_name_given_twice_and_a_missing_file_are_one_line(own_models, tmp_path):
    done = subprocess.run([sys.executable, "-m", "ptx", "serve", str(own_models["two_io"]), str(own_models["half"]),
                           "--name", "same", "--name", "same", "--http-port", "0", "--grpc-port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "'same'" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "ptx", "serve", str(tmp_path / "gone.onnx")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == (f"error: {tmp_path / 'gone.onnx'}: no such file (ptx serve takes a "
                                                    "model NAME, see `ptx models`, or a model file: .onnx, "
                                                    "TorchScript .pt, .pt2)\n"), done.stderr
    said = ptx("predict", "--model", tmp_path / "gone.onnx", tmp_path / "x.npz")  # as predict says it
    assert said.returncode == 2 and "gone.onnx: no such file (ptx predict --model takes a model NAME" in said.stderr


# -- a Triton repository for a user's file -------------------------------------------------------------


TRITON_TYPES = {info.ort: info.triton for info in DTYPES.values()}


def onnx_tensors(path):
    """Each tensor's dims and type as Triton's onnxruntime backend checks a config against them: as
    ONNX Runtime's session reports them (its shape inference can fix a size the graph declared
    symbolic, as for the specialised model's output)."""
    session = onnxruntime.InferenceSession(str(path))
    return {v.name: ([d if isinstance(d, int) else -1 for d in v.shape], TRITON_TYPES[v.type])
            for v in [*session.get_inputs(), *session.get_outputs()]}


@pytest.mark.parametrize("name", ["residual", "mobile", "two_io", "stateful", "fixed1", "half", "specialised"])
def test_each_zoo_model_gets_a_triton_config_that_follows_tritons_load_rules(own_models, tmp_path, name):
    done = subprocess.run([sys.executable, "-m", "ptx", "export", str(own_models[name]), "--format", "triton",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / name
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.platform) == (name, "onnxruntime_onnx")
    assert (folder / "1" / "model.onnx").read_bytes() == own_models[name].read_bytes()
    model = load(own_models[name], probe=False)
    batch_first = all(t.batch_axis == 0 for t in (*model.signature.inputs, *model.signature.outputs))
    assert (config.max_batch_size > 0) == batch_first == config.HasField("dynamic_batching")
    # stateful: a batch on axis 1 and a scalar; fixed1: batch 1; specialised: the tracer fixed its output to [3, 4]
    assert batch_first == (name not in ("stateful", "fixed1", "specialised")), name
    tensors = onnx_tensors(own_models[name])
    assert [t.name for t in config.input] == model.signature.input_names
    assert [t.name for t in config.output] == model.signature.output_names
    for t in [*config.input, *config.output]:  # what Triton checks at load: the model's dims and types
        dims, dtype = tensors[t.name]
        if config.max_batch_size > 0:
            assert dims[0] == -1
            dims = dims[1:]
        if t.HasField("reshape"):  # a scalar: dims [1] reshaped to the model's []
            assert (list(t.dims), list(t.reshape.shape), dims) == ([1], [], [])
        else:
            assert list(t.dims) == dims, (t.name, list(t.dims), dims)
        assert model_config_pb2.DataType.Name(t.data_type) == dtype


def test_a_torchscript_triton_config_maps_positions_and_a_foreign_folder_is_kept(own_models, tmp_path):
    declared = [a for d in zoo.catalog()["two_io"].declarations for a in ("--input", d)]
    args = [sys.executable, "-m", "ptx", "export", str(own_models["two_io.pt"]), "--format", "triton", "--out",
            str(tmp_path)]
    done = subprocess.run([*args, *declared], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "two_io" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.platform == "pytorch_libtorch" and config.max_batch_size > 0
    assert [t.name for t in config.input] == ["INPUT__0", "INPUT__1"]
    assert [(t.name, list(t.dims)) for t in config.output] == [("OUTPUT__0", [4]), ("OUTPUT__1", [16])]
    assert "INPUT__0 is picture, INPUT__1 is ids, OUTPUT__0 is output_0" in text
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)  # no --input: one line
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--input" in done.stderr
    (tmp_path / "two_io" / "config.pbtxt").write_text('name: "two_io"\n')  # a hand-made config
    done = subprocess.run([*args, *declared], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--force" in done.stderr
    assert (tmp_path / "two_io" / "config.pbtxt").read_text() == 'name: "two_io"\n'


def test_serving_and_exporting_an_onnx_file_never_import_torch(own_models, tmp_path):
    path = str(own_models["two_io"])
    code = ("import sys\nfrom ptx.infer.model.target import Target\nfrom ptx.serve.server import load_files\n"
            "from ptx.serve.service import ServeOptions, Service\nservice = Service(ServeOptions())\n"
            f"load_files(service, [('m', Target.of({path!r}))], backend='auto', precision=None, device=None, "
            "log=lambda _: None)\n"
            "print(type(service.models['m']).__name__, service.models['m'].model.backend, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ServedModel", "ort-cpu", "False"]
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptx", "export", path, "--format", "triton",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not re.search(r"\|\s+torch$", done.stderr, re.M), "ptx export FILE.onnx --format triton imported torch"


def test_a_torchscript_file_is_served_by_its_declared_names(own_models, bare, tmp_path):
    declared = [a for d in zoo.catalog()["two_io"].declarations for a in ("--input", d)]
    with serving.running(tmp_path, own_models["two_io.pt"], args=("--name", "scripted", *declared)) as running:
        client = httpclient.InferenceServerClient(running.http)
        meta = client.get_model_metadata("scripted")
        assert meta["platform"] == "pytorch_libtorch"
        assert [(t["name"], t["shape"]) for t in meta["inputs"]] == [("picture", [-1, 1, 16, 16]), ("ids", [-1, -1])]
        assert [t["name"] for t in meta["outputs"]] == ["output_0", "output_1"]
        config = client.get_model_config("scripted")  # named as this server takes them, not INPUT__0
        assert [t["name"] for t in config["input"]] == ["picture", "ids"]
        feeds = sample(own_models, "two_io", 3, 30)
        got = infer(httpclient, client, "scripted", feeds).as_numpy("output_0")
        np.testing.assert_allclose(got, bare["two_io"].run(["scores"], feeds)[0], rtol=1e-5, atol=1e-6)


def test_a_served_language_model_s_threads_spin_and_a_single_pass_model_s_sleep(own_models, chat_export, monkeypatch):
    """The server's sessions sleep between runs (its front needs the cores), except a decoder's: its step loop
    runs steps back to back, and sleeping threads cost SmolLM2-135M a tenth of its served tokens/s. What
    PTX_ORT_SPINNING says decides both."""
    from ptx.infer.model.target import Target
    from ptx.infer.runtime.ort_session import import_ort, session_options, threads_spinning
    from ptx.serve.server import load_files
    from ptx.serve.service import ServeOptions, Service

    monkeypatch.delenv("PTX_ORT_SPINNING", raising=False)
    service = Service(ServeOptions(max_batch_size=8))
    try:
        with threads_spinning(False):  # as serve() opens its models
            load_files(service, [("lm", Target.of(chat_export["file"])), ("two_io", Target.of(own_models["two_io"]))],
                       backend="auto", precision=None, device=None, log=lambda line: None)
        spinning = {name: service.models[name].model.runner.session.get_session_options()
                    .get_session_config_entry("session.intra_op.allow_spinning") for name in ("lm", "two_io")}
    finally:
        service.close()
    assert spinning == {"lm": "1", "two_io": "0"}
    ort = import_ort()
    monkeypatch.setenv("PTX_ORT_SPINNING", "0")
    with threads_spinning(True):  # the user's word over the command's choice
        assert session_options(ort).get_session_config_entry("session.intra_op.allow_spinning") == "0"
