"""What `ptx predict --min-confidence P` costs on the test set: for each P, the fraction of test
images marked low-confidence and the accuracy on the rest (and on all of them, for comparison).

    python3 scripts/confidence.py                          # runs/convnet's model.onnx, its test set
    python3 scripts/confidence.py --root /tmp/runs --model convnet --thresholds 0.5,0.7,0.9

The images are the test split of the dataset the run was trained on, as raw samples through the
artifact's own steps (ort-cpu), so the figures are the model's, not a picture pipeline's. Prints a
Markdown table with the machine and date, for docs/models.md.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np

from ptx.machine import cpu_name

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def table(probabilities: np.ndarray, labels: np.ndarray, thresholds) -> list[str]:
    best = probabilities.argmax(1)
    confidence = probabilities.max(1)
    right = best == labels
    lines = ["| min confidence | marked low-confidence | accuracy on the rest | accuracy on all |",
             "| ---: | ---: | ---: | ---: |"]
    for p in thresholds:
        kept = confidence >= p
        rest = f"{right[kept].mean():.4f}" if kept.any() else "-"
        lines.append(f"| {p:g} | {1 - kept.mean():.1%} | {rest} | {right.mean():.4f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS))
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]

    from ptx.infer import load
    from ptx.models import get
    from ptx.trainers.checkpoint import load_checkpoint
    from ptx.trainers.data import load_dataset

    run = Path(args.root) / args.model
    predictor = load(args.model, root=args.root)
    checkpoint = load_checkpoint(run / "checkpoint.pt", expected_model=args.model)
    dataset = checkpoint["dataset"]["name"]
    spec = get(args.model)
    data = load_dataset(dataset, labels=predictor.labels, picture=spec.contract(dataset).picture, download=False,
                        notice=lambda _: None)
    results = predictor.predict_raw(data.x_test)
    probabilities = np.stack([r.probabilities for r in results])
    epochs = checkpoint.get("epoch", "?")
    print(f"{args.model} ({run}, {epochs} epochs on {dataset}), {len(data.y_test):,} test images, ort-cpu; "
          f"{cpu_name()}, {datetime.date.today()}\n")
    print("\n".join(table(probabilities, np.asarray(data.y_test), thresholds)))


if __name__ == "__main__":
    main()
