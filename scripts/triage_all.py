#!/usr/bin/env python3
"""Issue 44's check over the registry: for every model, train a small run (one epoch on a few hundred
real samples, as the tests do), export onnx and onnx-int8, then `ptx verify NAME --backends
ort-cpu-int8,openvino-bf16 --locate` (the triage of its reduced rows) and `ptx export NAME --format
onnx-int8 --keep-f32 auto`; prints one Markdown row per model (docs/disagree.md keeps a run's table).

Usage: python scripts/triage_all.py [--only NAME ...] [--limit 500] [--epochs 1] [--samples 300] [--root DIR]
       (--recipe: train with the tutorial's own recipe, every sample and epoch, instead)

Every command is the CLI a user types; a model that cannot be quantized (a regression) says so in its
row. Slow: about half a minute per model on 2 cores.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from ptx.models import list_models


def ptx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptx", *args], capture_output=True, text=True, check=False)


def last(text: str, prefix: str) -> str:
    return next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip().startswith(prefix)), "")


def row_of(name: str, root: Path, limit: int, samples: int, epochs: int | None) -> str:
    run = root / name
    smoke = [] if epochs is None else ["--epochs", str(epochs), "--limit", str(limit)]
    trained = ptx("train", name, *smoke, "--out", str(run), "--offline")
    if trained.returncode != 0:
        return f"| {name} | train failed: {last(trained.stderr, 'error')} | | |"
    exported = ptx("export", name, "--run", str(run), "--format", "onnx,onnx-int8")
    if exported.returncode != 0:
        return f"| {name} | {last(exported.stderr, 'error').removeprefix('error: ')} | | |"
    verified = ptx("verify", name, "--run", str(run), "--backends", "ort-cpu-int8,openvino-bf16", "--locate",
                   "--samples", str(samples))
    triage = last(verified.stdout, "keep in f32") or last(verified.stdout, "no node adds error") or \
        last(verified.stderr, "error")
    verdict = last(verified.stdout, "all backends agree") or last(verified.stdout, "backends DISAGREE")
    kept = ptx("export", name, "--run", str(run), "--format", "onnx-int8", "--keep-f32", "auto")
    said = [ln.strip().removeprefix("onnx-int8").strip() for ln in kept.stdout.splitlines()
            if "--keep-f32 auto" in ln or " kept " in ln or " in f32 (" in ln]
    outcome = "; ".join(said + [last(kept.stderr, "error")] if kept.returncode else said)
    return f"| {name} | {verdict} | {triage} | {outcome} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--recipe", action="store_true", help="the tutorial's recipe: every sample and epoch")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    names = args.only or list_models()
    with tempfile.TemporaryDirectory(prefix="ptx-triage-") as scratch:
        root = args.root or Path(scratch)
        print("| model | verify (int8, bf16) | triage | --keep-f32 auto |")
        print("| --- | --- | --- | --- |")
        for name in names:
            print(row_of(name, root, args.limit, args.samples, None if args.recipe else args.epochs), flush=True)


if __name__ == "__main__":
    main()
