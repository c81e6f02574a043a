"""load(): model name or artifact file -> a Predictor for one backend of the registry."""
from __future__ import annotations

import os
from pathlib import Path

from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FORMAT, DEFAULT_RUNS_ROOT
from ptx.contract.names import FULL_PRECISION
from ptx.errors import ArtifactError, MissingArtifactError, PtxError
from ptx.export.formats import default_formats

from . import backends
from .predictor import Predictor

DEFAULT_BACKEND = "ort-cpu"
DEVICES = ("cpu", "cuda")
ARTIFACT_SUFFIXES = {Path(f).suffix for f in ARTIFACT_FILES.values()}  # .pt, .onnx, .pt2


def _suffix(file_name: str) -> str:
    """``model.torchscript.pt`` -> ``.torchscript.pt``; ``checkpoint.pt`` -> ``.pt``."""
    return file_name[file_name.index("."):]


def format_of_file(path: Path) -> str:
    """The artifact format a file name says (the longest matching suffix wins)."""
    matches = [(len(_suffix(f)), fmt) for fmt, f in ARTIFACT_FILES.items() if path.name.endswith(_suffix(f))]
    if not matches:
        known = ", ".join(sorted({_suffix(f) for f in ARTIFACT_FILES.values()}))
        raise ArtifactError(f"{path}: not a ptx artifact name (expected a file ending in {known})")
    return max(matches)[1]


def default_backend(fmt: str) -> str:
    """The first registered backend that reads ``fmt`` on the CPU."""
    return next(b.name for b, d in backends.pairs()
                if d == "cpu" and fmt in (b.artifact_for(p) for p in b.precision_names))


def artifact_path(model: str, backend: str, root: str | Path = DEFAULT_RUNS_ROOT,
                  precision: str = FULL_PRECISION) -> Path:
    """Where ``backend``'s artifact for ``model`` at ``precision`` lives, with the commands to make
    it if missing."""
    run_dir = Path(root) / model
    fmt = backends.get(backend).artifact_for(precision)
    file_name = ARTIFACT_FILES[fmt]
    path = run_dir / file_name
    if not path.is_file():
        checkpoint = run_dir / ARTIFACT_FILES[CHECKPOINT_FORMAT]
        # Formats that `ptx export` writes only on request (pt2, onnx-int8) must be named in the command.
        export = f"`ptx export {model}`" if fmt in default_formats() else f"`ptx export {model} --format {fmt}`"
        if file_name == checkpoint.name or not checkpoint.is_file():
            todo = f"`ptx train {model}`" + ("" if file_name == checkpoint.name else f" then {export}")
        else:
            todo = export
        raise MissingArtifactError(f"no {file_name} for {model} in {run_dir}: run {todo} first")
    return path


def open_artifact(path: str | Path, backend: str, device: str = "cpu", precision: str = FULL_PRECISION) -> Predictor:
    """A Predictor for the artifact file at ``path`` through ``backend`` (export validates through
    this, so a file is checked by the very code that will serve it)."""
    chosen = backends.get(backend)
    if device not in DEVICES:
        raise PtxError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    chosen.artifact_for(precision)  # a precision the backend does not run is one clear error
    if device not in chosen.devices:
        device = chosen.devices[0]
    extra = {} if precision == FULL_PRECISION else {"precision": precision}
    return chosen.load(Path(path), device, **extra)


def open_model(model: str, backend: str, root: str | Path = DEFAULT_RUNS_ROOT, device: str = "cpu",
               precision: str = FULL_PRECISION) -> Predictor:
    """``model``'s artifact for ``backend`` at ``precision`` under ``root``, refused when it belongs
    to another model (an export written into the wrong run folder)."""
    predictor = open_artifact(artifact_path(model, backend, root, precision), backend, device, precision)
    if predictor.contract.model != model:
        raise ArtifactError(f"{predictor.path} holds {predictor.contract.model}'s model, not {model}'s: "
                            f"re-run `ptx export {model}`")
    return predictor


def load(model_or_path: str | os.PathLike, backend: str | None = None, *, root: str | Path = DEFAULT_RUNS_ROOT,
         device: str = "cpu", precision: str | None = None) -> Predictor:
    """A Predictor for a registered model's artifacts under ``root``, or for an artifact file alone.

    ``backend`` is a name from ``ptx.infer.backends`` (default: ort-cpu for a model name, the file's
    own kind for a path). ``device`` (cpu/cuda) applies to backends that run on several.
    ``precision`` (f32, bf16, int8) is one the backend runs: int8 reads model.int8.onnx (from
    ``ptx export NAME --format onnx-int8``); default f32, or the file's own for a path.
    """
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise PtxError(f"load() takes a model name or an artifact path, not {type(model_or_path).__name__}")
    if backend is not None:
        backends.get(backend)  # an unknown name is one clear error before any file is touched
    candidate = Path(model_or_path)
    if candidate.suffix in ARTIFACT_SUFFIXES or candidate.is_file():
        if not candidate.is_file():
            raise ArtifactError(f"{candidate}: no such file")
        fmt = format_of_file(candidate)
        backend = backend or default_backend(fmt)
        chosen = backends.get(backend)
        if precision is None:  # the file's own: the precision whose artifact it is
            precision = next((p for p in chosen.precision_names if chosen.artifact_for(p) == fmt), FULL_PRECISION)
        if chosen.artifact_for(precision) != fmt:
            at = "" if precision == FULL_PRECISION else f" at {precision}"
            raise PtxError(f"{candidate} is a {fmt} artifact; backend {backend}{at} reads {chosen.artifact_for(precision)}")
        return open_artifact(candidate, backend, device, precision)
    # No registry lookup here: ptx.models imports torch, and the ORT path must not.
    return open_model(str(model_or_path), backend or DEFAULT_BACKEND, root, device, precision or FULL_PRECISION)
