#!/usr/bin/env python3
"""The CPU backends against their goals, written into docs/benchmarks/cpu.md (each part between its markers).

1. `ptx bench` for convnet and lstm on every available backend, with the bare runtimes;
2. `ptx predict digit.png` cold start against `python -c "import onnxruntime, numpy, PIL.Image"`;
3. our trainer's images/s against a seed-style per-sample DataLoader loop, same model and machine.

Usage: python scripts/bench.py [--out docs/benchmarks/cpu.md] [--seconds 1.0]
       python scripts/bench.py --fastest [--runs runs]   # only the fastest-CPU-inference table
       python scripts/bench.py --pt2 [--seconds 3]       # only the pt2 (AOTInductor) table

4. with --fastest: convnet, resnet, mlp and lstm at batch 1 and 1024 through ORT f32, ORT int8,
   OpenVINO f32 and OpenVINO bf16 (and int8), all in the same alternating rounds with their bare
   peers, each verified by `ptx verify` (bf16/int8 by labels and accuracy), and ptx's fastest
   verified one against the fastest bare peer and bare ORT f32.
5. with --pt2: `ptx export NAME --format pt2` wall time (torch.export + AOTInductor compile +
   validation) for convnet and lstm with a fresh Inductor cache, as on a machine that never compiled
   them, then the aoti backend's p50 against eager and torchscript on the same inputs, timed in
   alternating rounds (ptx.infer.bench.timing.time_interleaved): read the ratios, not the microseconds.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ptx.atomic import write_text
from ptx.machine import cpu_features, cpu_name
from ptx.contract import NormalizeStep
from ptx.export.api import export_model
from ptx.infer import open_artifact
from ptx.infer.bench.timing import bench, to_markdown
from ptx.infer.model.target import Target
from ptx.models import get
from ptx.trainers.data import load_dataset
from ptx.trainers.loop import TrainConfig, make_loss, make_optimizer, to_model_layout, train

COLD_RUNS = 10
THROUGHPUT_SAMPLES = 20000
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "cpu.md"
PT2_MODELS, PT2_BACKENDS, PT2_BATCHES = ("convnet", "lstm"), ("eager", "torchscript", "aoti"), (1, 64, 1024)


def machine() -> str:
    import onnxruntime

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")


def prepare_runs(root: Path, data) -> None:
    for name, epochs in (("convnet", 3), ("lstm", 1)):
        spec = get(name)
        config = TrainConfig(epochs=epochs, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu")
        train(spec, data, config, root / name, log=lambda _: None)
        export_model(name, checkpoint=root / name / "checkpoint.pt", log=lambda _: None)


def median_wall(cmd: list[str], cwd: Path) -> float:
    times = []
    for _ in range(COLD_RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_start(root: Path, data) -> tuple[float, float]:
    Image.fromarray(data.x_test[0]).save(root / "digit.png")
    ptx = [sys.executable, "-m", "ptx", "predict", "digit.png", "--root", str(root)]
    floor = [sys.executable, "-c", "import onnxruntime, numpy, PIL.Image"]
    return median_wall(ptx, root), median_wall(floor, root)


class SeedStyleDataset(torch.utils.data.Dataset):
    """What seeds 002/004 do through torchvision's MNIST: one sample at a time, a PIL image made
    and converted to a normalised tensor in __getitem__ (ToTensor + Normalize, written out because
    torchvision does not import on every machine)."""

    def __init__(self, images, labels, mean, std, sample_shape):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.sample_shape = sample_shape

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).float().div(255).unsqueeze(0)
        return ((x - self.mean) / self.std).reshape(self.sample_shape), int(self.labels[i])


def seed_style_images_per_s(name: str, data, epochs: int = 2) -> float:
    spec = get(name)
    torch.manual_seed(42)
    model = spec.build()
    optimizer, loss_fn = make_optimizer(spec, model, spec.recipe.lr), make_loss(spec)
    contract = spec.contract(data.name)
    mean, std = next(((s.mean[0], s.std[0]) for s in contract.steps if isinstance(s, NormalizeStep)), (0.0, 1.0))
    dataset = SeedStyleDataset(data.x_train, data.y_train, mean, std, contract.input.sample_shape)
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec.recipe.batch_size, shuffle=True)
    rates = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(to_model_layout(x, spec)), y).backward()
            optimizer.step()
        rates.append(len(data.y_train) / (time.perf_counter() - start))
    return max(rates)


def ours_images_per_s(name: str, data, root: Path, epochs: int = 2) -> float:
    spec = get(name)
    config = TrainConfig(epochs=epochs, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu")
    metrics = train(spec, data, config, root / f"throughput-{name}", log=lambda _: None)
    return max(e["images_per_s"] for e in metrics["epochs"])


FASTEST_MODELS = {"convnet": ("mnist-sample", 3), "resnet": ("mnist-sample", 3), "mlp": ("fashion-mnist", 3),
                  "lstm": ("mnist-sample", 12)}
FASTEST_COLUMNS = (("ort-cpu", "ORT f32"), ("ort-cpu-int8", "ORT int8"), ("openvino", "OpenVINO f32"),
                   ("openvino-bf16", "OpenVINO bf16"), ("openvino-int8", "OpenVINO int8"))


def fastest_section(root: Path, seconds: float) -> str:
    """The fastest-CPU table: images/s per runtime and precision, the fastest verified, and ratios."""
    from ptx.infer.bench.timing import ORT_F32_PEER, fastest
    from ptx.infer.verify.verify import verify

    for name, (dataset, epochs) in FASTEST_MODELS.items():
        run = root / name
        if not (run / "checkpoint.pt").is_file():
            print(f"training {name} on {dataset} ({epochs} epochs) ...", file=sys.stderr)
            spec = get(name)
            config = TrainConfig(epochs=epochs, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu",
                                 limit=20000 if dataset == "fashion-mnist" else None)
            train(spec, load_dataset(dataset), config, run, log=lambda _: None)
        if not (run / "model.onnx").is_file():
            export_model(name, checkpoint=run / "checkpoint.pt", log=lambda _: None)
        if not (run / "model.int8.onnx").is_file():
            export_model(name, ["onnx-int8"], checkpoint=run / "checkpoint.pt", log=lambda _: None)
    reduced = bool({"amx_bf16", "avx512_bf16", "avx512_vnni", "amx_int8"} & set(cpu_features()))
    header = ["model", "batch", *(title for _, title in FASTEST_COLUMNS), "ptx fastest verified",
              "vs fastest bare peer", "vs bare ORT f32", "goal met", "accuracy (eager; int8; bf16)"]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: |" + " ---: |" * (len(header) - 2)]
    for name in FASTEST_MODELS:
        print(f"verify and bench {name} ...", file=sys.stderr)
        report = verify(Target.of(name, root=root, verifying=True),
                        backends=["eager", "ort-cpu", "openvino"], notice=lambda _: None)
        verdicts = {v.label: v for v in report.rows}
        verified = {label for label, v in verdicts.items() if v.ok}
        rows = bench(Target.of(name, root=root),
                     backends=["ort-cpu", "openvino"], batch_sizes=(1, 1024), seconds=seconds).rows
        accuracy = "; ".join(f"{verdicts[k].accuracy:.4f}" if k in verdicts else "-"
                             for k in ("eager-cpu" if "eager-cpu" in verdicts else "eager", "ort-cpu-int8",
                                       "openvino-bf16"))
        for best in fastest(rows, verified):
            peers = {r.peer_of: r for r in rows if r.batch == best.batch and r.peer_of}
            cells = []
            for label, _ in FASTEST_COLUMNS:
                bare = peers.get(label)
                mark = "" if label in verified else " (not verified)"
                cells.append(f"{bare.images_per_s:,.0f}{mark}" if bare else "-")
            # Goals: batch 1 within 1.1x of the fastest bare peer; large batches at least
            # 0.9x of it, and 1.5x bare ORT f32 on a CPU with bf16 or VNNI instructions.
            if best.batch == 1:
                met = best.vs_peer >= 1 / 1.1
            else:
                met = best.vs_peer >= 0.9 and (not reduced or best.vs_ort_f32 >= 1.5)
            lines.append(f"| {name} | {best.batch} | " + " | ".join(cells) + f" | {best.runner}: "
                         f"{best.images_per_s:,.0f} | {best.vs_peer:.2f}x | {best.vs_ort_f32:.2f}x | "
                         f"{'yes' if met else 'NO'} | {accuracy} |")
    options = ort_options_lines(root, seconds)
    return "\n".join([
        f"Run of {time.strftime('%Y-%m-%d')}. Machine: {machine()}; CPU flags: "
        f"{', '.join(f for f in ('amx_bf16', 'avx512_bf16', 'avx512_vnni', 'amx_int8') if f in set(cpu_features()))}.",
        f"Command: `python scripts/bench.py --fastest` (models: {', '.join(f'{n} {d} {e} epochs' for n, (d, e) in FASTEST_MODELS.items())}).",
        "",
        "images/s of each bare runtime call (`InferenceSession.run`, OpenVINO's infer request) with inputs in memory; "
        "all of one model's runtimes and ptx's own rows are timed in the same alternating rounds, so the ratios "
        "hold even when the cores are shared; absolute numbers move between "
        "runs (re-measure with the command above). ptx's fastest is the fastest `ptx` row whose backend and "
        f"precision passed `ptx verify` (f32 by atol; bf16/int8: labels agree with eager on >= 99% of 1,000 real "
        f"test samples, test accuracy at most 0.5 points lower). {ORT_F32_PEER.split(' (')[0]} of model.onnx is "
        "ORT f32. Goals: at batch 1 ptx's fastest within 1.1x of the fastest bare peer (>= 0.91x); at batch 1024 "
        "at least 0.9x the fastest bare peer and 1.5x bare ORT f32 (this CPU has bf16 and VNNI instructions).",
        "",
        *lines,
        "",
        "ONNX Runtime's session options:",
        "",
        "p50 latency of bare `InferenceSession.run` on model.onnx with each intra-op thread count (0: ORT's "
        "default, one per core) and graph optimisation level, relative to ptx's default (0 threads, `all`), "
        "timed in the same alternating rounds (lower is faster). `PTX_ORT_THREADS` and `PTX_ORT_OPT_LEVEL` "
        "set them for ptx.",
        "",
        *options,
    ])


def ort_options_lines(root: Path, seconds: float) -> list[str]:
    import onnxruntime as ort

    from ptx.infer.bench.timing import bench_inputs, time_interleaved

    configs = [(threads, level) for threads in (0, 1) for level in ("basic", "extended", "all")]
    levels = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
    lines = ["| model | batch | " + " | ".join(f"{t} threads, {lv}" for t, lv in configs) + " |",
             "| --- | ---: |" + " ---: |" * len(configs)]
    for name in ("convnet", "lstm"):
        sessions = []
        for threads, level in configs:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, levels[level])
            sessions.append(ort.InferenceSession(str(root / name / "model.onnx"), options,
                                                 providers=["CPUExecutionProvider"]))
        contract = open_artifact(root / name / "model.onnx", "ort-cpu").contract
        for batch in (1, 1024):
            x = bench_inputs(contract, batch)
            calls = [lambda s=s: s.run(None, {contract.input.name: x}) for s in sessions]
            timings = time_interleaved(calls, warmup=3, seconds=seconds * len(calls))
            base = float(np.median(timings[configs.index((0, "all"))]))
            lines.append(f"| {name} | {batch} | " + " | ".join(f"{float(np.median(t)) / base:.2f}" for t in timings) + " |")
    return lines


def pt2_section(seconds: float) -> str:
    """The pt2 table: each model's `--format pt2` export time with a cold Inductor cache, then aoti's p50
    against eager's and torchscript's in the same alternating rounds."""
    from ptx.infer import load
    from ptx.infer.bench.timing import bench_inputs, time_interleaved

    # Read by Inductor when it compiles: a fresh cache makes the compile time the one a new machine sees.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ptx-bench-inductor-")
    root = Path(tempfile.mkdtemp(prefix="ptx-bench-pt2-"))
    compile_rows, latency = [], []
    load_before = os.getloadavg()[0]
    for name in PT2_MODELS:
        spec = get(name)
        data = load_dataset("mnist-sample", labels=spec.labels, picture=spec.contract("mnist-sample").picture)
        config = TrainConfig(epochs=1, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu")
        train(spec, data, config, root / name, log=lambda _: None)
        export_model(name, checkpoint=root / name / "checkpoint.pt", log=lambda _: None)  # onnx + torchscript
        start = time.perf_counter()
        export_model(name, ["pt2"], checkpoint=root / name / "checkpoint.pt", log=lambda _: None)
        took = time.perf_counter() - start
        compile_rows.append(f"| {name} | {took:.1f} s | {(root / name / 'model.pt2').stat().st_size / 1024:,.0f} KiB |")
        print(f"{name}: pt2 export {took:.1f} s", file=sys.stderr, flush=True)
        predictors = [load(name, backend, root=root) for backend in PT2_BACKENDS]
        for batch in PT2_BATCHES:
            x = bench_inputs(predictors[0].contract, batch)
            calls = [lambda p=p, feeds=p.head.feeds(x): p.run(feeds) for p in predictors]
            p50 = [float(np.median(t)) * 1e6 for t in time_interleaved(calls, warmup=5, seconds=seconds)]
            latency.append(f"| {name} | {batch} | " + " | ".join(f"{v:,.1f}" for v in p50)
                           + f" | {p50[2] / p50[0]:.2f}x | {p50[2] / p50[1]:.2f}x |")
            print(latency[-1], file=sys.stderr, flush=True)
        for predictor in predictors:
            predictor.close()
    return "\n".join([
        f"Run of {time.strftime('%Y-%m-%d')}. Machine: {machine()}; load average (1 min) {load_before:.1f} "
        f"before the run, {os.getloadavg()[0]:.1f} after: other work on the machine slows every row, the ratios "
        "less than the times.",
        "Command: `python scripts/bench.py --pt2` (convnet and lstm trained one epoch on mnist-sample).",
        "",
        "`ptx export NAME --format pt2` wall time (torch.export, AOTInductor compile with a fresh cache, "
        "validation at batch 1, 2, 7, 64):",
        "",
        "| model | export time | model.pt2 |",
        "| --- | ---: | ---: |",
        *compile_rows,
        "",
        "p50 latency through ptx (`run`, inputs in memory), microseconds, the three backends timed in the same "
        "alternating rounds:",
        "",
        "| model | batch | eager | torchscript | aoti | aoti / eager | aoti / torchscript |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *latency,
    ])


def wrapped(section: str, width: int = 110) -> str:
    """``section`` with each line of prose wrapped at ``width`` columns, as the pages are written by hand (a
    page has no line of prose past 600 characters: tests/test_doc_pages.py); table rows as they are."""
    def wrap(line: str) -> str:
        if line.startswith("|") or len(line) <= width:
            return line
        indent = "  " if line.startswith("- ") else ""
        return textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
    return "\n".join(wrap(line) for line in section.split("\n"))


def write_section(out: Path, marker: str, end: str, section: str) -> None:
    previous = out.read_text() if out.exists() else "# CPU backends\n"
    head, _, rest = previous.partition(marker)
    tail = rest.split(end, 1)[1] if end in rest else ""
    # A section last in the file still ends the file with a newline.
    write_text(out, f"{head.rstrip()}\n\n{marker}\n{wrapped(section)}\n{end}{tail if tail.strip() else chr(10)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seconds", type=float, help="timed seconds per backend and batch size (default 1; "
                                                      "--pt2: per batch size, all three backends, default 3)")
    parser.add_argument("--fastest", action="store_true", help="only the fastest-CPU-inference table")
    parser.add_argument("--pt2", action="store_true", help="only the pt2 (AOTInductor) table")
    parser.add_argument("--runs", help="with --fastest: a runs folder to reuse (trained and exported there if missing)")
    args = parser.parse_args()
    if args.pt2:
        section = pt2_section(args.seconds or 3.0)
        write_section(args.out, "<!-- scripts/bench.py: pt2 -->", "<!-- end pt2 -->", section)
        print(section)
        return
    args.seconds = args.seconds or 1.0
    if args.fastest:
        with tempfile.TemporaryDirectory() as tmp:
            section = fastest_section(Path(args.runs or tmp), args.seconds)
        write_section(args.out, "<!-- scripts/bench.py: fastest CPU -->", "<!-- end fastest CPU -->", section)
        print(section)
        return
    data = load_dataset("mnist-sample")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("training and exporting convnet and lstm on mnist-sample ...", file=sys.stderr)
        prepare_runs(root, data)
        tables, results = [], {}
        for name in ("convnet", "lstm"):
            print(f"ptx bench {name} ...", file=sys.stderr)
            timed = bench(Target.of(name, root=root), batch_sizes=(1, 64, 1024), seconds=args.seconds)
            rows, skipped = timed.rows, timed.skipped
            tables.append(to_markdown(name, rows, skipped))
            results[name] = {(r.runner, r.batch): r for r in rows}
        print("cold start ...", file=sys.stderr)
        cold, floor = cold_start(root, data)
        print("training throughput ...", file=sys.stderr)
        # mlp is seed 004's model, trained there through exactly such a DataLoader; seed 000's
        # convnet loop already slices tensors, and its convolutions dominate either way.
        fashion = load_dataset("fashion-mnist").limit(THROUGHPUT_SAMPLES)
        throughput = {name: (ours_images_per_s(name, d, root), seed_style_images_per_s(name, d))
                      for name, d in (("mlp", fashion), ("logreg", data), ("convnet", data))}
    conv = results["convnet"]
    ort_overhead = conv[("ort-cpu", 1)].overhead
    ort_vs_eager = conv[("eager-cpu", 1)].p50_us / conv[("ort-cpu", 1)].p50_us
    goals = [
        ("ort-cpu through ptx vs a bare `session.run`, convnet batch 1 (p50)", f"{ort_overhead:.2f}x", "<= 1.2x",
         ort_overhead <= 1.2),
        ("eager p50 / ort-cpu p50, convnet batch 1", f"{ort_vs_eager:.1f}x", ">= 5x", ort_vs_eager >= 5),
        (f"`ptx predict digit.png` cold start {cold * 1000:.0f} ms vs import floor {floor * 1000:.0f} ms "
         f"(median of {COLD_RUNS})", f"{cold / floor:.2f}x", "<= 2x", cold / floor <= 2),
    ]
    for name, (ours, seed) in throughput.items():
        batch = get(name).recipe.batch_size
        goals.append((f"trainer {ours:,.0f} img/s vs seed-style per-sample DataLoader loop {seed:,.0f} img/s "
                      f"({name}, batch {batch})", f"{ours / seed:.1f}x", ">= 3x", ours / seed >= 3))
    goal_lines = ["| goal | measured | target | met |", "| --- | ---: | ---: | --- |"]
    goal_lines += [f"| {what} | {value} | {target} | {'yes' if met else 'NO'} |" for what, value, target, met in goals]
    section = "\n".join([
        f"Run of {time.strftime('%Y-%m-%d')}. Machine: {machine()}.",
        "Command: `python scripts/bench.py` (models trained on mnist-sample; inputs already in memory; "
        "p50/p90/p99 over repeated calls after 10 warm-up calls).",
        "",
        *goal_lines,
        "",
        *(t + "\n" for t in tables),
    ])
    write_section(args.out, "<!-- scripts/bench.py: CPU -->", "<!-- end CPU -->", section)
    print("\n".join(goal_lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
