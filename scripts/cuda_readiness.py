#!/usr/bin/env python3
"""Print the CUDA-readiness table of docs/benchmarks.md: for every registry model's model.onnx under
ROOT (default runs/), how many nodes ORT's basic-optimised graph has and whether ONNX Runtime's
CUDA provider would take them all (ptx.infer.runtime.cuda_placement: ORT's kernel table and its
GetCapability/GetCpuPreferredNodes rules, applied without a GPU).

    python scripts/cuda_readiness.py [ROOT]
"""
import sys
from pathlib import Path

from ptx.infer.runtime.cuda_placement import cuda_placement, registry_version
from ptx.models import list_models


def main(root: str = "runs") -> int:
    print(f"Kernel table: {registry_version()} (infer/runtime/ort_cuda_kernels.json)\n")
    print("| model | nodes (ORT basic-optimised) | all on CUDA | nodes ORT would put on the CPU |")
    print("| --- | ---: | --- | --- |")
    missing = []
    for name in list_models():
        path = Path(root) / name / "model.onnx"
        if not path.is_file():
            missing.append(name)
            continue
        placement = cuda_placement(path)
        cpu = "; ".join(map(str, placement.on_cpu)) or "-"
        print(f"| {name} | {placement.nodes} | {'yes' if placement.all_on_cuda else 'no'} | {cpu} |")
    if missing:
        print(f"\nnot exported under {root}: {', '.join(missing)} (run `ptx export NAME`)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
