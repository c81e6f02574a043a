"""What `ptx export --module` does by default with each architecture family the suite knows: `--task auto`
exports a causal LM (GPT-2, Llama, Qwen2) with its key/value cache, an encoder-decoder that generates (T5,
BART, Whisper) as an encoder file beside a decoder file with its cache (text2text-generation), and every
other model as one forward pass, as before the cache export existed; a kind that generates but whose cache
ptx cannot make (a recurrent state) exports its forward pass, saying why in one line. The task is decided
from the class and config, without exporting (fast); the encoder-decoders' default exports, run as a user
runs them, are tests/test_encoder_decoder.py's."""
from __future__ import annotations

import pytest
from ptx_command import ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="transformers is in the test extra (scripts/setup.sh installs it)")

from hf_models import MODELS  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export.factory import load_factory  # noqa: E402
from ptx.export.seq2seq import chosen_task  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx_command import REPO  # noqa: E402
from test_batch_semantics import CLIP, WAV2VEC2  # noqa: E402
from test_encoder_decoder import FACTORIES  # noqa: E402

EXAMPLES = REPO / "docs" / "examples"

# Encoder-decoders that generate, from tiny configs (the factories a user exports: tests/test_encoder_decoder.py)
ENCODER_DECODERS = {name: text for name, text in FACTORIES.items()}
CLASSES = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration",
           "whisper": "WhisperForConditionalGeneration"}

GPT2_WITHOUT_CACHE = """
import torch
from transformers import GPT2Config, GPT2LMHeadModel

def build():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2, use_cache=False))
"""
QWEN2 = "from test_generate import qwen2 as build\n"

# family -> (where its factory is: a file of docs/examples, or a factory's text, then the task auto chooses)
FAMILIES = {
    "gpt2": (EXAMPLES / "gpt2.py", "text-generation"),
    "llama": (EXAMPLES / "llama_lm.py", "text-generation"),
    "qwen2": (QWEN2, "text-generation"),
    "gpt2-use_cache-False": (GPT2_WITHOUT_CACHE, "forward"),
    "bert": (EXAMPLES / "bert.py", "forward"),
    "vit": (MODELS["vit"][0], "forward"),
    "t5-encoder": (MODELS["t5"][0], "forward"),
    "clip": (CLIP, "forward"),
    "wav2vec2-ctc": (WAV2VEC2, "forward"),
    "detector": (EXAMPLES / "detector.py", "forward"),
    "yolo": (EXAMPLES / "yolo.py", "forward"),
    "own-cnn": (EXAMPLES / "mynet.py", "forward"),
    **{name: (text, "text2text-generation") for name, text in ENCODER_DECODERS.items()},
}


def built(tmp_path, name):
    where, _ = FAMILIES[name]
    if isinstance(where, str):
        (tmp_path / f"{name.replace('-', '_')}.py").write_text(where)
        where = tmp_path / f"{name.replace('-', '_')}.py"
    return load_factory(f"{where}:build").module


@pytest.mark.parametrize("name", FAMILIES)
def test_auto_chooses_the_cache_for_causal_lms_and_the_forward_pass_for_every_other_family(name, tmp_path):
    lines: list[str] = []
    task = chosen_task(built(tmp_path, name), "auto", lines.append)
    assert task == FAMILIES[name][1], (task, lines)
    assert lines == [], lines  # the cache export's task line is its own (tests/test_generate.py, test_encoder_decoder.py)


class Stateful(transformers.GPT2LMHeadModel):
    """A causal LM marked as transformers marks Mamba, RWKV and the hybrids: a recurrent state, no keys and values."""
    _is_stateful = True


class NoCacheKeyword(transformers.GPT2LMHeadModel):
    """A causal LM whose forward takes no cache (a wrapper that hides it)."""

    def forward(self, input_ids=None, attention_mask=None, use_cache=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


@pytest.mark.parametrize("kind, said", [(Stateful, "Stateful keeps a recurrent state"),
                                        (NoCacheKeyword, "NoCacheKeyword.forward takes no cache or past_key_values")])
def test_a_generating_kind_ptx_cannot_cache_is_exported_forward_and_refused_when_asked(kind, said):
    config = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    assert chosen_task(transformers.GPT2LMHeadModel(config), "auto", print) == "text-generation"  # the legit case
    lines: list[str] = []
    assert chosen_task(kind(config), "auto", lines.append) == "forward"
    assert len(lines) == 1 and lines[0].startswith(f"task: forward ({said}"), lines
    with pytest.raises(PtxError, match=f"^--task text-generation: {said}.*; give --task forward"):
        chosen_task(kind(config), "text-generation", print)


def test_export_module_refuses_text_generation_of_an_encoder_decoder_before_any_work(tmp_path):
    (tmp_path / "bart.py").write_text(ENCODER_DECODERS["bart"])
    module = load_factory(f"{tmp_path / 'bart.py'}:build").module
    with pytest.raises(PtxError, match="^--task text-generation: BartForConditionalGeneration is an encoder-decoder: "
                                       "give --task text2text-generation"):
        export_module(module, None, tmp_path / "out", task="text-generation", output_names=["scores"],
                      log=lambda _: None)
    assert not (tmp_path / "out").exists()
