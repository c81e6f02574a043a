#!/usr/bin/env python3
"""Measure `ptx verify --locate` on a ResNet-50-sized graph against a plain `ptx verify` of the same
case (issue 44 item 3: goal, within 5x the time and under 2x the peak memory).

The model is ResNet-50 (torchvision's layout: bottleneck blocks 3, 4, 6, 3; written here, since
torchvision does not load on these machines), random weights, exported by torch's exporter
(dynamo, as `ptx export --module` does) with a dynamic batch at 224x224, unoptimised so that batch
norms stay nodes of their own. One weight of layer4.2.conv2 is then changed in a copy. Timed, each
a fresh process, alternating so that a busy moment of a shared machine lands on both:

1. `ptx verify changed.onnx --against model.onnx` (batch 3 and 5; ort-cpu, openvino, the other file);
2. the same with `--locate`.

Each process's peak resident memory is its own (getrusage of a child, read by a wrapper process).
The ratios are 2 over 1, in one run.

Usage: python scripts/bench_locate.py [--runs 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode); "
           "sys.stderr.write(r.stdout[-4000:])")


def resnet50():
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            cin, layers = 64, []
            for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                seq = []
                for b in range(blocks):
                    seq.append(Bottleneck(cin, width, stride if b == 0 else 1))
                    cin = width * 4
                layers.append(nn.Sequential(*seq))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet50().eval()


def export(folder: Path) -> None:
    import torch

    torch.manual_seed(0)
    module = resnet50()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 3, 224, 224),), str(folder / "model.onnx"), dynamo=True,
                          input_names=["image"], output_names=["logits"], optimize=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}})


def change(folder: Path) -> int:
    """changed.onnx: one filter of layer4.2.conv2 shifted (random weights give small logits: one
    value alone stays within the tolerance at the output)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(folder / "model.onnx"))
    weight = next(t for t in proto.graph.initializer if t.name == "layer4.2.conv2.weight")
    changed = numpy_helper.to_array(weight).copy()
    changed[7] += 0.5
    weight.CopyFrom(numpy_helper.from_array(changed.astype(np.float32), weight.name))
    onnx.save(proto, str(folder / "changed.onnx"))
    return len(proto.graph.node)


def measure(command: list[str]) -> tuple[float, float, int, str]:
    r = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True)
    seconds, kib, code = r.stdout.split()
    return float(seconds), int(kib) / 1024, int(code), r.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Keep the exported files here.")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ptx-bench-locate-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.onnx").is_file():
        export(folder)
    nodes = change(folder)
    plain = [sys.executable, "-m", "ptx", "verify", str(folder / "changed.onnx"), "--against", str(folder / "model.onnx")]
    times: dict[str, list[float]] = {"plain": [], "locate": []}
    peaks: dict[str, list[float]] = {"plain": [], "locate": []}
    last = ""
    for _ in range(args.runs):
        for name, command in (("plain", plain), ("locate", plain + ["--locate", "--json"])):
            seconds, mib, code, out = measure(command)
            assert code == 1, out
            times[name].append(seconds)
            peaks[name].append(mib)
            last = out if name == "locate" else last
    result = {"nodes": nodes, "plain_s": times["plain"], "locate_s": times["locate"], "plain_peak_mib": peaks["plain"],
              "locate_peak_mib": peaks["locate"],
              "time_ratio": statistics.median(times["locate"]) / statistics.median(times["plain"]),
              "memory_ratio": statistics.median(peaks["locate"]) / statistics.median(peaks["plain"])}
    print(json.dumps(result, indent=2))
    print(last[-1500:], file=sys.stderr)


if __name__ == "__main__":
    main()
