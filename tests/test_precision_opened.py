"""Issue 57, item 1: a precision is opened, or refused. int8 asked of an f32 model file opens the int8
file beside it that the backend's runtime reads (net.int8.onnx for ort-cpu, net.openvino-int8.onnx for
openvino), in load(), `ptx predict` and `ptx serve` alike; with no such file it is refused in one line
naming the export that writes it; never the f32 file under an int8 label. A user's own quantized file
is int8 by its graph. bf16 and tf32 are runtime modes, applied or refused."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import serving
from ptx.errors import MissingArtifactError, PtxError
from ptx.infer import load
from ptx.infer.model.target import Target
from ptx.infer.runtime.openvino_runner import unavailable as openvino_unavailable
from ptx_command import ptx

NO_NNCF = None
try:
    import nncf  # noqa: F401  (openvino-int8 is NNCF's)
except ImportError as exc:
    NO_NNCF = f"nncf does not import: {exc}"
OPENVINO_INT8_MISSING = openvino_unavailable() or NO_NNCF
needs_openvino_int8 = pytest.mark.skipif(bool(OPENVINO_INT8_MISSING), reason=str(OPENVINO_INT8_MISSING))


class Net(nn.Module):
    """A user's own classifier: conv, batch norm (folded at export), ReLU, pooled, 4 class scores."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def write_net(path):
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # running statistics of a trained net, so the fold changes the weights
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation: the file is what is tested
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, torch.randn(2, 3, 16, 16), str(path), input_names=["x"], output_names=["scores"],
                          dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """net.onnx with its int8 twins beside it, written by `ptx export` (once for the module)."""
    folder = tmp_path_factory.mktemp("precision")
    path = write_net(folder / "net.onnx")
    formats = "onnx-int8" if OPENVINO_INT8_MISSING else "onnx-int8,openvino-int8"
    result = ptx("export", path, "--format", formats)
    assert result.returncode == 0, result.stdout + result.stderr
    return path


@pytest.fixture(scope="module")
def feeds():
    return {"x": np.random.default_rng(1).normal(size=(6, 3, 16, 16)).astype(np.float32)}


def answers(model, feeds):
    try:
        return model.run(feeds)["scores"]
    finally:
        model.close()


def lone(tmp_path, net):
    """A copy of net.onnx with no int8 file beside it."""
    path = tmp_path / "net.onnx"
    shutil.copy2(net, path)
    return path


def test_int8_on_an_f32_file_runs_the_int8_file_beside_it(net, feeds):
    model = load(net, precision="int8")
    assert model.path == net.with_name("net.int8.onnx") and model.precision == "int8"
    assert model.opened == "int8 runs net.int8.onnx, the int8 file beside net.onnx"
    int8 = answers(model, feeds)
    np.testing.assert_array_equal(int8, answers(load(net.with_name("net.int8.onnx")), feeds))
    # The f32 file answers otherwise: were it run under the int8 label, the two would be equal.
    assert np.abs(int8 - answers(load(net), feeds)).max() > 1e-4
    target = Target.of(net)
    variant = next(iter(target.variants(["ort-cpu-int8"])))
    assert target.file_for(variant) == model.path  # verify and bench read the file load() opens


@needs_openvino_int8
def test_openvino_int8_on_an_f32_file_runs_nncfs_file(net, feeds):
    model = load(net, backend="openvino", precision="int8")
    assert model.path == net.with_name("net.openvino-int8.onnx") and model.precision == "int8"
    int8 = answers(model, feeds)
    np.testing.assert_array_equal(int8, answers(load(model.path, backend="openvino"), feeds))
    assert np.abs(int8 - answers(load(net, backend="openvino"), feeds)).max() > 1e-4


def test_an_int8_file_beside_another_model_is_refused_not_run(tmp_path, net, feeds):
    # net.int8.onnx records the sha256 of the file it was made from: beside another model (or this one
    # retrained), asking for int8 ran it as that model's int8, answering another model's scores.
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(net))  # the same net, one weight retrained
    weight = proto.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.5, weight.name))
    other = tmp_path / "net.onnx"
    onnx.save(proto, str(other))
    shutil.copy(net.with_name("net.int8.onnx"), tmp_path / "net.int8.onnx")
    refusal = "net.int8.onnx was not made from this net.onnx (it records another file's sha256"
    with pytest.raises(PtxError, match=refusal.replace("(", r"\(")):
        load(other, precision="int8")
    with pytest.raises(PtxError, match=refusal.replace("(", r"\(")):  # read as your own model: the twin's record still
        load(other, precision="int8", ignore_metadata=True)
    np.savez(tmp_path / "x.npz", **feeds)
    said = ptx("predict", "--model", other, "--precision", "int8", tmp_path / "x.npz")
    assert said.returncode == 2 and refusal in said.stderr and f"`ptx export {other} --format onnx-int8`" in \
        said.stderr, said.stderr
    np.testing.assert_array_equal(answers(load(net, precision="int8"), feeds),
                                  answers(load(net.with_name("net.int8.onnx")), feeds))  # its own f32 file still opens it


def test_verify_holds_an_int8_file_to_the_f32_file_it_records_by_its_bytes_not_by_its_name(tmp_path, net):
    """The f32 source verify judges an int8 file against (its reference where the file records its own runtime
    NOT USABLE, and the pair --locate traces) is the file ptx.source names with the bytes ptx.source_sha256
    records: a net.onnx beside it that is another model is no source, and the note says why."""
    import onnx
    from onnx import numpy_helper

    from ptx.infer.verify.offers import f32_source, source_beside

    assert f32_source(Target.of(net.with_name("net.int8.onnx"))) == str(net)
    assert source_beside(Target.of(net.with_name("net.int8.onnx"))) is None
    proto = onnx.load(str(net))  # another model of the same name: one weight retrained
    weight = proto.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.5, weight.name))
    onnx.save(proto, str(tmp_path / "net.onnx"))
    shutil.copy(net.with_name("net.int8.onnx"), tmp_path / "net.int8.onnx")
    moved = Target.of(tmp_path / "net.int8.onnx")
    assert f32_source(moved) is None and source_beside(moved) == "net.onnx"


@pytest.mark.parametrize("backend,fmt", [("ort-cpu", "onnx-int8"), ("openvino", "openvino-int8")])
def test_int8_without_its_file_is_refused_naming_the_export(tmp_path, net, backend, fmt):
    if backend == "openvino" and openvino_unavailable():
        pytest.skip(openvino_unavailable())
    path = lone(tmp_path, net)
    twin = "net.int8.onnx" if fmt == "onnx-int8" else "net.openvino-int8.onnx"
    says = f"net.onnx is an f32 model and there is no {twin} beside net.onnx: run `ptx export {path} --format {fmt}`"
    with pytest.raises(MissingArtifactError) as caught:
        load(path, backend=backend, precision="int8")
    assert says in str(caught.value) and "\n" not in str(caught.value)
    result = ptx("predict", "--model", path, "--backend", backend, "--precision", "int8", tmp_path / "nope.npz")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_predict_with_precision_int8_answers_as_the_int8_file(tmp_path, net, feeds):
    inputs = tmp_path / "x.npz"
    np.savez(inputs, **feeds)
    result = ptx("predict", "--model", net, inputs, "--precision", "int8", "--json")
    assert result.returncode == 0, result.stderr
    assert "note: int8 runs net.int8.onnx, the int8 file beside net.onnx" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["file"] == str(net.with_name("net.int8.onnx")) and doc["precision"] == "int8"
    served = np.array(doc["results"][0]["outputs"]["scores"]["values"], dtype=np.float32)
    np.testing.assert_allclose(served, answers(load(net.with_name("net.int8.onnx")), feeds), rtol=0, atol=1e-6)
    f32 = ptx("predict", "--model", net, inputs, "--json")
    assert json.loads(f32.stdout)["precision"] == "f32" and "note:" not in f32.stderr


def test_serve_with_precision_int8_serves_the_int8_file(tmp_path, net, feeds):
    with serving.running(tmp_path, net, args=("--precision", "int8")) as server:
        assert any(f"for {net.with_name('net.int8.onnx')} (int8 runs net.int8.onnx" in line for line in server.lines), \
            server.lines
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(feeds["x"].shape),
                           "data": feeds["x"].ravel().tolist()}]}
        request = urllib.request.Request(f"{server.url}/v2/models/net/infer", data=json.dumps(doc).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            out = json.loads(response.read())["outputs"][0]
    served = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_allclose(served, answers(load(net.with_name("net.int8.onnx")), feeds), rtol=0, atol=1e-6)
    assert np.abs(served - answers(load(net), feeds)).max() > 1e-4


def test_serve_refuses_int8_without_its_file(tmp_path, net):
    path = lone(tmp_path, net)
    result = subprocess.run([sys.executable, "-m", "ptx", "serve", str(path), "--precision", "int8", "--http-port", "0",
                             "--grpc-port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "there is no net.int8.onnx beside net.onnx: run `ptx export" in result.stderr
    assert "Traceback" not in result.stderr and "serving " not in result.stdout


def test_a_users_own_quantized_file_is_int8_by_its_graph(tmp_path, net, feeds):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    own = tmp_path / "mine.onnx"  # no ptx metadata, no int8 in its name: only its graph says int8
    quantize_dynamic(str(lone(tmp_path, net)), str(own), weight_type=QuantType.QInt8)
    default, asked = load(own), load(own, precision="int8")
    assert default.path == asked.path == own and default.precision == asked.precision == "int8"
    assert default.opened is None
    np.testing.assert_array_equal(answers(default, feeds), answers(asked, feeds))
    with pytest.raises(PtxError, match=r"mine.onnx is an int8 model, not f32: open it at its own precision") as caught:
        load(own, precision="f32")
    assert "--precision" not in str(caught.value)  # true wherever it is printed: verify has no such option
    target = Target.of(own)
    assert target.precision == "int8" and {v.precision for v in target.variants()} == {"int8"}
    assert all(target.file_for(v) == own for v in target.variants())


def test_an_int8_file_asked_at_f32_names_the_file_it_was_made_from(net):
    with pytest.raises(PtxError) as caught:
        load(net.with_name("net.int8.onnx"), precision="f32")
    assert str(caught.value).endswith("or give the f32 file it was made from (net.onnx)")


def test_bf16_and_tf32_are_modes_applied_or_refused(net):
    with pytest.raises(PtxError, match=r"backend ort-cpu runs f32, int8, int4, not tf32; tf32 runs on .*ort-cuda"):
        load(net, precision="tf32")
    with pytest.raises(PtxError, match=r"backend ort-cpu runs f32, int8, int4, not bf16; bf16 runs on openvino"):
        load(net, precision="bf16")
    if openvino_unavailable():
        return
    from ptx.infer.runtime.openvino_runner import has_bf16

    if not has_bf16():  # never f32 under bf16's name
        with pytest.raises(PtxError, match="openvino-bf16: this CPU has no bf16 instructions"):
            load(net, backend="openvino", precision="bf16")
        return
    model = load(net, backend="openvino", precision="bf16")
    assert model.path == net and model.runner.config["INFERENCE_PRECISION_HINT"] == "bf16"


def test_a_tutorial_run_at_int8_reads_its_int8_export_or_names_it(runs, tmp_path):
    source = runs.trained("convnet")
    run = tmp_path / "convnet"  # a copy: the shared run keeps no int8 export
    shutil.copytree(source, run)
    for int8 in run.glob("*int8*"):
        int8.unlink()
    command = f"ptx export convnet --format onnx-int8 --run {run}"
    says = f"run `{command}` first"
    for target in ("convnet", run):
        with pytest.raises(MissingArtifactError, match="no model.int8.onnx for convnet") as caught:
            load(target, precision="int8", run=run if target == "convnet" else None)
        assert says in str(caught.value)
    with pytest.raises(MissingArtifactError) as caught:  # its export file, given by its path
        load(run / "model.onnx", precision="int8")
    assert f"model.onnx is an f32 model and there is no model.int8.onnx beside model.onnx: {says}" in str(caught.value)
    result = ptx("export", "convnet", "--run", run, "--format", "onnx-int8")
    assert result.returncode == 0, result.stdout + result.stderr
    for target, run_arg in (("convnet", run), (run, None), (run / "model.onnx", None)):
        model = load(target, precision="int8", run=run_arg)
        assert model.path == run / "model.int8.onnx" and model.precision == "int8", target
    # predict --json names the file that answered, for a run as for a model file
    from PIL import Image

    stroke = np.zeros((28, 28), np.uint8)
    stroke[4:24, 13:16] = 255  # a "1"
    Image.fromarray(stroke).save(tmp_path / "one.png")
    said = ptx("predict", "--run", run, "--precision", "int8", "--json", tmp_path / "one.png")
    assert said.returncode == 0, said.stderr
    doc = json.loads(said.stdout)
    assert doc["file"] == str(run / "model.int8.onnx") and doc["precision"] == "int8", doc
