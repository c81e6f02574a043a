"""Causal language models that generate, built from published configs with random weights (transformers,
nothing downloaded), with their cache on: the models scripts/bench_generate.py exports with
`ptx export --module scripts/generate_lms.py:NAME` and decodes through every runtime.

- smollm2: SmolLM2-135M's published config (a Llama: grouped-query attention of 9 heads over 3 key/value
  heads, rotary positions, the embedding tied to the head; 135M parameters);
- gpt2: GPT-2 small's published config (learned positions, tied head; 124M parameters);
- qwen2_05b: Qwen2-0.5B's published config (scripts/scale_lms.py's, here with its cache; 494M parameters);
- t5_small: t5-small's published config, an encoder-decoder (6 encoder and 6 decoder layers of 512, relative
  position buckets, ReLU feed-forward, the head tied to the embedding; 60M parameters), exported as an
  encoder file beside a decoder file with its cache.

The configs are the published ones, initializer_range (0.02) included: random weights at 0.02 decode a
loop of 3 or 4 distinct tokens, but every step does the published model's work, and its top-2 margins
(0.008 and more in 32 steps) lie far above float32's differences between runtimes. At a spread of 0.1
SmolLM2's 30 layers grow their activations until ONNX Runtime's logits differ from eager's by 2e-4 at the
second step, past the f32 tolerance (atol 1e-4): that would measure the weights, not the runtimes.
"""
from __future__ import annotations

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
T5_SMALL = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="relu",
                tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def _seeded():
    import torch

    torch.manual_seed(0)


def smollm2():
    from transformers import LlamaConfig, LlamaForCausalLM

    _seeded()
    return LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).eval()


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    _seeded()
    return GPT2LMHeadModel(GPT2Config(**GPT2_SMALL)).eval()


def qwen2_05b():
    import sys
    from pathlib import Path

    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(Path(__file__).parent))  # scale_lms lies beside this file, wherever it is run from
    from scale_lms import QWEN2_05B

    _seeded()
    # Qwen2-0.5B's published end-of-sequence id (scale_lms' config leaves the ids out: it exports logits alone)
    return Qwen2ForCausalLM(Qwen2Config(**QWEN2_05B, bos_token_id=151643, eos_token_id=151643)).eval()


def t5_small():
    from transformers import T5Config, T5ForConditionalGeneration

    _seeded()
    return T5ForConditionalGeneration(T5Config(**T5_SMALL)).eval()


MODELS = {"smollm2": smollm2, "gpt2": gpt2, "qwen2_05b": qwen2_05b, "t5_small": t5_small}
