#!/usr/bin/env python3
"""The cache kept in place (`ptx export --ort-attention`, export/ort_attention.py; and `--static-cache`, a buffer
of fixed length written at its slots by plain operators, export/static_cache.py) against the decoder of plain
ONNX operators, which copies the whole cache into each step's present: decode time per token at a short and a
long past, f32 and int4, in one process, the files' decodings alternated, ratios within the run. With
--openvino, the plain file through the openvino backend too (its cache kept in OpenVINO's variables).

    python3 scripts/bench_cache_in_place.py [--models smollm2,qwen2_05b] [--lengths 32,2048]
        [--new-tokens 32] [--rounds 5] [--work DIR] [--openvino] [--layouts plain,in place,static]

For each model of scripts/generate_lms.py (published configs, random weights, nothing downloaded): `ptx export
--module scripts/generate_lms.py:NAME --format onnx,onnx-int4` plain, with --ort-attention and with
--static-cache (reused from --work when there). Each file opened once through ort-cpu (as `ptx generate` opens it); for each prompt length,
one seeded prompt decoded greedily for --new-tokens steps by each file in turn, --rounds times: the median time
per token after the prompt's run (Decoded.decode_ms_per_token) and the prompt's run. Prints a table and writes
WORK/results.json; docs/benchmarks/generation.md records a run.
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
LAYOUTS = {"plain": [], "in place": ["--ort-attention"], "static": ["--static-cache"]}
OPENVINO = "openvino"  # the plain file through the openvino backend (stateful: its cache in OpenVINO's variables)


def ptx(*args: str) -> None:
    """A ptx command in a process of its own; its failure ends the script with what it said."""
    done = subprocess.run([sys.executable, "-c", "from ptx.cli import main; main()", *args], capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"ptx {' '.join(args)} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def exported(name: str, layout: str, work: Path) -> Path:
    """The model's f32 file of ``layout`` with its int4 twin (made once per --work folder)."""
    out = work / f"{name}-{layout.replace(' ', '-')}"
    if not (out / "model.int4.onnx").exists():
        print(f"{name}: exporting ({layout}) ...", file=sys.stderr, flush=True)
        ptx("export", "--module", f"{HERE / 'generate_lms.py'}:{name}", "--format", "onnx,onnx-int4", "--out",
            str(out), "--force", *LAYOUTS[layout])
    return out


def measure(files: dict[str, tuple[Path, str]], lengths: list[int], new_tokens: int, rounds: int, vocab: int) -> dict:
    """{(row, length): (median decode ms/token, median prompt-run ms)} of each row's file on its backend ({row:
    (file, backend)}), the rows' decodings alternated (scripts/bench_int4_blocks.py measures with it too)."""
    from ptx.infer import load

    models = {row: load(path, backend=backend) for row, (path, backend) in files.items()}
    try:
        times: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for length in lengths:
            prompt = np.random.default_rng(length).integers(3, vocab, length).tolist()
            for model in models.values():  # a warm-up each: the session's first runs allocate, pages fault in
                model.decode([prompt], new_tokens, eos=())
            for _ in range(rounds):
                for layout, model in models.items():
                    done = model.decode([prompt], new_tokens, eos=())
                    times.setdefault((layout, length), []).append((done.decode_ms_per_token, 1000 * done.prefill_s))
        return {key: (statistics.median(t for t, _ in got), statistics.median(p for _, p in got))
                for key, got in times.items()}
    finally:
        for model in models.values():
            model.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,qwen2_05b")
    parser.add_argument("--lengths", default="32,2048")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-cache-in-place"))
    parser.add_argument("--openvino", action="store_true", help="the plain file through openvino too")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="the layouts compared, plain first")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from generate_lms import MODELS

    lengths = [int(n) for n in args.lengths.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: {name} is not one of {', '.join(MODELS)}")
        layouts = args.layouts.split(",")
        if layouts[0] != "plain" or not set(layouts) <= set(LAYOUTS):
            parser.error(f"--layouts: plain first, then any of {', '.join(LAYOUTS)}")
        folders = {layout: exported(name, layout, args.work) for layout in layouts}
        vocab = int(MODELS[name]().config.vocab_size)
        for precision, file in (("f32", "model.onnx"), ("int4", "model.int4.onnx")):
            print(f"{name} {precision}: decoding ...", file=sys.stderr, flush=True)
            files = {layout: (folder / file, "ort-cpu") for layout, folder in folders.items()}
            if args.openvino:
                files[OPENVINO] = (folders["plain"] / file, "openvino")
            got = measure(files, lengths, args.new_tokens, args.rounds, vocab)
            for layout in files:
                short, long = got[(layout, lengths[0])], got[(layout, lengths[-1])]
                rows.append({"model": name, "precision": precision, "layout": layout,
                             **{f"decode_ms_{n}": round(got[(layout, n)][0], 2) for n in lengths},
                             **{f"prompt_ms_{n}": round(got[(layout, n)][1], 1) for n in lengths},
                             "long_over_short": round(long[0] / short[0], 2)})
            longest = f"decode_ms_{lengths[-1]}"
            plain = rows[-len(files)]
            for row in rows[-len(files):]:
                row["vs_plain_long"] = round(row[longest] / plain[longest], 2)
    head = (f"{'model':<10} {'':<5} {'cache':<9} " + " ".join(f"{f'ms/tok @{n}':>11}" for n in lengths)
            + f" {f'{lengths[-1]}/{lengths[0]}':>10} {'vs plain':>9} "
            + " ".join(f"{f'prompt ms @{n}':>15}" for n in lengths))
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['model']:<10} {row['precision']:<5} {row['layout']:<9} "
              + " ".join(f"{row[f'decode_ms_{n}']:>11.2f}" for n in lengths)
              + f" {row['long_over_short']:>9.2f}x {row['vs_plain_long']:>8.2f}x "
              + " ".join(f"{row[f'prompt_ms_{n}']:>15,.1f}" for n in lengths))
    from ptx.machine import cpu_name

    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": "ONNX Runtime's default",
            "new_tokens": args.new_tokens, "rounds": args.rounds, "rows": rows}
    (args.work / "results.json").write_text(json.dumps(meta, indent=1))
    print(f"{meta['cpu']}, {meta['date']}; medians of {args.rounds} decodings of {args.new_tokens} tokens, the files "
          f"alternated; {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
