"""Self-describing checkpoints: plain dicts of tensors and JSON-able values.

They load with ``torch.load(weights_only=True)``, so a hostile file can never run code.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch

from ptx import __version__
from ptx.atomic import atomic_path
from ptx.errors import CheckpointError

FORMAT = "ptx-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict:
    import numpy

    # str(): torch's TorchVersion is a class weights_only loading refuses to unpickle.
    return {"ptx": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__}


def save_checkpoint(path: str | Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)


def load_checkpoint(path: str | Path, expected_model: str | None = None) -> dict:
    path = Path(path)
    retrain = f"run `ptx train {expected_model}`" if expected_model else "train a model with `ptx train NAME`"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: {retrain} first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # weights_only refusals bury the reason ("Unsupported global ...") mid-message.
        reason = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"{path} is not a readable ptx checkpoint ({reason[:160]}); {retrain}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ptx checkpoint (foreign file); {retrain}")
    if expected_model and ckpt.get("model") != expected_model:
        raise CheckpointError(f"{path} holds a checkpoint of {ckpt.get('model')!r}, not {expected_model!r}; "
                              f"pass the right --checkpoint or {retrain}")
    from ptx.models import get

    # The contract saved at training time wins (it is what the weights learned with); keys that
    # newer ptx versions added come from the current spec, so older checkpoints still export.
    ckpt["contract"] = {**get(ckpt["model"]).contract(), **ckpt.get("contract", {})}
    return ckpt


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_model_from_checkpoint(ckpt: dict):
    """nanoGPT's sample.py way: rebuild from the spec and the saved model args, then load weights."""
    from ptx.models import get

    spec = get(ckpt["model"])
    model = spec.build(**ckpt.get("model_args", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint weights do not fit {spec.name}: {str(exc).splitlines()[0]}; "
                              f"retrain with `ptx train {spec.name}`") from None
    return spec, model.eval()
