#!/usr/bin/env python3
"""Measure the pt2 format and write its section of docs/benchmarks.md.

1. `ptx export NAME --format pt2` wall time (torch.export + AOTInductor compile + validation) for
   convnet and lstm, with a fresh Inductor cache, as on a machine that never compiled them;
2. latency of the aoti backend against eager and torchscript on the same inputs, timed in
   alternating rounds (ptx.infer.bench.timing.time_interleaved) so that a busy moment on a shared machine
   lands on all of them: read the ratios, not the absolute numbers.

Usage: python scripts/bench_pt2.py [--out docs/benchmarks.md] [--seconds 3]
"""
from __future__ import annotations

import os
import tempfile

# Before torch is imported: a fresh cache makes the compile time the one a new machine sees.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ptx-bench-inductor-")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ptx.export.api import export_model  # noqa: E402
from ptx.infer import load  # noqa: E402
from ptx.infer.bench.timing import bench_inputs, time_interleaved  # noqa: E402
from ptx.models import get  # noqa: E402
from ptx.trainers.data import load_dataset  # noqa: E402
from ptx.trainers.loop import TrainConfig, train  # noqa: E402

MARKER, END = "<!-- scripts/bench_pt2.py -->", "<!-- end pt2 -->"
MODELS = ("convnet", "lstm")
BACKENDS = ("eager", "torchscript", "aoti")
BATCHES = (1, 64, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per batch size, all backends")
    args = parser.parse_args()
    from bench import machine, write_section  # scripts/bench.py, beside this file

    root = Path(tempfile.mkdtemp(prefix="ptx-bench-pt2-"))
    quiet = dict(log=lambda _: None)
    compile_rows, latency = [], []
    for name in MODELS:
        spec = get(name)
        data = load_dataset("mnist-sample", labels=spec.labels, picture=spec.contract("mnist-sample").picture)
        config = TrainConfig(epochs=1, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu")
        train(spec, data, config, root / name, log=lambda _: None)
        export_model(name, checkpoint=root / name / "checkpoint.pt", **quiet)  # onnx + torchscript
        start = time.perf_counter()
        export_model(name, ["pt2"], checkpoint=root / name / "checkpoint.pt", **quiet)
        seconds = time.perf_counter() - start
        size = (root / name / "model.pt2").stat().st_size / 1024
        compile_rows.append(f"| {name} | {seconds:.1f} s | {size:,.0f} KiB |")
        print(f"{name}: pt2 export {seconds:.1f} s", flush=True)
        predictors = [load(name, backend, root=root) for backend in BACKENDS]
        for batch in BATCHES:
            x = bench_inputs(predictors[0].contract, batch)
            calls = [lambda p=p, feeds=p.head.feeds(x): p.run(feeds) for p in predictors]
            times = time_interleaved(calls, warmup=5, seconds=args.seconds)
            p50 = [float(np.median(t)) * 1e6 for t in times]
            latency.append(f"| {name} | {batch} | " + " | ".join(f"{v:,.1f}" for v in p50)
                           + f" | {p50[2] / p50[0]:.2f}x | {p50[2] / p50[1]:.2f}x |")
            print(latency[-1], flush=True)
    section = "\n".join([
        f"## pt2 (torch.export + AOTInductor), run of {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {machine()}. Absolute times vary with what else runs; "
        "the ratios are taken within one run (alternating rounds). Re-measure with "
        "`python scripts/bench_pt2.py`.",
        "",
        "`ptx export NAME --format pt2` wall time (torch.export, AOTInductor compile with a fresh cache, "
        "validation at batch 1, 2, 7, 64):",
        "",
        "| model | export time | model.pt2 |",
        "| --- | ---: | ---: |",
        *compile_rows,
        "",
        "p50 latency through ptx (`run`, inputs in memory), microseconds:",
        "",
        "| model | batch | eager | torchscript | aoti | aoti / eager | aoti / torchscript |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *latency,
    ])
    out = Path(args.out)
    write_section(out, MARKER, END, section)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
