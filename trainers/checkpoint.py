"""Self-describing checkpoints: plain dicts of tensors and JSON-able values.

They load with ``torch.load(weights_only=True)``, so a hostile file can never run code.
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from ptx import __version__
from ptx.contract import CHECKPOINT_FILE, Contract, ContractError
from ptx.contract.names import BENCH_RECORD_FILE, VERIFY_RECORD_FILE
from ptx.contract.runs import EXPORTED_FILES, METRICS_FILE, run_model
from ptx.errors import CheckpointError, UnknownModelError

FORMAT = "ptx-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict:
    import numpy

    # str(): torch's TorchVersion is a class weights_only loading refuses to unpickle.
    return {"ptx": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__}


def checkpoint_bytes(payload: dict) -> bytes:
    """The checkpoint file's bytes. Serialised in memory: torch.save reports a full disk as
    "basic_ios::clear: iostream error"; Python's own write raises ENOSPC, which atomic_path turns
    into one clear line."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, buffer)
    return buffer.getvalue()


def load_checkpoint(path: str | Path, expected_model: str | None = None) -> dict:
    path = Path(path)
    retrain = f"run `ptx train {expected_model}`" if expected_model else "train a model with `ptx train NAME`"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: {retrain} first")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal below says enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable ptx checkpoint ({_load_failure(exc)}); {retrain}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ptx checkpoint (a state_dict or another torch.save file); {retrain}, "
                              "or, for your own model's weights, `ptx export --module FILE.py:FACTORY --checkpoint "
                              f"{path}`")
    if expected_model and ckpt.get("model") != expected_model:
        raise CheckpointError(f"{path} holds a checkpoint of {ckpt.get('model')!r}, not {expected_model!r}; "
                              f"pass the right --checkpoint or {retrain}")
    ckpt["contract"] = _checked_contract(ckpt, path, retrain)
    _refuse_mismatched_data(ckpt, path)
    samples = ckpt.get("samples")
    if not isinstance(samples, dict) or not all(isinstance(samples.get(k), torch.Tensor) for k in ("x", "y")) \
            or len(samples["x"]) == 0:
        raise CheckpointError(f"{path} holds no validation samples (damaged, or made by an older ptx); {retrain}")
    return ckpt


def _load_failure(exc: Exception) -> str:
    """The reason torch.load gives, whole: weights_only refusals bury it after a paragraph of advice
    ("WeightsUnpickler error: Unsupported global: GLOBAL posix.system ...")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    marker = next((i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln), None)
    if marker is not None:
        after = lines[marker].split("WeightsUnpickler error:", 1)[-1].strip()
        detail = after or (lines[marker + 1] if marker + 1 < len(lines) else "")
        return f"refused by the safe loader: {detail}" if detail else "refused by the safe loader"
    return lines[0] if lines else type(exc).__name__


CURVES_FILE = "curves.png"
PREVIOUS_RUN_DIR = "previous"  # where --overwrite keeps the run it replaces
# The files a run folder holds: what training writes, then what export writes from its checkpoint.
RUN_FILES = (CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE, *EXPORTED_FILES, VERIFY_RECORD_FILE, BENCH_RECORD_FILE)


def _read_run(path: Path) -> dict | None:
    """The ptx checkpoint at ``path``, or None when there is none or it is not a readable ptx
    checkpoint (nothing worth keeping)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # any unreadable file: not a run to protect
        return None
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT and isinstance(ckpt.get("model"), str):
        return ckpt
    return None


def checkpoint_owner(path: str | Path) -> str | None:
    """The model a ptx checkpoint at ``path`` belongs to; None when there is none (or it is not
    a readable ptx checkpoint: nothing worth keeping)."""
    ckpt = _read_run(Path(path))
    return ckpt["model"] if ckpt else None


def run_owner(run_dir: str | Path) -> str | None:
    """The model the run in ``run_dir`` holds: its metrics.json says (no torch needed), else its
    checkpoint (a run whose metrics.json was lost)."""
    return run_model(run_dir) or checkpoint_owner(Path(run_dir) / CHECKPOINT_FILE)


def describe_run(ckpt: dict, path: Path) -> str:
    """One phrase for a run a user might lose: '20 of 20 epochs, test accuracy 0.9740, 2026-11-21 10:02'."""
    import datetime

    parts = []
    epoch, planned = ckpt.get("epoch"), (ckpt.get("config") or {}).get("epochs")
    if isinstance(epoch, int):
        parts.append(f"{epoch} of {planned} epochs" if isinstance(planned, int) and planned != epoch
                     else f"{epoch} epoch{'s' * (epoch != 1)}")
    metrics = ckpt.get("metrics") if isinstance(ckpt.get("metrics"), dict) else {}
    for key, name in (("final_test_accuracy", "test accuracy"), ("final_test_mse", "test MSE")):
        if isinstance(metrics.get(key), (int, float)):
            parts.append(f"{name} {metrics[key]:.4f}")
    parts.append(datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M"))
    return ", ".join(parts)


def guard_run_folder(out_dir: str | Path, model: str, force: bool = False, *, resume: bool = False,
                     overwrite: bool = False) -> None:
    """Refuse to train ``model`` into a folder that holds another model's run (unless ``force``),
    or over a run of the same model unless the user said what to do with it: continue it
    (``resume``) or replace it (``overwrite``, which keeps it in previous/)."""
    path = Path(out_dir) / CHECKPOINT_FILE
    ckpt = _read_run(path)
    owner = ckpt["model"] if ckpt else None
    if owner not in (None, model) and not force:
        raise CheckpointError(f"{out_dir} holds a run of {owner}, not {model}: pass another --out folder, "
                              "or --force to replace it")
    if owner == model and not (resume or overwrite):
        raise CheckpointError(f"{out_dir} already holds a run of {model} ({describe_run(ckpt, path)}): continue it with "
                              f"--resume, train into another folder with --out DIR, or replace it with --overwrite "
                              f"(the old run is kept in {Path(out_dir) / PREVIOUS_RUN_DIR})")


def set_aside_run(out_dir: str | Path) -> list[str]:
    """Move a run's files into ``out_dir``/previous/ (replacing what an earlier --overwrite left
    there), so a replaced run is kept and no export of it stays beside the new checkpoint.
    Returns the names moved."""
    import shutil

    out_dir = Path(out_dir)
    present = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if not present:
        return []
    previous = out_dir / PREVIOUS_RUN_DIR
    if previous.is_dir():
        shutil.rmtree(previous)
    previous.mkdir()
    for name in present:
        os.replace(out_dir / name, previous / name)
    return present


def stale_exports(out_dir: str | Path) -> list[str]:
    """The exported files in a run folder: after training changed its checkpoint, every one of
    them was made from an older checkpoint."""
    return [name for name in EXPORTED_FILES if (Path(out_dir) / name).is_file()]


def _refuse_mismatched_data(ckpt: dict, path: Path) -> None:
    """A run of a model on data of another kind (an older ptx trained gru-classifier on hours and
    said "done") is refused by export, predict and --resume alike, instead of being passed on."""
    from ptx.contract.datasets import recorded_mismatch
    from ptx.models import get

    model, dataset = ckpt["model"], ckpt.get("dataset")
    problem = recorded_mismatch(model, get(model).takes, dataset.get("name") if isinstance(dataset, dict) else None)
    if problem:
        raise CheckpointError(f"{path}: {problem}")


def _checked_contract(ckpt: dict, path: Path, retrain: str) -> Contract:
    """The contract saved at training time (what the weights learned with), validated, and
    consistent with the model the registry builds."""
    from ptx.models import get

    name = ckpt.get("model")
    try:
        spec = get(name) if isinstance(name, str) else None
    except UnknownModelError:
        spec = None
    if spec is None:
        raise CheckpointError(f"{path} is a checkpoint of {name!r}, which this ptx does not know (see `ptx models`)")
    try:
        contract = Contract.from_dict(ckpt.get("contract"))
    except ContractError as exc:
        raise CheckpointError(f"{path}: {exc} (damaged, or made by an older ptx); {retrain}") from None
    built = spec.contract()
    for field_name in ("model", "task", "kind"):
        if getattr(contract, field_name) != getattr(built, field_name):
            raise CheckpointError(f"{path}: contract field {field_name} is {getattr(contract, field_name)!r}, but "
                                  f"{spec.name} has {getattr(built, field_name)!r}; {retrain}")
    for field_name in ("input", "output"):
        if getattr(contract, field_name).shape != getattr(built, field_name).shape:
            raise CheckpointError(f"{path}: contract field {field_name}.shape {list(getattr(contract, field_name).shape)} "
                                  f"does not fit {spec.name} ({list(getattr(built, field_name).shape)}); {retrain}")
    return contract


def build_model_from_checkpoint(ckpt: dict):
    """nanoGPT's sample.py way: rebuild from the spec and the saved model args, then load weights."""
    from ptx.models import get

    spec = get(ckpt["model"])
    model_args = ckpt.get("model_args", {})
    unknown = sorted(set(model_args) - set(spec.model_args)) if isinstance(model_args, dict) else ["(not a dict)"]
    if unknown:
        raise CheckpointError(f"checkpoint model_args {', '.join(map(str, unknown))} are not options of {spec.name}; "
                              f"retrain with `ptx train {spec.name}`")
    model = spec.build(**model_args)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint weights do not fit {spec.name}: {str(exc).splitlines()[0]}; "
                              f"retrain with `ptx train {spec.name}`") from None
    return spec, model.eval()
