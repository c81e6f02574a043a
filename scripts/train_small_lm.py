"""A small causal LM trained for real on this machine (nothing downloaded), to judge quantization and time exports
on: random weights have near-ties everywhere, so a reduced file's KL divergence and top-1 agreement on them say
little. It trains on Python's standard library sources (the .py files under the running interpreter's
lib/python3.X: code, docstrings and comments), holding out a share of the files, and writes a transformers folder
as a downloaded snapshot holds one: config.json, the weights in bfloat16 safetensors shards with their index,
generation_config.json (eos <|im_end|>), a byte-level BPE tokenizer trained on the same text with ChatML's special
tokens and tests/text_models.py's chat template, and training.json (what was trained, how long, the held-out loss).

A Qwen2 (Qwen2.5's architecture: grouped-query attention with 2 kv heads, biased q/k/v, tied embeddings), trained
with AdamW on a cosine schedule for a wall-clock budget: the warmup steps are timed, and the step count they allow
fixes the schedule; `--steps N` (the count a run prints) repeats that run exactly, as far as torch allows.

    python scripts/train_small_lm.py /data/trained-lm                 # 20 minutes of training, ~25 in all
    python scripts/train_small_lm.py /tmp/lm --minutes 2 --layers 2   # a quick look

Measured (2 shared cores of an AMD EPYC, AVX2, 2026-11-28; hidden 256, 4 layers, vocabulary
4096, python 3.11's library): 856 steps of 1,024 tokens in 989 s of training, held-out loss 5.81 (perplexity 335,
against 4,096 for a uniform guess); the folder's training.json records it. docs/benchmarks/large-models.md judges
its int4 file.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from text_models import CHAT_TEMPLATE, SPECIALS, byte_bpe  # noqa: E402  (ChatML, as the test models write it)

PROMPTS = ["def fibonacci(n):\n", "import os\n\n\ndef ", "class Stack:\n    \"\"\"", "# Copyright (C) ",
           "    def __init__(self, "]


def corpus_files(root: Path, held_out: float) -> tuple[list[Path], list[Path]]:
    """The library's .py files (site-packages left out: not the interpreter's own), split by file into training
    and held-out by a hash of the file's path under ``root``, so the split does not depend on the machine's order
    or on which other files exist."""
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
    cut = int(held_out * 2 ** 32)
    kept = [p for p in files if int(hashlib.sha256(str(p.relative_to(root)).encode()).hexdigest()[:8], 16) >= cut]
    return kept, sorted(set(files) - set(kept))


def read_texts(files: list[Path]) -> list[str]:
    """Each file's text; the few that are not UTF-8 (test data in other encodings) are left out."""
    texts = []
    for path in files:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return texts


def train_tokenizer(texts: list[str], vocab: int):
    """A byte-level BPE (GPT-2's pre-tokenizer, as Qwen2's) learned from ``texts``, ChatML's special tokens first."""
    from transformers import PreTrainedTokenizerFast

    bpe = byte_bpe(texts, vocab, SPECIALS, show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def token_stream(words, texts: list[str]):
    """The texts' tokens in one int32 tensor, each file followed by <|endoftext|> (as pretraining packs documents)."""
    import torch

    end = words.convert_tokens_to_ids("<|endoftext|>")
    ids = []
    for encoded in words.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(encoded.ids)
        ids.append(end)
    return torch.tensor(ids, dtype=torch.int32)


def build_model(args, words, seed: int):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    end, pad = words.convert_tokens_to_ids("<|im_end|>"), words.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=len(words), hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                         num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=2,
                         max_position_embeddings=1024, max_window_layers=args.layers, tie_word_embeddings=True,
                         rope_theta=10000.0, rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=end, pad_token_id=pad)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=end, pad_token_id=pad, do_sample=False)
    return model


def optimizer(model, lr: float):
    """AdamW with weight decay on the matrices only (norms and biases left alone, as GPT-style training does)."""
    import torch

    decayed = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def learning_rate(step: int, warmup: int, total: int, peak: float) -> float:
    """Linear warmup, then a cosine down to a tenth of the peak at ``total``. The warmup does not depend on
    ``total``: a run whose total was chosen by timing the warmup is repeated exactly by ``--steps total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    done = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))


def batch(stream, generator, size: int, length: int):
    import torch

    starts = torch.randint(0, len(stream) - length, (size,), generator=generator)
    return torch.stack([stream[s:s + length] for s in starts.tolist()]).long()


def train(model, stream, args) -> dict:
    """Trains in place; prints a progress line every few seconds; returns the run's figures."""
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    adamw = optimizer(model, args.lr)
    model.train()
    total, step, tokens, began = args.steps, 0, 0, time.monotonic()
    shown, window = began, []
    while total is None or step < total:
        for group in adamw.param_groups:
            group["lr"] = learning_rate(step, args.warmup, total or 10 ** 9, args.lr)
        ids = batch(stream, generator, args.batch, args.length)
        loss = model(input_ids=ids, labels=ids).loss
        adamw.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        adamw.step()
        step, tokens = step + 1, tokens + ids.numel()
        window.append(loss.item())
        now = time.monotonic()
        if total is None and step == args.warmup:
            total = max(step + 1, int(args.minutes * 60 / ((now - began) / step)))
            print(f"planned {total} steps ({(now - began) / step:.2f} s a step over the warmup's {step}); "
                  f"--steps {total} repeats this run", flush=True)
        if now - shown >= args.every or step == total:
            print(f"step {step}/{total or '?'}  {tokens:,} tokens  {tokens / (now - began):,.0f} tokens/s  "
                  f"loss {sum(window) / len(window):.3f}  lr {adamw.param_groups[0]['lr']:.2e}  "
                  f"{(now - began) / 60:.1f} min", flush=True)
            shown, window = now, []
    return {"steps": step, "tokens": tokens, "seconds": round(time.monotonic() - began, 1)}


def held_out_loss(model, stream, length: int, limit: int) -> tuple[float, int]:
    """The mean next-token loss over up to ``limit`` held-out tokens, in windows spread evenly over the whole
    stream: a prefix would be a few files (one file, pydoc's topics, is half of the held-out text at 3%)."""
    import torch

    model.eval()
    count = min(len(stream), limit) // length
    starts = torch.linspace(0, len(stream) - length, count).long().tolist()
    windows = torch.stack([stream[s:s + length] for s in starts]).long()
    total = 0.0
    with torch.no_grad():
        for ids in windows.split(8):
            total += model(input_ids=ids, labels=ids).loss.item() * len(ids)  # the same count in each window
    return total / len(windows), len(windows) * (length - 1)


def save(model, words, out: Path, shards: int) -> list[str]:
    """save_pretrained in bfloat16, in ``shards`` safetensors files or about that (a shard holds whole tensors)."""
    import torch

    model = model.to(torch.bfloat16)
    stored = {p.data_ptr(): p.numel() * p.element_size() for p in model.state_dict().values()}  # tied: once
    size = sum(stored.values())
    model.save_pretrained(str(out), max_shard_size=f"{math.ceil(size / shards / 1000) + 1}KB")
    words.save_pretrained(str(out))
    return sorted(p.name for p in out.glob("*.safetensors"))


def continuations(out: Path, prompts: list[str], tokens: int) -> list[str]:
    """Greedy continuations from the folder as written (bf16 weights read back), to see that it writes Python."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    words = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    found = []
    with torch.no_grad():
        for prompt in prompts:
            ids = words(prompt, return_tensors="pt").input_ids
            made = model.generate(ids, max_new_tokens=tokens, do_sample=False)
            found.append(prompt + words.decode(made[0, ids.shape[1]:], skip_special_tokens=False))
    return found


def arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write (made if missing)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training's wall-clock budget (20)")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of a time budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=256, help="the model's width, a multiple of 64 (256)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096, help="the BPE's vocabulary (4096)")
    parser.add_argument("--length", type=int, default=256, help="tokens in a training sequence (256)")
    parser.add_argument("--batch", type=int, default=4, help="sequences in a step (4)")
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (4e-3)")
    parser.add_argument("--warmup", type=int, default=40, help="warmup steps, the ones timed for the plan (40)")
    # One thread by default: on a machine shared with other work, OpenMP's threads wait on each other whenever one
    # is descheduled, and two trained at half the speed of one here (2 cores, load ~8).
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (1)")
    parser.add_argument("--held-out", type=float, default=0.03, help="share of the files held out (0.03)")
    parser.add_argument("--eval-tokens", type=int, default=262144, help="held-out tokens read at most (262144)")
    parser.add_argument("--shards", type=int, default=3, help="safetensors shards to write (3)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between progress lines (10)")
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]),
                        help="the library to learn from (the running interpreter's)")
    args = parser.parse_args(argv)
    if args.hidden % 64:
        parser.error("--hidden must be a multiple of 64 (heads of 64)")
    return args


def prepare(args):
    """The tokenizer and the two token streams."""
    began = time.monotonic()
    training, held = corpus_files(args.stdlib, args.held_out)
    texts, held_texts = read_texts(training), read_texts(held)
    words = train_tokenizer(texts, args.vocab)
    stream, held_stream = token_stream(words, texts), token_stream(words, held_texts)
    size = sum(len(t.encode()) for t in texts)
    print(f"{args.stdlib}: {len(texts)} files for training ({size / 1e6:.1f} MB, {len(stream):,} tokens), "
          f"{len(held_texts)} held out ({len(held_stream):,} tokens); tokenizer of {len(words)} "
          f"in {time.monotonic() - began:.0f} s", flush=True)
    corpus = {"root": str(args.stdlib), "files": len(texts), "bytes": size, "tokens": len(stream),
              "held_out_files": len(held_texts), "held_out_tokens": len(held_stream),
              "bytes_per_token": round(size / len(stream), 3)}
    return words, stream, held_stream, corpus


def main(argv=None) -> int:
    import torch

    args = arguments(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    words, stream, held_stream, corpus = prepare(args)
    model = build_model(args, words, args.seed)
    params = sum(p.numel() for p in model.parameters())
    print(f"Qwen2 of {params / 1e6:.1f}M parameters (hidden {args.hidden}, {args.layers} layers); "
          f"{args.batch} x {args.length} tokens a step", flush=True)
    figures = train(model, stream, args)
    loss, counted = held_out_loss(model, held_stream, args.length, args.eval_tokens)
    print(f"held-out loss {loss:.3f}  perplexity {math.exp(loss):.2f}  ({counted:,} tokens; vocabulary {len(words)})",
          flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    files = save(model, words, args.out, args.shards)
    record = {"date": datetime.date.today().isoformat(), "seed": args.seed, "parameters": params, "corpus": corpus,
              **figures, "held_out_loss": round(loss, 4), "held_out_perplexity": round(math.exp(loss), 3),
              "options": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.out}: {', '.join(files)}", flush=True)
    for text in continuations(args.out, PROMPTS, 48):
        print("----\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
