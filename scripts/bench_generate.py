#!/usr/bin/env python3
"""ptx's greedy decoding on every backend beside transformers' own ``generate()`` with its cache, on the
same seeded prompt, in one run: the eager row `ptx bench FILE --generate N` cannot have (an ONNX file
carries no module).

The module comes from a factory (FILE.py:FACTORY, as `ptx export --module` takes it) and is exported with
its cache into --out (or the file already there is used with --reuse). Eager generate() runs greedy
(do_sample=False, use_cache=True) with min_new_tokens = max_new_tokens = N and no end-of-sequence id, so
every step runs as in ptx's loop; its prefill is a generate() of one new token, its decode time the rest,
each the median of --rounds after one warm-up. ptx's rows are ptx.infer.bench.generation's, unchanged.

Usage: python scripts/bench_generate.py /tmp/gen/lm.py:llama [--generate 128] [--prompt-length 32]
       [--batch 1] [--rounds 3] [--out DIR] [--reuse] [--backends ort-cpu,openvino]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def eager_generate(module, prompts, new_tokens: int, rounds: int) -> dict:
    """transformers' generate() with its cache: (prefill ms, decode ms per step, tokens/s), medians."""
    import torch

    ids = torch.tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)

    def timed(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = module.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
        spent = time.perf_counter() - start
        assert out.shape[1] == ids.shape[1] + n, out.shape
        return spent

    timed(new_tokens)  # warm-up
    prefill = [timed(1) for _ in range(rounds)]
    whole = [timed(new_tokens) for _ in range(rounds)]
    step = (statistics.median(whole) - statistics.median(prefill)) / (new_tokens - 1)
    return {"runner": "eager generate()", "device": "cpu", "prefill_ms": round(1000 * statistics.median(prefill), 3),
            "decode_ms_per_token": round(1000 * step, 4), "tokens_per_s": round(len(prompts) / step, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("factory", help="FILE.py:FACTORY returning a transformers causal LM")
    parser.add_argument("--generate", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="where the export goes (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="time the model.onnx already in --out")
    parser.add_argument("--backends", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from ptx.export import export_module
    from ptx.export.factory import load_factory
    from ptx.infer.bench.generation import bench_generation
    from ptx.infer.model.target import Target

    module = load_factory(args.factory).module.eval()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_generate_")) / "export"
    if not (args.reuse and (out / "model.onnx").is_file()):
        print(f"exporting {args.factory} with its cache into {out}", file=sys.stderr)
        export_module(module, None, out, task="text-generation", force=True, log=lambda _: None)
    progress = lambda msg: print(f"timing {msg}", file=sys.stderr)  # noqa: E731
    result = bench_generation(Target.of(out / "model.onnx"), args.generate, prompt_length=args.prompt_length,
                              batch=args.batch, repeats=args.rounds,
                              backends=args.backends.split(",") if args.backends else None, progress=progress)
    # transformers' generate() on the very prompts ptx's rows decoded (the same seeded ids)
    from ptx.infer.bench.generation import seeded_prompts
    from ptx.infer.model.generation import vocabulary

    model = Target.of(out / "model.onnx").load("ort-cpu")
    generation = model.generation
    prompts = seeded_prompts(generation, vocabulary(model.signature, generation), args.batch, result.prompt_length,
                             result.seed)
    model.close()
    progress("eager generate()")
    eager = eager_generate(module, prompts, args.generate, args.rounds)
    rows = [*({k: getattr(r, k) for k in eager} for r in result.rows), eager]
    best = max(r["tokens_per_s"] for r in rows)
    for row in rows:
        row["vs_fastest"] = round(row["tokens_per_s"] / best, 3)
    if args.json:
        print(json.dumps({**result.to_dict(), "rows": rows}, indent=2))
        return 0
    print(result.heading())
    print(f"{'runner':<18}{'prefill ms':>12}{'decode ms/token':>17}{'tokens/s':>11}{'x the fastest':>15}")
    for r in rows:
        print(f"{r['runner']:<18}{r['prefill_ms']:>12,.2f}{r['decode_ms_per_token']:>17,.3f}{r['tokens_per_s']:>11,.1f}"
              f"{r['vs_fastest']:>14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
