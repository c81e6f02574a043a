"""A T5 translation model (encoder and decoder, T5 v1.1's gated-GELU feed-forward as flan-T5 has it) as
transformers builds it, from a tiny config (random weights, scaled up so that its greedy choices are no
near-ties): docs/generate.md exports it with its cache (an encoder file beside a decoder file) and
generates with it; docs/own-model.md's "Hugging Face models" exports its forward pass."""
import torch
from transformers import T5Config, T5ForConditionalGeneration


def build():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                               decoder_start_token_id=0, initializer_factor=8.0,
                                               feed_forward_proj="gated-gelu")).eval()
