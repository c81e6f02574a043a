"""A Llama-shaped causal language model as transformers builds it, from a tiny config (random weights,
nothing downloaded): grouped-query attention (4 heads over 2 key/value heads) and rotary positions. Its
cache is on, as stock, so `ptx export --module docs/examples/llama_lm.py:build` keeps it for generation.

`python docs/examples/llama_lm.py tokenizer DIR` writes a word-level tokenizer of its 128 words (w0 ...
w127) into DIR, as a transformers tokenizer folder's tokenizer.json, for `ptx generate --tokenizer DIR`."""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 128


def build():
    torch.manual_seed(0)
    # initializer_range 0.2: random weights whose greedy choices are no near-ties
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        initializer_range=0.2, bos_token_id=None, eos_token_id=None)).eval()


def tokenizer(folder: str) -> None:
    from pathlib import Path

    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    Path(folder).mkdir(parents=True, exist_ok=True)
    words.save(str(Path(folder) / "tokenizer.json"))


if __name__ == "__main__" and sys.argv[1:2] == ["tokenizer"]:
    tokenizer(sys.argv[2])
