#!/usr/bin/env python3
"""Which causal-LM families a folder export traces with two layers and repeats (export/repeated_layers.py), and
that each file is still judged against eager: every family of scripts/lm_families.py built with --layers layers
(random weights), saved as a transformers folder, and exported by `ptx export FOLDER --format onnx`. Prints a row
per family: how its layers were traced (or why all were) and the export's greedy-token check.

    python3 scripts/repeated_layers_check.py [--layers 5] [--families llama,gemma2] [--out repeated-layers]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lm_families import FAMILIES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=Path("repeated-layers"))
    args = parser.parse_args()
    import torch
    import transformers

    print("| family | exit | how its layers were traced | the export's greedy tokens |")
    print("| --- | ---: | --- | --- |")
    for name in args.families.split(","):
        model_class, config_class, values = FAMILIES[name]
        values = {k: args.layers if k in ("num_hidden_layers", "n_layer") else v for k, v in values.items()}
        torch.manual_seed(0)
        folder = args.out / name
        getattr(transformers, model_class)(getattr(transformers, config_class)(**values)).save_pretrained(folder)
        done = subprocess.run([sys.executable, "-m", "ptx", "export", str(folder), "--format", "onnx", "--out",
                               str(args.out / f"{name}-onnx")], capture_output=True, text=True)
        how = re.search(r"traced without its weights(?: \((.*?)\))? and written", done.stdout)
        tokens = re.search(r"greedy tokens: ([^;\n]*)", done.stdout)
        said = (how.group(1) or "every layer traced") if how else (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"| {name} | {done.returncode} | {said} | {tokens.group(1) if tokens else '-'} |", flush=True)


if __name__ == "__main__":
    main()
