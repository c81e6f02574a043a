"""Opening a model file, a run's export or an nn.Module as a Model for one backend of the registry (what load()
opens once Target.of has decided what its argument names)."""
from __future__ import annotations

import functools
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FILE, CHECKPOINT_FORMAT, DEFAULT_RUNS_ROOT
from ptx.contract.catalog import unknown_model
from ptx.contract.generation import GENERATION_KEY
from ptx.contract.names import (DEFAULT_FORMATS, FILE_PRECISIONS, FULL_PRECISION, PRECISION_DEVICES, TWIN_FORMATS,
                                file_precision, twin_name)
from ptx.contract.metadata import CONTRACT
from ptx.contract.runs import is_run, run_folders, run_model
from ptx.contract.schema import signature_of_contract
from ptx.contract.tensors import TensorSig, as_declarations
from ptx.child import run_child
from ptx.errors import (ArtifactError, BackendUnavailableError, MissingArtifactError, PtxError,
                        UnknownModelError, UnusablePrecisionWarning, OtherCpuWarning)
from ptx.files import file_sha256

from ..formats.model_files import ModelFile, check_weights, is_torch_save, read_model_file
from ..formats.signature import Opening
from ..runtime import backends
from .head import Head, artifact_info
from .model import Model

DEFAULT_BACKEND = "ort-cpu"
# A user's own file: the backend that opens it by default, and how a one-line error calls it.
DEFAULT_FILE_BACKEND = {"onnx": "ort-cpu", "torchscript": "torchscript", "pt2": "aoti", "checkpoint": "eager",
                        "module": "eager"}
KIND_NAMES = {"onnx": "an ONNX file", "torchscript": "a TorchScript file", "pt2": "a pt2 package",
              "checkpoint": "a ptx checkpoint", "module": "an nn.Module"}
DEVICES = ("cpu", "cuda")


def run_folder(model: str, root: str | Path = DEFAULT_RUNS_ROOT, run: str | Path | None = None) -> Path:
    """A model's run folder: ``run`` when given (``ptx train --out DIR`` wrote it), else ROOT/NAME."""
    return Path(run) if run is not None else Path(root) / model


def run_option(model: str, run_dir: Path) -> str:
    """`` --run RUN_DIR`` for a command printed for the user to type, unless it is the default
    folder (runs/MODEL), so the command finds the run from wherever it is typed."""
    return "" if Path(run_dir) == Path(DEFAULT_RUNS_ROOT) / model else f" --run {run_dir}"


def export_command(model: str, fmt: str | None = None, run: str | Path | None = None) -> str:
    """The export command that writes ``fmt`` for ``model`` (into the run folder ``run``)."""
    # Formats that `ptx export` writes only on request (pt2, onnx-int8) must be named in the command.
    named = "" if fmt is None or fmt in DEFAULT_FORMATS else f" --format {fmt}"
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
        if unknown and run is None and Path(model).is_dir():  # a run folder given where a name goes
            unknown += f"; {model} is a folder here: give a run folder with --run {model} (library: run=)"
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
        todo = f"`{export_command(model, fmt, run)}`"
        if file_name == CHECKPOINT_FILE or not (run_dir / CHECKPOINT_FILE).is_file():
            train = f"`ptx train {model}{'' if run is None else f' --out {run}'}`"
            todo = train if file_name == CHECKPOINT_FILE else f"{train} then {todo}"
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


def unusable_reason(predictor: Model, label: str) -> str | None:
    """Why ``predictor``'s reduced precision should not be used here: this machine's verify record
    (or export's) for its file says NOT USABLE or FAIL, or the file carries export's verdict NOT
    USABLE for the runtime it is opened with (ptx.verdict: one per runtime that reads it; a file
    written before that carries one, ptx.judgement). None otherwise."""
    from ptx.contract.verdict import in_one_line, recorded_verdicts, serving_label

    from .records import failed_here

    status = failed_here(predictor.path.parent, label, predictor.path)
    if status is not None:
        return (f"{label} is {status} for {predictor.name} on this machine (as `ptx verify`/`ptx export` judged "
                f"{predictor.path.name} here): use f32, or see `ptx verify {predictor.name} --backends {label}`")
    carried = recorded_verdicts(predictor.metadata).get(label)
    if carried is not None and carried.reasons:
        return (f"{predictor.path.name} was judged {carried.status} through {label} by `ptx export` ("
                f"{in_one_line(carried.reasons)}): use the f32 file it was made from, or see `ptx verify "
                f"{predictor.path.name}`")
    old = predictor.metadata.get("judgement", "")
    if carried is None and old.startswith("NOT USABLE") and label == (serving_label(predictor.metadata) or label):
        return (f"{predictor.path.name} was judged {old} by `ptx export` against the f32 file it was made "
                f"from: use that file, or see `ptx verify {predictor.path.name}`")
    return None


def elsewhere_reason(predictor: Model) -> str | None:
    """Where a reduced-precision file's speed was measured on another kind of CPU (ptx.cpu): int8's
    speed depends on the CPU's instructions (VNNI, AMX), so the speed it records says nothing here."""
    from ptx.machine import describe_cpu

    measured_on, here = predictor.metadata.get("cpu"), describe_cpu()
    if not measured_on or measured_on == here:
        return None
    return (f"{predictor.path.name} was quantized and timed on {measured_on}; this CPU is {here}: "
            f"`ptx bench` measures whether {predictor.precision} pays here")


def stale_reason(predictor: Model, run_dir: Path) -> str | None:
    """Why ``predictor``'s artifact does not hold the run's current weights (it was exported from
    another checkpoint than ``run_dir``/checkpoint.pt: the run was trained again since), or None."""
    checkpoint = run_dir / CHECKPOINT_FILE
    recorded = predictor.info.get("checkpoint_sha256")
    if not recorded or not checkpoint.is_file() or predictor.path is None \
            or predictor.path.resolve() == checkpoint.resolve() or file_sha256(checkpoint) == recorded:
        return None
    return (f"{predictor.path} was exported from another checkpoint than {checkpoint} (the run was trained again "
            f"since): re-run `ptx export {predictor.contract.model}` to serve the run's current weights")


def require_run_folder(folder: Path, others: str = "") -> Path:
    """``folder`` where ptx trained into it, else one line saying what to give instead (a model file,
    and the ``others`` the caller takes)."""
    if not is_run(folder):
        raise ArtifactError(f"{folder}: a folder, but not a run folder ptx trained into (no checkpoint.pt or "
                            f"metrics.json); give a model file (.onnx, TorchScript .pt, .pt2){others}")
    return folder


def model_of_run(folder: Path, given: str | None = None, option: str = "NAME") -> str:
    """The model a run folder holds, as its metrics.json (else its checkpoint) says, never its folder
    name; ``given`` (the model named by ``option``) is refused when it contradicts the run."""
    from ptx.contract.runs import model_of_run

    held = run_model(folder)
    if held is None and (folder / CHECKPOINT_FILE).is_file():  # metrics.json lost: ask the checkpoint (torch)
        from ptx.trainers.checkpoint import checkpoint_owner

        held = checkpoint_owner(folder / CHECKPOINT_FILE)
    return model_of_run(given, held, folder, option)


def model_file(path: Path, ignore_metadata: bool = False, read: ModelFile | None = None) -> ModelFile:
    """What ``path`` is (ONNX, TorchScript, pt2, or a ptx checkpoint, whose contract only torch can
    read) and the ptx metadata believed of it: none with ``ignore_metadata``; refused, in one line,
    when it was written for other weights than the file's. ``read``: the file as read_model_file read it
    already (its digest is not computed again: a 2 GB decoder's takes seconds)."""
    if path.is_file() and is_torch_save(path):
        return ModelFile(path, CHECKPOINT_FORMAT, {})
    found = read or read_model_file(path)  # no such file, a folder, not a model: one line
    if ignore_metadata:
        return replace(found, metadata={})
    check_weights(found)
    return found


def open_path(found: ModelFile, backend: str | None = None, device: str | None = None, precision: str | None = None,
              *, module=None, inputs=None, batch_axes: Mapping[str, int | None] | None = None,
              ignore_metadata: bool = False, probe: bool = True, tutorial: str | None = None, plan=None) -> Model:
    """A Model for the model file ``found`` (model_file's; MODULE for the live ``module``) through
    ``backend``: the one place where what a model is decides how it opens (opening_of) and which
    file is the precision asked for (precision_file), then the backend's one opener runs it and the
    head comes from its contract, or there is none (model_of). ``tutorial``: the model's registered
    name, where the file was found in its run folder (it must hold its export)."""
    chosen, device = resolve_backend(found.kind, backend, device)
    given = found.path
    found, precision = precision_file(found, chosen, device, precision, ignore_metadata)
    path = found.path
    opening, info = opening_of(path, module=module, inputs=inputs, batch_axes=batch_axes,
                               ignore_metadata=ignore_metadata, tutorial=tutorial, found=found, plan=plan)
    _refuse_beside_ort(opening.metadata, chosen, path)
    why = chosen.unavailable(device)
    if why:  # said as the backend's row says it (a CUDA row on a machine without a GPU), before any loader
        raise BackendUnavailableError(f"{chosen.label(device)} cannot run here: {why}; use --backend "
                                      f"{DEFAULT_FILE_BACKEND[opening.kind]}")
    if probe and opening.kind in FOREIGN_KINDS and not opening.metadata:  # a runtime that crashes on it crashes there
        args = probe_args(path, chosen.label(device), device, opening.inputs, batch_axes, ignore_metadata)
        probe_in_child([args], what=f"{chosen.label(device)} opening {path.name}")
    model = model_of(chosen.open(path, device, precision, opening), info, tutorial)
    if not ignore_metadata:
        try:
            model.encoder = open_encoder(model, chosen, device, precision)
        except BaseException:
            model.close()
            raise
    if path != given:
        model.opened = f"{precision} runs {path.name}, the {precision} file beside {given.name}"
    if precision != FULL_PRECISION and path is not None:
        model.unusable = unusable_reason(model, chosen.label(device, precision))
        model.elsewhere = elsewhere_reason(model)
    return model


def _refuse_beside_ort(metadata, chosen, path) -> None:
    """A decoder whose attention is ONNX Runtime's GroupQueryAttention (exported with --ort-attention), asked of
    another runtime: one line, before that runtime fails on it at its first run."""
    from ptx.contract.generation import of_metadata

    if chosen.runs_ort_attention or GENERATION_KEY not in (metadata or {}):
        return
    why = backends.refuses_generation(chosen, of_metadata(metadata, f"{path.name}: ptx.{GENERATION_KEY}"))
    if why:
        raise PtxError(f"{path.name}: {why.replace('use ort-cpu', 'use --backend ort-cpu')}")


def open_encoder(model: Model, chosen, device: str, precision: str):
    """The runner of the encoder file an encoder-decoder's decoder file names (its generation contract's
    Encoder), opened beside it by the same backend, its tensors checked against what the contract names;
    None for any other model. A missing or foreign encoder file is one line saying to export again."""
    from ptx.contract.generation import of_metadata

    where = f"{model.path.name if model.path else model.name}: ptx.{GENERATION_KEY}"
    generation = of_metadata(model.metadata, where) if model.path is not None else None
    part = generation.encoder if generation is not None else None
    if part is None:
        return None
    path = model.path.parent / part.file
    if not path.is_file():
        raise MissingArtifactError(f"{model.path.name} is an encoder-decoder's decoder and its encoder, {part.file}, is "
                                   f"not beside it in {model.path.parent}: keep the two files together, or export the "
                                   "model again")
    opening, _ = opening_of(path)
    runner = chosen.open(path, device, precision, opening)
    missing = [n for n in part.inputs if n not in runner.signature.input_names] + \
        [n for n, _ in part.cross if n not in runner.signature.output_names]
    if missing:
        runner.close()
        raise ArtifactError(f"{path.name} is not the encoder {model.path.name} names: it lacks {', '.join(missing)}; "
                            "export the model again")
    return runner


def precision_file(found: ModelFile, chosen, device: str, precision: str | None,
                   ignore_metadata: bool = False) -> tuple[ModelFile, str]:
    """(the file that is ``precision`` for ``chosen`` on ``device``, the precision it runs at), or a
    one-line refusal; never an f32 file under a reduced label. A file runs at its own precision by
    default (int8 for an int8 file, ptx's or a user's own quantized graph; int4 for ptx's int4). int8 or
    int4 asked of an f32 ONNX file is the file beside it that the backend's runtime reads (net.int8.onnx
    for ort-cpu, net.openvino-int8.onnx for openvino, else their weight-only net.int8w.onnx and
    net.openvino-int8w.onnx; net.int4.onnx, net.openvino-int4.onnx); bf16 and tf32 are modes the runtime runs the f32
    file in (its runner applies them, or refuses where the machine cannot)."""
    precision = precision or found.precision
    fmt = chosen.artifact_for(precision)  # a precision the backend does not run is one clear error
    if precision not in chosen.precisions_on(device):
        raise PtxError(f"backend {chosen.name} runs {', '.join(chosen.precisions_on(device))} on {device}, not "
                       f"{precision} ({precision} needs {PRECISION_DEVICES.get(precision, device)})")
    wanted, have = file_precision(fmt), found.precision if found.precision in FILE_PRECISIONS else None
    if found.path is None or wanted == have:
        return found, precision
    if have is not None:  # an int8 or int4 file is not made f32 (or another precision) again by asking
        made_from = found.metadata.get("source")
        raise ArtifactError(f"{found.path} is an {have} model, not {precision}: open it at its own precision (give no "
                            f"precision, or {have}), or give the f32 file it was made from"
                            + (f" ({made_from})" if made_from else ""))
    twins = [found.path.with_name(twin_name(found.path, f)) for f in TWIN_FORMATS.get(fmt, (fmt,))]
    twin = next((t for t in twins if t.is_file()), None)
    if twin is None:
        raise MissingArtifactError(f"{found.path.name} is an f32 model and there is no {twins[0].name} beside "
                                   f"{found.path.name}: run `{twin_command(found, fmt)}` first (or open it at f32)")
    beside = model_file(twin, ignore_metadata)
    if beside.precision != wanted:
        raise ArtifactError(f"{twin} beside {found.path.name} is not an {wanted} model (its graph has no quantized "
                            f"node, or it records another precision): run `{twin_command(found, fmt)}` to write it "
                            "again")
    # an int8 file ptx made from a model file records that file's name and bytes (one made from a module,
    # its factory's: nothing to hold this file to), read even where its other metadata is not believed
    recorded = read_model_file(twin, digest=False).metadata if ignore_metadata else beside.metadata
    made_from = recorded.get("source_sha256") if recorded.get("source") == found.path.name else None
    if made_from and made_from != sha256_now(found.path):
        raise ArtifactError(f"{twin.name} was not made from this {found.path.name} (it records another file's "
                            f"sha256: another model's, or this one before it changed): run "
                            f"`{twin_command(found, fmt)}` to write it again")
    return beside, precision


def sha256_now(path: Path) -> str:
    """The file's SHA-256, hashed once while its size and time are unchanged (every int8 open asks)."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def twin_command(found: ModelFile, fmt: str) -> str:
    """The command that writes ``fmt`` beside ``found``: a tutorial export's run is exported by the
    model's name; any other file by its path."""
    folder = found.path.parent
    if GENERATION_KEY in found.metadata:  # a decoder's int8 is its weights alone (no activations to calibrate)
        fmt = TWIN_FORMATS.get(fmt, (fmt,))[-1]
    if found.has_contract and is_run(folder):
        model = found.name
        return export_command(model, fmt, None if folder == Path(DEFAULT_RUNS_ROOT) / model else folder)
    return f"ptx export {found.path} --format {fmt}"


def opening_of(path: Path | None, *, module=None, inputs=None, batch_axes: Mapping[str, int | None] | None = None,
               ignore_metadata: bool = False, tutorial: str | None = None, found: ModelFile | None = None,
               plan=None):
    """(Opening, ArtifactInfo or None): what the model at ``path`` is, decided once. Its signature
    will come from its contract, a recorded ptx.signature, its graph or ``inputs``
    (formats/signature.py); the info is its contract, where it carries one. ``found``: the file as
    model_file already read it (not read twice)."""
    if found is None:
        found = MODULE if module is not None else model_file(Path(path), ignore_metadata)
    # A tutorial model's export must hold its contract; a checkpoint's is read by torch (model_of).
    holds_contract = CONTRACT in found.metadata or (tutorial and found.kind != CHECKPOINT_FORMAT)
    info = artifact_info(found.path, found.metadata) if holds_contract else None
    opening = Opening(found.kind, found.metadata, inputs=as_declarations(inputs), batch_axes=dict(batch_axes or {}),
                      contract=signature_of_contract(info.contract, info.raw_input) if info else None,
                      name=found.name if found.metadata else None, module=module, plan=plan)
    return opening, info


def model_of(runner, info=None, tutorial: str | None = None) -> Model:
    """The runner and, where the model has a contract, the head it gives."""
    if info is None and CONTRACT in runner.metadata:  # a checkpoint: torch has read its contract
        info = artifact_info(runner.path, runner.metadata)
    if tutorial and info.contract.model != tutorial:
        raise ArtifactError(f"{runner.path} holds {info.contract.model}'s model, not {tutorial}'s: re-run `ptx export "
                            f"{tutorial}`")
    return Model(runner, Head(info) if info is not None else None)


# Files ptx did not write may crash a runtime's loader: they are opened in a child process first.
FOREIGN_KINDS = ("onnx", "torchscript", "pt2")
MODULE = ModelFile(None, "module", {})  # what a live nn.Module is opened as


def warned(model: Model) -> Model:
    """``model``, its reduced precision's unusable verdict and other CPU warned of (at load()'s caller)."""
    if model.unusable:
        warnings.warn(model.unusable, UnusablePrecisionWarning, stacklevel=4)
    if model.elsewhere:
        warnings.warn(model.elsewhere, OtherCpuWarning, stacklevel=4)
    return model


def resolve_backend(kind: str, backend: str | None, device: str | None) -> tuple[object, str]:
    """(Backend, device) for ``backend`` (a name or a label such as ort-cuda / torchscript-cuda) on
    a model of ``kind``; one line naming the ones that fit otherwise."""
    name = backend or DEFAULT_FILE_BACKEND[kind]
    fitting = backends.file_pairs(kind)
    for b, d in fitting:
        if name == b.label(d) and name != b.name:  # a label names its device
            return b, (device if device and device.split(":")[0] == d else d)
    chosen = backends.get(name)  # an unknown name: the registry's one line
    if kind not in chosen.kinds:
        offered = ", ".join(dict.fromkeys(b.label(d) for b, d in fitting))
        raise PtxError(f"backend {name}{'' if device is None else f' on {device}'} does not run {KIND_NAMES[kind]}; "
                       f"these do: {offered}")
    return chosen, check_device(name, device)


# The child's program: target.probe_child on the JSON list of probe_args it is given.
PROBE = "import sys\nfrom ptx.infer.model.target import probe_child\nprobe_child(sys.argv[1])"


# The probes that opened without a crash in a child, in this process: a runtime that opened a file once opens
# the same file the same way again, and a second child (half a second: an interpreter and ptx's imports) would
# learn nothing. Keyed by the probe's arguments and the file as it is on disk now, its folder included
# (ptx writes a file beside and renames it into place, which changes the folder; a companion data file too).
_PROBED: set[tuple] = set()


def _probe_key(args: dict) -> tuple:
    path = Path(args["path"])
    try:
        held, folder = path.stat(), path.parent.stat()
    except OSError:
        return (json.dumps(args, sort_keys=True), None)  # never equal to a stat'ed key: probed every time
    return (json.dumps(args, sort_keys=True), held.st_ino, held.st_size, held.st_mtime_ns, folder.st_mtime_ns)


def probe_in_child(probes: list[dict], what: str) -> None:
    """Open each file of ``probes`` (probe_args) in one child first, so that a runtime crashing on it crashes
    there (ChildCrashError, one line naming ``what``); a probe this process already ran on the same file
    unchanged is not run again."""
    todo = [(args, _probe_key(args)) for args in probes]
    todo = [(args, key) for args, key in todo if key[-1] is None or key not in _PROBED]
    if not todo:
        return
    run_child(PROBE, json.dumps([args for args, _ in todo]), what=what)
    _PROBED.update(key for _, key in todo if key[-1] is not None)


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
