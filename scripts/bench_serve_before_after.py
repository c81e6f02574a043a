#!/usr/bin/env python3
"""`ptx serve` of two checkouts against the bare REST floor, in alternating rounds in one run: was a
change's serving path slower? (issue 43: "ptx serve at c32 at or above the bare route's floor as
before").

    python3 scripts/bench_serve_before_after.py --before-python OLD/.venv/bin/python [--runs DIR]
                                                [--model convnet] [--concurrency 32] [--seconds 3] [--rounds 5]

The before checkout runs under its own interpreter (a worktree with its own editable install, so
its ``ptx`` is its code), the after one under this interpreter; both serve the same run folder on
ort-cpu on free loopback ports, beside scripts/bench_serve.py's floor (a bare Starlette route
answering a constant). Each round loads the floor, before and after in turn with tritonclient's
threaded HTTP clients; medians of the rounds and their ratios are printed. Every server is stopped
by its own process id.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve  # noqa: E402  (load, start_floor, stop, prepare, machine)

STARTUP_S = 120


def start(python: str, root: Path, model: str) -> tuple[subprocess.Popen, str]:
    """``python -m ptx serve MODEL`` on free ports; its output goes to a file (never a pipe nobody
    reads), polled until it says it is serving."""
    log = tempfile.NamedTemporaryFile("w+", prefix="ptx-serve-", suffix=".log", delete=False)
    process = subprocess.Popen([python, "-m", "ptx", "serve", model, "--root", str(root), "--backend", "ort-cpu",
                                "--http-port", "0", "--grpc-port", "0", "--drain-seconds", "0"],
                               stdout=log, stderr=subprocess.STDOUT, text=True, cwd="/")
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and process.poll() is None:
        text = Path(log.name).read_text()
        if "\nserving " in f"\n{text}":
            return process, re.search(r"REST  http://([^/\s]+)/v2", text).group(1)
        time.sleep(0.2)
    bench_serve.stop(process)
    raise SystemExit(f"{python} -m ptx serve did not start: {Path(log.name).read_text()[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-python", required=True)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/ptx-serve-ab"))
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_serve.prepare(args.runs)
    servers = {}
    try:
        servers["floor"] = bench_serve.start_floor("rest")
        servers["before"] = start(args.before_python, args.runs, args.model)
        servers["after"] = start(sys.executable, args.runs, args.model)
        rates: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (_, address) in servers.items():
                rates[name].append(bench_serve.load("rest", address, args.model, args.concurrency, args.seconds)["rps"])
    finally:
        for process, _ in servers.values():
            bench_serve.stop(process)
    median = {name: float(np.median(r)) for name, r in rates.items()}
    print(f"{bench_serve.machine()}; {args.model} over REST at concurrency {args.concurrency}, {args.rounds} rounds "
          f"of {args.seconds:g} s each, floor/before/after in turn (tritonclient threads)")
    print("| server | requests/s, median (rounds) | / floor |")
    print("| --- | --- | ---: |")
    for name, r in rates.items():
        print(f"| {name} | {median[name]:,.0f} ({', '.join(f'{x:,.0f}' for x in r)}) | {median[name] / median['floor']:.2f}x |")
    print(f"after / before: {median['after'] / median['before']:.2f}x")


if __name__ == "__main__":
    main()
