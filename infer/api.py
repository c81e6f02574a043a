"""load(): model name or artifact file -> a Predictor for one backend."""
from __future__ import annotations

from pathlib import Path

from ptx.errors import ArtifactError, PtxError

from .predictor import Predictor

BACKENDS = ("eager", "torchscript", "ort-cpu", "ort-cuda")
ARTIFACTS = {"eager": "checkpoint.pt", "torchscript": "model.torchscript.pt", "ort-cpu": "model.onnx",
             "ort-cuda": "model.onnx"}


def backend_for_file(path: Path) -> str:
    if path.suffix == ".onnx":
        return "ort-cpu"
    if path.name.endswith(".torchscript.pt"):
        return "torchscript"
    return "eager"


def artifact_path(model: str, backend: str, root: str | Path = "runs") -> Path:
    """Where ``backend``'s artifact for ``model`` lives, with the commands to make it if missing."""
    run_dir = Path(root) / model
    path = run_dir / ARTIFACTS[backend]
    if not path.is_file():
        if backend == "eager" or not (run_dir / "checkpoint.pt").is_file():
            todo = f"`ptx train {model}`" + ("" if backend == "eager" else f" then `ptx export {model}`")
        else:
            todo = f"`ptx export {model}`"
        raise ArtifactError(f"no {ARTIFACTS[backend]} for {model} in {run_dir}: run {todo} first")
    return path


def load(model_or_path: str | Path, backend: str | None = None, *, root: str | Path = "runs",
         device: str = "cpu") -> Predictor:
    """A Predictor for a registered model's artifacts under ``root``, or for an artifact file alone.

    ``backend`` is eager, torchscript, ort-cpu or ort-cuda (default: ort-cpu for a model name, the
    file's own kind for a path). ``device`` (cpu/cuda) applies to eager and torchscript.
    """
    if backend is not None and backend not in BACKENDS:
        raise PtxError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    candidate = Path(model_or_path)
    if candidate.suffix in (".onnx", ".pt") or candidate.is_file():
        path = candidate
        if not path.is_file():
            raise ArtifactError(f"{path}: no such file")
        kind = backend_for_file(path)
        backend = backend or kind
        if kind != ("ort-cpu" if backend.startswith("ort-") else backend):
            raise PtxError(f"{path} is a {kind} artifact; it cannot run on backend {backend}")
    else:
        backend = backend or "ort-cpu"
        path = artifact_path(str(model_or_path), backend, root)
    if backend.startswith("ort-"):
        from .ort_backend import OrtPredictor

        return OrtPredictor(path, device="cuda" if backend == "ort-cuda" else "cpu")
    if backend == "torchscript":
        from .torch_backends import TorchScriptPredictor

        return TorchScriptPredictor(path, device=device)
    from .torch_backends import EagerPredictor

    return EagerPredictor(path, device=device)
