"""What a run folder holds, read from its side files alone (torch-free, so `ptx runs` and the ONNX
Runtime path can ask): a folder's name is only a name, the run says which model it is.

Training writes metrics.json beside checkpoint.pt after every epoch; it names the model (every ptx
since the first) and, since 2026-11-23, the dataset and the planned epochs. A folder without a
readable metrics.json is asked through its checkpoint by the caller (that needs torch).
"""
from __future__ import annotations

import json
from pathlib import Path

from ptx.errors import PtxError

from .names import ARTIFACT_FILES, CHECKPOINT_FILE, CHECKPOINT_FORMAT

METRICS_FILE = "metrics.json"  # written by ptx.trainers.loop beside the checkpoint
EXPORTED_FILES = tuple(f for fmt, f in ARTIFACT_FILES.items() if fmt != CHECKPOINT_FORMAT)


def read_metrics(run_dir: str | Path) -> dict | None:
    """The run's metrics.json as a dict, or None when there is none or it is not readable JSON."""
    try:
        doc = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def run_model(run_dir: str | Path) -> str | None:
    """The model the run in ``run_dir`` trained, as its metrics.json says; None when it does not say."""
    metrics = read_metrics(run_dir)
    model = metrics.get("model") if metrics else None
    return model if isinstance(model, str) and model else None


def is_run(path: Path) -> bool:
    """A folder ptx trained into (a checkpoint or metrics.json), whatever it is called."""
    return path.is_dir() and ((path / CHECKPOINT_FILE).is_file() or (path / METRICS_FILE).is_file())


def run_folders(root: str | Path) -> list[Path]:
    """The run folders directly under ``root``, by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((d for d in root.iterdir() if is_run(d)), key=lambda d: d.name)


def exported(run_dir: str | Path) -> list[str]:
    """The export files present in a run folder."""
    return [f for f in EXPORTED_FILES if (Path(run_dir) / f).is_file()]


def model_of_run(given: str | None, held: str | None, run_dir: str | Path, option: str = "--model") -> str:
    """The model to use for the run in ``run_dir``: the one it holds; ``given`` (NAME or --model) only
    when the run does not say, and refused when it contradicts the run."""
    if held is None:
        if given is None:
            raise PtxError(f"{run_dir} holds no readable ptx run (no metrics.json naming its model, no readable "
                           "checkpoint.pt): give --run the folder `ptx train NAME --out DIR` wrote")
        return given
    if given is not None and given != held:
        # load()'s name is an argument, not an option: its caller gives run=, not --run
        by = "--run" if option == "NAME" or option.startswith("--") else "run="
        raise PtxError(f"{run_dir} holds a run of {held}, not {given}: leave out {option} (the run says its model), "
                       f"or give {by} a folder that holds a {given} run (`ptx runs` lists them)")
    return held
