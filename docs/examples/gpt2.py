"""A GPT-2 language model as transformers builds it, from a tiny config (random weights; use_cache
on, as stock): docs/own-model.md's "Hugging Face models" exports it as it comes."""
import torch
from transformers import GPT2Config, GPT2LMHeadModel


def build():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2))
