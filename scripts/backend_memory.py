#!/usr/bin/env python3
"""What each backend holds while it opens a model and runs it, as a multiple of the file's weights: the
figures the backend registry declares (``Backend.holds``, infer/runtime/backends/) and the memory plan
plans with (infer/runtime/memory_plan.py).

Two MLPs of random f32 weights (about 128 MB and 512 MB) are exported by ptx (onnx, torchscript, pt2 for the
smaller), and the ONNX files are written again with their weights in external data (model.onnx.data, as ptx
writes ONNX past 1.5 GiB). Each (backend, file) is measured in a process of its own: its resident memory
after importing ptx and the runtime and making the inputs, then its peak (VmHWM) once ``ptx.infer.load`` has
opened the file and run one batch; (peak - before) / the weights.

    python3 scripts/backend_memory.py              # a few minutes and about 3 GB at its peak
    python3 scripts/backend_memory.py --sizes 128  # the smaller model only
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
import numpy as np
spec = json.loads(sys.argv[1])
if spec["runtime"]:
    __import__(spec["runtime"])
from ptx.infer import load

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))

feeds = {"x": np.random.default_rng(0).random((8, 1024), dtype=np.float32)}
before = status("VmRSS")
model = load(spec["path"], spec["backend"], precision=spec["precision"])
model.run(feeds)
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""
RUNTIMES = {"ort-cpu": "onnxruntime", "openvino": "openvino", "onnx.reference": "onnx", "torchscript": "torch",
            "aoti": "torch"}


def mlp(megabytes: int):
    """Linear layers of 1024 x 4096 and back, as many as make ``megabytes`` of f32 weights."""
    import torch

    torch.manual_seed(0)
    pairs = max(1, round(megabytes * 1e6 / (2 * 1024 * 4096 * 4)))
    layers = [m for _ in range(pairs) for m in (torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024))]
    return torch.nn.Sequential(*layers).eval()


def files(root: Path, megabytes: int) -> dict[str, Path]:
    """{kind: path}: the ONNX file (weights inside), the same with external data, TorchScript, pt2 (128 MB only)."""
    import onnx

    from ptx.export import export_module

    formats = ("onnx", "torchscript", *(("pt2",) if megabytes <= 128 else ()))
    out = root / f"mlp{megabytes}"
    export_module(mlp(megabytes), None, out, inputs=["x=batchx1024"], formats=formats, name=f"mlp{megabytes}",
                  reference=False, log=lambda line: None)
    external = root / f"mlp{megabytes}-external"
    external.mkdir()
    proto = onnx.load(str(out / "model.onnx"))
    del proto.metadata_props[:]  # the weights' digest ptx recorded is of the one file: opened as a file of its own
    onnx.save(proto, str(external / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    found = {"onnx": out / "model.onnx", "onnx, external data": external / "model.onnx",
             "torchscript": out / "model.torchscript.pt"}
    if "pt2" in formats:
        found["pt2"] = out / "model.pt2"
    return found


CHILD_TIMEOUT_S = 600  # one backend opening and running one model: minutes at most on 2 cores


def measure(path: Path, backend: str, precision: str | None = None) -> dict:
    spec = {"path": str(path), "backend": backend, "precision": precision, "runtime": RUNTIMES.get(backend)}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {CHILD_TIMEOUT_S} s"}
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,512", help="the models' weights in MB (default 128,512)")
    args = parser.parse_args()
    from ptx.infer.runtime.memory_plan import weights_bytes
    from ptx.machine import describe_cpu

    print(f"{describe_cpu()}, {datetime.date.today()}\n")
    print("| model | file | backend | weights MB | before MB | peak MB | holds (peak - before) / weights |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    rows = [("onnx", "ort-cpu", None), ("onnx, external data", "ort-cpu", None), ("onnx", "openvino", None),
            ("onnx", "openvino", "bf16"), ("onnx, external data", "openvino", None), ("onnx", "onnx.reference", None),
            ("torchscript", "torchscript", None), ("pt2", "aoti", None)]
    with tempfile.TemporaryDirectory() as folder:
        for megabytes in map(int, args.sizes.split(",")):
            made = files(Path(folder), megabytes)
            for kind, backend, precision in rows:
                if kind not in made or (backend == "onnx.reference" and megabytes > 128):
                    continue
                weights = weights_bytes(made[kind])
                found = measure(made[kind], backend, precision)
                label = backend + (f"-{precision}" if precision else "")
                if "error" in found:
                    print(f"| mlp{megabytes} | {kind} | {label} | {weights / 1e6:.0f} | | | {found['error']} |")
                    continue
                held = (found["peak"] - found["before"]) / weights
                print(f"| mlp{megabytes} | {kind} | {label} | {weights / 1e6:.0f} | {found['before'] / 1e6:.0f} | "
                      f"{found['peak'] / 1e6:.0f} | {held:.2f} |", flush=True)


if __name__ == "__main__":
    main()
