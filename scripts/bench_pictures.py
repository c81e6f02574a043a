#!/usr/bin/env python3
"""End-to-end pictures/s of `ptx predict` on a folder, against a bare pool doing ptx's own picture
pipeline, in the same run on the same cores (issue 29; docs/benchmarks.md records the figures).

    python3 scripts/bench_pictures.py FOLDER [--root runs] [--model convnet] [--ray] [--rss 10000,30000]

Rows: `ptx predict FOLDER --output answers.parquet` (whole command, start-up included) and its
time to the first answer on stdout; a bare multiprocessing pool (one process per core) running
ptx.infer.predictor.prepare_picture on the files while the main process runs ONNX Runtime on
chunks of 64; with --ray, `ptx predict --ray FOLDER --output DIR` (a local Ray started by the
command, its start-up included); with --rss, the peak resident memory of streaming N in-memory
PNGs (a generator) through stream_answers, for each N.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PTX = [sys.executable, "-m", "ptx"]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def first_answer(cmd: list[str]) -> float:
    """Seconds from start to the first line on stdout (then the command is stopped)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    first = time.perf_counter() - start
    proc.terminate()
    proc.wait()
    return first


def _prepare(args):
    from ptx.infer.predictor import prepare_picture
    from ptx.errors import InputError

    step, paths = args
    out = []
    for p in paths:
        try:
            out.append(prepare_picture(p, step))
        except InputError:
            pass
    return out


def bare_pool(paths: list[str], model_file: Path, workers: int) -> float:
    """The bare pipeline: a pool prepares chunks of 64 pictures (ptx's decode + picture pipeline),
    the main process runs ONNX Runtime on each chunk as it arrives, in order."""
    import onnxruntime as ort

    from ptx.infer import open_artifact
    from ptx.contract.transforms import to_model_input

    contract = open_artifact(model_file, "ort-cpu").contract
    start = time.perf_counter()
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = [(contract.picture, paths[i:i + 64]) for i in range(0, len(paths), 64)]
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for samples in pool.imap(_prepare, chunks):
            session.run(None, {name: to_model_input(np.stack(samples), contract)})
    return time.perf_counter() - start


def rss_of_stream(n: int, model_file: Path, folder: Path) -> float:
    """Peak RSS (MiB) of this process after streaming ``n`` pictures (a generator over 100 PNGs'
    bytes, cycled) through stream_answers with the default workers. Run in a fresh process per n."""
    code = f"""
from pathlib import Path
from ptx.infer import open_artifact
from ptx.infer.stream import Input, stream_answers
files = sorted(Path({str(folder)!r}).iterdir())[:100]
data = [f.read_bytes() for f in files]
p = open_artifact({str(model_file)!r}, "ort-cpu")
count = sum(1 for _ in stream_answers(p, (Input(data[i % 100], f"n{{i}}") for i in range({n}))))
assert count == {n}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--root", default="runs")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--ray", action="store_true", help="Also time `ptx predict --ray` (local Ray).")
    parser.add_argument("--rss", default="", help="Comma-separated picture counts to measure peak RSS at.")
    args = parser.parse_args()
    from ptx.infer.stream import default_workers

    workers = default_workers()
    paths = sorted(str(p) for p in args.folder.iterdir())
    n = len(paths)
    model_file = Path(args.root) / args.model / "model.onnx"
    common = ["--root", args.root, "--model", args.model]
    tmp = Path(tempfile.mkdtemp(prefix="bench-pictures-"))
    try:
        rows = []
        predict_s = timed([*PTX, "predict", str(args.folder), *common, "--output", str(tmp / "a.parquet"), "-q"])
        rows.append(("ptx predict FOLDER --output answers.parquet (whole command)", predict_s))
        bare_s = bare_pool(paths, model_file, workers)
        rows.append((f"bare pool of {workers} processes: ptx's picture pipeline + ONNX Runtime", bare_s))
        first = first_answer([*PTX, "predict", str(args.folder), *common])
        if args.ray:
            ray_s = timed([*PTX, "predict", "--ray", str(args.folder), *common, "--output", str(tmp / "ray.parquet")])
            rows.append(("ptx predict --ray FOLDER --output DIR (local Ray, its start included)", ray_s))
        print(f"{n:,} pictures, {workers} workers, {os.cpu_count()} CPUs\n")
        print("| | s | pictures/s |\n| --- | ---: | ---: |")
        for label, s in rows:
            print(f"| {label} | {s:.1f} | {n / s:,.0f} |")
        print(f"\nptx predict / bare pool: {bare_s / predict_s:.2f}x; first answer on stdout after {first:.2f} s")
        if args.ray:
            print(f"Ray Data / streaming ptx predict: {predict_s / ray_s:.2f}x")
        for count in [int(c) for c in args.rss.split(",") if c.strip()]:
            print(f"peak RSS streaming {count:,} pictures: {rss_of_stream(count, model_file, args.folder):.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
