"""curves.png: loss and test metric per epoch."""
from __future__ import annotations

from pathlib import Path

from ptx.atomic import atomic_path


def write_curves(path: Path, metrics: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or CI
    import matplotlib.pyplot as plt

    rows = metrics["epochs"]
    epochs = [r["epoch"] for r in rows]
    metric = "test_accuracy" if "test_accuracy" in rows[0] else "test_mse"
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r["loss"] for r in rows], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title=f"{metrics['model']}: loss")
    ax_metric.plot(epochs, [r[metric] for r in rows], marker="o", color="tab:green")
    ax_metric.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=f"{metrics['model']}: {metric.replace('_', ' ')}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
