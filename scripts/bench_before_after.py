"""Is a change slower on this machine? `ptx bench` run from two checkouts in turn, same run.

    python scripts/bench_before_after.py --before /path/to/old/.venv/bin/python --after python3 \\
        --run runs/convnet --backends ort-cpu,eager --rounds 3

Each round runs `ptx bench --json` under the "before" interpreter, then the "after" one (the order
flips every round, so a machine that grows busier does not favour either side). The Markdown table
gives, per ptx row and side, images/s and "vs bare" (images/s over the bare runtime's, timed in the
same process and rounds: the bare call is the same code on both sides, so this ratio cancels what
the machine was doing at that moment), medians over rounds, and after/before of each: above 1 the
change is faster. On a shared machine the raw images/s of two processes moments apart differ by 2x;
the "vs bare" ratio is the measure. Both sides time the same run folder; bench's verdicts are switched off
(--verify-samples 0), as they time nothing. Ratios within one run are the measure (docs/benchmarks.md: never a
timed unit test).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def bench_rows(python: str, args) -> dict[tuple[str, int], float]:
    command = [python, "-m", "ptx", "bench", args.name, "--run", args.run, "--backends", args.backends,
               "--batch-sizes", args.batch_sizes, "--seconds", str(args.seconds), "--json", "--verify-samples", "0"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    rows = json.loads(done.stdout)["rows"]
    return {(r["runner"], r["batch"]): (r["images_per_s"], r["vs_bare"]) for r in rows
            if r.get("peer_of") is None and r.get("vs_bare") is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the Python whose ptx is the old code")
    parser.add_argument("--after", default=sys.executable, help="the Python whose ptx is the change")
    parser.add_argument("--run", required=True, help="a run folder with the exports both sides time")
    parser.add_argument("--name", default=None, help="the model (default: the run folder's name)")
    parser.add_argument("--backends", default="ort-cpu,eager")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.name = args.name or args.run.rstrip("/").rsplit("/", 1)[-1]
    sides = {"before": args.before, "after": args.after}
    seen: dict[str, list[dict]] = {"before": [], "after": []}
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for side in order:
            seen[side].append(bench_rows(sides[side], args))
    keys = [k for k in seen["after"][0] if all(k in r for rs in seen.values() for r in rs)]
    print(f"| {args.name}: runner | batch | images/s before | after | after/before | vs bare before | after | "
          "after/before |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in keys:
        speed = {side: statistics.median(r[key][0] for r in seen[side]) for side in seen}
        vs_bare = {side: statistics.median(r[key][1] for r in seen[side]) for side in seen}
        print(f"| {key[0]} | {key[1]} | {speed['before']:,.0f} | {speed['after']:,.0f} | "
              f"{speed['after'] / speed['before']:.2f} | {vs_bare['before']:.3f} | {vs_bare['after']:.3f} | "
              f"{vs_bare['after'] / vs_bare['before']:.2f} |")


if __name__ == "__main__":
    main()
