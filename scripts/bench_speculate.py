#!/usr/bin/env python3
"""Prompt-lookup speculative decoding (`--speculate ngram`, infer/model/speculative.py) against plain greedy, on a
prompt that repeats its context: tokens per second of each, in one process, the two decodings alternated, ratios
within the run, and the tokens held equal (greedy's exactly).

    python3 scripts/bench_speculate.py [--models smollm2,qwen2_05b] [--new-tokens 128] [--rounds 3]
        [--backend ort-cpu] [--work DIR]

For each model of scripts/generate_lms.py (published configs, random weights, nothing downloaded): `ptx export
--module scripts/generate_lms.py:NAME --format onnx` (reused from --work when there), opened once through
--backend. The prompt (seeded ids): a document of three paragraphs, an instruction, then the second paragraph's
first tokens, as "repeat the second paragraph" would start. Random weights do not follow the instruction: what
the guesses find is what greedy's answer repeats of the prompt and of itself (these models loop), so the figure
says what a step of k positions costs against the tokens it keeps on this answer, not a trained model's gain.
Prints a table and writes WORK/results.json; docs/benchmarks/generation.md records a run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PARAGRAPH, INSTRUCTION, STARTED = 120, 12, 8  # tokens of each paragraph, of the instruction, of the repetition begun


def ptx(*args: str) -> None:
    """A ptx command in a process of its own; its failure ends the script with what it said."""
    done = subprocess.run([sys.executable, "-c", "from ptx.cli import main; main()", *args], capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"ptx {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def exported(name: str, work: Path) -> Path:
    out = work / name
    if not (out / "model.onnx").exists():
        print(f"{name}: exporting ...", file=sys.stderr, flush=True)
        ptx("export", "--module", f"{HERE / 'generate_lms.py'}:{name}", "--format", "onnx", "--out", str(out),
            "--force")
    return out / "model.onnx"


def repeating_prompt(vocab: int, seed: int = 0) -> list[int]:
    """Three paragraphs, an instruction, and the second paragraph's first tokens again."""
    rng = np.random.default_rng(seed)
    paragraphs = [rng.integers(3, vocab, PARAGRAPH).tolist() for _ in range(3)]
    return [t for p in paragraphs for t in p] + rng.integers(3, vocab, INSTRUCTION).tolist() + paragraphs[1][:STARTED]


def measure(model, prompt: list[int], new_tokens: int, rounds: int) -> dict:
    """Plain greedy and prompt lookup alternated ``rounds`` times after a warm-up each: the median tokens per second
    after the prompt's run, the tokens a step gave, and whether both gave the same tokens."""
    from ptx.infer.model.speculative import PromptLookup

    ways = {"greedy": None, "ngram": PromptLookup()}
    tokens = {way: model.decode([prompt], new_tokens, eos=(), speculate=d).tokens[0] for way, d in ways.items()}
    speed: dict[str, list[float]] = {way: [] for way in ways}
    per_step: dict[str, float] = {}
    for _ in range(rounds):
        for way, drafter in ways.items():
            done = model.decode([prompt], new_tokens, eos=(), speculate=drafter)
            speed[way].append(done.decode_tokens / done.decode_s)
            per_step[way] = done.decode_tokens / done.decode_steps
    greedy, ngram = statistics.median(speed["greedy"]), statistics.median(speed["ngram"])
    return {"greedy_tokens_per_s": round(greedy, 2), "ngram_tokens_per_s": round(ngram, 2),
            "ngram_over_greedy": round(ngram / greedy, 2), "tokens_per_step": round(per_step["ngram"], 2),
            "same_tokens": tokens["greedy"] == tokens["ngram"],
            "spread": round(max(max(s) / min(s) for s in speed.values()), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,qwen2_05b")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-speculate"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from generate_lms import MODELS

    from ptx.infer import load
    from ptx.machine import cpu_name

    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: {name} is not one of {', '.join(MODELS)}")
        path = exported(name, args.work)
        print(f"{name}: decoding ...", file=sys.stderr, flush=True)
        with load(path, backend=args.backend) as model:
            vocab = model.signature.output(model.generation.logits).shape[-1]
            prompt = repeating_prompt(int(vocab))
            rows.append({"model": name, "backend": args.backend, "prompt_tokens": len(prompt),
                         **measure(model, prompt, args.new_tokens, args.rounds)})
    head = f"{'model':<10} {'greedy tok/s':>13} {'ngram tok/s':>12} {'ngram/greedy':>13} {'tokens/step':>12} same"
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['model']:<10} {row['greedy_tokens_per_s']:>13.2f} {row['ngram_tokens_per_s']:>12.2f} "
              f"{row['ngram_over_greedy']:>12.2f}x {row['tokens_per_step']:>12.2f} {row['same_tokens']}")
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "new_tokens": args.new_tokens,
            "rounds": args.rounds, "rows": rows}
    (args.work / "results.json").write_text(json.dumps(meta, indent=1))
    print(f"{meta['cpu']}, {meta['date']}; medians of {args.rounds} decodings of {args.new_tokens} tokens each way, "
          f"alternated; {args.work / 'results.json'}")
    return 0 if all(r["same_tokens"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
