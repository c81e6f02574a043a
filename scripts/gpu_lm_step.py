#!/usr/bin/env python3
"""Where a decoding step's time goes on the GPU (issue 106): an exported LM's greedy decoding through ptx's runner,
profiled by PyTorch's profiler (CUPTI records every CUDA kernel and copy of the process, ONNX Runtime's too),
so that the step's wall is split into the GPU's busy time (kernels, copies) and the rest: the host launching
node by node. A step at 12% of the bandwidth wall is launch-bound if the GPU is idle most of it, and bound by
its logits' copy if the device-to-host copies fill it.

    python3 scripts/gpu_lm_step.py FILE [FILE ...] [--backend ort-cuda] [--tokens 32] [--prompt 32]
        [--captured 32,512]

Each file: one warm-up decoding, then the prompt alone (one new token) and the prompt with --tokens new tokens,
each under the profiler; the difference of the two, over the tokens after the first, is the decoding steps'
share (the prompt's run taken out). Prints a markdown table, a row per file: ms per step (wall), GPU busy ms
(the union of every kernel's and copy's interval), kernels per step, device-to-host copy ms per step, and the
busy share of the wall. torch is needed for the profiler only: the runner is ptx's, as `ptx bench` runs it.

--captured L,...: what a step replayed as one CUDA graph would take, on the file as it is. One decoding step of
batch 1 over a past of L positions, every dimension fixed by ONNX Runtime's free-dimension overrides (batch 1, seq
1, past L, total L+1, kept 1: ptx's decoder layout), so that its shape arithmetic folds away and no node is left
for the CPU; inputs and outputs bound once on the GPU; timed launched node by node, then with the provider's
enable_cuda_graph (captured on the first runs, replayed after). No torch: onnxruntime and numpy. On a machine without
CUDA the same runs go through the CPU provider, uncaptured (the code path checked, no capture measured).
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


def step_sizes(past: int) -> dict[str, int]:
    """One decoding step's size of each dimension of ptx's decoder layout, over ``past`` positions."""
    return dict(batch=1, seq=1, past=past, total=past + 1, kept=1)


def step_feeds(session, past: int) -> dict:
    """One decoding step's inputs at ``past`` positions, by ptx's layout: one new token after the past."""
    import numpy as np

    sizes = step_sizes(past)
    rng = np.random.default_rng(0)
    feeds = {}
    for arg in session.get_inputs():
        shape = [sizes[d] if isinstance(d, str) else d for d in arg.shape]
        if arg.type == "tensor(float)":
            feeds[arg.name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif arg.name == "position_ids":
            feeds[arg.name] = np.full(shape, past, np.int64)
        elif arg.name == "logits_to_keep":
            feeds[arg.name] = np.zeros(shape, np.int64)
        else:  # input_ids, attention_mask
            feeds[arg.name] = np.ones(shape, np.int64) * (3 if arg.name == "input_ids" else 1)
    return feeds


def replayed_ms(path: Path, past: int, on_cuda: bool, graph: bool, runs: int = 50) -> float:
    """The median ms of a step at ``past`` positions, shapes fixed, IO bound once (see --captured)."""
    import statistics

    import onnxruntime as ort

    def made(session) -> dict:  # each output's shape and type, from a run that is not captured
        return {o.name: (a.shape, a.dtype) for o, a in zip(session.get_outputs(), session.run(None, feeds))}

    options = ort.SessionOptions()
    for name, size in step_sizes(past).items():
        options.add_free_dimension_override_by_name(name, size)
    provider = ("CUDAExecutionProvider", {"enable_cuda_graph": "1" if graph else "0"}) if on_cuda \
        else "CPUExecutionProvider"
    session = ort.InferenceSession(str(path), options, providers=[provider])
    unknown = {d for a in session.get_inputs() for d in a.shape if isinstance(d, str)} - set(step_sizes(past))
    if unknown:
        raise ValueError(f"{path.name}: its inputs' dimensions {sorted(unknown)} are not ptx's decoder layout")
    feeds = step_feeds(session, past)
    # a captured session's first run is its capture: the outputs' shapes come from another one
    outputs = made(ort.InferenceSession(str(path), options, providers=[("CUDAExecutionProvider", {})])) if graph \
        else made(session)
    device = "cuda" if on_cuda else "cpu"
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    for out in session.get_outputs():
        shape, dtype = outputs[out.name]
        binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, 0))
    for _ in range(3):  # warm-up; with enable_cuda_graph, the capture
        session.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def captured_table(paths: list[Path], lengths: list[int]) -> None:
    from ptx.infer.runtime.ort_session import cuda_unavailable

    on_cuda = cuda_unavailable() is None  # the provider listed is not enough: its libraries and a GPU must load
    print(f"\n| file | past | launched node by node, ms | replayed as one CUDA graph, ms | ratio |\n"
          f"| --- | ---: | ---: | ---: | ---: |")
    for path in paths:
        for past in lengths:
            try:
                launched = replayed_ms(path, past, on_cuda, graph=False)
                graph = replayed_ms(path, past, on_cuda, graph=True) if on_cuda else None
            except Exception as exc:  # one length's failure is its row: ONNX Runtime's refusal says why
                print(f"| {path.name} | {past} | failed: {str(exc).splitlines()[0][:300]} | | |")
                continue
            print(f"| {path.name} | {past} | {launched:.3f} | "
                  + (f"{graph:.3f} | {graph / launched:.2f}x |" if graph is not None
                     else "no CUDA here: not captured | |"))
    print(f"\nbatch 1, one new token over the past, every dimension fixed; median of 50 runs after 3 "
          f"({'on cuda' if on_cuda else 'on the CPU provider'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--backend", default="ort-cuda")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens of the profiled decoding")
    parser.add_argument("--prompt", type=int, default=32, help="the prompt's tokens")
    parser.add_argument("--captured", default="", help="past lengths of a step replayed as one CUDA graph, "
                                                         "comma-separated (see above); none by default")
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
    if args.captured:
        captured_table(args.files, [int(n) for n in args.captured.split(",")])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
