"""What `ptx export --module` does by default with each architecture family the suite knows: `--task auto`
exports a causal LM (GPT-2, Llama, Qwen2) with its key/value cache, and every other model as one forward
pass, as before the cache export existed. Encoder-decoders that generate (T5, BART, Whisper) were refused
by default once auto took any class that generates: they export their forward pass again, saying in one
line what generation would need, and `--task text-generation` of one is refused in one line naming
`--task forward`. The task is decided from the class and config, without exporting (fast), except for the
three encoder-decoders, which are exported and verified as a user runs them."""
from __future__ import annotations

import pytest
from ptx_command import ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="transformers is in the test extra (scripts/setup.sh installs it)")

from hf_models import MODELS  # noqa: E402
from ptx.errors import PtxError  # noqa: E402
from ptx.export.factory import load_factory  # noqa: E402
from ptx.export.decoder import chosen_task  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from ptx_command import REPO  # noqa: E402
from test_batch_semantics import CLIP, WAV2VEC2  # noqa: E402

EXAMPLES = REPO / "docs" / "examples"

# Encoder-decoders that generate, from tiny configs (2 layers, width 32), with the inputs a user declares.
ENCODER_DECODERS = {
    "t5": ("""
import torch
from transformers import T5Config, T5ForConditionalGeneration

def build():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                               decoder_start_token_id=0))
""", ["input_ids=batchxseq:int64", "decoder_input_ids=batchxdseq:int64"]),
    "bart": ("""
import torch
from transformers import BartConfig, BartForConditionalGeneration

def build():
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64))
""", ["input_ids=batchxseq:int64", "decoder_input_ids=batchxdseq:int64"]),
    # 80 mel bins; the encoder takes exactly 2 x max_source_positions frames
    "whisper": ("""
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

def build():
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=30,
        max_target_positions=64, decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2))
""", ["input_features=batchx80x60", "decoder_input_ids=batchxdseq:int64"]),
}
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
    **{name: (text, "forward") for name, (text, _) in ENCODER_DECODERS.items()},
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
    if name in ENCODER_DECODERS:  # it generates: why not with its cache, and what that would need, in one line
        assert lines == [f"task: forward ({CLASSES[name]} is an encoder-decoder: ptx exports its cache for causal LMs "
                         "only; generating with one would need an encoder file, and a decoder file taking the encoder's "
                         "states, its own past and the cross-attention past): its forward pass is exported, without a "
                         "cache"], lines
    else:  # the text-generation line is the cache export's own (tests/test_generate.py)
        assert lines == [], lines


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


@pytest.mark.parametrize("name", ENCODER_DECODERS)
def test_an_encoder_decoder_exports_and_verifies_by_default(name, tmp_path):
    text, inputs = ENCODER_DECODERS[name]
    (tmp_path / f"{name}.py").write_text(text)
    declared = [arg for i in inputs for arg in ("--input", i)]
    done = ptx("export", "--module", f"{tmp_path / name}.py:build", *declared, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout.splitlines()
    assert said[0].startswith(f"task: forward ({CLASSES[name]} is an encoder-decoder"), said[0]
    assert (tmp_path / "out" / "model.onnx").exists() and (tmp_path / "out" / "model.torchscript.pt").exists()
    assert not any("past_key_values" in line or "present." in line for line in said if line.startswith("module:"))
    verified = ptx("verify", tmp_path / "out" / "model.onnx")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    asked = ptx("export", "--module", f"{tmp_path / name}.py:build", *declared, "--task", "text-generation",
                "--out", tmp_path / "asked")
    assert asked.returncode == 2 and "Traceback" not in asked.stderr, asked.stdout + asked.stderr
    assert asked.stderr.strip() == (
        f"error: --task text-generation: {CLASSES[name]} is an encoder-decoder: ptx exports its cache for causal "
        "LMs only; generating with one would need an encoder file, and a decoder file taking the encoder's states, "
        "its own past and the cross-attention past; give --task forward to export its forward pass"), asked.stderr
    assert not (tmp_path / "asked").exists()


def test_export_module_refuses_text_generation_of_an_encoder_decoder_before_any_work(tmp_path):
    (tmp_path / "bart.py").write_text(ENCODER_DECODERS["bart"][0])
    module = load_factory(f"{tmp_path / 'bart.py'}:build").module
    with pytest.raises(PtxError, match="^--task text-generation: BartForConditionalGeneration is an encoder-decoder"):
        export_module(module, None, tmp_path / "out", task="text-generation", output_names=["scores"],
                      log=lambda _: None)
