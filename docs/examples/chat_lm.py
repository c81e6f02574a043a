"""A chat model folder as transformers writes one (`save_pretrained`), made here in seconds with nothing
downloaded: a byte-level BPE tokenizer trained with the tokenizers library on a few lines, ChatML's special
tokens and chat template (Qwen2's), and a tiny Llama taught those few conversations by heart, so that what
it says reads as text. A real model's folder (SmolLM2, Qwen2, Llama...) has the same files.

    python docs/examples/chat_lm.py DIR      writes DIR: config.json, model.safetensors, generation_config.json,
                                             tokenizer.json, tokenizer_config.json, chat_template.jinja
"""
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CONVERSATIONS = [("Who are you?", "I am a tiny model, made by ptx from a folder."),
                 ("Hello!", "Hello! How can I help you today?"),
                 ("What can you do?", "I answer in a few words, and I stream them as I make them."),
                 ("Tell me a story.", "Once upon a time, a small model learned to talk."),
                 ("Say hello in Japanese.", "こんにちは! 👋"),
                 ("Thank you!", "You are welcome.")]
CHAT_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
STEPS = 100  # about 3 s: enough to say each answer back


def tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    lines = [line for pair in CONVERSATIONS for line in pair] + ["system user assistant helpful"]
    bpe.train_from_iterator(lines * 8, trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def build(words: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A tiny Llama taught the conversations (each ending with the end of its turn)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # matrices this small train fastest on one thread
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, eos_token_id=2, pad_token_id=0,
                                         bos_token_id=None))
    chats = [words.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
             ["input_ids"] for q, a in CONVERSATIONS]
    longest = max(map(len, chats))
    ids = torch.tensor([c + [0] * (longest - len(c)) for c in chats])
    mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in chats])
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main(folder: str) -> None:
    words = tokenizer()
    build(words).save_pretrained(folder)
    words.save_pretrained(folder)


if __name__ == "__main__":
    main(sys.argv[1])
