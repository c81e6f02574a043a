"""Prefill and decode of exported causal LMs: ptx's greedy loop through ort-cpu and openvino
against eager transformers generate() with its cache, each measured in a process of its own, in one run.

    python scripts/bench_generate.py [--models smollm2,gpt2] [--new-tokens 128] [--prompt-length 32]
                                     [--repeats 3] [--others [--others-venv DIR]] [--out bench-generate]
                                     [--quantized [--builder-python PYTHON]] [--in-place]

For each model of scripts/generate_lms.py (published configs, random weights; t5_small an encoder-decoder,
whose prompt is its encoder's source and whose prefill includes the encoder's run): `ptx export --module
scripts/generate_lms.py:NAME` once (with its cache), then each runner in a fresh process: a warm-up, then
``--repeats`` timings of a whole greedy generation of --new-tokens tokens and of 1 token on the same
seeded prompt, every step run (no end-of-sequence stop). Prefill is the 1-token generation's time; decode
per token is (T(N) - T(1)) / (N - 1): the same measure for every runner, taken around the call a user
makes (transformers' generate(), ptx's Model.generate()), so loop overheads count alike. Medians are
reported, and each runner's tokens are compared with eager's.

--others adds Optimum's ORTModelForCausalLM, onnxruntime-genai and openvino-genai where they install:
they run in their own virtual environment (--others-venv, default .venv-others in the checkout, which
`python scripts/generate_others.py --setup` makes), on the same weights saved with save_pretrained and,
where they can, on ptx's own file (exported with --all-logits: they feed no logits_to_keep). Prints a table and writes OUT/results.json; docs/benchmarks/generation.md
records a run.

--quantized adds ptx's weight-only int8 and int4 files (`ptx export model.onnx --format onnx-int4,onnx-int8w`)
through ort-cpu and openvino, and with --others the peers at those precisions: onnxruntime-genai on its
model builder's int4 (`-p int4 -e cpu`, built by --builder-python, an interpreter with onnxruntime-genai
and transformers 5: `python -m venv --system-site-packages .venv-builder && .venv-builder/bin/pip install
onnxruntime-genai==0.18.0`), openvino-genai on optimum-intel's int4 and int8 IR. Each ONNX file's quality
is then said beside the others': `ptx verify model.onnx --against FILE`, teacher-forced on the f32 file's
recorded prompts against eager's logits (top-1 agreement, KL divergence: the worst prompt's).

--in-place adds ptx's file exported with --ort-attention (each layer's cache one buffer that
GroupQueryAttention writes in place: ptx's fastest rows) through ort-cpu, at f32 and, with --quantized, its
int8 and int4 weights, each judged against that file's own record.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OTHERS_VENV = HERE.parent / ".venv-others"  # scripts/generate_others.py --setup makes it


def prompt_ids(length: int, vocab: int, seed: int = 0) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).integers(0, vocab, length).tolist()


def _timed(call, repeats: int) -> tuple[list, float]:
    call()  # warm-up: first-call allocations and, for OpenVINO, the compile
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def measure(kind: str, args) -> dict:
    """One runner's figures, in this process: {tokens, prefill_s, decode_ms_per_token, load_s}."""
    start = time.perf_counter()
    if kind == "eager":
        import torch

        sys.path.insert(0, str(HERE))
        from generate_lms import MODELS

        model = MODELS[args.model]()
        vocab = model.config.vocab_size
        ids = torch.tensor([prompt_ids(args.prompt_length, vocab)])
        torch.set_num_threads(os.cpu_count() or 1)
        loaded = time.perf_counter() - start

        # an encoder-decoder's generate() returns the decoder's sequence (its start id first), a causal LM's
        # the prompt and what follows it
        skip = 1 if model.config.is_encoder_decoder else ids.shape[1]

        def run(n):
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                     do_sample=False, pad_token_id=0)
            return out[0, skip:].tolist()
    else:
        from ptx.infer import load

        model = load(args.file, backend=kind, precision=args.precision)
        vocab = model.signature.output("logits").shape[-1]
        prompt = prompt_ids(args.prompt_length, vocab)
        loaded = time.perf_counter() - start

        def run(n):
            return model.generate(prompt, max_new_tokens=n, eos=())[0]
    tokens, whole = _timed(lambda: run(args.new_tokens), args.repeats)
    _, first = _timed(lambda: run(1), args.repeats)
    return {"tokens": tokens, "prefill_s": first, "decode_ms_per_token": 1000 * (whole - first) / (args.new_tokens - 1),
            "load_s": loaded}


def child(kind: str, args, **extra) -> dict:
    command = [sys.executable, __file__, "--measure", kind, "--model", args.model, "--new-tokens", str(args.new_tokens),
               "--prompt-length", str(args.prompt_length), "--repeats", str(args.repeats)]
    extra = {k: v for k, v in extra.items() if v is not None}
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"skipped": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# The competitors scripts/generate_others.py runs, by the label this table gives them. Each is timed around its
# own generate() call from the call to the first new token (prefill) and from the first to the last (decode).
OTHERS = {"optimum_ort": "Optimum ORTModelForCausalLM (its own export)",
          "ort_genai_ptx_onnx": "onnxruntime-genai on ptx's file",
          "openvino_genai": "openvino-genai (optimum-intel's IR, f32 hints)",
          "openvino_genai_ptx_onnx": "openvino-genai on ptx's file made stateful (f32 hints)"}
# The peers at reduced precision (--quantized): each on its own tool's file of the same weights.
QUANTIZED_OTHERS = {"ort_genai_builder": "onnxruntime-genai int4 (its model builder's, -p int4 -e cpu)",
                    "openvino_genai_int4": "openvino-genai int4 (optimum-intel's IR, default hints)",
                    "openvino_genai_int8": "openvino-genai int8 (optimum-intel's IR, default hints)"}
PTX_FORMATS = {"int8": ("onnx-int8w", "openvino-int8w"), "int4": ("onnx-int4", "openvino-int4")}
PTX_FILES = {"onnx-int8w": "model.int8w.onnx", "onnx-int4": "model.int4.onnx",
             "openvino-int8w": "model.openvino-int8w.onnx", "openvino-int4": "model.openvino-int4.onnx"}


def others(args, folder: Path, onnx: Path, prompt: list[int], work: Path, runners: dict[str, str],
           builder: Path | None = None) -> dict:
    """The competitors' figures from their own environment (scripts/generate_others.py), or why not."""
    python = Path(args.others_venv) / "bin" / "python"
    if not python.exists():
        return {"others": {"skipped": f"no {python}: run `python scripts/generate_others.py --setup --venv "
                                      f"{args.others_venv}`"}}
    command = [str(python), str(HERE / "generate_others.py"), "--model-dir", str(folder), "--onnx", str(onnx),
               "--prompt-ids", ",".join(map(str, prompt)), "--new-tokens", str(args.new_tokens), "--json",
               "--repeats", str(args.repeats), "--work", str(work), "--only", ",".join(runners)]
    if builder is not None:
        command += ["--og-builder-dir", str(builder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        return {"others": {"skipped": (done.stderr.strip().splitlines() or ["failed"])[-1]}}
    found = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    return {runners[name]: found[name] for name in runners if name in found}


def builder_int4(args, pretrained: Path, out: Path) -> Path | None:
    """onnxruntime-genai's model builder's int4 file of the same weights (`-p int4 -e cpu`), made once by
    --builder-python; None where no such interpreter was given."""
    if not args.builder_python:
        return None
    if not (out / "model.onnx").exists():
        print(f"{out}: onnxruntime-genai's builder, int4 ...", file=sys.stderr, flush=True)
        subprocess.run([args.builder_python, "-m", "onnxruntime_genai.models.builder", "-i", str(pretrained), "-o",
                        str(out), "-p", "int4", "-e", "cpu", "-c", str(out.parent / "builder-cache")],
                       check=True, capture_output=True, text=True)
    return out


def quality(f32: Path, files: dict[str, Path]) -> dict:
    """Each reduced file's judgement against the f32 file's record (eager's logits on its recorded prompts),
    by `ptx verify F32 --against FILE --json`: the worst prompt's top-1 agreement (near-ties counted as agreeing,
    as the judge counts them) and its share of positions whose top token is eager's, its mean and p99 KL, and its
    perplexity ratio (the largest of the prompts')."""
    found = {}
    for label, path in files.items():
        done = subprocess.run(["ptx", "verify", str(f32), "--against", str(path), "--backends", "ort-cpu", "--json"],
                              capture_output=True, text=True)
        try:
            row = next(r for r in json.loads(done.stdout)["rows"] if r["backend"].startswith(f"{path.name} ("))
            prompts = row["judgement"]["prompts"]
        except (ValueError, StopIteration, KeyError, TypeError):
            found[label] = {"skipped": (done.stderr.strip().splitlines() or ["no verdict"])[-1]}
            continue
        judged = [p.get("positions", p.get("steps", 0)) for p in prompts]  # a prompt's own positions, then its steps
        found[label] = {"status": row["status"], "prompts": len(prompts), "positions": sum(judged),
                        "agreement": min(p["agreement"] for p in prompts),
                        "same_top": min(p["same_top"] / n for p, n in zip(prompts, judged) if n),
                        "perplexity_ratio": max((p.get("perplexity_ratio") or 1.0) for p in prompts),
                        "kl_mean": max(p["kl_mean"] for p in prompts), "kl_p99": max(p["kl_p99"] for p in prompts)}
    return found


def in_place_files(name: str, args, out: Path) -> Path:
    """The folder of ``name`` exported with --ort-attention (each layer's cache kept in one buffer, in place:
    ptx's fastest rows on ort-cpu), with its int8 and int4 weights where --quantized asks for them."""
    folder = out / f"{name}-in-place"
    formats = ["onnx", *([fmt for fmt, _ in PTX_FORMATS.values()] if args.quantized else [])]
    if not all((folder / ("model.onnx" if f == "onnx" else PTX_FILES[f])).exists() for f in formats):
        print(f"{name}: exporting with --ort-attention ({', '.join(formats)}) ...", file=sys.stderr, flush=True)
        subprocess.run(["ptx", "export", "--module", f"{HERE / 'generate_lms.py'}:{name}", "--out", str(folder),
                        "--format", ",".join(formats), "--ort-attention", "--force"],
                       check=True, capture_output=True, text=True)
    return folder


def all_logits_file(name: str, out: Path) -> Path:
    """ptx's file of ``name`` exported with --all-logits (no logits_to_keep input), the one the peers run ptx's
    file as: onnxruntime-genai and openvino-genai feed the inputs of Optimum's layout only."""
    folder = out / f"{name}-all-logits"
    if not (folder / "model.onnx").exists():
        print(f"{name}: exporting with --all-logits for the peers ...", file=sys.stderr, flush=True)
        subprocess.run(["ptx", "export", "--module", f"{HERE / 'generate_lms.py'}:{name}", "--out", str(folder),
                        "--format", "onnx", "--all-logits", "--force"], check=True, capture_output=True, text=True)
    return folder / "model.onnx"


def bench_model(name: str, args, out: Path) -> dict:
    folder = out / name
    args.model = name
    start = time.perf_counter()
    if not (folder / "model.onnx").exists():
        print(f"{name}: exporting with its cache ...", file=sys.stderr, flush=True)
        done = subprocess.run(["ptx", "export", "--module",
                               f"{HERE / 'generate_lms.py'}:{name}", "--out", str(folder), "--force"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name}: export failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        print(done.stdout, file=sys.stderr)
    missing = [fmt for fmt, file in PTX_FILES.items() if not (folder / file).exists()]
    if args.quantized and missing:
        print(f"{name}: int4 and int8 weights ({', '.join(missing)}) ...", file=sys.stderr, flush=True)
        subprocess.run(["ptx", "export", str(folder / "model.onnx"), "--format", ",".join(missing),
                        "--out", str(folder)], check=True, capture_output=True, text=True)
    in_place = in_place_files(name, args, out) if args.in_place else None
    exported = time.perf_counter() - start
    rows = {"eager": child("eager", args)}
    for precision in ("f32", *(PTX_FORMATS if args.quantized else ())):
        for backend in ("ort-cpu", "openvino"):
            label = f"ptx {backend}" + (f" {precision}" if precision != "f32" else "")
            print(f"{name}: {label} ...", file=sys.stderr, flush=True)
            rows[label] = child(backend, args, file=folder / "model.onnx",
                                precision=None if precision == "f32" else precision)
        if in_place is not None:  # ort-cpu alone runs GroupQueryAttention as the file feeds it
            label = "ptx ort-cpu" + (f" {precision}" if precision != "f32" else "") + " in place"
            print(f"{name}: {label} ...", file=sys.stderr, flush=True)
            rows[label] = child("ort-cpu", args, file=in_place / "model.onnx",
                                precision=None if precision == "f32" else precision)
    builder = None
    if args.others:
        sys.path.insert(0, str(HERE))
        from generate_lms import MODELS

        pretrained = out / f"{name}-hf"
        if not pretrained.exists():
            MODELS[name]().save_pretrained(pretrained)
            tokenizer_for(pretrained)
        print(f"{name}: the others ...", file=sys.stderr, flush=True)
        vocab = MODELS[name]().config.vocab_size
        runners = dict(OTHERS)
        if args.quantized:
            builder = builder_int4(args, pretrained, out / f"{name}-builder-int4")
            runners.update({k: v for k, v in QUANTIZED_OTHERS.items() if k != "ort_genai_builder" or builder})
        rows.update(others(args, pretrained, all_logits_file(name, out), prompt_ids(args.prompt_length, vocab),
                           out / f"{name}-others", runners, builder))
    want = rows["eager"].get("tokens")
    eager_decode = rows["eager"].get("decode_ms_per_token")
    for label, row in rows.items():
        if "tokens" in row:
            row["same_tokens_as_eager"] = row["tokens"] == want
            if eager_decode:
                row["decode_vs_eager"] = row["decode_ms_per_token"] / eager_decode
    judged = {}
    if args.quantized:
        files = {f"ptx {fmt}": folder / PTX_FILES[fmt] for formats in PTX_FORMATS.values() for fmt in formats}
        if builder is not None:
            files[QUANTIZED_OTHERS["ort_genai_builder"]] = builder / "model.onnx"
        print(f"{name}: quality against the f32 file's record ...", file=sys.stderr, flush=True)
        judged = quality(folder / "model.onnx", files)
        if in_place is not None:  # the same weights, held to the record of the f32 file they were made from
            judged.update(quality(in_place / "model.onnx", {f"ptx {fmt} in place": in_place / PTX_FILES[fmt]
                                                            for fmt, _ in PTX_FORMATS.values()}))
    return {"model": name, "export_s": exported, "rows": rows, "quality": judged}


def tokenizer_for(folder: Path) -> None:
    """A tokenizer in the folder, which onnxruntime-genai's builder copies and requires (random weights have
    no real one; the runners are given token ids): tests/text_models.py's, made with the tokenizers library."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import text_models

    text_models.tokenizer().save_pretrained(str(folder))


def table(result: dict) -> str:
    lines = [f"| {result['model']} | prefill ms | decode ms/token | tokens/s | x eager's decode | tokens as eager's |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for label, row in result["rows"].items():
        if "tokens" not in row:
            lines.append(f"| {label} | | | | | skipped: {row.get('skipped', '?')} |")
            continue
        lines.append(f"| {label} | {1000 * row['prefill_s']:.1f} | {row['decode_ms_per_token']:.2f} | "
                     f"{1000 / row['decode_ms_per_token']:.1f} | {row.get('decode_vs_eager', float('nan')):.2f}x | "
                     f"{'yes' if row['same_tokens_as_eager'] else 'NO'} |")
    if result.get("quality"):
        lines += ["", f"| {result['model']}: each file against eager's logits | verdict | positions | top-1 agreement, "
                      "near-ties as agreeing (worst prompt) | same top token (worst prompt) | KL mean (worst prompt) | "
                      "KL p99 (worst prompt) | perplexity ratio (worst prompt) |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for label, row in result["quality"].items():
            if "skipped" in row:
                lines.append(f"| {label} | skipped: {row['skipped']} | | | | | | |")
            else:
                lines.append(f"| {label} | {row['status']} | {row['positions']} | {100 * row['agreement']:.0f}% | "
                             f"{100 * row['same_top']:.0f}% | {row['kl_mean']:.2e} | {row['kl_p99']:.2e} | "
                             f"{row.get('perplexity_ratio', float('nan')):.4f} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,gpt2")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--others", action="store_true", help="also time Optimum, onnxruntime-genai and openvino-genai")
    parser.add_argument("--others-venv", default=str(OTHERS_VENV),
                        help="their virtual environment (default: .venv-others in the checkout; "
                             "scripts/generate_others.py --setup --venv DIR makes one)")
    parser.add_argument("--quantized", action="store_true",
                        help="also ptx's int8 and int4 weight-only files, and with --others the peers' int4 and int8")
    parser.add_argument("--in-place", action="store_true",
                        help="also ptx's file exported with --ort-attention (its cache kept in place) through ort-cpu, "
                             "and with --quantized its int8 and int4 weights")
    parser.add_argument("--builder-python", help="with --quantized --others: an interpreter with onnxruntime-genai "
                                                 "and transformers 5, to build its int4 file")
    parser.add_argument("--out", default="bench-generate")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_name()}, {os.cpu_count()} cores; prompt "
              f"{args.prompt_length} tokens, {args.new_tokens} new, batch 1, median of {args.repeats}")
    print(header)
    results = []
    for name in args.models.split(","):
        result = bench_model(name, args, out)
        results.append(result)
        print(f"\n{table(result)}\n(export with its cache: {result['export_s']:.0f} s)", flush=True)
    (out / "results.json").write_text(json.dumps({"header": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
