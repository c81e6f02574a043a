"""Hugging Face transformers' own classes, built from tiny configs, exported as they come (issue 58):
GPT-2 with its cache on (the cache dropped, the logits exported), BERT with attention_mask and
token_type_ids (and by keyword, attention_mask left out), ViT and T5's encoder; then verify, predict,
bench and serve, with answers equal to eager PyTorch's and to a bare onnxruntime session's. A pt2
package whose outputs are a ModelOutput records transformers' module and loads in a fresh process.
Each model is built and exported once per module; inputs are small."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import onnxruntime
import pytest

pytest.importorskip("transformers", reason="transformers is in the test extra (scripts/setup.sh installs it)")

import torch  # noqa: E402

import serving  # noqa: E402
from ptx.contract.reference import load_reference, reference_path  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export.factory import load_factory  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.pytree_types import recorded_modules  # noqa: E402

TIMEOUT = 300

# name -> (the factory file's text, --input declarations, formats). Every config is tiny (2 layers,
# hidden 32): each builds in well under a second.
MODELS = {
    "gpt2": ("""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

def build():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2))  # use_cache on
""", ["input_ids=batchxseq:int64"], ["onnx", "torchscript"]),
    "bert": ("""
import torch
from transformers import BertConfig, BertModel

def build():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64, type_vocab_size=10))
""", ["input_ids=batchxseq:int64", "token_type_ids=batchxseq:int64", "attention_mask=batchxseq:int64"],
        ["onnx", "torchscript", "pt2"]),
    "vit": ("""
import torch
from transformers import ViTConfig, ViTForImageClassification

def build():
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=5))
""", ["pixel_values=batchx3x32x32"], ["onnx", "torchscript"]),
    "t5": ("""
import torch
from transformers import T5Config, T5EncoderModel

def build():
    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2))
""", ["input_ids=batchxseq:int64"], ["onnx", "torchscript"]),
}


def ptx(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ptx", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=TIMEOUT)


def cli(*args):
    """A ptx command in this process (click's runner): the suite pays no interpreter or torch start."""
    from click.testing import CliRunner

    from ptx.cli import cli as ptx_cli

    done = CliRunner().invoke(ptx_cli, list(map(str, args)), prog_name="ptx", catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output


def factory(tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(MODELS[name][0])
    return path


class Exports:
    """Each model exported once, on first use: {name: (folder, what export printed)}."""

    def __init__(self, root):
        self.root, self.done = root, {}

    def __getitem__(self, name):
        if name not in self.done:
            source = factory(self.root, name)
            lines: list[str] = []
            made = load_factory(f"{source}:build")
            export_module(made.module, made.example_inputs, self.root / name, open_model=load, inputs=MODELS[name][1],
                          formats=MODELS[name][2], name=name, log=lines.append)
            self.done[name] = (self.root / name, "\n".join(lines))
        return self.done[name]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory.mktemp("hf"))


def eager(name, root, feeds):
    """The model as transformers gives it, called by keyword with its own defaults (GPT-2's cache
    on): the answers every file must give."""
    made = load_factory(f"{factory(root, name)}:build")
    with torch.no_grad():
        out = made.module.eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}


def first_case(folder):
    return load_reference(reference_path(folder / "model.onnx")).cases[0]


def test_gpt2_with_its_cache_on_exports_its_logits_from_the_issue_s_command(tmp_path):
    """Issue 58, 1: `ptx export --module gpt.py:build --input input_ids=batchxseq:int64` of a stock
    GPT2LMHeadModel was refused ("whose 'cache' is not a tensor"); now the cache is left out in one
    line that names use_cache=False, and the logits are exported."""
    done = ptx("export", "--module", f"{factory(tmp_path, 'gpt2')}:build", "--input", "input_ids=batchxseq:int64",
               "--out", tmp_path / "gpt2", "--format", "onnx")
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
    export_module(made.module, None, tmp_path / "kw", open_model=load, formats=["onnx"], log=lines.append,
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
        export_module(Two(), None, tmp_path / "two", open_model=load, formats=["onnx"], log=lambda _: None,
                      inputs=["a=batchx3", "c=batchx3"])


@pytest.mark.parametrize("name", ["gpt2", "bert", "vit", "t5"])
def test_each_export_answers_as_eager_and_a_bare_session(exports, name, tmp_path):
    folder, said = exports[name]
    case = first_case(folder)
    want = eager(name, tmp_path, case.feeds)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names and set(names) <= set(want)
    for model in ("model.onnx", "model.torchscript.pt", *(["model.pt2"] if "pt2" in MODELS[name][2] else [])):
        got = load(folder / model).run(case.feeds)
        for output in names:
            np.testing.assert_allclose(got[output], want[output], atol=1e-4, rtol=1e-3, err_msg=f"{model} {output}")
    for got, output in zip(session.run(None, case.feeds), names):
        np.testing.assert_allclose(got, want[output], atol=1e-4, rtol=1e-3)


def test_a_pt2_of_a_model_output_records_transformers_and_loads_in_a_fresh_process(exports):
    """Issue 58, 4: the package named transformers.modeling_outputs' types in its pytree spec, and
    `ptx verify model.pt2` failed where transformers was not imported; the module is recorded at
    export and imported at load."""
    folder, _ = exports["bert"]
    assert recorded_modules(folder / "model.pt2") == ["transformers.modeling_outputs"]
    bare = subprocess.run([sys.executable, "-c", "import sys, torch; m = torch._inductor.aoti_load_package(sys.argv[1]); "
                           "x = torch.ones(3, 8, dtype=torch.int64); m(x, x, x)", folder / "model.pt2"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert "in pytree is not registered" in bare.stderr  # what ptx's load prevents: the bare call's failure
    done = ptx("verify", folder / "model.pt2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout and "not registered" not in done.stdout + done.stderr


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
        export_module(made.module, None, tmp_path / "own", open_model=load, formats=["pt2"], inputs=["x=batchx3"],
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
            doc = {"inputs": [{"name": k, "datatype": "INT64" if v.dtype == np.int64 else "FP32",
                               "shape": list(v.shape), "data": v.ravel().tolist()} for k, v in case.feeds.items()]}
            request = urllib.request.Request(f"{server.url}/v2/models/{name}/infer", data=json.dumps(doc).encode(),
                                             method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = {o["name"]: o for o in json.loads(response.read())["outputs"]}
            for got, output in zip(bare.run(None, case.feeds), bare.get_outputs()):
                np.testing.assert_array_equal(np.array(answer[output.name]["data"], got.dtype).reshape(got.shape), got)

