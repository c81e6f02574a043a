"""scripts/gpu_check.sh's train phase: every model trained with its recipe on one device and
exported (onnx, torchscript), all in ONE Python process.

On the H100 (issue 26) the per-model `ptx train` + `ptx export` commands ran past 575 s while the
epochs took 0.0-2.2 s: the time went to 34 interpreter starts (torch import, CUDA context) and
the exports. Here torch, the CUDA context and each dataset load once. One model's failure is its
row, and the rest go on. Prints a line per model as it finishes and writes a Markdown table with
the train and export seconds of each.

    python scripts/gpu_train_all.py RUNS_DIR TABLE.md --device cuda [--models "a b"] [--epochs N] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("table", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="", help="space-separated names (default: every registered model)")
    parser.add_argument("--epochs", type=int, help="instead of each recipe's (a dry run)")
    parser.add_argument("--limit", type=int, help="training samples per model (a dry run)")
    args = parser.parse_args(argv)

    from ptx.export.api import export_model
    from ptx.models import get, list_models
    from ptx.trainers.data import load_dataset
    from ptx.trainers.loop import TrainConfig, train

    names = args.models.split() or list_models()
    rows, data_cache, failed = [], {}, 0
    started = time.perf_counter()
    for name in names:
        spec, out = get(name), args.runs / name
        row = {"model": name, "device": args.device}
        try:
            t0 = time.perf_counter()
            key = (spec.dataset, spec.labels)
            if key not in data_cache:
                data_cache[key] = load_dataset(spec.dataset, labels=spec.labels, picture=spec.contract(None).picture, explicit=False,
                                               notice=lambda _: None)
            config = TrainConfig(epochs=args.epochs or spec.recipe.epochs, batch_size=spec.recipe.batch_size,
                                 lr=spec.recipe.lr, device=args.device, limit=args.limit)
            metrics = train(spec, data_cache[key], config, out, force=True, log=lambda _: None)
            t1 = time.perf_counter()
            export_model(name, checkpoint=out / "checkpoint.pt", log=lambda _: None)
            t2 = time.perf_counter()
            epochs = json.loads((out / "metrics.json").read_text())["epochs"]
            metric = metrics.get("final_test_accuracy", metrics.get("final_test_mse"))
            row.update(epochs=len(epochs), metric=f"{metric:.4f}", epoch_s=f"{epochs[-1]['seconds']:.2f}",
                       train_s=f"{t1 - t0:.1f}", export_s=f"{t2 - t1:.1f}", status="ok")
        except Exception as exc:  # noqa: BLE001 - one model's failure is its row; the others still run
            failed += 1
            row.update(status=f"FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        rows.append(row)
        print(f"{name:<15} {row.get('train_s', '-'):>6} s train {row.get('export_s', '-'):>6} s export  {row['status']}",
              flush=True)
    cols = ("model", "device", "epochs", "metric", "epoch_s", "train_s", "export_s", "status")
    head = ("model", "device", "epochs", "final test metric", "s/epoch (last)", "train s", "export s", "status")
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in rows]
    lines.append(f"\n{len(rows) - failed} of {len(rows)} models trained and exported in one process, "
                 f"{time.perf_counter() - started:.0f} s")
    args.table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
