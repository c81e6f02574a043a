"""A BERT encoder as transformers builds it, from a tiny config (random weights): docs/own-model.md's
"Hugging Face models" exports it with inputs declared by forward()'s keyword."""
import torch
from transformers import BertConfig, BertModel


def build():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64, type_vocab_size=10))
