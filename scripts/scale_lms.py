"""Causal language models of the sizes people deploy, built from published configs with random
weights (transformers, nothing downloaded): the models scripts/bench_scale.py exports, verifies and
predicts with ptx and with the bare route, and that `ptx export --module scripts/scale_lms.py:NAME`
takes as a user's factory.

- qwen2_05b: Qwen2-0.5B's published config (494M parameters, 1.98 GB in f32, the embedding tied to
  the head), below ONNX's 2 GiB protobuf limit;
- qwen2_1b: the same family at 1.17B parameters (hidden 1536 and Qwen2-1.5B's MLP, 20 layers: 4.7 GB
  in f32), past it;
- qwen2_tiny: the same classes at a few MB, for a quick try of the script.
"""
from __future__ import annotations

QWEN2_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                 rms_norm_eps=1e-6, tie_word_embeddings=True)
QWEN2_1B = {**QWEN2_05B, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 20,
            "num_attention_heads": 12}
QWEN2_TINY = {**QWEN2_05B, "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "max_position_embeddings": 256}


def build(config: dict):
    """A Qwen2ForCausalLM of ``config``, seeded random weights, in eval mode, without its cache (the
    file takes token ids and an attention mask and returns logits)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**config, use_cache=False)).eval()
    return model


def qwen2_05b():
    return build(QWEN2_05B)


def qwen2_1b():
    return build(QWEN2_1B)


def qwen2_tiny():
    return build(QWEN2_TINY)


def parameters(config: dict) -> int:
    """Parameters of ``config``'s model, counted without building it (the tied head counted once)."""
    h, i, v, layers = config["hidden_size"], config["intermediate_size"], config["vocab_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    attention = h * h + h + 2 * (h * kv + kv) + h * h  # q (bias), k and v (bias), o
    return v * h + layers * (attention + 3 * h * i + 2 * h) + h + (0 if config["tie_word_embeddings"] else v * h)
