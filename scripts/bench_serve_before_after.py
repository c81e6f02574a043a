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
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve  # noqa: E402  (load, start_floor, stop, prepare, machine; it puts tests/ on the path)
import serving  # noqa: E402  (tests/serving.py: a server on free ports, stopped by its pid)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-python", required=True)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/ptx-serve-ab"))
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    args.runs = args.runs.resolve()
    # Out of any checkout: `python -m ptx` puts its working folder first on sys.path, where a
    # repository's ptx/ would shadow the interpreter's own installed checkout.
    os.chdir(tempfile.gettempdir())
    bench_serve.prepare(args.runs)
    floor, servers = None, {}
    try:
        floor, floor_address = bench_serve.start_floor("rest")
        for name, python in (("before", args.before_python), ("after", sys.executable)):
            servers[name] = serving.start(args.runs, args.model, args=("--backend", "ort-cpu"), python=python)
        addresses = {"floor": floor_address, **{name: server.http for name, server in servers.items()}}
        rates: dict[str, list[float]] = {name: [] for name in addresses}
        for _ in range(args.rounds):
            for name, address in addresses.items():
                rates[name].append(bench_serve.load("rest", address, args.model, args.concurrency, args.seconds)["rps"])
    finally:
        if floor is not None:
            bench_serve.stop(floor)
        for server in servers.values():
            server.stop()
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
