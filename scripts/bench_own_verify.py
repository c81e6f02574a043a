#!/usr/bin/env python3
"""Measure `ptx verify` of a user's ~25 MB ONNX file and write its part of docs/benchmarks/export.md.

The model is a stack of six 1024x1024 Linear layers with ReLU (25 MB of float32 weights), exported
with a dynamic batch. Timed, each a fresh process, in alternating runs so that a busy moment on a
shared machine lands on all of them:

1. `ptx verify model.onnx` with its defaults (batch 3 and 5; ort-cpu the reference, openvino, the
   onnx.reference third opinion; every foreign file first opened in a child process);
2. `ptx verify model.onnx --backends ort-cpu` (the reference and the third opinion only);
3. a bare loop of the same ONNX Runtime runs: `python -c` that imports onnxruntime, creates the
   session and runs batch 3 and batch 5 once each, which is what the reference does.

The ratio is 1 over 3, in one run. Then one verify in this process, with each phase's time from its
progress lines, says where the time goes.

Usage: python scripts/bench_own_verify.py [--out docs/benchmarks/export.md] [--runs 3]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

MARKER, END = "<!-- scripts/bench_own_verify.py -->", "<!-- end own verify -->"
WIDTH, LAYERS = 1024, 6
BARE = """
import sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
for batch in (3, 5):
    session.run(None, {"x": np.random.default_rng(0).random((batch, %d), dtype=np.float32)})
""" % WIDTH


def export(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    layers = []
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU()]
    module = torch.nn.Sequential(*layers[:-1]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(2, WIDTH),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")
    return time.perf_counter() - start


def phases(model: Path) -> list[tuple[str, float]]:
    """One verify in this process: the seconds from each progress line to the next."""
    from ptx.infer.model.target import Target
    from ptx.infer.verify.verify import verify

    marks = [("start", time.perf_counter())]
    report = verify(Target.of(model, verifying=True), progress=lambda msg: marks.append((msg, time.perf_counter())))
    marks.append(("done", time.perf_counter()))
    assert report.ok, report.table()
    return [(msg, end - start) for (msg, start), (_, end) in zip(marks[1:], marks[2:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    page = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "export.md"
    parser.add_argument("--out", default=str(page), help="the page whose part between the markers is rewritten")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each command (median reported)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import machine, write_section  # scripts/bench.py, beside this file

    with tempfile.TemporaryDirectory(prefix="ptx-own-verify-") as tmp:
        model = export(Path(tmp) / "model.onnx")
        size = model.stat().st_size
        commands = {"ptx verify model.onnx": [sys.executable, "-m", "ptx", "verify", str(model)],
                    "ptx verify model.onnx --backends ort-cpu": [sys.executable, "-m", "ptx", "verify", str(model),
                                                                 "--backends", "ort-cpu"],
                    "bare loop (python -c: import onnxruntime, session, run batch 3 and 5)":
                        [sys.executable, "-c", BARE, str(model)]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                times[name].append(wall(cmd))
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
        spent = phases(model)
    medians = {name: statistics.median(t) for name, t in times.items()}
    bare = medians[list(commands)[-1]]
    rows = [f"| `{name}` | {m:.2f} s | {', '.join(f'{t:.2f}' for t in times[name])} | {m / bare:.1f}x |"
            if name.startswith("ptx") else f"| {name} | {m:.2f} s | {', '.join(f'{t:.2f}' for t in times[name])} "
            "| 1.0x |" for name, m in medians.items()]
    today = datetime.date.today().isoformat()
    section = "\n".join([
        f"Run of {today}. Machine: {machine()}; load average {', '.join(load)} while it ran (the machine is "
        "shared: absolute times move with it, the ratio is taken within one run, each command in turn). "
        "Re-measure with `python scripts/bench_own_verify.py`.",
        "",
        f"The model: {LAYERS} Linear({WIDTH}, {WIDTH}) layers with ReLU, exported by torch.onnx with a dynamic "
        f"batch: model.onnx is {size / 2**20:.1f} MiB ({size:,} bytes). `ptx verify` with default inputs: "
        "generated at batch 3 and 5, seed 0. Wall time of each command, a fresh process each, median of "
        f"{args.runs} alternating runs:",
        "",
        "| command | median wall | runs | vs bare |",
        "| --- | ---: | --- | ---: |",
        *rows,
        "",
        "Where the time of one `ptx verify model.onnx` goes (in one process, from its progress lines; the "
        "interpreter's start and ptx's imports come before the first):",
        "",
        "| phase | seconds |",
        "| --- | ---: |",
        *[f"| {msg} | {s:.2f} |" for msg, s in spent],
    ])
    write_section(Path(args.out), MARKER, END, section)
    print(section)


if __name__ == "__main__":
    main()
