#!/usr/bin/env python3
"""What a weight-only file's block size buys and costs: decode time per token of the f32 file, its int8 file and
its int4 files in blocks of 32 (the default, as onnxruntime-genai's builder), 64 and 128, in one process, the
files' decodings alternated, ratios within the run; beside each, what export's judge recorded of it (the worst
prompt's KL divergence from eager's logits, mean and 99th percentile, and its perplexity ratio).

    python3 scripts/bench_int4_blocks.py [--models qwen2_05b,smollm2] [--blocks 32,64,128]
        [--new-tokens 128] [--rounds 5] [--work DIR]

For each model of scripts/generate_lms.py (published configs, random weights, nothing downloaded): `ptx export
--module scripts/generate_lms.py:NAME --format onnx,onnx-int8w,onnx-int4`, then `ptx export model.onnx --format
onnx-int4 --block-size B` for each other block (reused from --work when there). Each file opened once through
ort-cpu (as `ptx generate` opens it), a seeded prompt of 32 tokens decoded greedily for --new-tokens steps by
each in turn, --rounds times: the median time per token after the prompt's run. The read bandwidth is probed in
the same run. Prints a table and writes WORK/results.json; docs/benchmarks/generation.md records a run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_cache_in_place import measure, ptx  # noqa: E402 - a script beside this one: one way to time and export
PROMPT = 32  # the seeded prompt's tokens
JUDGED = re.compile(r"KL at most ([\d.e+-]+) mean, ([\d.e+-]+) p99.*?perplexity at most x([\d.]+)")


def files(name: str, blocks: list[int], work: Path) -> dict[str, Path]:
    """{row: file}: the f32 file, its int8 and its int4 twins (made once per --work folder)."""
    out = work / name
    if not (out / "model.int4.onnx").exists():
        print(f"{name}: exporting ...", file=sys.stderr, flush=True)
        ptx("export", "--module", f"{HERE / 'generate_lms.py'}:{name}", "--format", "onnx,onnx-int8w,onnx-int4",
            "--out", str(out), "--force")
    rows = {"f32": out / "model.onnx", "int8": out / "model.int8w.onnx"}
    for block in blocks:
        folder = out if block == 32 else out / f"block{block}"
        if not (folder / "model.int4.onnx").exists():
            print(f"{name}: int4 in blocks of {block} ...", file=sys.stderr, flush=True)
            ptx("export", str(out / "model.onnx"), "--format", "onnx-int4", "--block-size", str(block),
                "--out", str(folder), "--force")
        rows[f"int4, blocks of {block}"] = folder / "model.int4.onnx"
    return rows


def judged(path: Path) -> dict:
    """What export's judge recorded of a reduced file on ort-cpu: the worst prompt's KL and perplexity ratio."""
    from ptx.contract.verdict import recorded_verdicts
    from ptx.infer.formats.model_files import read_model_file

    found = read_model_file(path)
    verdict = next((v for label, v in recorded_verdicts(found.metadata).items() if label.startswith("ort-cpu")),
                   None)
    said = JUDGED.search(verdict.measured) if verdict else None
    if not said:
        return {}
    return {"verdict": verdict.status, "kl_mean": float(said[1]), "kl_p99": float(said[2]),
            "perplexity_ratio": float(said[3])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="qwen2_05b,smollm2")
    parser.add_argument("--blocks", default="32,64,128")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-int4-blocks"))
    args = parser.parse_args()
    from generate_lms import MODELS

    from ptx.infer.bench.wall import bytes_per_token, read_bandwidth
    from ptx.machine import cpu_name

    blocks = [int(b) for b in args.blocks.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    wall = read_bandwidth()
    table = []
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: {name} is not one of {', '.join(MODELS)}")
        rows = files(name, blocks, args.work)
        print(f"{name}: decoding ...", file=sys.stderr, flush=True)
        timed = measure({row: (path, "ort-cpu") for row, path in rows.items()}, [PROMPT], args.new_tokens,
                        args.rounds, int(MODELS[name]().config.vocab_size))
        got = {row: timed[(row, PROMPT)][0] for row in rows}
        for row, path in rows.items():
            read = bytes_per_token(path, 4)
            table.append({"model": name, "row": row, "mb_per_token": round(read / 1e6, 1),
                          "decode_ms": round(got[row], 2), "x_f32": round(got[row] / got["f32"], 3),
                          "of_wall": round(read / wall.bytes_per_s * 1000 / got[row], 3),
                          **({} if row == "f32" else judged(path))})
    head = (f"{'model':<10} {'row':<18} {'MB/token':>9} {'ms/token':>9} {'x f32':>6} {'of wall':>8} "
            f"{'KL mean':>9} {'KL p99':>9} {'ppl ratio':>9}")
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['model']:<10} {r['row']:<18} {r['mb_per_token']:>9,.1f} {r['decode_ms']:>9.2f} {r['x_f32']:>5.3f}x "
              f"{r['of_wall']:>7.0%} "
              + " ".join(f"{r[k]:>9.3g}" if k in r else f"{'':>9}" for k in ("kl_mean", "kl_p99"))
              + (f" {r['perplexity_ratio']:>9.4f}" if "perplexity_ratio" in r else ""))
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "read_gb_per_s": round(wall.bytes_per_s / 1e9,
            1), "new_tokens": args.new_tokens, "rounds": args.rounds, "rows": table}
    (args.work / "results.json").write_text(json.dumps(meta, indent=1))
    print(f"{meta['cpu']}, {meta['date']}, read bandwidth {meta['read_gb_per_s']} GB/s; medians of {args.rounds} "
          f"decodings of {args.new_tokens} tokens, the files alternated; {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
