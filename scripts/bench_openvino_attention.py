#!/usr/bin/env python3
"""The openvino backend's decoding with each layer's attention as OpenVINO's fused ScaledDotProductAttention
(infer/runtime/openvino_attention.py) against the same file's attention as written: decode time per token at a
short and a long past, f32 and int4, in one process, the rows' decodings alternated, ratios within the run.

    python3 scripts/bench_openvino_attention.py [--model smollm2] [--lengths 32,2048] [--new-tokens 32]
        [--rounds 3] [--work DIR]

The model of scripts/generate_lms.py (a published config, random weights, nothing downloaded) is exported once
into WORK/MODEL (`ptx export --module scripts/generate_lms.py:MODEL --format onnx,onnx-int4`, reused when there).
Rows, each file opened through load(FILE, "openvino"): "as written" (PTX_OPENVINO_ATTENTION=off), "fused" (the
runner's default), "fused u8" (the fused rows' cache in u8, the CPU plugin's KV_CACHE_PRECISION, which the runner
leaves at the precision it runs: a second rounding its judge did not see). For each prompt length, one seeded
prompt decoded greedily for --new-tokens steps by each row in turn, --rounds times after a warm-up each: the
median ms per token after the prompt's run (Decoded.decode_ms_per_token). Prints a table, writes WORK/attention.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROWS = ("as written", "fused", "fused u8")


def exported(name: str, work: Path) -> Path:
    out = work / name
    if not (out / "model.int4.onnx").exists():
        print(f"{name}: exporting ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-c", "from ptx.cli import main; main()", "export", "--module",
                               f"{HERE / 'generate_lms.py'}:{name}", "--format", "onnx,onnx-int4", "--out", str(out),
                               "--force"], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"export failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return out


def opened(path: Path, row: str):
    """The file through openvino as ``row`` runs it, and how many layers its stateful form fused."""
    from ptx.infer import load
    from ptx.infer.runtime.openvino_runner import ATTENTION_ENV

    os.environ[ATTENTION_ENV] = "off" if row == "as written" else "on"
    try:
        model = load(path, "openvino")
    finally:
        os.environ.pop(ATTENTION_ENV, None)
    runner = model.runner
    if row == "fused u8":  # recompiled with the plugin's u8 cache (the runner's own choice is its precision's)
        runner.config["KV_CACHE_PRECISION"] = "u8"
        runner._cache.clear()
        runner.compiled_for({}, stateful=True)
    return model, runner.attention_fused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--lengths", default="32,2048")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-openvino-attention"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from generate_lms import MODELS

    from ptx.machine import cpu_name

    lengths = [int(n) for n in args.lengths.split(",")]
    folder = exported(args.model, args.work)
    vocab = int(MODELS[args.model]().config.vocab_size)
    rows = []
    for precision, file in (("f32", "model.onnx"), ("int4", "model.int4.onnx")):
        print(f"{args.model} {precision}: decoding ...", file=sys.stderr, flush=True)
        models = {row: opened(folder / file, row) for row in ROWS}
        times: dict[tuple[str, int], list[float]] = {}
        tokens: dict[tuple[str, int], list[int]] = {}
        for length in lengths:
            prompt = np.random.default_rng(length).integers(3, vocab, length).tolist()
            for row, (model, _) in models.items():  # a warm-up each
                tokens[(row, length)] = list(model.decode([prompt], args.new_tokens, eos=()).tokens[0])
            for _ in range(args.rounds):
                for row, (model, _) in models.items():
                    done = model.decode([prompt], args.new_tokens, eos=())
                    times.setdefault((row, length), []).append(done.decode_ms_per_token)
        for row, (model, fused) in models.items():
            got = {n: statistics.median(times[(row, n)]) for n in lengths}
            base = {n: statistics.median(times[("as written", n)]) for n in lengths}
            rows.append({"precision": precision, "row": row, "fused_layers": fused,
                         **{f"ms_{n}": round(got[n], 2) for n in lengths},
                         **{f"vs_written_{n}": round(got[n] / base[n], 3) for n in lengths},
                         "same_tokens": all(tokens[(row, n)] == tokens[("as written", n)] for n in lengths)})
            model.close()
    head = f"{'':<5} {'attention':<11} {'fused':>5} " \
        + " ".join(f"{f'ms/tok @{n}':>11} {'ratio':>6}" for n in lengths) + "  same tokens"
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['precision']:<5} {row['row']:<11} {row['fused_layers']:>5} "
              + " ".join(f"{row[f'ms_{n}']:>11.2f} {row[f'vs_written_{n}']:>5.2f}x" for n in lengths)
              + f"  {row['same_tokens']}")
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "model": args.model, "new_tokens": args.new_tokens, "rounds": args.rounds, "rows": rows}
    (args.work / "attention.json").write_text(json.dumps(meta, indent=1))
    print(f"{meta['cpu']}, {os.cpu_count()} cores, {meta['date']}; medians of {args.rounds} decodings of "
          f"{args.new_tokens} tokens after a warm-up, the rows alternated; {args.work / 'attention.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
