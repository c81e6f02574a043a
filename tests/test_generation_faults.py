"""Planted faults in a decoder's export, each caught where it is born and named by prompt and step; and the
legitimate twins, language models whose logits reach 1, 10 and 100, exported with their cache and verified
with no flag (docs/error-model.md).

An exporter bug is a module right in eager and wrong while it is traced: a subclass of a tiny transformers LM
that branches on ``torch.jit.is_tracing()`` (the TorchScript-based exporter's trace) or
``torch.compiler.is_compiling()`` (torch.export's), as a buggy exporter or a module that branches on tracing
is: positions shifted by one, the attention mask ignored (batch 3, left-padded), one layer's past dropped, the
logits scaled by 1.05. ptx's own loop is held to transformers' generate() (a mask bug planted in the loop fails
export in one line). The models have 2 layers and, but where a prompt must reach past 300 positions, 64
positions (the four judging prompts then share one batch), and are exported with the TorchScript-based
exporter: an export of 6 layers takes 16 s with it and 57 s with torch.export on 2 cores, 30 layers over a
minute; scripts/error_model.py measures 6 and 30 layers (docs/error-model.md's tables)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ptx_command import ptx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptx.errors import ValidationError  # noqa: E402
from ptx.export.module import export_module  # noqa: E402
from repo_scripts import script  # noqa: E402
from test_readme import REPO  # noqa: E402

error_model = script("error_model")
VOCAB = 256


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class PlantedLlama(transformers.LlamaForCausalLM):
    """A Llama right in eager and, while traced, wrong by ``fault``: mask (the attention mask ignored), past
    (layer 1's past dropped: zeros), scale (the logits scaled by 1.05); None: right either way."""

    fault: str | None = None

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                **kwargs):
        if _tracing() and self.fault == "mask":
            attention_mask = torch.ones_like(attention_mask)
        if _tracing() and self.fault == "past" and past_key_values is not None:
            layer = past_key_values.layers[1]
            layer.keys, layer.values = layer.keys * 0, layer.values * 0
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, use_cache=use_cache, **kwargs)
        if _tracing() and self.fault == "scale":
            out.logits = out.logits * 1.05
        return out


class PlantedGPT2(transformers.GPT2LMHeadModel):
    """A GPT-2 (learned positions: a Llama's rotary ones see a shift of every position as no change) whose
    positions, while traced, are shifted by one."""

    fault: str | None = None

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, position_ids=None, use_cache=None,
                **kwargs):
        if _tracing() and self.fault == "positions":
            position_ids = position_ids + 1
        return super().forward(input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
                               position_ids=position_ids, use_cache=use_cache, **kwargs)


class PlantedKeep(transformers.LlamaForCausalLM):
    """A Llama whose head, while traced, reads the first len(logits_to_keep) positions instead of those asked
    for: right where every position is asked for (arange: what the judge's prompt pass asks), wrong where a
    prompt's run asks for its last one only (what generation asks)."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep=0, **kwargs):
        if _tracing() and isinstance(logits_to_keep, torch.Tensor):
            logits_to_keep = torch.arange(logits_to_keep.shape[0])
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, use_cache=use_cache, logits_to_keep=logits_to_keep,
                               **kwargs)


def llama(fault: str | None = None, scale: float = 100.0, init: float = 0.2, positions: int = 64):
    """A 2-layer Llama whose logits reach ``scale`` (its final norm scaled, as a trained model's grow), planted
    with ``fault`` (PlantedLlama's, or "keep": PlantedKeep). With 64
    positions the judging prompts are four short ones in one batch (the quickest check); with 512 one of them
    reaches past 300 positions, decoded alone."""
    torch.manual_seed(0)
    model = (PlantedKeep if fault == "keep" else PlantedLlama)(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=positions, initializer_range=init, bos_token_id=None,
        eos_token_id=None)).eval()
    model.fault = fault
    return _scaled(model, scale)


def gpt2(fault: str | None = None, scale: float = 100.0, init: float = 0.2, positions: int = 64):
    torch.manual_seed(0)
    model = PlantedGPT2(transformers.GPT2Config(vocab_size=VOCAB, n_positions=positions, n_embd=64, n_layer=2, n_head=4,
                                                initializer_range=init, bos_token_id=None, eos_token_id=None)).eval()
    model.fault = fault
    return _scaled(model, scale)


def _scaled(model, scale: float):
    with torch.no_grad():
        top = model(torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))).logits.abs().max()
    return error_model.scale_logits(model, scale / float(top))


FACTORY = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from test_generation_faults import gpt2, llama


def right():
    return llama(positions=512)


def shifted():
    return gpt2("positions")
"""


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "lm.py"
    path.write_text(FACTORY)
    return path


@pytest.mark.parametrize("build, fault, where", [(llama, "mask", "prompt 1 position 1"), (llama, "past", "step 2"),
                                                 (llama, "scale", "prompt 1 position 1")])
def test_an_exporter_bug_fails_export_naming_prompt_and_step_and_keeps_no_file(tmp_path, build, fault, where):
    out = tmp_path / "lm"
    with pytest.raises(ValidationError, match=rf"^onnx \(ort-cpu\): (prompt \d )?{where}: logits differ from the "
                                              r"reference's by up to"):
        export_module(build(fault), None, out, formats=["onnx"], exporter="legacy", log=lambda _: None)
    assert not out.exists()


def test_a_head_that_reads_other_positions_than_logits_to_keep_asks_fails_export_at_step_1(tmp_path):
    """The judge's prompt pass asks for every position's logits, generation's for the last one's: a file right
    for the first and wrong for the second passes the teacher-forced judgement and parts from the reference's
    tokens at a clear margin where it runs free, at the first step."""
    out = tmp_path / "lm"
    with pytest.raises(ValidationError, match=r"^onnx \(ort-cpu\): prompt 1's own tokens part at a clear margin: "
                                              r"prompt 1 step 1: parts"):
        export_module(llama("keep"), None, out, formats=["onnx"], exporter="legacy", log=lambda _: None)
    assert not out.exists()


def test_positions_shifted_while_the_exporter_traces_fail_ptx_export_exit_1_keeping_no_file(factory, tmp_path):
    done = ptx("export", "--module", f"{factory}:shifted", "--out", tmp_path / "lm", "--format", "onnx",
               "--exporter", "legacy")
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()
    assert said[-1].startswith("error: onnx (ort-cpu): prompt 1 position 1: logits differ from the reference's"), said
    assert not (tmp_path / "lm").exists()


def test_a_llama_with_logits_of_100_exports_with_its_cache_and_verifies_with_no_flag(factory, tmp_path):
    """The CLI's generating export, its success path: eager's decoding held to transformers' generate(), a prompt
    reaching past 300 positions; then verify, every row PASS. (The TorchScript-based exporter: torch.export's
    trace of the same decoder, 4x slower here, is tests/test_generate.py's.)"""
    done = ptx("export", "--module", f"{factory}:right", "--out", tmp_path / "lm", "--format", "onnx",
               "--exporter", "legacy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "generate(do_sample=False) in eager PyTorch" in done.stdout and \
        "its tokens and logits, 4 prompts (3, 7, 12, 448 tokens)" in done.stdout, done.stdout
    assert "the past from 0 to 463" in done.stdout and "530 positions teacher-forced (466 in the prompts" in done.stdout
    shown = ptx("verify", tmp_path / "lm" / "model.onnx", "--backends", "ort-cpu,openvino", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = {r["backend"]: r for r in json.loads(shown.stdout)["rows"]}
    assert rows["ort-cpu"]["status"] == "PASS" and rows["openvino"]["status"] == "PASS", rows
    worst = rows["ort-cpu"]["judgement"]["prompts"]
    assert max(p["worst_abs"] for p in worst) > 1e-4  # beyond atol alone: held at the rows' scale of about 100


@pytest.mark.parametrize("build, init, scale", [(gpt2, 0.2, 100.0), (gpt2, 0.02, 10.0), (llama, 0.02, 1.0)])
def test_a_language_model_with_logits_of_1_10_or_100_exports_with_its_cache_and_verifies(tmp_path, build, init, scale):
    from ptx.infer.model.target import Target
    from ptx.infer.verify.generation import verify_generation

    said: list[str] = []
    export_module(build(scale=scale, init=init), None, tmp_path / "lm", formats=["onnx"], exporter="legacy",
                  log=said.append)
    report = verify_generation(Target.of(tmp_path / "lm" / "model.onnx", verifying=True), ["ort-cpu", "openvino"])
    assert report.exit_code() == 0, report.lines()
    assert 0.5 * scale < max(s.scale for p in _recorded(tmp_path) for s in p) < 2 * scale


def _recorded(tmp_path):
    from ptx.contract.reference_decoding import recorded_reference
    from ptx.infer import load

    with load(tmp_path / "lm" / "model.onnx") as model:
        return recorded_reference(model.generation).logits


def test_a_mask_bug_in_ptx_s_own_loop_fails_export_against_transformers_generate(tmp_path, monkeypatch):
    """The reference is not ptx's loop: a loop that ignores the padding of a left-padded batch (its mask all ones)
    decodes the file away from transformers' generate() on the padded prompts, and export says where in one line."""
    from ptx.infer.model import rows

    def unpadded(prompts, pad):
        ids, mask = real(prompts, pad)
        return ids, np.ones_like(mask)
    real = rows.left_padded
    monkeypatch.setattr(rows, "left_padded", unpadded)
    with pytest.raises(ValidationError, match=r"^onnx \(ort-cpu\): prompt 1 position 1: logits differ from the "
                                              r"reference's by up to"):
        export_module(llama(), None, tmp_path / "lm", formats=["onnx"], exporter="legacy", log=lambda _: None)
    assert not (tmp_path / "lm").exists()
