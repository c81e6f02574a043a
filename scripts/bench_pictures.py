#!/usr/bin/env python3
"""The picture pipeline's speed, every figure of a folder of pictures in one run on the same cores
(docs/benchmarks/pictures.md records them): ratios within the run, the CPU named.

    python3 scripts/bench_pictures.py FOLDER [--root runs] [--model convnet] [--repeat N] [--ray] [--rss 10000,30000]

- pipeline cost per picture: ptx's decode + picture pipeline (the artifact's own pipeline version),
  in chunks of 64 as `ptx predict FOLDER`'s workers run it and one picture at a time, against a
  plain Pillow decode + area resize to 28x28 of the same files: this process's CPU time, each
  row's fastest of 7 runs taken in turn (robust to other jobs on the machine);
- one picture: `ptx predict FILE` (the folder's first) against `python -c "import onnxruntime,
  numpy, PIL.Image"`, paired runs, the median of each and of the ratios; bytecode is cached first
  (as an installed ptx has it), so neither side compiles sources;
- a folder: `ptx predict FOLDER --output answers.parquet` (whole command, start-up included), its
  first answer on stdout, and two bare pools of one process per core handing chunks of 64 to the
  main process, which runs ONNX Runtime on each (its threads not spinning, as in `ptx predict`):
  one doing a plain Pillow decode + area resize, one doing ptx's picture pipeline (with --repeat N, each timed N times in turn, the best kept);
  with --ray, `ptx predict --ray FOLDER --output DIR`; with --rss, the peak resident memory of
  streaming N in-memory PNGs through stream_answers, for each N.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import shutil
import statistics
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
    """ptx's worker task on one chunk: decode and picture pipeline, the chunk's pictures together."""
    step, paths = args
    return np.stack([s for s in _prepare_chunk(paths, step) if isinstance(s, np.ndarray)])


def _pipeline_module():
    """Where this checkout keeps the picture pipeline's entry points: the head since one model, one
    runner (issue 43); the predictor module in a checkout from before it (a before/after run)."""
    try:
        from ptx.infer.model import head
        return head
    except ImportError:
        from ptx.infer import predictor
        return predictor


def _prepare_chunk(paths, step) -> list:
    """Samples (or errors) of a chunk of pictures, as this checkout's workers make them (a checkout
    from before prepare_pictures, run for a before/after comparison, prepares them one by one)."""
    from ptx.errors import InputError

    predictor = _pipeline_module()
    if hasattr(predictor, "prepare_pictures"):
        return predictor.prepare_pictures([(p, None) for p in paths], step)
    out = []
    for p in paths:
        try:
            out.append(predictor.prepare_picture(p, step))
        except InputError as exc:
            out.append(exc)
    return out


def _plain(path) -> np.ndarray:
    """The plain decode: Pillow, grey, an area resize to 28x28 (what the issue's bare pool did)."""
    from PIL import Image

    return np.asarray(Image.open(path).convert("L").resize((28, 28), Image.Resampling.BOX))


def _prepare_plain(args):
    return np.stack([_plain(p) for p in args[1]])


def bare_pool(paths: list[str], model_file: Path, workers: int, prepare=_prepare) -> float:
    """A bare pipeline: a pool prepares chunks of 64 pictures (``prepare``: ptx's decode + picture
    pipeline, or the plain decode), the main process runs ONNX Runtime on each chunk as it arrives,
    its threads not spinning between runs (as `ptx predict` runs it: spinning threads take the CPU
    the pool needs)."""
    import onnxruntime as ort

    from ptx.infer import open_artifact
    from ptx.contract.transforms import to_model_input

    contract = open_artifact(model_file, "ort-cpu").contract
    start = time.perf_counter()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    chunks = [(contract.picture, paths[i:i + 64]) for i in range(0, len(paths), 64)]
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for samples in pool.imap(prepare, chunks):
            session.run(None, {name: to_model_input(samples, contract)})
    return time.perf_counter() - start


def pipeline_cost(paths: list[str], model_file: Path, count: int = 256, repeat: int = 7) -> dict[str, float]:
    """CPU seconds per picture (this process's, so that other jobs on the machine count less) of ptx's
    decode + pipeline one picture at a time ("alone"), of the same in chunks of 64 as `ptx predict
    FOLDER`'s workers run it ("in a folder"), and of a plain decode + area resize ("plain"), over
    the first ``count`` files: each row's fastest of ``repeat`` runs, the rows taken in turn."""
    from ptx.infer import open_artifact

    prepare_picture = _pipeline_module().prepare_picture
    step = open_artifact(model_file, "ort-cpu").contract.picture
    files = paths[:count]
    rows = {"alone": lambda: [prepare_picture(p, step) for p in files],
            "in a folder": lambda: [_prepare_chunk(files[i:i + 64], step) for i in range(0, len(files), 64)],
            "plain": lambda: [_plain(p) for p in files]}
    best = dict.fromkeys(rows, math.inf)
    for _ in range(repeat):
        for key, run in rows.items():
            start = time.process_time()
            run()
            best[key] = min(best[key], time.process_time() - start)
    return {key: seconds / len(files) for key, seconds in best.items()}


def one_picture(path: str, common: list[str], runs: int = 11) -> tuple[float, float, float]:
    """Median seconds of `ptx predict FILE` and of importing onnxruntime, numpy and Pillow, and the
    median of their paired ratios. One unmeasured run of each first, with bytecode writing on."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    floor = [sys.executable, "-c", "import onnxruntime, numpy, PIL.Image"]
    command = [*PTX, "predict", path, *common]
    for cmd in (floor, command):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    pairs = [(timed(floor), timed(command)) for _ in range(runs)]
    return (statistics.median(c for _, c in pairs), statistics.median(f for f, _ in pairs),
            statistics.median(c / f for f, c in pairs))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rss_of_stream(n: int, model_file: Path, folder: Path) -> float:
    """Peak RSS (MiB) of this process after streaming ``n`` pictures (a generator over 100 PNGs'
    bytes, cycled) through stream_answers with the default workers. Run in a fresh process per n."""
    code = f"""
from pathlib import Path
from ptx.infer import open_artifact
from ptx.infer.predict.stream import Input, stream_answers
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
    parser.add_argument("--repeat", type=int, default=1,
                        help="Time the folder rows this many times, in turn, and keep each one's best.")
    args = parser.parse_args()
    from ptx.infer import open_artifact
    from ptx.infer.predict.stream import default_workers

    workers = default_workers()
    paths = sorted(str(p) for p in args.folder.iterdir())
    n = len(paths)
    model_file = Path(args.root) / args.model / "model.onnx"
    common = ["--root", args.root, "--model", args.model]
    tmp = Path(tempfile.mkdtemp(prefix="bench-pictures-"))
    try:
        cost = pipeline_cost(paths, model_file)
        command_s, floor_s, start_ratio = one_picture(paths[0], common)
        runs = {"predict": [], "plain": [], "bare": [], "first": []}
        for i in range(args.repeat):  # in turn, so that a change in the machine's load falls on all rows
            shutil.rmtree(tmp / "a.parquet", ignore_errors=True)
            runs["predict"].append(timed([*PTX, "predict", str(args.folder), *common, "--output",
                                          str(tmp / "a.parquet"), "-q"]))
            runs["plain"].append(bare_pool(paths, model_file, workers, _prepare_plain))
            runs["bare"].append(bare_pool(paths, model_file, workers))
            runs["first"].append(first_answer([*PTX, "predict", str(args.folder), *common]))
        predict_s, plain_pool_s, bare_s, first = (min(v) for v in runs.values())
        best = f" (best of {args.repeat})" if args.repeat > 1 else ""
        rows = [(f"ptx predict FOLDER --output answers.parquet (whole command){best}", predict_s),
                (f"bare pool of {workers} processes: plain Pillow decode + area resize + ONNX Runtime{best}",
                 plain_pool_s),
                (f"bare pool of {workers} processes: ptx's picture pipeline + ONNX Runtime{best}", bare_s)]
        if args.ray:
            ray_s = timed([*PTX, "predict", "--ray", str(args.folder), *common, "--output", str(tmp / "ray.parquet")])
            rows.append(("ptx predict --ray FOLDER --output DIR (local Ray, its start included)", ray_s))
        step = open_artifact(model_file, "ort-cpu").contract.picture
        print(f"{cpu_name()}, {os.cpu_count()} CPUs, {workers} workers, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"load average {os.getloadavg()[0]:.1f}; {args.model}: {step.pipeline} version {step.version}\n")
        plain_s = cost["plain"]
        print(f"pipeline cost per picture (CPU time): in a folder (chunks of 64) {cost['in a folder'] * 1e6:,.0f} us, "
              f"alone {cost['alone'] * 1e6:,.0f} us (ptx: decode + picture pipeline) against {plain_s * 1e6:,.0f} us "
              f"(plain decode + area resize): {cost['in a folder'] / plain_s:.2f}x in a folder, "
              f"{cost['alone'] / plain_s:.2f}x alone")
        print(f"one picture: `ptx predict {Path(paths[0]).name}` {command_s:.3f} s against the import floor "
              f"{floor_s:.3f} s: {command_s / floor_s:.2f}x (median of paired ratios {start_ratio:.2f}x)\n")
        print(f"{n:,} pictures:\n")
        print("| | s | pictures/s |\n| --- | ---: | ---: |")
        for label, s in rows:
            print(f"| {label} | {s:.1f} | {n / s:,.0f} |")
        print(f"\nptx predict / bare pool with a plain resize: {plain_pool_s / predict_s:.2f}x; / bare pool with "
              f"ptx's pipeline: {bare_s / predict_s:.2f}x; first answer on stdout after {first:.2f} s")
        if args.ray:
            print(f"Ray Data / streaming ptx predict: {predict_s / ray_s:.2f}x")
        for count in [int(c) for c in args.rss.split(",") if c.strip()]:
            print(f"peak RSS streaming {count:,} pictures: {rss_of_stream(count, model_file, args.folder):.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
