"""A T5 translation model (encoder and decoder) as transformers builds it, from a tiny config (random
weights): docs/own-model.md's "Hugging Face models" exports its forward pass, the ids in and the decoder's
ids so far, the logits of the next out."""
import torch
from transformers import T5Config, T5ForConditionalGeneration


def build():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                               decoder_start_token_id=0))
