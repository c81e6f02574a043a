"""Hugging Face transformers' own classes, built from tiny configs, exported as they come (issue 58):
GPT-2 with its cache on (the cache dropped, the logits exported), BERT with attention_mask and
token_type_ids (and by keyword, attention_mask left out), ViT and T5's encoder; then verify, predict,
bench and serve, with answers equal to eager PyTorch's and to a bare onnxruntime session's. Each
model is built and exported (onnx, torchscript) once per module; inputs are small. Their pt2 packages
are tests/test_hf_pt2.py's: a file of its own, so that a second pytest-xdist worker compiles them."""
from __future__ import annotations

import shutil

import numpy as np
import onnxruntime
import pytest

pytest.importorskip("transformers", reason="transformers is in the test extra (scripts/setup.sh installs it)")

import torch  # noqa: E402

import serving  # noqa: E402
from hf_models import Exports, cli, eager, factory, first_case, ptx, served_answer  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export.factory import load_factory  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("hf"), ["onnx", "torchscript"])


def test_gpt2_with_its_cache_on_exports_its_logits_from_the_issue_s_command(tmp_path):
    """Issue 58, 1: `ptx export --module gpt.py:build --input input_ids=batchxseq:int64` of a stock
    GPT2LMHeadModel was refused ("whose 'cache' is not a tensor"); now, asked for its forward pass
    (--task forward: by default it is exported with its cache, tests/test_generate.py), the cache is
    left out in one line that names use_cache=False, and the logits are exported."""
    done = ptx("export", "--module", f"{factory(tmp_path, 'gpt2')}:build", "--input", "input_ids=batchxseq:int64",
               "--out", tmp_path / "gpt2", "--format", "onnx", "--task", "forward")
    assert done.returncode == 0, done.stdout + done.stderr
    said = [ln for ln in done.stdout.splitlines() if ln.startswith("outputs:") and "cache" in ln]
    assert len(said) == 1 and "cache (a DynamicCache) left out" in said[0] and "use_cache=False" in said[0], said
    session = onnxruntime.InferenceSession(str(tmp_path / "gpt2" / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits"]
    case = first_case(tmp_path / "gpt2")
    bare = session.run(None, case.feeds)[0]
    np.testing.assert_allclose(bare, eager("gpt2", tmp_path, case.feeds)["logits"], atol=1e-4, rtol=1e-3)


def test_inputs_declared_by_keyword_leave_the_parameters_between_them_at_their_defaults(tmp_path):
    """Issue 58, 2: input_ids and token_type_ids of BertModel.forward(input_ids, attention_mask,
    token_type_ids, ...) were refused ("need declaring too: add --input for attention_mask");
    now they go in by keyword and attention_mask keeps its default."""
    made = load_factory(f"{factory(tmp_path, 'bert')}:build")
    lines: list[str] = []
    export_module(made.module, None, tmp_path / "kw", formats=["onnx"], log=lines.append,
                  inputs=["token_type_ids=batchxseq:int64", "input_ids=batchxseq:int64"])
    assert any("input_ids, token_type_ids passed to BertModel.forward by keyword; attention_mask" in ln
               for ln in lines), lines
    session = onnxruntime.InferenceSession(str(tmp_path / "kw" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "token_type_ids"]
    case = first_case(tmp_path / "kw")
    want = eager("bert", tmp_path, case.feeds)
    for got, output in zip(session.run(None, case.feeds), session.get_outputs()):
        np.testing.assert_allclose(got, want[output.name], atol=1e-4, rtol=1e-3)


def test_a_parameter_without_a_default_left_out_is_named(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, a, b, c=None):
            return a + (c if c is not None else 0)

    with pytest.raises(PtxError, match=r"parameters before c need declaring too: add --input for b$"):
        export_module(Two(), None, tmp_path / "two", formats=["onnx"], log=lambda _: None,
                      inputs=["a=batchx3", "c=batchx3"])


def test_a_model_output_inside_a_model_output_is_flattened_to_named_tensors(tmp_path):
    """CLIPModel returns a CLIPOutput holding the text and vision models' own ModelOutputs: it was refused
    ("whose 'text_model_output' is a BaseModelOutputWithPooling, not a tensor")."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                  patch_size=8)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).eval()
    lines: list[str] = []
    result = export_module(clip, None, tmp_path / "clip", formats=["onnx"], log=lines.append,
                           inputs=["input_ids=batchxseq:int64", "pixel_values=batchx3x16x16"])
    names = result.signature.output_names
    assert {"text_embeds", "image_embeds", "text_model_output_pooler_output",
            "vision_model_output_last_hidden_state"} <= set(names), names


@pytest.mark.parametrize("name", ["gpt2", "bert", "vit", "t5"])
def test_each_export_answers_as_eager_and_a_bare_session(exports, name, tmp_path):
    folder, said = exports[name]
    case = first_case(folder)
    want = eager(name, tmp_path, case.feeds)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names and set(names) <= set(want)
    for model in ("model.onnx", "model.torchscript.pt"):
        got = load(folder / model).run(case.feeds)
        for output in names:
            np.testing.assert_allclose(got[output], want[output], atol=1e-4, rtol=1e-3, err_msg=f"{model} {output}")
    for got, output in zip(session.run(None, case.feeds), names):
        np.testing.assert_allclose(got, want[output], atol=1e-4, rtol=1e-3)


def test_a_pt2_whose_outputs_are_a_type_no_load_can_import_is_refused_in_one_line(tmp_path):
    source = tmp_path / "own.py"
    source.write_text("""
import torch
from collections import UserDict
from torch.utils import _pytree

class Out(UserDict):
    pass

_pytree.register_pytree_node(Out, lambda o: (list(o.values()), list(o.keys())),
                             lambda values, keys: Out(zip(keys, values)),
                             serialized_type_name=f"{__name__}.Out")

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(3, 2)

    def forward(self, x):
        return Out(y=self.l(x))

def build():
    return Net()
""")
    made = load_factory(f"{source}:build")
    with pytest.raises(PtxError) as caught:
        export_module(made.module, None, tmp_path / "own", formats=["pt2"], inputs=["x=batchx3"],
                      log=lambda _: None)
    assert "returns a Out" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["gpt2", "bert", "vit", "t5"])
def test_verify_predict_and_bench_take_each_export(exports, name, tmp_path):
    folder, _ = exports[name]
    assert "all agree" in cli("verify", folder / "model.onnx", "--against", folder / "model.torchscript.pt")
    case = first_case(folder)
    np.savez(tmp_path / "in.npz", **case.feeds)
    cli("predict", "--model", folder / "model.onnx", tmp_path / "in.npz", "--output", tmp_path / "out.npz")
    predicted = np.load(tmp_path / "out.npz")
    bare = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    for got, output in zip(bare.run(None, case.feeds), bare.get_outputs()):
        np.testing.assert_array_equal(predicted[output.name], got)
        np.testing.assert_allclose(predicted[output.name], case.outputs[output.name], atol=1e-4, rtol=1e-3)
    assert "ort-cpu" in cli("bench", folder / "model.onnx", "--batch-sizes", "2", "--seconds", "0.2", "--rounds", "1")


def test_serve_answers_as_a_bare_session(exports, tmp_path):
    names = ["gpt2", "bert", "vit", "t5"]
    files = [tmp_path / f"{n}.onnx" for n in names]  # served by the file's name (each export's is model.onnx)
    for name, path in zip(names, files):
        shutil.copyfile(exports[name][0] / "model.onnx", path)
    with serving.running(tmp_path, *files) as server:
        for name, path in zip(names, files):
            case = first_case(exports[name][0])
            bare = onnxruntime.InferenceSession(str(path))
            answer = served_answer(server.url, name, case.feeds)
            for got, output in zip(bare.run(None, case.feeds), bare.get_outputs()):
                np.testing.assert_array_equal(np.array(answer[output.name]["data"], got.dtype).reshape(got.shape), got)

