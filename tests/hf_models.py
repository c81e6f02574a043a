"""Hugging Face transformers' own classes built from tiny configs (issue 58), shared by
tests/test_hf_models.py (onnx, torchscript) and tests/test_hf_pt2.py (pt2): the factories, each
model exported once per test module, and eager PyTorch's answers."""
from __future__ import annotations

import json
import urllib.request

import numpy as np
import torch

from ptx.contract.reference import load_reference, reference_path
from ptx.export.factory import load_factory
from ptx.export.module import export_module
from ptx_command import ptx

TIMEOUT = 300

# name -> (the factory file's text, --input declarations). Every config is tiny (2 layers, hidden
# 32): each builds in well under a second.
MODELS = {
    "gpt2": ("""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

def build():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2))  # use_cache on
""", ["input_ids=batchxseq:int64"]),
    "bert": ("""
import torch
from transformers import BertConfig, BertModel

def build():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64, type_vocab_size=10))
""", ["input_ids=batchxseq:int64", "token_type_ids=batchxseq:int64", "attention_mask=batchxseq:int64"]),
    "vit": ("""
import torch
from transformers import ViTConfig, ViTForImageClassification

def build():
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=5))
""", ["pixel_values=batchx3x32x32"]),
    "t5": ("""
import torch
from transformers import T5Config, T5EncoderModel

def build():
    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2))
""", ["input_ids=batchxseq:int64"]),
}


def cli(*args):
    """Run a ptx command that must succeed; what it printed (stdout)."""
    done = ptx(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def factory(tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(MODELS[name][0])
    return path


class Exports:
    """Each model exported once to ``formats``, on first use: {name: (folder, what export printed)}."""

    def __init__(self, root, formats):
        self.root, self.formats, self.done = root, formats, {}

    def __getitem__(self, name):
        if name not in self.done:
            source = factory(self.root, name)
            lines: list[str] = []
            made = load_factory(f"{source}:build")
            # its forward pass: these check the tensors of each architecture (GPT-2's cache: tests/test_generate.py)
            export_module(made.module, made.example_inputs, self.root / name, inputs=MODELS[name][1],
                          formats=self.formats, name=name, task="forward", log=lines.append)
            self.done[name] = (self.root / name, "\n".join(lines))
        return self.done[name]


def eager(name, root, feeds):
    """The model as transformers gives it, called by keyword with its own defaults (GPT-2's cache
    on): the answers every file must give."""
    made = load_factory(f"{factory(root, name)}:build")
    with torch.no_grad():
        out = made.module.eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}


def first_case(folder):
    """The first case of the reference export stored beside the folder's files (eager's inputs and outputs)."""
    return load_reference(reference_path(folder / "model.onnx")).cases[0]


def served_answer(url: str, name: str, feeds: dict) -> dict:
    """A server's answer to ``feeds`` (int64 or float32 arrays) over REST JSON: {output name: its doc}."""
    doc = {"inputs": [{"name": k, "datatype": "INT64" if v.dtype == np.int64 else "FP32",
                       "shape": list(v.shape), "data": v.ravel().tolist()} for k, v in feeds.items()]}
    request = urllib.request.Request(f"{url}/v2/models/{name}/infer", data=json.dumps(doc).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return {o["name"]: o for o in json.loads(response.read())["outputs"]}
