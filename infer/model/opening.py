"""load(): model name, run folder, model file or nn.Module -> a Model for one backend of the registry."""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FILE, CHECKPOINT_FORMAT, DEFAULT_RUNS_ROOT
from ptx.contract.catalog import unknown_model
from ptx.contract.names import FULL_PRECISION, PRECISION_DEVICES
from ptx.contract.runs import run_folders, run_model
from ptx.contract.tensors import TensorSig, as_declarations
from ptx.errors import (ArtifactError, BackendUnavailableError, MissingArtifactError, NotPtxArtifactError, PtxError,
                        StaleArtifactWarning, UnknownModelError, UnusablePrecisionWarning)
from ptx.files import file_sha256

from ..runtime import backends
from .model import Model

DEFAULT_BACKEND = "ort-cpu"
# A user's own file: the backend that opens it by default, and how a one-line error calls it.
DEFAULT_FILE_BACKEND = {"onnx": "ort-cpu", "torchscript": "torchscript", "pt2": "aoti"}
KIND_NAMES = {"onnx": "an ONNX file", "torchscript": "a TorchScript file", "pt2": "a pt2 package"}
DEVICES = ("cpu", "cuda")
ARTIFACT_SUFFIXES = {Path(f).suffix for f in ARTIFACT_FILES.values()}  # .pt, .onnx, .pt2


def default_backend(fmt: str) -> str:
    """The first registered backend that reads ``fmt`` on the CPU."""
    return next(b.name for b, d in backends.pairs()
                if d == "cpu" and fmt in (b.artifact_for(p) for p in b.precision_names))


def run_folder(model: str, root: str | Path = DEFAULT_RUNS_ROOT, run: str | Path | None = None) -> Path:
    """A model's run folder: ``run`` when given (``ptx train --out DIR`` wrote it), else ROOT/NAME."""
    return Path(run) if run is not None else Path(root) / model


def run_option(model: str, run_dir: Path) -> str:
    """`` --run RUN_DIR`` for a command printed for the user to type, unless it is the default
    folder (runs/MODEL), so the command finds the run from wherever it is typed."""
    return "" if Path(run_dir) == Path(DEFAULT_RUNS_ROOT) / model else f" --run {run_dir}"


def _out(run: str | Path | None) -> str:
    return "" if run is None else f" --out {run}"


def export_command(model: str, fmt: str | None = None, run: str | Path | None = None) -> str:
    """The export command that writes ``fmt`` for ``model`` (into the run folder ``run``)."""
    # Formats that `ptx export` writes only on request (pt2, onnx-int8) must be named in the command.
    # Imported here, off `ptx predict`'s start-up path (the format registry imports every format's file).
    from ptx.export.formats import default_formats

    named = "" if fmt is None or fmt in default_formats() else f" --format {fmt}"
    return f"ptx export {model}{named}" + ("" if run is None else f" --run {run}")


def _no_run_folder(model: str, root: str | Path, run: str | Path | None, run_dir: Path) -> str:
    """Where ptx looked for a run that is not there, and how to point it elsewhere."""
    if run is not None:
        return f"no run folder {run_dir}: give --run (library: run=) the folder `ptx train {model} --out DIR` wrote"
    root = Path(root)
    where = f"{run_dir.resolve()} (--root {root} in {Path.cwd()})" if not root.is_absolute() else str(run_dir)
    held = {d.name: run_model(d) for d in run_folders(root)}
    of_model = [name for name, owner in held.items() if owner == model]
    if of_model:  # found by what it holds: the folder is only a name
        return (f"no run of {model} at {where}, but {', '.join(str(root / n) for n in of_model)} holds one: give "
                f"--run {root / of_model[0]} (library: run=)")
    there = [name if owner in (None, name) else f"{name} ({owner})" for name, owner in held.items()]
    holds = f"; {root} holds runs of {', '.join(there)}" if there else ""
    return (f"no run of {model} at {where}{holds}: run `ptx train {model}` then `ptx export {model}` here, or point "
            f"--root (library: root=) at the folder that holds {model}/, or --run (run=) at the run folder itself")


def require_run(model: str, root: str | Path = DEFAULT_RUNS_ROOT, run: str | Path | None = None) -> Path:
    """``model``'s run folder, or one error before any backend is tried (so a mistyped name is one
    reason, not one per backend): the registry's "did you mean" for a name no registered model has,
    else a MissingArtifactError saying where ptx looked. A model registered by the user (not in the
    catalog) is served from its run folder like any other."""
    run_dir = run_folder(model, root, run)
    if not run_dir.is_dir():
        unknown = unknown_model(model)
        if unknown:
            raise UnknownModelError(unknown)
        raise MissingArtifactError(_no_run_folder(model, root, run, run_dir))
    return run_dir


def artifact_path(model: str, backend: str, root: str | Path = DEFAULT_RUNS_ROOT,
                  precision: str = FULL_PRECISION, run: str | Path | None = None) -> Path:
    """Where ``backend``'s artifact for ``model`` at ``precision`` lives, with the commands to make
    it if missing."""
    run_dir = run_folder(model, root, run)
    fmt = backends.get(backend).artifact_for(precision)
    file_name = ARTIFACT_FILES[fmt]
    path = run_dir / file_name
    if not path.is_file():
        require_run(model, root, run)
        checkpoint = run_dir / ARTIFACT_FILES[CHECKPOINT_FORMAT]
        export = f"`{export_command(model, fmt, run)}`"
        if file_name == checkpoint.name or not checkpoint.is_file():
            todo = f"`ptx train {model}{_out(run)}`" + ("" if file_name == checkpoint.name else f" then {export}")
        else:
            todo = export
        raise MissingArtifactError(f"no {file_name} for {model} in {run_dir}: run {todo} first")
    return path


def one_of(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``: alternatives in a one-line error."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_device(backend: str, device: str | None) -> str:
    """The device ``backend`` runs on: ``device`` when given (it must be one the backend runs on:
    `--device cuda` on ort-cpu is refused, never ignored), else the backend's own first one."""
    chosen = backends.get(backend)
    if device is None:
        return chosen.devices[0]
    kind, _, index = device.partition(":")  # cuda:N picks the GPU
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise PtxError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")
    if kind in chosen.devices:
        return device
    there = [b for b, on in backends.pairs() if on == kind]
    several = [b.name for b in there if len(b.devices) > 1]
    only = [b.name for b in there if b.devices == (kind,)]
    hint = f"--device {device} goes with {', '.join(several)}" if several else f"no backend runs on {device}"
    hint += f", or use --backend {one_of(only)}" if only else ""
    raise PtxError(f"backend {backend} runs on {', '.join(chosen.devices)} only, not {device}: {hint}")


def open_artifact(path: str | Path, backend: str, device: str | None = None,
                  precision: str = FULL_PRECISION) -> Model:
    """A Model for the artifact file at ``path`` through ``backend`` on ``device`` (default: the
    backend's own; export validates through this, so a file is checked by the very code that will
    serve it)."""
    chosen = backends.get(backend)
    device = check_device(backend, device)
    chosen.artifact_for(precision)  # a precision the backend does not run is one clear error
    if precision not in chosen.precisions_on(device):
        raise PtxError(f"backend {backend} runs {', '.join(chosen.precisions_on(device))} on {device}, not {precision}"
                       f" ({precision} needs {PRECISION_DEVICES.get(precision, device)})")
    extra = {} if precision == FULL_PRECISION else {"precision": precision}
    predictor = chosen.load(Path(path), device, **extra)
    if precision != FULL_PRECISION:
        predictor.unusable = unusable_reason(predictor, chosen.label(device, precision))
    return predictor


def unusable_reason(predictor: Model, label: str) -> str | None:
    """Why ``predictor``'s reduced precision should not be used here: this machine's verify record
    (or export's judgement) for its file says NOT USABLE or FAIL. None otherwise, or with no record."""
    from .records import failed_here

    status = failed_here(predictor.path.parent, label, predictor.path) if predictor.path is not None else None
    if status is None:
        return None
    model = predictor.contract.model
    return (f"{label} is {status} for {model} on this machine (as `ptx verify`/`ptx export` judged "
            f"{predictor.path.name} here): use f32, or see `ptx verify {model} --backends {label}`")


def open_model(model: str, backend: str, root: str | Path = DEFAULT_RUNS_ROOT, device: str | None = None,
               precision: str = FULL_PRECISION, run: str | Path | None = None) -> Model:
    """``model``'s artifact for ``backend`` at ``precision`` in its run folder (ROOT/NAME, or
    ``run``), refused when it belongs to another model (an export written into the wrong run
    folder). ``predictor.stale`` says so when it was exported from another checkpoint than the
    run's own."""
    predictor = open_artifact(artifact_path(model, backend, root, precision, run), backend, device, precision)
    if predictor.contract.model != model:
        raise ArtifactError(f"{predictor.path} holds {predictor.contract.model}'s model, not {model}'s: "
                            f"re-run `ptx export {model}`")
    predictor.stale = stale_reason(predictor, run_folder(model, root, run))
    return predictor


def stale_reason(predictor: Model, run_dir: Path) -> str | None:
    """Why ``predictor``'s artifact does not hold the run's current weights (it was exported from
    another checkpoint than ``run_dir``/checkpoint.pt: the run was trained again since), or None."""
    checkpoint = run_dir / CHECKPOINT_FILE
    recorded = predictor.info.get("checkpoint_sha256")
    if not recorded or not checkpoint.is_file() or predictor.path is None \
            or predictor.path.resolve() == checkpoint.resolve():
        return None
    if file_sha256(checkpoint) == recorded:
        return None
    return (f"{predictor.path} was exported from another checkpoint than {checkpoint} (the run was trained again "
            f"since): re-run `ptx export {predictor.contract.model}` to serve the run's current weights")


def load(model_or_path, backend: str | None = None, *, root: str | Path = DEFAULT_RUNS_ROOT,
         device: str | None = None, precision: str | None = None, run: str | Path | None = None,
         inputs=None, batch_axes: dict | None = None, ignore_metadata: bool = False, probe: bool = True):
    """A Model for a registered model's artifacts in its run folder (``root``/NAME, or ``run``:
    the folder ``ptx train --out`` wrote), or for a model file alone: a tutorial model's export, or
    your own model (an ONNX file, a TorchScript file, a pt2 package, or a live ``nn.Module``).

    Every predictor answers ``run({input name: array}) -> {output name: array}``. Your own model's
    contract is its tensors: an ONNX file describes them itself; a TorchScript or pt2 file does not,
    so ``inputs`` declares them in forward()'s order (``["x=batchx3x224x224:float32", ...]`` or
    TensorSigs), as does an ``nn.Module``'s. ``batch_axes`` ({input name: axis or None}) overrides
    where ptx reads each input's batch. ``ignore_metadata`` runs a file as your own model even where
    it carries ptx metadata (refused when those were written for other weights). ``probe`` opens a
    file ptx did not write in a child process first, so that a runtime crash on it is one error.

    An artifact exported from another checkpoint than its run's is served, with a
    ``StaleArtifactWarning`` and the reason in ``predictor.stale``.

    ``backend`` is a name from ``ptx.infer.runtime.backends`` (default: ort-cpu for a model name, the file's
    own kind for a path). ``device`` (cpu/cuda; default: the backend's own, cpu where it runs on
    several) must be one the backend runs on: ``device="cuda"`` with ort-cpu is an error naming the
    backends that take it.
    ``precision`` (f32, bf16, int8) is one the backend runs: int8 reads model.int8.onnx (from
    ``ptx export NAME --format onnx-int8``); default f32, or the file's own for a path.
    """
    if is_module(model_or_path):
        return open_module(model_or_path, inputs, device)
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise PtxError(f"load() takes a model name, a model file's path or an nn.Module, not "
                       f"{type(model_or_path).__name__}")
    candidate = Path(model_or_path)
    if candidate.suffix in ARTIFACT_SUFFIXES or candidate.is_file():
        from ..formats.model_files import PT2, is_torch_save, read_model_file

        if candidate.is_file() and is_torch_save(candidate):  # a checkpoint: eager rebuilds its model
            return _load_artifact(candidate, CHECKPOINT_FORMAT, backend, device, precision)
        found = read_model_file(candidate)  # no such file, a folder, not a model: one line
        own = dict(backend=backend, device=device, precision=precision, inputs=inputs, batch_axes=batch_axes,
                   ignore_metadata=ignore_metadata, probe=probe)
        if ignore_metadata or inputs or batch_axes or (not found.has_contract and found.kind != PT2):
            return open_own_model(candidate, **own)
        try:
            return _load_artifact(candidate, _format_of(found), backend, device, precision)
        except NotPtxArtifactError:  # a pt2 package is read by loading it: one without ptx's contract is the user's
            return open_own_model(candidate, **own)
    if backend is not None:
        backends.get(backend)  # an unknown name is one clear error before any file is touched
    # The catalog, not the registry, answers a mistyped name: ptx.models imports torch, and the ORT path must not.
    check_device(backend or DEFAULT_BACKEND, device)  # before any file is looked for
    predictor = open_model(str(model_or_path), backend or DEFAULT_BACKEND, root, device, precision or FULL_PRECISION,
                           run)
    if predictor.stale:
        warnings.warn(predictor.stale, StaleArtifactWarning, stacklevel=2)
    return _warned(predictor)


def _format_of(found) -> str:
    """The artifact format of a tutorial model's file, from its content (its name may be any)."""
    if found.kind == "onnx":
        return "onnx-int8" if found.metadata.get("precision") == "int8" else "onnx"
    return found.kind


def _load_artifact(candidate: Path, fmt: str, backend: str | None, device: str | None, precision: str | None):
    """A tutorial model's artifact file through ``backend`` (default: the first that reads ``fmt``)."""
    if backend is not None:
        backends.get(backend)  # an unknown name is one clear error
    backend = backend or default_backend(fmt)
    chosen = backends.get(backend)
    if precision is None:  # the file's own: the precision whose artifact it is
        precision = next((p for p in chosen.precision_names if chosen.artifact_for(p) == fmt), FULL_PRECISION)
    if chosen.artifact_for(precision) != fmt:
        at = "" if precision == FULL_PRECISION else f" at {precision}"
        raise PtxError(f"{candidate} is a {fmt} artifact; backend {backend}{at} reads {chosen.artifact_for(precision)}")
    return _warned(open_artifact(candidate, backend, device, precision))


def _warned(predictor: Model) -> Model:
    if predictor.unusable:
        warnings.warn(predictor.unusable, UnusablePrecisionWarning, stacklevel=3)
    return predictor


# -- a user's own model: a file ptx did not write (or wrote from a user's module), or a live nn.Module --


def resolve_backend(kind: str, backend: str | None, device: str | None) -> tuple[object, str]:
    """(Backend, device) for ``backend`` (a name or a label such as ort-cuda / torchscript-cuda) on
    a file of ``kind``; one line naming the ones that fit otherwise."""
    name = backend or DEFAULT_FILE_BACKEND[kind]
    fitting = backends.file_pairs(kind)
    for b, d in fitting:
        if name == b.label(d) or (name == b.name and (device is None or d == device.split(":")[0])):
            return b, (device if device and device.split(":")[0] == d else d)
    offered = ", ".join(dict.fromkeys(b.label(d) for b, d in fitting))
    raise PtxError(f"backend {name}{'' if device is None else f' on {device}'} does not run {KIND_NAMES[kind]}; "
                   f"these do: {offered}")


def open_own_model(path: str | Path, backend: str | None = None, *, device: str | None = None,
                   precision: str | None = None, inputs: Sequence[TensorSig | str] | None = None,
                   batch_axes: Mapping[str, int | None] | None = None, ignore_metadata: bool = False,
                   probe: bool = True) -> Model:
    """A Model (a runner without a head) for the model file at ``path`` through ``backend`` (default: the file's own
    runtime on the CPU). ``inputs`` declares what a TorchScript or pt2 file takes; ``batch_axes``
    ({name: axis or None}) overrides where ptx reads each input's batch. A file ptx did not write is
    first opened in a child process (``probe``): ONNX Runtime, OpenVINO and torch's loaders have
    crashed on malformed graphs, and a crash there is one line, never the end of ptx."""
    from ..formats.model_files import read_model_file

    path = Path(path)
    found = read_model_file(path)
    chosen, device = resolve_backend(found.kind, backend, device)
    why = chosen.unavailable(device)
    if why:  # said as the backend's row says it (a CUDA row on a machine without a GPU), before any loader
        raise BackendUnavailableError(f"{chosen.label(device)} cannot run here: {why}; use --backend "
                                      f"{DEFAULT_FILE_BACKEND[found.kind]}")
    declared = as_declarations(inputs)
    options = {"inputs": declared, "batch_axes": dict(batch_axes or {}), "ignore_metadata": ignore_metadata}
    if probe and (ignore_metadata or not found.metadata):
        probe_in_child(path, chosen.label(device), device, declared, batch_axes, ignore_metadata)
    return Model(chosen.open_file(path, device, precision or FULL_PRECISION, **options))


PROBE = """
import json, sys
from ptx.errors import PtxError
from ptx.infer.model.opening import open_own_model
args = json.loads(sys.argv[1])
try:
    open_own_model(args["path"], args["backend"], device=args["device"], inputs=args["inputs"],
                   batch_axes=args["batch_axes"], ignore_metadata=args["ignore_metadata"], probe=False)
except PtxError:
    pass  # refused in one line: the parent opens it again and says so
"""


def probe_in_child(path: Path, backend: str, device: str, declared: Sequence[TensorSig],
                   batch_axes: Mapping[str, int | None] | None, ignore_metadata: bool) -> None:
    """Open the file in a fresh interpreter first: a runtime that crashes on it crashes there, and
    ptx says so in one line (ChildCrashError) instead of dying with it."""
    from ptx.export.child import run_child

    args = probe_args(path, backend, device, declared, batch_axes, ignore_metadata)
    run_child(PROBE, json.dumps(args), what=f"{backend} opening {path.name}")


def probe_args(path: Path, backend: str, device: str, declared: Sequence[TensorSig],
               batch_axes: Mapping[str, int | None] | None, ignore_metadata: bool) -> dict:
    """What the child needs to open the file as the parent would (PROBE's argument, as JSON)."""
    return {"path": str(path), "backend": backend, "device": device,
            "inputs": [f"{t.name}={','.join(map(str, t.shape))}:{t.dtype}" if t.shape else f"{t.name}=:{t.dtype}"
                       for t in declared],
            "batch_axes": dict(batch_axes or {}), "ignore_metadata": ignore_metadata}


def is_module(obj) -> bool:
    """An nn.Module, told without importing torch (an app that holds one has imported it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def open_module(module, inputs: Sequence[TensorSig | str] | None, device: str | None = None) -> Model:
    from ..runtime.torch_runner import open_module as module_runner

    return Model(module_runner(module, as_declarations(inputs), device or "cpu"))
