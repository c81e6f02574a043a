#!/usr/bin/env python3
"""Where a decoding step's time goes on the GPU (issue 106): an exported LM's greedy decoding through ptx's runner,
profiled by PyTorch's profiler (CUPTI records every CUDA kernel and copy of the process, ONNX Runtime's too),
so that the step's wall is split into the GPU's busy time (kernels, copies) and the rest: the host launching
node by node. A step at 12% of the bandwidth wall is launch-bound if the GPU is idle most of it, and bound by
its logits' copy if the device-to-host copies fill it.

    python3 scripts/gpu_lm_step.py FILE [FILE ...] [--backend ort-cuda] [--tokens 32] [--prompt 32]

Each file: one warm-up decoding, then the prompt alone (one new token) and the prompt with --tokens new tokens,
each under the profiler; the difference of the two, over the tokens after the first, is the decoding steps'
share (the prompt's run taken out). Prints a markdown table, a row per file: ms per step (wall), GPU busy ms
(the union of every kernel's and copy's interval), kernels per step, device-to-host copy ms per step, and the
busy share of the wall. torch is needed for the profiler only: the runner is ptx's, as `ptx bench` runs it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def device_intervals(profile) -> list[tuple[float, float, str]]:
    """(start us, end us, name) of every event that ran on the GPU: kernels, copies, sets."""
    from torch.autograd import DeviceType

    return [(e.time_range.start, e.time_range.end, e.name) for e in profile.events()
            if e.device_type == DeviceType.CUDA]


def busy_us(intervals: list[tuple[float, float, str]]) -> float:
    """The time at least one of ``intervals`` ran: their union, as concurrent kernels overlap."""
    total, reach = 0.0, float("-inf")
    for start, end, _ in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def profiled(model, prompt: list[int], new_tokens: int) -> dict:
    """One decoding of ``prompt`` to ``new_tokens`` under the profiler: its wall and its GPU events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        model.decode([prompt], new_tokens, eos=())
        wall_ms = 1000 * (time.perf_counter() - start)
    events = device_intervals(prof)
    copies = [e for e in events if e[2].startswith("Memcpy DtoH")]
    return {"wall_ms": wall_ms, "busy_ms": busy_us(events) / 1000, "kernels": sum(not e[2].startswith("Mem")
                                                                                  for e in events),
            "dtoh_ms": busy_us(copies) / 1000, "dtoh": len(copies)}


def measure(path: Path, backend: str, tokens: int, prompt_length: int) -> dict:
    from ptx.infer import load

    model = load(path, backend=backend)
    try:
        prompt = [3 + i % 61 for i in range(prompt_length)]  # ids every vocabulary has
        model.decode([prompt], tokens, eos=())  # warm-up: the session's first runs allocate
        alone, whole = profiled(model, prompt, 1), profiled(model, prompt, tokens)
    finally:
        model.close()
    steps = tokens - 1
    per_step = {key: (whole[key] - alone[key]) / steps for key in ("wall_ms", "busy_ms", "kernels", "dtoh_ms", "dtoh")}
    per_step["share"] = per_step["busy_ms"] / per_step["wall_ms"] if per_step["wall_ms"] > 0 else 0.0
    return per_step


def profiler_sees_kernels() -> int:
    """The kernels the profiler records of ten of PyTorch's own matrix products on the GPU (0 where it sees none, or
    there is no GPU): a row of no kernels is then the profiler's blindness, not ONNX Runtime's."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        return 0
    a = torch.ones(256, 256, device="cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            a = a @ a / 256
        torch.cuda.synchronize()
    return len(device_intervals(prof))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--backend", default="ort-cuda")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens of the profiled decoding")
    parser.add_argument("--prompt", type=int, default=32, help="the prompt's tokens")
    args = parser.parse_args()
    if args.tokens < 2:
        parser.error("--tokens: at least 2 (the steps after the first are measured)")
    print(f"| file | backend | ms per step | GPU busy ms | busy share | kernels per step | DtoH copies per step "
          f"| DtoH ms per step |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    failed = 0
    seen = profiler_sees_kernels()
    for path in args.files:
        try:
            got = measure(path, args.backend, args.tokens, args.prompt)
        except Exception as exc:  # one file's failure is its row; the next file is still measured
            print(f"| {path.name} | {args.backend} | failed: {str(exc).splitlines()[0][:300]} | | | | | |")
            failed += 1
            continue
        print(f"| {path.name} | {args.backend} | {got['wall_ms']:.3f} | {got['busy_ms']:.3f} | {got['share']:.0%} "
              f"| {got['kernels']:.0f} | {got['dtoh']:.1f} | {got['dtoh_ms']:.3f} |")
        if got["kernels"] == 0:
            print(f"\n{path.name}: the profiler recorded no kernel on the GPU ({args.backend} ran elsewhere, or "
                  "CUPTI did not see ONNX Runtime's kernels): the busy share is not measured")
    print(f"\nthe profiler saw {seen} GPU events of ten of PyTorch's matrix products (0: no GPU, or blind to it)")
    print(f"\nbatch 1, a prompt of {args.prompt} tokens, {args.tokens} new tokens greedy; per step: the decoding's "
          f"profile less the prompt's alone, over {args.tokens - 1} steps")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
