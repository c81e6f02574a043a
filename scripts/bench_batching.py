#!/usr/bin/env python3
"""Continuous batching in `ptx serve`, as clients see it: N concurrent clients of the OpenAI API (the real
`openai` client, streamed completions, greedy) against the same server answering them one at a time, in one
run, ratios within it.

    python3 scripts/bench_batching.py [--models smollm2,qwen2_05b] [--clients 8]
        [--new-tokens 128] [--prompt-length 32] [--stagger-ms 0,250] [--work DIR]
        [--backend ort-cpu|openvino] [--ort-attention] [--int4] [--sleeping-too]

For each model of scripts/generate_lms.py (published configs, random weights, nothing downloaded): its
transformers folder with a tokenizer made here with the tokenizers library (a word per id, so that every id
of the published vocabulary is text and each token streams as one piece), `ptx export DIR --format onnx`
(reused from --work when there; with --ort-attention, a file of its own whose cache is kept in place), then
`ptx serve FILE --backend BACKEND` (ort-cpu by default; openvino keeps the cache in its state) on a free loopback
port, stopped by its own process id. First each client's request alone, one after another: its time to first token
(the server's prefill plus the loop's overheads) and its time per token after it (a step); then, for each
--stagger-ms, all the clients at once (0) or each that long after the one before: aggregate tokens/s, each client's
time to first token, and whether each client's text equals its own alone (greedy). The same prompts (at least 5)
are decoded by the library as `ptx generate` decodes them (``load(FILE, backend=BACKEND).decode``, the prompt's run
included), in turn with the server's answer to each alone, so that one client's tokens/s through the server is said
against the library's on the same file and backend, the machine's drift landing on both alike (--sleeping-too: a
second server whose ONNX Runtime threads sleep between runs, PTX_ORT_SPINNING=0, in the same turns). Prints a table
and writes WORK/results.json (another backend's run results-BACKEND.json, an --ort-attention file's
...-in-place.json, a 4-bit file's ...-int4.json); docs/benchmarks/generation.md records a run.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # serving.py: a server on free ports, stopped by its pid
sys.path.insert(0, str(HERE))
import serving  # noqa: E402
from generate_lms import MODELS  # noqa: E402

REQUEST_TIMEOUT_S = 600
# between one process's turn and the next's: ONNX Runtime's threads spin on for a while after a run, and the
# next turn's process would share the two cores with them
PAUSE_S = 0.2


def word_tokenizer(vocab: int):
    """A tokenizer of ``vocab`` words ``w0`` ... (tokenizers' WordLevel, split at spaces), as transformers
    saves one: made for the benchmark, as no tokenizer can be downloaded; one id per word, so every id the
    model can choose is text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w1"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w0", unk_token="w1")


def exported(name: str, work: Path, in_place: bool = False, int4: bool = False) -> Path:
    """The model's ONNX file with its tokenizer beside it (made once per --work folder; ``in_place``: exported with
    --ort-attention, a folder of its own; ``int4``: its 4-bit file, model.int4.onnx, a folder of its own)."""
    out = work / f"{name}-onnx{'-ort-attention' if in_place else ''}{'-int4' if int4 else ''}"
    file = out / ("model.int4.onnx" if int4 else "model.onnx")
    if file.exists():
        return file
    folder = work / f"{name}-folder"
    if not (folder / "config.json").exists():
        model = MODELS[name]()
        model.save_pretrained(str(folder))
        word_tokenizer(model.config.vocab_size).save_pretrained(str(folder))
        del model
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ptx", "export", str(folder), "--out", str(out), "--format",
                    "onnx-int4" if int4 else "onnx", *(["--ort-attention"] if in_place else [])], check=True)
    print(f"exported {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return file


def prompt_text(length: int, vocab: int, seed: int) -> str:
    import numpy as np

    return " ".join(f"w{i}" for i in np.random.default_rng(seed).integers(2, vocab, length))


def ask(client, prompt: str, new_tokens: int) -> dict:
    """One streamed greedy completion: its text, its tokens (usage), and when its first token and its end came."""
    start = time.perf_counter()
    first, pieces, usage = None, [], None
    for chunk in client.completions.create(model="lm", prompt=prompt, max_tokens=new_tokens, temperature=0,
                                           stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].text:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].text)
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    return dict(text="".join(pieces), tokens=usage.completion_tokens, start=start, ttft_s=first - start,
                end=end, step_s=(end - first) / max(usage.completion_tokens - 1, 1))


def concurrently(client, prompts: list[str], new_tokens: int, stagger_s: float) -> list[dict]:
    results: list[dict | None] = [None] * len(prompts)
    errors: list[BaseException] = []

    def one(k: int) -> None:
        time.sleep(k * stagger_s)
        try:
            results[k] = ask(client, prompts[k], new_tokens)
        except BaseException as exc:  # noqa: BLE001 - said after the others end
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S)
    if errors:
        raise errors[0]
    late = [k for k, thread in enumerate(threads) if thread.is_alive()]
    if late:
        raise RuntimeError(f"client{'s' * (len(late) > 1)} {', '.join(str(k + 1) for k in late)} had no answer within "
                           f"{REQUEST_TIMEOUT_S} s")
    return results


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def library_decode(model, ends, prompt: str, new_tokens: int) -> float:
    """The library's tokens/s decoding ``prompt`` alone as `ptx generate` does (greedy, the prompt's run
    included, the tokens the server would give: up to its end id)."""
    start = time.perf_counter()
    decoded = model.decode([model.text.encode(prompt)], new_tokens, eos=ends)
    return len(decoded.tokens[0]) / (time.perf_counter() - start)


def measure(name: str, args) -> dict:
    import openai

    from ptx.infer import load
    from ptx.infer.model.text_generation import end_ids

    file = exported(name, args.work, args.ort_attention, args.int4)
    vocab = json.loads((args.work / f"{name}-folder" / "config.json").read_text())["vocab_size"]
    # at least 5 prompts alone, so that each median has 5 rounds; the first --clients of them are sent together
    prompts = [prompt_text(args.prompt_length, vocab, seed) for seed in range(max(args.clients, 5))]
    serve_args = ("--name", "lm", "--backend", args.backend, "--max-batch-size", str(args.clients))
    servers = {"served": serving.start(args.work, str(file), args=serve_args)}
    if args.sleeping_too:  # ONNX Runtime's threads sleeping between runs, as ptx serve ran every model before
        servers["sleeping"] = serving.start(args.work, str(file), args=serve_args, env={"PTX_ORT_SPINNING": "0"})
    try:
        clients = {k: openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S,
                                    max_retries=0) for k, server in servers.items()}
        with load(file, backend=args.backend) as model:
            ends = end_ids(model, model.text)  # as a served answer ends
            model.decode([model.text.encode(prompts[0])], 4, eos=ends)  # warm-up: the first run's allocations
            for client in clients.values():
                ask(client, prompts[0], 4)
            # the library and each server in turn, prompt by prompt: the machine's drift lands on all alike
            library, alone, sleeping = [], [], []
            for prompt in prompts:
                library.append(library_decode(model, ends, prompt, args.new_tokens))
                time.sleep(PAUSE_S)
                alone.append(ask(clients["served"], prompt, args.new_tokens))
                time.sleep(PAUSE_S)
                if args.sleeping_too:
                    sleeping.append(ask(clients["sleeping"], prompt, args.new_tokens))
                    time.sleep(PAUSE_S)
        sent = prompts[:args.clients]
        runs = {stagger: concurrently(clients["served"], sent, args.new_tokens, stagger / 1000)
                for stagger in args.stagger_ms}
    finally:
        for server in servers.values():
            server.stop()
    library = statistics.median(library)
    alone_rate = statistics.median(r["tokens"] / (r["end"] - r["start"]) for r in alone)
    prefill = statistics.median(r["ttft_s"] for r in alone)
    step = statistics.median(r["step_s"] for r in alone)
    found = dict(model=name, backend=args.backend, in_place=args.ort_attention, int4=args.int4, clients=args.clients,
                 new_tokens=args.new_tokens, prompt_length=args.prompt_length,
                 alone_tokens_per_s=alone_rate, alone_prefill_s=prefill, alone_step_s=step,
                 alone_total_s=sum(r["end"] - r["start"] for r in alone), ttft_bound_s=2 * (prefill + step),
                 library_tokens_per_s=library, alone_over_library=alone_rate / library, runs=[])
    if sleeping:
        found["sleeping_tokens_per_s"] = statistics.median(r["tokens"] / (r["end"] - r["start"]) for r in sleeping)
    for stagger, together in runs.items():
        span = max(r["end"] for r in together) - min(r["start"] for r in together)
        made = sum(r["tokens"] for r in together)
        found["runs"].append(dict(
            stagger_ms=stagger, tokens=[r["tokens"] for r in together], span_s=span, tokens_per_s=made / span,
            ratio=made / span / alone_rate, ttft_s=[r["ttft_s"] for r in together],
            ttft_p95_s=p95([r["ttft_s"] for r in together]), step_s=statistics.median(r["step_s"] for r in together),
            same_text=[t["text"] == a["text"] for t, a in zip(together, alone)]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,qwen2_05b")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--stagger-ms", type=lambda text: [float(v) for v in text.split(",")], default=[0.0, 250.0],
                        help="each client starts this long after the one before (0: all at once); several, "
                             "comma-separated: one run of the N clients each")
    parser.add_argument("--work", type=Path, default=Path("bench-batching"))
    parser.add_argument("--backend", default="ort-cpu", choices=["ort-cpu", "openvino"],
                        help="the backend the library and the server decode on")
    parser.add_argument("--sleeping-too", action="store_true",
                        help="a second server whose ONNX Runtime threads sleep between runs (PTX_ORT_SPINNING=0), "
                             "timed in turn with the first one's clients alone")
    parser.add_argument("--ort-attention", action="store_true",
                        help="export with --ort-attention (the cache kept in place) and serve that file")
    parser.add_argument("--int4", action="store_true",
                        help="export the 4-bit file (--format onnx-int4) and serve it and decode it in the library")
    args = parser.parse_args()
    if args.ort_attention and args.backend != "ort-cpu":
        parser.error("--ort-attention writes ONNX Runtime's GroupQueryAttention, which only ort-cpu runs")
    args.work.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())
    results = [measure(name, args) for name in args.models.split(",")]
    record = dict(cpu=cpu, date=datetime.date.today().isoformat(), results=results)
    variant = ("" if args.backend == "ort-cpu" else f"-{args.backend}") + ("-in-place" if args.ort_attention else "") \
        + ("-int4" if args.int4 else "")
    (args.work / f"results{variant}.json").write_text(json.dumps(record, indent=1))
    print(f"{cpu}, {record['date']}, --backend {args.backend}{' --ort-attention' if args.ort_attention else ''}"
          f"{' --int4' if args.int4 else ''}")
    print("| model | clients start | tokens/s | x one client alone | step ms | TTFT p95 ms (each) | texts as alone |")
    for r in results:
        print(f"| {r['model']} | the library alone (`ptx generate`'s decode, no server) | {r['library_tokens_per_s']:.1f} | "
              f"{1 / r['alone_over_library']:.2f}x | | | |")
        print(f"| {r['model']} | one at a time | {r['alone_tokens_per_s']:.1f} | 1.00x | {r['alone_step_s'] * 1e3:.1f} | "
              f"{r['alone_prefill_s'] * 1e3:.0f} (2x with a step: {r['ttft_bound_s'] * 1e3:.0f}) | (the reference) |")
        if "sleeping_tokens_per_s" in r:
            print(f"| {r['model']} | one at a time, threads sleeping (PTX_ORT_SPINNING=0) | "
                  f"{r['sleeping_tokens_per_s']:.1f} | {r['sleeping_tokens_per_s'] / r['alone_tokens_per_s']:.2f}x | | | |")
        for run in r["runs"]:
            start = f"{r['clients']} at once" if not run["stagger_ms"] else f"{r['clients']}, {run['stagger_ms']:.0f} ms apart"
            each = " ".join(f"{t * 1e3:.0f}" for t in run["ttft_s"])
            print(f"| {r['model']} | {start} | {run['tokens_per_s']:.1f} | {run['ratio']:.2f}x | {run['step_s'] * 1e3:.1f} | "
                  f"{run['ttft_p95_s'] * 1e3:.0f} ({each}) | {sum(run['same_text'])} of {len(run['same_text'])} |")


if __name__ == "__main__":
    main()
