"""The start of `ptx predict one.png` against the import floor, before and after a change, in one run.

    python3 scripts/bench_start.py PICTURE --root RUNS [--before-python OLD/.venv/bin/python] [--rounds 31]

Each round runs, as fresh processes in alternating order, the floor `python -c "import onnxruntime,
numpy, PIL.Image"`, this checkout's `python -m ptx predict PICTURE` and (with --before-python) the
same command under another interpreter, e.g. a worktree of the commit before with its own editable
install. Printed: each command's median and least wall time, the ratio of medians to the floor's and
the median of the per-round ratios; then ptx's own import time (`-X importtime`, each module's least
self time over 7 runs, summed). Bytecode writing is on (PYTHONDONTWRITEBYTECODE unset) and one
unmeasured run of each comes first, so no source is compiled while timed: a user's installed ptx has
its bytecode too. Ratios within one run only: the floor itself moves with the machine's load.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")
# Out of any checkout: `python -m ptx` puts its working folder first on sys.path, where a checkout's
# ptx/ would shadow the one --before-python has installed.
OUTSIDE = tempfile.gettempdir()


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=ENV, stdout=subprocess.DEVNULL, check=True, cwd=OUTSIDE)
    return time.perf_counter() - start


def own_import_ms(command: list[str], runs: int = 7) -> float:
    """ptx's modules' import time: each module's least self time over ``runs``, summed."""
    python, rest = command[0], command[1:]
    least: dict[str, int] = collections.defaultdict(lambda: 10**12)
    for _ in range(runs):
        err = subprocess.run([python, "-X", "importtime", *rest], env=ENV, capture_output=True, text=True,
                             cwd=OUTSIDE).stderr
        for match in IMPORT_LINE.finditer(err):
            least[match.group(3)] = min(least[match.group(3)], int(match.group(1)))
    return sum(us for name, us in least.items() if name == "ptx" or name.startswith("ptx.")) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("picture")
    parser.add_argument("--root", required=True, help="the runs root holding the model's run folder")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--before-python", help="an interpreter whose `-m ptx` is the code before the change")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    predict = ["-m", "ptx", "predict", os.path.abspath(args.picture), "--root", os.path.abspath(args.root), "--model",
               args.model]
    rows = {"floor": [sys.executable, "-c", "import onnxruntime, numpy, PIL.Image"]}
    if args.before_python:
        rows["before"] = [args.before_python, *predict]
    rows["after"] = [sys.executable, *predict]
    for command in rows.values():
        timed(command)
    seconds: dict[str, list[float]] = {key: [] for key in rows}
    for round_ in range(args.rounds):
        for key in (rows if round_ % 2 == 0 else reversed(list(rows))):
            seconds[key].append(timed(rows[key]))
    floor = statistics.median(seconds["floor"])
    print(f"floor: median {floor * 1e3:.0f} ms, least {min(seconds['floor']) * 1e3:.0f} ms ({args.rounds} rounds)")
    for key in rows:
        if key == "floor":
            continue
        ratios = [ptx / base for base, ptx in zip(seconds["floor"], seconds[key])]
        median = statistics.median(seconds[key])
        print(f"{key}: median {median * 1e3:.0f} ms, least {min(seconds[key]) * 1e3:.0f} ms; {median / floor:.2f}x "
              f"the floor's median; per-round ratio median {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}); ptx's own imports {own_import_ms(rows[key]):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
