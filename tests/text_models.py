"""A chat model as users have one on disk, made in the test (nothing downloaded): a byte-level BPE tokenizer
trained with the tokenizers library on a few lines (accented letters, Japanese and an emoji among them, so
that one character spans several tokens), ChatML special tokens and a chat template, and a tiny random
Llama of that vocabulary, written together by transformers' save_pretrained as a folder (config.json,
model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
from __future__ import annotations

from pathlib import Path

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Once upon a time there was a small model.",
          "café, naïve, über, crème brûlée", "日本語のテキスト", "hello world 👋", "user assistant system"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = 2  # <|im_end|>: the end of a turn, as Qwen2-Instruct's generation config has it
# ChatML, as Qwen2's template writes it (a default system message where the conversation has none).
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
POSITIONS = 128


def tokenizer():
    """The fast tokenizer (transformers' PreTrainedTokenizerFast over a tokenizers BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def llama(vocab: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                                        initializer_range=0.2, bos_token_id=None, eos_token_id=EOS,
                                        pad_token_id=0)).eval()


def chat_folder(folder: Path) -> Path:
    """The save_pretrained folder of the model and its tokenizer."""
    words = tokenizer()
    llama(len(words)).save_pretrained(str(folder))
    words.save_pretrained(str(folder))
    return folder
