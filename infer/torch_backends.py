"""eager and torchscript backends: these import torch (the ORT backends never do)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from ptx.errors import ArtifactError, BackendUnavailableError

from .predictor import Predictor


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda: torch sees no CUDA GPU here; use --device cpu")
    return torch.device(name)


class _TorchPredictor(Predictor):
    def __init__(self, module, meta: dict, device: str):
        super().__init__(meta)
        self.device = _device(device)
        self.module = module.to(self.device).eval()
        # One forward at a time per module: torch modules make no thread-safety promise.
        self._lock = threading.Lock()

    def predict_array(self, x) -> np.ndarray:
        tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=self.meta["dtype"]))
        with self._lock, torch.inference_mode():
            out = self.module(tensor.to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return out.cpu().numpy()


class EagerPredictor(_TorchPredictor):
    backend = "eager"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", expected_model: str | None = None):
        from ptx.export.metadata import artifact_metadata
        from ptx.trainers.checkpoint import build_model_from_checkpoint, file_sha256, load_checkpoint

        ckpt = load_checkpoint(checkpoint, expected_model=expected_model)
        _, model = build_model_from_checkpoint(ckpt)
        super().__init__(model, artifact_metadata(ckpt, file_sha256(checkpoint)), device)


class TorchScriptPredictor(_TorchPredictor):
    backend = "torchscript"

    def __init__(self, path: str | Path, device: str = "cpu"):
        from ptx.export import torchscript

        try:
            module, meta = torchscript.load(path, device="cpu")
        except Exception as exc:
            raise ArtifactError(f"{path}: not a loadable TorchScript file ({str(exc).splitlines()[0][:160]}); "
                                "re-export with `ptx export`") from None
        if "model" not in meta:
            raise ArtifactError(f"{path}: not a ptx export (no ptx.json inside); export it with `ptx export NAME`")
        super().__init__(module, meta, device)
