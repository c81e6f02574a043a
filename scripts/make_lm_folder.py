"""A transformers folder as a downloaded snapshot holds one, made from a published config with random weights
(nothing is downloaded): config.json, the weights in bfloat16 safetensors shards with their
model.safetensors.index.json, generation_config.json, and a tokenizer with a ChatML chat template
(tests/text_models.py's: random weights have no real one; ``--no-tokenizer`` leaves it out).

Written one tensor at a time, shard by shard: a 7.6B-parameter folder (15.2 GB) is never whole in memory
(the largest tensor is: 1.09 GB). Each tensor's values are drawn from a generator seeded by its name, so a
folder made twice is the same; the shards' layout follows transformers' save_pretrained (tensors in name
order, a new shard past --shard-size).

    python scripts/make_lm_folder.py qwen2.5-7b /data/qwen2.5-7b      # 7.6B parameters, 4 shards, 15.2 GB
    python scripts/make_lm_folder.py qwen2.5-3b /data/qwen2.5-3b
    python scripts/make_lm_folder.py tiny-sharded /tmp/lm      # 34M parameters in shards of 8 MB: what the tests stream
    python scripts/make_lm_folder.py qwen2.5-0.5b /tmp/q32k --tokenizer grammar-cost/tokenizer-32000.json

``--tokenizer FILE`` gives the folder that tokenizer.json (scripts/grammar_cost.py trains a 32k-token one on the
standard library's sources) with the ChatML template, its vocabulary the config's and its <|endoftext|> the end
id: a model whose grammar mask is as costly as a real 32k vocabulary's (`ptx bench --generate --json-schema`).
``--qwen-chat`` makes that tokenizer Qwen2.5-Instruct's kind: its chat template (which renders tools), ChatML's
special tokens with <|im_end|> the end of a turn, the <tool_call> words, and logits padded past the tokenizer to
a multiple of 128 as Qwen2.5's are (151,936 rows for 151,665 words): what a tool-calling app is served
(scripts/openai_check.py).

    python scripts/make_lm_folder.py qwen2.5-0.5b /tmp/qt --tokenizer grammar-cost/tokenizer-32000.json --qwen-chat
"""
from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_QWEN25 = {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
           "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 32768,
           "model_type": "qwen2", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
           "use_cache": True, "use_sliding_window": False, "torch_dtype": "bfloat16"}
# The published configs (Qwen/Qwen2.5-*-Instruct's config.json), their sizes as they give them.
CONFIGS = {
    "qwen2.5-7b": {**_QWEN25, "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
                   "num_hidden_layers": 28, "num_key_value_heads": 4, "max_window_layers": 28,
                   "tie_word_embeddings": False, "vocab_size": 152064},
    "qwen2.5-3b": {**_QWEN25, "hidden_size": 2048, "intermediate_size": 11008, "num_attention_heads": 16,
                   "num_hidden_layers": 36, "num_key_value_heads": 2, "max_window_layers": 70,
                   "tie_word_embeddings": True, "vocab_size": 151936},
    "qwen2.5-0.5b": {**_QWEN25, "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
                     "num_hidden_layers": 24, "num_key_value_heads": 2, "max_window_layers": 21,
                     "tie_word_embeddings": True, "vocab_size": 151936},
    # small enough for the test suite (2 layers: a trace takes seconds), large enough that its weights (137 MB in
    # float32), not a decoding's logits or the libraries, rule what holding it whole costs
    "tiny-sharded": {**_QWEN25, "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 8,
                     "num_hidden_layers": 2, "num_key_value_heads": 2, "max_window_layers": 2,
                     "tie_word_embeddings": True, "vocab_size": 4000, "max_position_embeddings": 512,
                     "bos_token_id": None, "eos_token_id": 2},
}
SHARD_BYTES = {"qwen2.5-7b": 4 << 30, "qwen2.5-3b": 4 << 30, "qwen2.5-0.5b": 4 << 30, "tiny-sharded": 8 << 20}


def tensors(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each weight of a Qwen2/Llama-family causal LM of ``config``, as its state_dict names them
    (q, k and v with biases: Qwen2's)."""
    width, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head = config.get("head_dim") or width // heads
    found = [("model.embed_tokens.weight", (vocab, width)), ("model.norm.weight", (width,))]
    if not config["tie_word_embeddings"]:
        found.append(("lm_head.weight", (vocab, width)))
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        found += [(p + "input_layernorm.weight", (width,)), (p + "post_attention_layernorm.weight", (width,)),
                  (p + "self_attn.q_proj.weight", (heads * head, width)), (p + "self_attn.q_proj.bias", (heads * head,)),
                  (p + "self_attn.k_proj.weight", (kv * head, width)), (p + "self_attn.k_proj.bias", (kv * head,)),
                  (p + "self_attn.v_proj.weight", (kv * head, width)), (p + "self_attn.v_proj.bias", (kv * head,)),
                  (p + "self_attn.o_proj.weight", (width, heads * head)),
                  (p + "mlp.gate_proj.weight", (inner, width)), (p + "mlp.up_proj.weight", (inner, width)),
                  (p + "mlp.down_proj.weight", (width, inner))]
    return sorted(found)


def values(name: str, shape: tuple[int, ...], std: float):
    """The tensor's bfloat16 bytes: a norm's weights 1 (as initialised), every other value normal(0, std), drawn
    by torch on every core from a generator seeded by the tensor's name."""
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16).view(torch.int16).numpy().tobytes()
    generator = torch.Generator().manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))
    drawn = torch.randn(shape, generator=generator) * std
    return drawn.to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def shards(named: list[tuple[str, tuple[int, ...]]], limit: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    groups, size = [[]], 0
    for name, shape in named:
        nbytes = 2 * _count(shape)
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    return groups


def _count(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def write_shard(path: Path, group, std: float) -> None:
    """One safetensors file written as its format lays it out (an 8-byte header length, the JSON header, the
    tensors' bytes in order), each tensor drawn and written in turn (safetensors' own writer takes them all
    at once)."""
    header, offset = {}, 0
    for name, shape in group:
        nbytes = 2 * _count(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for name, shape in group:
            handle.write(values(name, shape, std))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--shard-size", default=None, help="bytes a shard holds at most (4GB; 8MB for tiny-sharded)")
    parser.add_argument("--no-tokenizer", action="store_true", help="leave the tokenizer out")
    parser.add_argument("--tokenizer", type=Path, metavar="FILE", help="this tokenizer.json instead of the tiny one "
                        "(its vocabulary the config's, <|endoftext|> the end id)")
    parser.add_argument("--qwen-chat", action="store_true", help="with --tokenizer: Qwen2.5-Instruct's chat "
                        "template (tools), ChatML's specials and <tool_call> words, logits padded to a multiple of 128")
    args = parser.parse_args(argv)
    if args.qwen_chat and args.tokenizer is None:
        parser.error("--qwen-chat dresses a given tokenizer: give --tokenizer FILE too")
    config = CONFIGS[args.config]
    given = None
    if args.tokenizer is not None:
        from tokenizers import Tokenizer

        if Tokenizer.from_file(str(args.tokenizer)).token_to_id("<|endoftext|>") is None:
            parser.error(f"{args.tokenizer} has no <|endoftext|> token to end an answer with (or pad with)")
        given = _given_tokenizer(args.tokenizer, args.qwen_chat)
        end, words = given.convert_tokens_to_ids(given.eos_token), len(given)
        config = {**config, "vocab_size": -(-words // 128) * 128 if args.qwen_chat else words,
                  "bos_token_id": None, "eos_token_id": end}
    limit = _bytes(args.shard_size) if args.shard_size else SHARD_BYTES[args.config]
    named = tensors(config)
    groups = shards(named, limit)
    args.out.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for number, group in enumerate(groups, 1):
        name = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        print(f"{args.out / name}: {len(group)} tensors ...", file=sys.stderr, flush=True)
        write_shard(args.out / name, group, config["initializer_range"])
        weight_map.update(dict.fromkeys((n for n, _ in group), name))
        total += sum(2 * _count(s) for _, s in group)
    (args.out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    (args.out / "config.json").write_text(json.dumps({**config, "transformers_version": "5.24.0"}, indent=2))
    (args.out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False}, indent=2))
    if not args.no_tokenizer:
        sys.path.insert(0, str(HERE.parent / "tests"))
        import text_models

        (text_models.tokenizer() if given is None else given).save_pretrained(str(args.out))
    params = sum(_count(s) for _, s in named)
    print(f"{args.out}: {params / 1e9:.2f}B parameters, {total / 1e9:.2f} GB of bfloat16 in {len(groups)} shards",
          file=sys.stderr)
    return 0


def _given_tokenizer(path: Path, qwen_chat: bool):
    """The tokenizer.json at ``path`` with a chat template: ChatML's, <|endoftext|> the end; or, ``qwen_chat``,
    Qwen2.5-Instruct's as tests/text_models.py's tool-calling tokenizer has it (ChatML's specials added, the
    <tool_call> words added as text the model writes, <|im_end|> the end of a turn)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import text_models
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    if not qwen_chat:
        return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>",
                                       chat_template=text_models.CHAT_TEMPLATE)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=text_models.QWEN25_TEMPLATE)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        AddedToken(word, special=True, normalized=False) for word in text_models.SPECIALS]})
    tokenizer.add_tokens([AddedToken(word, special=False, normalized=False) for word in
                          ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")])
    return tokenizer


def _bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


if __name__ == "__main__":
    sys.exit(main())
