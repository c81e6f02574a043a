"""`ptx train`: one model with its tutorial's recipe (ptx.trainers.loop.train).
"""
from __future__ import annotations

import click

from ptx.cli.options import FORCE, POSITIVE, DeviceChoice
from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.errors import PtxError


def _train_epilog() -> str:
    from ptx.contract.datasets import DATASETS
    from ptx.tutorials import legend

    datasets = "\n".join(f"  {name:<14} {text}" for name, text in DATASETS.items())
    return (f"\b\nDatasets (--dataset; default: the model's, see `ptx models`):\n{datasets}\n\n"
            f"\b\nRecipes come from the tutorial that documents each model (`ptx models`, column 'from tutorial'):\n"
            + legend(76))


def _refuse_a_misfit_before_torch(name: str, dataset: str) -> None:
    """The refusal of a dataset that is unknown or of another kind than ``name`` takes, from the torch-free
    catalog: it came after `import torch` (2.5-5 s on 2 cores) for a one-line error. A model the catalog
    does not know is left to the registry, and train checks every pair again with the model's own spec."""
    from ptx.contract import catalog
    from ptx.contract.datasets import check_fit

    takes = catalog.takes(name)
    if takes is not None:
        check_fit(name, takes, dataset)


@click.command("train", epilog=_train_epilog())
@click.argument("name")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the tutorial's recipe; 3x that with --augment).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (default: the tutorial's recipe).")
@click.option("--lr", type=POSITIVE, help="Learning rate (default: the tutorial's recipe).")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Random seed for initial weights, shuffling and --augment (the tutorials use 42).")
@click.option("--dataset", help="A dataset name below, or folder:PATH (default: the model's).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), envvar="PTX_DATA_DIR",
              help="Folder with data files, looked at first: MNIST/Fashion-MNIST IDX files (flat or torchvision's "
                   "<root>/MNIST/raw), mnist_5k.csv.gz, diabetes.csv, the Debian word lists. Env: PTX_DATA_DIR.")
@click.option("--offline", is_flag=True,
              help="Never download: a dataset not on this machine is an error (or mnist-sample for a default "
                   "MNIST). Env: PTX_OFFLINE=1.")
@click.option("--device", type=DeviceChoice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="Where to train: auto is the GPU (cuda, then mps) when there is one, else the CPU.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default: runs/NAME).")
@click.option("--resume", is_flag=True, help="Continue the run in the run folder from its last completed epoch.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in the run folder; it is kept in RUN/previous/ (without --resume or "
                   "--overwrite, training over a run is refused).")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N training samples (smoke runs).")
@click.option("--skip-bad-rows", is_flag=True,
              help="Skip the rows of a data file that cannot be used (folder:PATH's labels.csv, diabetes.csv, "
                   "mnist_5k.csv.gz) and say how many, instead of refusing the file.")
@click.option("--bias", is_flag=True, help="linreg only: add a bias, as 003 lecture 5's LinearModel has.")
@click.option("--augment", is_flag=True,
              help="Picture models: train on randomly warped, thickened, blurred and noisy copies, for real photos and scans.")
@click.option("--augment-strength", type=POSITIVE,
              help="Scale every augmentation range (default 1.0, at most 3); implies --augment.")
@click.option("--no-capture", is_flag=True,
              help="On CUDA, run every training step eagerly instead of replaying it as a CUDA graph. "
                   "Env: PTX_TRAIN_CAPTURE=0.")
@FORCE
def train_cmd(name, epochs, batch_size, lr, seed, dataset, data_dir, offline, device, out, resume, overwrite, limit,
              skip_bad_rows, bias, augment, augment_strength, no_capture, force) -> None:
    """Train model NAME with the recipe of the tutorial that documents it, on real data; writes
    checkpoint.pt, metrics.json and curves.png into the run folder (default runs/NAME)."""
    from pathlib import Path

    if resume and overwrite:
        raise click.UsageError("--resume continues the run and --overwrite replaces it: give one of them")
    if dataset:
        _refuse_a_misfit_before_torch(name, dataset)

    from ptx.atomic import writable_dir_for
    from ptx.models import get
    from ptx.trainers.data import check_data_fits, load_dataset
    from ptx.trainers.checkpoint import guard_run_folder, load_checkpoint
    from ptx.trainers.loop import TrainConfig, train

    spec = get(name)
    out_dir = Path(out or Path(DEFAULT_RUNS_ROOT) / name)
    # Before minutes of data loading, and before a run folder is made: what is in the folder, whether
    # the model can learn from the data at all, and a folder dataset's labels.
    guard_run_folder(out_dir, name, force, resume=resume, overwrite=overwrite)
    previous = {}
    if resume:  # go on with the data and length the run started with, not today's defaults
        saved = load_checkpoint(out_dir / "checkpoint.pt", expected_model=name)
        dataset = dataset or saved["dataset"]["name"]
        previous = saved["config"] if isinstance(saved.get("config"), dict) else {}
        epochs = epochs or (previous.get("epochs") if isinstance(previous.get("epochs"), int) else None)
    check_data_fits(spec, dataset or spec.dataset)
    augmentation = None
    if augment or augment_strength is not None:
        from ptx.trainers.augment import DEFAULT_STRENGTH, EPOCHS_FACTOR, Augmentation

        if spec.contract(dataset).picture is None:
            raise PtxError(f"--augment varies pictures; {name} takes {spec.contract(dataset).kind.value} input")
        augmentation = Augmentation(strength=augment_strength or DEFAULT_STRENGTH).to_dict()
        if resume and previous.get("augment") != augmentation:
            click.echo("notice: --resume continues the run with its own augmentation settings; "
                       "--augment and --augment-strength apply to new runs")
    with writable_dir_for(out_dir):  # a failure from here on leaves no empty run folder behind
        data = load_dataset(dataset or spec.dataset, data_dir=data_dir, labels=spec.contract(dataset).labels,
                            picture=spec.contract(dataset).picture, explicit=dataset is not None,
                            download=False if offline else None, notice=click.echo, skip_bad_rows=skip_bad_rows)
        click.echo(f"data: {data.name} from {data.source}")
        if augmentation and epochs is None:
            # Varied copies take longer to learn from than the same pictures seen again.
            epochs = spec.recipe.epochs * EPOCHS_FACTOR
        config = TrainConfig(epochs=epochs or spec.recipe.epochs, batch_size=batch_size or spec.recipe.batch_size,
                             lr=lr or spec.recipe.lr, seed=seed, device=device, limit=limit,
                             model_args={"bias": True} if bias else None, augment=augmentation)
        metrics = train(spec, data, config, out_dir, resume=resume, overwrite=overwrite, force=force,
                        capture=not no_capture, log=click.echo)

    final = ", ".join(f"{k[len('final_'):].replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if k.startswith("final_"))
    click.echo(f"done: {final}; wrote {out_dir}/checkpoint.pt, metrics.json, curves.png")
