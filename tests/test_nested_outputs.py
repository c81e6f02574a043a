"""Outputs of any structure (issue 68, 1): a module shaped as ultralytics' YOLOv8 DetectionModel
(docs/examples/yolo.py: plain torch) returns ``(predictions, [p3, p4, p5])``; ptx refused it ("the model
returned tuple; ptx exports models that return tensors (one, a tuple, ...)"). Now its tensors are the
files' outputs by their path (output_0, output_1_0...), the structure is recorded in each file, and
export, verify, predict, serve and load() answer as eager PyTorch and a bare ONNX Runtime session do;
load()'s nest() gives the answer back as the module returned it, without torch. Flat outputs keep the
names they had, and a leaf that is no tensor is named by its path in one line."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import serving
from ptx.contract.structure import OutputStructure
from ptx.errors import ArtifactError, PtxError
from ptx.export.as_it_comes import tensors_of
from ptx.export.factory import load_factory
from ptx.export.module import export_module
from ptx.infer import load
from ptx_command import ptx

REPO = Path(__file__).resolve().parent.parent
YOLO = REPO / "docs" / "examples" / "yolo.py"
NAMES = ["output_0", "output_1_0", "output_1_1", "output_1_2"]
STRUCTURE = "(output_0, [output_1_0, output_1_1, output_1_2])"


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    """The issue's command, on the yolo-shaped module: (folder, what export printed)."""
    out = tmp_path_factory.mktemp("yolo") / "yolo"
    done = ptx("export", "--module", f"{YOLO}:build", "--input", "image=batchx3x64x64", "--out", out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def eager(image: np.ndarray):
    """The module as its factory makes it, called on ``image``: (predictions, [p3, p4, p5]) as numpy."""
    with torch.no_grad():
        predictions, features = load_factory(f"{YOLO}:build").module(torch.from_numpy(image))
    return predictions.numpy(), [f.numpy() for f in features]


def image(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, 64, 64), dtype=np.float32)


def test_the_nested_answer_is_exported_by_path_and_its_structure_recorded(yolo):
    folder, printed = yolo
    assert f"outputs: the tuple's tensors by their place in it: {STRUCTURE}" in printed, printed
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == NAMES
    recorded = json.loads(session.get_modelmeta().custom_metadata_map["ptx.output_structure"])
    assert recorded == {"tuple": ["output_0", {"list": NAMES[1:]}]}
    for file in ("model.onnx", "model.torchscript.pt"):
        model = load(folder / file, probe=False) if file.endswith(".onnx") else load(folder / file)
        assert model.signature.output_names == NAMES
        assert model.output_structure.describe() == STRUCTURE


@pytest.mark.parametrize("file", ["model.onnx", "model.torchscript.pt"])
def test_load_nests_the_answer_as_the_module_returned_it_equal_to_eager_and_a_bare_session(yolo, file):
    folder, _ = yolo
    x = image(4, 7)
    model = load(folder / file)
    answer = model.run({"image": x})
    assert list(answer) == NAMES
    predictions, features = model.nest(answer)
    want_predictions, want_features = eager(x)
    assert isinstance(features, list) and len(features) == 3
    np.testing.assert_allclose(predictions, want_predictions, atol=1e-4, rtol=1e-3)
    assert predictions.shape == (4, 7, 84)
    for got, want in zip(features, want_features):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
    bare = onnxruntime.InferenceSession(str(folder / "model.onnx")).run(None, {"image": x})
    for got, want in zip(answer.values(), bare):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
        if file == "model.onnx":
            np.testing.assert_array_equal(got, want)  # the same runtime: to the bit


def test_the_onnx_path_rebuilds_the_structure_without_torch(yolo):
    folder, _ = yolo
    code = ("import sys, numpy as np; from ptx.infer import load; m = load(sys.argv[1]); "
            "p, f = m.nest(m.run({'image': np.zeros((2, 3, 64, 64), np.float32)})); "
            "print(type(p).__name__, type(f).__name__, len(f), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(folder / "model.onnx")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ndarray", "list", "3", "False"]


def test_verify_passes_every_output(yolo):
    folder, _ = yolo
    done = ptx("verify", folder / "model.onnx", "--against", folder / "model.torchscript.pt")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in NAMES:
        assert any(name in line and "PASS" in line for line in done.stdout.splitlines()), (name, done.stdout)


def test_predict_answers_the_flat_outputs_equal_to_eager_and_says_the_structure(yolo, tmp_path):
    folder, _ = yolo
    x = image(2, 3)
    np.save(tmp_path / "images.npy", x)
    done = ptx("predict", "--model", folder / "model.onnx", tmp_path / "images.npy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"outputs as the module returned them: {STRUCTURE}" in done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()] == NAMES
    done = ptx("predict", "--model", folder / "model.onnx", tmp_path / "images.npy", "--output", tmp_path / "a.npz")
    assert done.returncode == 0, done.stdout + done.stderr
    with np.load(tmp_path / "a.npz") as answers:
        got = {k: answers[k] for k in answers.files}
    assert list(got) == NAMES
    want_predictions, want_features = eager(x)
    for got_one, want in zip(got.values(), [want_predictions, *want_features]):
        np.testing.assert_allclose(got_one, want, atol=1e-4, rtol=1e-3)
    done = ptx("predict", "--model", folder / "model.onnx", tmp_path / "images.npy", "--json")
    assert json.loads(done.stdout)["output_structure"] == {"tuple": ["output_0", {"list": NAMES[1:]}]}


def test_serve_answers_the_flat_outputs_equal_to_a_bare_session_to_the_bit(yolo, tmp_path):
    folder, _ = yolo
    x = image(3, 11)
    bare = onnxruntime.InferenceSession(str(folder / "model.onnx")).run(None, {"image": x})
    doc = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    with serving.running(tmp_path, str(folder / "model.onnx"), args=("--name", "yolo")) as server:
        request = urllib.request.Request(f"{server.url}/v2/models/yolo/infer", data=json.dumps(doc).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            outputs = json.loads(response.read())["outputs"]
    assert [o["name"] for o in outputs] == NAMES
    for served, want in zip(outputs, bare):
        assert served["shape"] == list(want.shape)
        np.testing.assert_array_equal(np.asarray(served["data"], np.float32).reshape(want.shape), want)


# -- names: the flat ones as they were, nested ones by path, renamed by --output --------------------------------


@dataclass
class Inner:
    pooler_output: torch.Tensor
    hidden_states: tuple


@dataclass
class Outer:
    logits: torch.Tensor
    text_model_output: Inner
    past_key_values: tuple = None


def test_flat_answers_keep_their_names_and_nested_ones_are_named_by_path():
    t = torch.zeros(1)
    assert list(tensors_of((t, t))[0]) == ["output_0", "output_1"]
    assert list(tensors_of({"scores": t, "boxes": t})[0]) == ["scores", "boxes"]
    Pair = collections.namedtuple("Pair", "left right")
    assert list(tensors_of(Pair(t, [t, t]))[0]) == ["left", "right_0", "right_1"]
    named, dropped = tensors_of(Outer(t, Inner(t, (t, t)), past_key_values=((t, t),)))  # a ModelOutput's naming
    assert list(named) == ["logits", "text_model_output_pooler_output", "text_model_output_hidden_states_0",
                           "text_model_output_hidden_states_1"]
    assert dropped == [("past_key_values", "tuple")]
    assert list(tensors_of((t, [t, (t, {"a": t})], None))[0]) == ["output_0", "output_1_0", "output_1_1_0",
                                                                 "output_1_1_1_a"]


def test_a_leaf_that_is_no_tensor_is_named_by_its_path_in_one_line():
    t = torch.zeros(1)
    with pytest.raises(PtxError, match=r"^the model's output\[1\]\[2\]\['anchors'\] is a str, not a tensor: "):
        tensors_of((t, [t, t, {"anchors": "yes"}]))
    with pytest.raises(PtxError, match=r"^the model's output\.text_model_output\.hidden_states\[1\] is a int"):
        tensors_of(Outer(t, Inner(t, (t, 3))))
    with pytest.raises(PtxError, match=r"^the model's output\['a_0'\] and output\['a'\]\[0\] would both be named 'a_0'"):
        tensors_of({"a_0": t, "a": [t]})
    # torchvision's detections (one dict per image) are no fixed structure: refused in one line, as before
    with pytest.raises(PtxError, match=r"^the model returned a list of 2 dicts \(one per image"):
        tensors_of([{"boxes": t}, {"boxes": t}])


class Nested(torch.nn.Module):
    def forward(self, x):
        return {"sum": x + 1, "parts": [x * 2, (x * 3, None)]}


def test_output_names_rename_the_structure_s_leaves_and_a_lying_record_is_refused(tmp_path):
    export_module(Nested(), None, tmp_path / "n", inputs=["x=batchx4"], formats=["onnx"],
                  output_names=["a", "b", "c"], log=lambda _: None)
    model = load(tmp_path / "n" / "model.onnx")
    assert model.signature.output_names == ["a", "b", "c"]
    assert model.output_structure.describe() == "{sum: a, parts: [b, (c, None)]}"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    nested = model.nest(model.run({"x": x}))
    np.testing.assert_array_equal(nested["parts"][1][0], x * 3)
    assert nested["parts"][1][1] is None and isinstance(nested["parts"][1], tuple)
    with pytest.raises(PtxError, match="lacks output 'b'"):
        model.nest(model.run({"x": x}, outputs=["a", "c"]))
    model.runner.metadata["output_structure"] = json.dumps({"dict": {"sum": "a", "other": "z"}})
    with pytest.raises(ArtifactError, match=r"names the outputs a, z; the model's are a, b, c: re-export it"):
        model.output_structure
    for text, why in (('{"set": ["a"]}', "is not one of tuple"), ('["a", "b"]', "is neither"),
                      ('{"tuple": ["a", "a"]}', "appears twice"), ('{"dict": ["a"]}', "is not a JSON object")):
        with pytest.raises(ArtifactError, match=why):
            OutputStructure.from_json(text, "ptx.output_structure")


def test_a_live_module_answers_by_the_same_names_as_its_files(yolo):
    """load(module) runs the nested module itself (no export): the same flat names, eager's values."""
    model = load(load_factory(f"{YOLO}:build").module, inputs=["image=batchx3x64x64"])
    x = image(2, 5)
    answer = model.run({"image": x})
    assert list(answer) == NAMES
    want_predictions, want_features = eager(x)
    for got, want in zip(answer.values(), [want_predictions, *want_features]):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(PtxError, match=r"output\[1\]\['kind'\] is a str, not a tensor"):
        load(Tagged(), inputs=["x=batchx4"])


class Tagged(torch.nn.Module):
    def forward(self, x):
        return x, {"kind": "boxes"}
