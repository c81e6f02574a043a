#!/usr/bin/env python3
"""Serve one model file, send it one request, and hold the answer to the same file run in this
process: scripts/gpu_check.sh's `own` phase (issue 45), `ptx serve FILE --backend ort-cuda` answering.

Usage: python scripts/serve_check.py FILE INPUTS.npz [--backend ort-cuda] [--reference ort-cpu]
                                     [--atol 1e-3] [--rtol 1e-3]

INPUTS.npz as `ptx verify FILE --save-inputs` writes it (NAME:K per case; the first case is sent).
The server listens on a free loopback port (the kernel's choice, read from its startup lines),
every wait is bounded, and it is stopped by its own process id whatever the outcome. Exit 0: the
answer matches the reference within the tolerance; 1 otherwise, one line saying why.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import serving  # noqa: E402  (tests/serving.py: a server on free ports, bounded waits, stopped by its pid)

REQUEST_S = 60
V2_DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL",
                "uint8": "UINT8", "int8": "INT8", "float64": "FP64"}


def first_case(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        keys = sorted(saved.files)
        case = {k.rsplit(":", 1)[0]: saved[k] for k in keys if k.endswith(":0")}
        return case or {k: saved[k] for k in keys}


def infer(url: str, served: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": V2_DATATYPES[str(x.dtype)],
                        "data": x.ravel().tolist()} for name, x in feeds.items()]}
    request = urllib.request.Request(f"{url}/v2/models/{served}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_S) as answer:
        doc = json.load(answer)
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--backend", default="ort-cuda")
    parser.add_argument("--reference", default="ort-cpu")
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--rtol", type=float, default=1e-3)
    args = parser.parse_args()

    from ptx.infer import load

    feeds = first_case(args.inputs)
    reference = load(args.model, backend=args.reference)
    try:
        want = reference.run(feeds)
    finally:
        reference.close()
    try:
        server = serving.start(args.model.parent, str(args.model), args=("--backend", args.backend))
    except RuntimeError as exc:  # it did not start: its last lines say why
        print(f"FAILED: ptx serve {args.model.name} --backend {args.backend} did not start: "
              f"{' / '.join(str(exc).splitlines()[-3:])}")
        return 1
    try:
        served = next(line.split()[1].rstrip(";") for line in server.lines if line.startswith("serving "))
        got = infer(server.url, served, feeds)
    finally:
        server.stop()
    worst = {name: float(np.max(np.abs(got[name] - want[name]))) if want[name].size else 0.0 for name in want}
    bad = [name for name in want if name not in got or got[name].shape != want[name].shape
           or not np.allclose(got[name], want[name], atol=args.atol, rtol=args.rtol)]
    shapes = ", ".join(f"{n} {list(x.shape)}" for n, x in feeds.items())
    said = ", ".join(f"{n} max abs {d:.2e}" for n, d in worst.items())
    if bad:
        print(f"FAILED: ptx serve {args.model.name} --backend {args.backend} answered {shapes} unlike "
              f"{args.reference} in this process: {', '.join(bad)} ({said})")
        return 1
    print(f"ptx serve {args.model.name} --backend {args.backend}: one request ({shapes}) answered as {args.reference} "
          f"answers it here ({said}; atol {args.atol:g}, rtol {args.rtol:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
