"""Where a decoder's step spends its time on ONNX Runtime: its profiler over ptx's own decoding, by op type.

    python scripts/profile_decode_step.py FILE.onnx [FILE.onnx ...] [--prompt-length 32] [--steps 24]

Each file is opened through ort-cpu with ONNX Runtime's profiling on (ptx's session options otherwise), a
seeded prompt decoded greedily for --steps tokens by ``load(FILE).decode``, and the steps after the first two
(the prompt's run and the first step, which allocate) summed: per step, the session's run, the kernels' time
within it, and each op type's kernels and node count, the largest first. A run's time beyond its kernels is
the executor's between nodes. Prints one table per file; the profiles are written to a temporary folder and
removed.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

WARM_RUNS = 2  # the prompt's run and the first step: their allocations are not a step's cost


def profile(path: Path, prompt_length: int, steps: int, folder: Path) -> dict:
    from ptx.infer import load
    from ptx.infer.model.decoding_memory import vocabulary

    os.environ["PTX_ORT_PROFILE"] = str(folder / path.stem)  # ptx's session options turn the profiler on
    try:
        with load(path, "ort-cpu") as model:
            if model.generation is None:
                raise SystemExit(f"{path}: not a decoder exported with its cache")
            vocab = vocabulary(model.signature, model.generation) or 2  # a symbolic vocabulary: ids 0 and 1
            prompt = np.random.default_rng(0).integers(0, vocab, prompt_length).tolist()
            model.decode([prompt], steps, eos=())
            written = model.runner.session.end_profiling()
    finally:
        del os.environ["PTX_ORT_PROFILE"]
    if not written:
        raise SystemExit(f"{path}: ONNX Runtime wrote no profile (its session was not opened with PTX_ORT_PROFILE)")
    written = Path(written)
    events = json.loads(written.read_text())
    runs = [e for e in events if e.get("name") == "model_run"][WARM_RUNS:]
    if not runs:
        raise SystemExit(f"{path}: fewer than {WARM_RUNS + 1} runs profiled: give more --steps")
    start = runs[0]["ts"]
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]
    by_op, nodes = collections.Counter(), collections.Counter()
    for event in kernels:
        by_op[event["args"]["op_name"]] += event["dur"]
        nodes[event["args"]["op_name"]] += 1
    count = len(runs)
    return {"steps": count, "run_ms": sum(r["dur"] for r in runs) / count / 1e3,
            "kernels_ms": sum(by_op.values()) / count / 1e3,
            "ops": [(op, us / count / 1e3, nodes[op] // count) for op, us in by_op.most_common()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--top", type=int, default=12, help="op types shown per file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ptx-profile-") as folder:
        for path in args.files:
            found = profile(path, args.prompt_length, args.steps, Path(folder))
            print(f"{path}: {found['steps']} steps after a prompt of {args.prompt_length}: "
                  f"{found['run_ms']:.2f} ms a step's run, {found['kernels_ms']:.2f} ms of it in kernels")
            print("| op | ms a step | nodes |\n| --- | ---: | ---: |")
            for op, ms, count in found["ops"][:args.top]:
                print(f"| {op} | {ms:.3f} | {count} |")
            print()


if __name__ == "__main__":
    main()
