"""Batch semantics learned, and the sizes a model needs found and remembered (issue 68, 3 and 4).

CLIPModel's logits_per_image is [images, texts]: with both inputs batched it spans the batch on axis 1
too, and verify's batch-composition check used to call it a disagreement of ort-cpu with itself.
Wav2Vec2ForCTC refuses the 8 samples ptx generates (its first convolution's kernel is 10): export now
searches larger sizes and says what it chose, and every later command generates inputs at it. A plain
torch module that normalises across its batch is the third. Each goes through export, verify, predict,
serve and load(), with answers equal to eager's and to a bare ONNX Runtime session's. Configs are tiny.
"""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import onnxruntime
import pytest

pytest.importorskip("transformers", reason="transformers is in the test extra (scripts/setup.sh installs it)")

import torch  # noqa: E402

import serving  # noqa: E402
from hf_models import cli, first_case  # noqa: E402
from ptx.contract.batch_rows import PER_ROW  # noqa: E402
from ptx.contract.shape_certificate import CERTIFICATE_KEY, Certificate  # noqa: E402
from ptx.contract.tensor_inputs import plan_inputs  # noqa: E402
from ptx.contract.tensors import Signature, TensorSig  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export.factory import load_factory  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx_command import ptx  # noqa: E402

CLIP = """
import torch
from transformers import CLIPConfig, CLIPModel

def build():
    torch.manual_seed(0)
    text = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                  patch_size=8)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
"""
WAV2VEC2 = """
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

def build():
    torch.manual_seed(0)
    return Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=12, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                         num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                                         num_feat_extract_layers=2))
"""
POOLING = """
import torch

class Centred(torch.nn.Module):
    '''Per-row scores, the batch centred on its own mean (a normalisation across the batch), and the
    batch's mean alone.'''

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(6, 4)

    def forward(self, x):
        h = self.proj(x)
        return h, h - h.mean(0, keepdim=True), h.mean(0)

def build():
    return Centred()
"""


def built(tmp_path_factory, name, text):
    path = tmp_path_factory.mktemp(name) / f"{name}.py"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    source = built(tmp_path_factory, "clip", CLIP)
    lines: list[str] = []
    made = load_factory(f"{source}:build")
    folder = source.parent / "out"
    result = export_module(made.module, None, folder, formats=["onnx"], log=lines.append,
                           inputs=["input_ids=batchxseq:int64", "pixel_values=batchx3x16x16"], name="clip")
    return source, folder, result, "\n".join(lines)


@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory):
    source = built(tmp_path_factory, "w2v", WAV2VEC2)
    folder = source.parent / "out"
    said = cli("export", "--module", f"{source}:build", "--input", "input_values=batchxsamples", "--format", "onnx",
               "--atol", "0.002", "--rtol", "0.005", "--name", "w2v", "--out", folder)
    return source, folder, said


@pytest.fixture(scope="module")
def pooling(tmp_path_factory):
    source = built(tmp_path_factory, "pool", POOLING)
    folder = source.parent / "out"
    said = cli("export", "--module", f"{source}:build", "--input", "x=batchx6", "--output", "scores",
               "--output", "centred", "--output", "batch_mean", "--range", "x=-1,1", "--format", "onnx", "--name", "pool",
               "--out", folder)
    return source, folder, said


def eager(source, feeds):
    """The module as its library gives it, called by keyword: {output: array}."""
    module = load_factory(f"{source}:build").module.eval()
    with torch.no_grad():
        if "x" in feeds:
            return dict(zip(("scores", "centred", "batch_mean"), (t.numpy() for t in module(torch.from_numpy(feeds["x"])))))
        out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    # a ModelOutput inside the ModelOutput (CLIP's text_model_output): its tensors by their path, as export names them
    flat = {f"{k}_{k2}": v2 for k, v in out.items() if not isinstance(v, torch.Tensor) and hasattr(v, "items")
            for k2, v2 in v.items()}
    return {k: v.numpy() for k, v in {**out, **flat}.items() if isinstance(v, torch.Tensor)}


def certificate(folder):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    return Certificate.from_json(props[f"ptx.{CERTIFICATE_KEY}"]), json.loads(props["ptx.signature"])


def test_clip_records_which_outputs_are_per_row_and_verify_passes_saying_what_it_left_out(clip):
    source, folder, result, said = clip
    assert "batch: not every output is per row: logits_per_image (spans the batch on axis 1 as well as axis 0)" in said
    recorded, signature = certificate(folder)
    assert recorded.rows["logits_per_image"].startswith("spans the batch on axis 1")
    assert recorded.rows["logits_per_text"].startswith("spans the batch on axis 1")
    assert recorded.rows["text_embeds"] == recorded.rows["image_embeds"] == PER_ROW
    axes = {t["name"]: t["batch_axis"] for t in signature["outputs"]}
    assert axes["logits_per_image"] is None and axes["logits_per_text"] is None and axes["image_embeds"] == 0
    done = ptx("verify", folder / "model.onnx")
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("batch composition:"))
    assert "left out, not per row as export found: logits_per_image (spans the batch on axis 1" in line, line
    assert "DISAGREE" not in done.stdout and "all agree" in done.stdout


def test_clip_answers_as_eager_and_a_bare_session_through_load_predict_and_serve(clip, tmp_path):
    source, folder, _, _ = clip
    case = first_case(folder)
    want = eager(source, case.feeds)
    bare = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    names = [o.name for o in bare.get_outputs()]
    got = load(folder / "model.onnx").run(case.feeds)
    for output, answer in zip(names, bare.run(None, case.feeds)):
        np.testing.assert_allclose(answer, want[output], atol=1e-4, rtol=1e-3, err_msg=output)
        np.testing.assert_array_equal(got[output], answer)
    assert got["logits_per_image"].shape == (3, 3)
    np.savez(tmp_path / "in.npz", **case.feeds)
    cli("predict", "--model", folder / "model.onnx", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    predicted = np.load(tmp_path / "out.npz")
    for output, answer in zip(names, bare.run(None, case.feeds)):
        np.testing.assert_array_equal(predicted[output], answer)


def test_wav2vec2_export_finds_a_size_it_takes_and_every_later_command_uses_it(wav2vec2, tmp_path):
    source, folder, said = wav2vec2
    line = next(ln for ln in said.splitlines() if ln.startswith("sizes:"))
    assert "refuses the generated inputs at samples=8" in line and "doubling up to samples=16384" in line, line
    assert "chose samples=32" in line, line
    signature = Signature.from_dict(certificate(folder)[1])
    assert signature.sizes == (("samples", 32),)
    done = ptx("verify", folder / "model.onnx")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "using the sizes export validated at: samples=32 (recorded in the file)" in done.stdout
    # --atol and --rtol given to export are carried to verify, and said
    assert "using the tolerance export validated at: atol 0.002, rtol 0.005" in done.stdout
    assert "0.002 / 0.005" in done.stdout
    # a size of the user's own still wins
    again = ptx("verify", folder / "model.onnx", "--shape", "samples=64", "--backends", "ort-cpu")
    assert again.returncode == 0 and "samples=32" not in again.stdout, again.stdout + again.stderr
    bench = ptx("bench", folder / "model.onnx", "--batch-sizes", "2", "--seconds", "0.2", "--rounds", "1",
                "--backends", "ort-cpu")
    assert bench.returncode == 0 and "samples=32 (recorded in the file)" in bench.stdout + bench.stderr, bench.stdout
    case = first_case(folder)
    assert case.feeds["input_values"].shape == (3, 32)
    want = eager(source, case.feeds)["logits"]
    bare = onnxruntime.InferenceSession(str(folder / "model.onnx")).run(None, case.feeds)[0]
    np.testing.assert_allclose(bare, want, atol=1e-4, rtol=1e-3)
    np.testing.assert_array_equal(load(folder / "model.onnx").run(case.feeds)["logits"], bare)
    np.savez(tmp_path / "in.npz", **case.feeds)
    cli("predict", "--model", folder / "model.onnx", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["logits"], bare)


def test_an_output_normalised_across_the_batch_is_left_out_and_a_per_row_one_still_checked(pooling):
    source, folder, said = pooling
    assert "centred (depends on the other rows of its batch" in said, said
    recorded, signature = certificate(folder)
    assert recorded.rows == {"scores": PER_ROW, "centred": recorded.rows["centred"]}
    assert recorded.rows["centred"].startswith("depends on the other rows")
    assert [t["batch_axis"] for t in signature["outputs"]] == [0, None, None]
    done = ptx("verify", folder / "model.onnx")
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("batch composition:"))
    assert "left out, not per row as export found: centred (depends on the other rows" in line, line
    # the range given to export is the file's own: verify's generated inputs keep to it
    assert "cases: generated, seed 0, batch 3 and batch 5: x float32 in [-1, 1]" in done.stdout, done.stdout
    case = first_case(folder)
    want = eager(source, case.feeds)
    bare = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    for output, answer in zip(("scores", "centred", "batch_mean"), bare.run(None, case.feeds)):
        np.testing.assert_allclose(answer, want[output], atol=1e-5, rtol=1e-4)
    # not every output has a batch axis: a server answers request by request, joining none
    assert not load(folder / "model.onnx").signature.batched


def test_serve_answers_each_as_a_bare_session_and_joins_no_requests_of_a_model_not_per_row(clip, wav2vec2, pooling,
                                                                                         tmp_path):
    import shutil

    files = {}
    for name, (_, folder, *_) in (("clip", clip), ("w2v", wav2vec2), ("pool", pooling)):
        files[name] = tmp_path / f"{name}.onnx"
        shutil.copyfile(folder / "model.onnx", files[name])
    with serving.running(tmp_path, *files.values()) as server:
        for name, (source, folder, *_) in (("clip", clip), ("w2v", wav2vec2), ("pool", pooling)):
            case = first_case(folder)
            bare = onnxruntime.InferenceSession(str(files[name]))
            doc = {"inputs": [{"name": k, "datatype": "INT64" if v.dtype == np.int64 else "FP32",
                               "shape": list(v.shape), "data": v.ravel().tolist()} for k, v in case.feeds.items()]}
            request = urllib.request.Request(f"{server.url}/v2/models/{name}/infer", data=json.dumps(doc).encode(),
                                             method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = {o["name"]: o for o in json.loads(response.read())["outputs"]}
            for got, output in zip(bare.run(None, case.feeds), bare.get_outputs()):
                served = np.array(answer[output.name]["data"], got.dtype).reshape(got.shape)
                np.testing.assert_allclose(served, got, atol=1e-6, rtol=1e-6, err_msg=f"{name} {output.name}")
        said = "\n".join(server.lines)
    for name in ("clip", "pool"):
        assert any(f"backend {name}:" in ln and "request by request" in ln for ln in said.splitlines()), said


def test_a_size_the_model_refuses_at_every_size_tried_is_said_with_the_cap(tmp_path):
    class OnlyThree(torch.nn.Module):
        def forward(self, x):
            if x.shape[1] != 3:
                raise ValueError(f"takes 3 steps, not {x.shape[1]}")
            return x * 2

    lines: list[str] = []
    # one line, the error itself: the first refusal, the search with its cap, and what to do
    with pytest.raises(PtxError, match=r"refuses the generated inputs at steps=8 \(ValueError: takes 3 steps, not 8.*"
                       r"and every larger size tried, doubling up to steps=16384: .*shape the inputs it takes with "
                       r"--shape") as refused:
        export_module(OnlyThree(), None, tmp_path / "three", formats=["onnx"], log=lines.append,
                      inputs=["x=batchxsteps"])
    assert "\n" not in str(refused.value) and not (tmp_path / "three").exists()


def test_a_file_without_the_records_is_read_as_before():
    """No sizes in the signature: ptx's own choice, said as before; no rows in a certificate: {}."""
    signature = Signature((TensorSig("x", "float32", ("batch", "steps"), 0),), ())
    plan = plan_inputs(signature)
    assert plan.chosen == {"steps": 8} and plan.describe_choices().startswith("symbolic dims chosen by ptx: steps=8")
    recorded = plan_inputs(Signature(signature.inputs, (), sizes=(("steps", 40),)))
    assert recorded.size("steps") == 40 and "using the sizes export validated at: steps=40" in recorded.describe_choices()
    assert Certificate.from_json('{"holds":true,"against":"eager","outputs":"","axes":[]}').rows == {}
    assert Signature.from_dict(Signature(signature.inputs, signature.inputs, sizes=(("steps", 40),)).to_dict()
                               ).sizes == (("steps", 40),)


def test_where_the_default_size_fails_beside_a_factory_s_example_the_example_s_size_is_taken(tmp_path):
    class Framed(torch.nn.Module):  # a first convolution of 10 samples, as Wav2Vec2's
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv1d(1, 2, kernel_size=10, stride=5)

        def forward(self, x):
            return self.conv(x.unsqueeze(1)).mean(-1)

    lines: list[str] = []
    result = export_module(Framed(), (torch.rand(2, 50),), tmp_path / "framed", formats=["onnx"],
                           inputs=["x=batchxsamples"], log=lines.append)
    said = [ln for ln in lines if ln.startswith("sizes:")]
    assert said and "refuses the generated inputs at samples=8" in said[0] and "the example's samples=50" in said[0]
    assert result.signature.sizes == (("samples", 50),)
    done = ptx("verify", tmp_path / "framed" / "model.onnx", "--backends", "ort-cpu")
    assert done.returncode == 0 and "using the sizes export validated at: samples=50" in done.stdout, done.stdout
