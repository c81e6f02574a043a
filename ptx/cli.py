"""The `ptx` command: each subcommand is a thin wrapper over one library function.

Imports are lazy: `ptx predict` with an ONNX Runtime backend must start without importing torch.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import sys
import warnings

import click

from ptx.contract import DEFAULT_OPSET, DEFAULT_RUNS_ROOT
from ptx.contract.names import PRECISIONS
from ptx.errors import PtxError, PtxWarning
from ptx.export.formats import default_formats, list_formats
from ptx.export.formats.onnx import Exporter
from ptx.infer.backends import list_backends
from ptx.own_cli import (BATCH_AXIS_OPTION, IGNORE_METADATA_OPTION, INPUT_SYNTAX, SECURITY_NOTE,
                         generated_input_options, is_model_file, model_file_options, open_options)

# Both registries import neither torch nor onnxruntime: `ptx predict` starts light.
BACKENDS = tuple(list_backends())
FORMATS = tuple(list_formats())
TRITON = "triton"  # a model repository folder (export/triton.py), not one file of the format registry
KSERVE = "kserve"  # a deployment folder: Dockerfile + InferenceService manifest (export/kserve.py)


class FiniteFloat(click.ParamType):
    """A float that must be finite and above (or at least) ``minimum``: NaN and Inf are usage errors,
    where click's FloatRange lets NaN through."""

    name = "float"

    def __init__(self, minimum: float = 0.0, open_min: bool = False):
        self.minimum, self.open_min = minimum, open_min

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.minimum or (self.open_min and number == self.minimum):
            self.fail(f"{value!r} must be {'>' if self.open_min else '>='} {self.minimum:g}", param, ctx)
        return number


def Choice(choices) -> click.Choice:  # noqa: N802 - stands for click.Choice
    """click's Choice taking any case (`--format ONNX`): every ptx name is lowercase and unique."""
    return click.Choice(list(choices), case_sensitive=False)


class DeviceChoice(click.Choice):
    """A device name in any case, and where cuda is one, cuda:N: refused in one line when GPU N is
    not on this machine (the CUDA provider's device_id, torch's cuda:N)."""

    def __init__(self, choices):
        super().__init__(list(choices), case_sensitive=False)

    def convert(self, value, param, ctx):
        kind, colon, index = str(value).strip().lower().partition(":")
        if not colon or kind != "cuda" or "cuda" not in self.choices:
            return super().convert(value, param, ctx)
        if not index.isdigit():
            self.fail(f"{value!r}: give cuda or cuda:N, N the GPU's number (cuda:0 is the first)", param, ctx)
        from ptx.machine import missing_gpu

        why = missing_gpu(int(index))
        if why:
            self.fail(why, param, ctx)
        return f"cuda:{int(index)}"

    def get_metavar(self, param, *args, **kwargs):
        return "[" + "|".join(self.choices) + "|cuda:N]"


POSITIVE = FiniteFloat(0.0, open_min=True)
NON_NEGATIVE = FiniteFloat(0.0)
FORCE = click.option("--force", is_flag=True, help="Replace another model's files in the output folder.")
BACKENDS_OPTION = click.option(
    "--backends", multiple=True, callback=lambda ctx, param, value: [b.strip() for v in value for b in v.split(",")
                                                                     if b.strip()] or None,
    help="Backends, comma-separated or the option repeated (default: all available): " + ", ".join(BACKENDS)
         + "; a backend means all its precisions, ort-cpu-int8 or openvino-bf16 one of them.")
RUN = click.option("--run", "run", type=click.Path(file_okay=False),
                   help="The run folder (default: ROOT/NAME), e.g. the one `ptx train NAME --out DIR` wrote.")


def _model_of_run(given: str | None, run, option: str = "NAME") -> str | None:
    """The model of the run folder ``run``: what its metrics.json (else its checkpoint) says, never its
    folder name; ``given`` is refused when it contradicts the run. None when there is no such folder
    and nothing was given (the command's own error then says where it looked)."""
    from pathlib import Path

    from ptx.contract.runs import check_model, run_model

    if run is None:
        return given
    if not Path(run).is_dir():
        if given is None:
            raise PtxError(f"no run folder {run}: give --run the folder `ptx train NAME --out DIR` wrote "
                           "(`ptx runs` lists them)")
        return given
    held = run_model(run)
    if held is None and (Path(run) / "checkpoint.pt").is_file():  # metrics.json lost: ask the checkpoint (torch)
        from ptx.trainers.checkpoint import checkpoint_owner

        held = checkpoint_owner(Path(run) / "checkpoint.pt")
    return check_model(given, held, run, option)


def _models_and_files(arguments) -> tuple[list[str], list]:
    """A command's MODEL arguments split into tutorial model names and a user's model files. An
    argument that reads as a path (a model file's suffix, a /) but names no model file is refused in
    one line saying what is there (no such file, a folder), not as an unknown model name. A bare
    name stays a model name even where a folder of that name is here (`ptx train convnet --out
    convnet` makes one)."""
    from pathlib import Path

    from ptx.infer.model_files import file_kind

    names, files = [], []
    for argument in arguments:
        path = Path(argument)
        if is_model_file(argument):
            files.append(path)
        elif path.suffix.lower() in MODEL_FILE_SUFFIXES or "/" in argument:
            file_kind(path)  # no such file, a folder: its one line
        else:
            names.append(argument)
    return names, files


MODEL_FILE_SUFFIXES = (".onnx", ".pt", ".pt2", ".pth", ".ts", ".torchscript")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """ptx's own warnings are one `warning:` line on stderr; others keep Python's format."""
    if issubclass(category, PtxWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


class PtxGroup(click.Group):
    """Turns a PtxError into one line on stderr and its exit code; a traceback only with --debug."""

    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except PtxError as exc:
            if ctx.params.get("debug"):
                # Messages are one line with `from None`; --debug shows the cause they came from.
                exc.__suppress_context__ = False
                import traceback

                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            # A command that knows what it kept says so (predict --output: the count and --resume).
            click.echo(str(exc) or "interrupted: files already written are complete; nothing half-written was kept",
                       err=True)
            sys.exit(130)


@click.group(cls=PtxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="ptx")
def cli(debug: bool) -> None:
    """Train the tutorials' models, export them, and predict through backends checked to agree.

    \b
    ptx train convnet            train with its tutorial's recipe (GPU when there is one)
    ptx export convnet           write model.onnx and model.torchscript.pt, validated
    ptx export convnet --format pt2      a torch.export + AOTInductor package, validated
    ptx export convnet --format triton --out repo   a Triton model repository folder
    ptx predict photo.png        predict through ort-cpu (or --backend ...)
    ptx verify convnet           check that every backend gives the same answers
    ptx bench convnet            latency and throughput of each backend
    ptx serve convnet            answer requests (REST, gRPC, a drawing page at :8080)
    ptx runs                     the runs under runs/: model, accuracy, exports, verdicts
    ptx data fetch mnist         download full MNIST into ptx's cache (train does it when needed)
    """


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def models_cmd(as_json: bool) -> None:
    """List the registered models: the data each takes (and so the datasets it trains on), its
    default dataset and the export formats it supports."""
    import copy

    from ptx.contract.catalog import MODELS  # data, not the registry: listing names needs no torch

    from ptx.contract.datasets import DataKind, datasets_for

    rows = copy.deepcopy(MODELS)
    for r in rows:  # the datasets `ptx train NAME --dataset` takes: those that give what the model takes
        r["trains_on"] = datasets_for(DataKind.from_dict(r["takes"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from ptx.models_table import models_table

    click.echo(models_table(rows))


@cli.command("runs")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: every folder under it that ptx trained into, whatever its name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def runs_cmd(root, as_json) -> None:
    """List the runs under --root: model, dataset, epochs, test accuracy or MSE, date, exports, the
    verify verdict and fastest verified backend recorded on this machine, and what is wrong (stale
    exports, a model that learned nothing, a broken run). Reads side files only: no checkpoint is loaded."""
    from ptx.infer.runs import list_runs, table

    rows = list_runs(root)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no runs under {root}: `ptx train NAME` makes one (`ptx models` lists the names)")
        return
    click.echo(table(rows))


def _train_epilog() -> str:
    from ptx.contract.datasets import DATASETS
    from ptx.tutorials import legend

    datasets = "\n".join(f"  {name:<14} {text}" for name, text in DATASETS.items())
    return (f"\b\nDatasets (--dataset; default: the model's, see `ptx models`):\n{datasets}\n\n"
            f"\b\nRecipes come from the tutorial that documents each model (`ptx models`, column 'from tutorial'):\n"
            + legend(76))


@cli.command("train", epilog=_train_epilog())
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
@click.option("--augment-strength", type=FiniteFloat(0.0, open_min=True),
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

    from ptx.atomic import writable_dir_for
    from ptx.models import get
    from ptx.trainers.data import check_data_fits, load_dataset
    from ptx.trainers.checkpoint import guard_run_folder
    from ptx.trainers.loop import TrainConfig, train

    spec = get(name)
    out_dir = Path(out or Path(DEFAULT_RUNS_ROOT) / name)
    if resume and overwrite:
        raise click.UsageError("--resume continues the run and --overwrite replaces it: give one of them")
    # Before minutes of data loading, and before a run folder is made: what is in the folder, whether
    # the model can learn from the data at all, and a folder dataset's labels.
    guard_run_folder(out_dir, name, force, resume=resume, overwrite=overwrite)
    previous = {}
    if resume:  # go on with the data and length the run started with, not today's defaults
        from ptx.trainers.checkpoint import load_checkpoint

        saved = load_checkpoint(out_dir / "checkpoint.pt", expected_model=name)
        dataset = dataset or saved["dataset"]["name"]
        previous = saved["config"] if isinstance(saved.get("config"), dict) else {}
        epochs = epochs or (previous.get("epochs") if isinstance(previous.get("epochs"), int) else None)
    check_data_fits(spec, dataset or spec.dataset)
    augmentation = None
    if augment or augment_strength is not None:
        from ptx.trainers.augment import DEFAULT_STRENGTH, Augmentation

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
            from ptx.trainers.augment import EPOCHS_FACTOR

            epochs = spec.recipe.epochs * EPOCHS_FACTOR
        config = TrainConfig(epochs=epochs or spec.recipe.epochs, batch_size=batch_size or spec.recipe.batch_size,
                             lr=lr or spec.recipe.lr, seed=seed, device=device, limit=limit,
                             model_args={"bias": True} if bias else None, augment=augmentation)
        metrics = train(spec, data, config, out_dir, resume=resume, overwrite=overwrite, force=force,
                        capture=not no_capture, log=click.echo)

    final = ", ".join(f"{k[len('final_'):].replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if k.startswith("final_"))
    click.echo(f"done: {final}; wrote {out_dir}/checkpoint.pt, metrics.json, curves.png")


def _format_list(ctx, param, value) -> list[str]:
    """--format NAME or NAME,NAME (any case): each one of the choices."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    choices = [*FORMATS, TRITON, KSERVE, "all"]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise click.BadParameter(f"{unknown[0] if unknown else value!r} is not one of {', '.join(choices)}")
    return names


@cli.command("export")
@click.argument("name", required=False)
@click.option("--module", "module_spec", metavar="FILE.py:FACTORY",
              help="Your own nn.Module: FACTORY in FILE.py returns it, or (module, example inputs). " + SECURITY_NOTE)
@click.option("--format", "fmt", default=",".join(default_formats()), show_default=True, callback=_format_list,
              metavar="FORMAT[,FORMAT]",
              help=f"{', '.join([*FORMATS, TRITON, KSERVE])}, or all: every file this machine can write for a tutorial model "
                   f"({', '.join(FORMATS)}; it says which it leaves out and why). pt2 compiles for ~40 s; onnx-int8 is "
                   "quantized, model.int8.onnx; triton and kserve write deployment folders of a tutorial model, "
                   "named alone with --out.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Checkpoint (default: the one in --out when it holds a run, else runs/NAME/checkpoint.pt); with "
                   "--module, a state_dict loaded into the module strictly.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder (default: the checkpoint's folder): a run folder `ptx train --out` wrote exports "
                   "that run; for triton the model repository, for kserve the deployment folder (required); with "
                   "--module the folder of this export (required; replaced as a whole).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--exporter", type=Choice([e.value for e in Exporter]),
              help="ONNX exporter: torch.export-based dynamo (default), or the deprecated TorchScript-based "
                   "one (the default for gru-classifier, whose packed sequences dynamo cannot export). With --module "
                   "the default is dynamo, falling back to legacy where dynamo refuses (said in one line).")
@click.option("--atol", type=NON_NEGATIVE,
              help="Absolute tolerance against eager (default: the contract's CPU atol; with --module, per dtype).")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="pt2 only: the device AOTInductor compiles for (the package runs there only).")
@click.option("--triton-backend", type=Choice(["onnxruntime", "pytorch"]), default="onnxruntime",
              show_default=True,
              help="triton only: serve model.onnx (onnxruntime_onnx) or model.pt (pytorch_libtorch).")
@click.option("--image", help="kserve only: the container image the manifest names (default ptx-NAME:VERSION).")
@click.option("--run", "run", type=click.Path(file_okay=False),
              help="The run folder to export (its checkpoint; the exports are written there unless --out says "
                   "where); NAME defaults to the run's model.")
@click.option("--input", "input_args", multiple=True, metavar="float32|uint8|NAME=SHAPE[:DTYPE]",
              help="A tutorial model's graph input: float32 (default) or, for onnx/torchscript of picture models, "
                   "uint8 (the graph takes raw (batch, 28, 28) pictures and normalises them itself; "
                   "docs/artifact-format.md). With --module, declares an input named as forward()'s parameter, repeated; "
                   "with a TorchScript or pt2 FILE, repeated in forward()'s order: " + INPUT_SYNTAX)
@click.option("--output", "output_names", multiple=True, metavar="NAME",
              help="--module: name the module's outputs, in the order forward() returns them (repeated).")
@click.option("--name", "model_label", help="--module: the model's name in the files (default: FACTORY's name).")
@click.option("--torchscript-mode", type=Choice(["trace", "script"]), default="trace", show_default=True,
              help="--module: torch.jit.trace the module, or torch.jit.script it (also what the TorchScript-based ONNX "
                   "exporter is given: Python control flow becomes an ONNX If).")
@BATCH_AXIS_OPTION
@IGNORE_METADATA_OPTION
@FORCE
def export_cmd(name, module_spec, fmt, checkpoint, out, opset, exporter, atol, device, triton_backend, image, run,
               input_args, output_names, model_label, torchscript_mode, batch_axes, ignore_metadata, force) -> None:
    """Export model NAME's checkpoint with a dynamic batch, validated against eager: ONNX and TorchScript
    (by default), an int8 ONNX (onnx-int8, judged by labels), a pt2 package (torch.export + AOTInductor), a
    Triton model repository folder (--out REPO), or a KServe deployment (--out DIR: a Dockerfile running
    `ptx serve` and an InferenceService manifest).

    NAME may be your own model's file (.onnx, or a TorchScript .pt with --input declarations):
    `ptx export my.onnx --format triton --out repo` writes repo/my, a Triton model folder with the file
    and a config.pbtxt of its inputs and outputs (max_batch_size 0 unless every tensor's batch is on
    axis 0).

    With --module FILE.py:FACTORY, export your own nn.Module instead: ONNX and TorchScript (and pt2,
    onnx-int8 on request), each loaded as ptx serves it and checked against the module at batches 3
    and 5, refused (exit 1) where it disagrees; the contract (ptx.signature, ptx.weights_sha256) is
    written into each file and model.reference.npz beside them.

    \b
    ptx export convnet                            a tutorial model: model.onnx, model.torchscript.pt
    ptx export --module net.py:build --input image=batchx3x224x224 --out exports/net
    ptx export --module net.py:build --checkpoint weights.pt --out exports/net --format onnx,pt2
    ptx export my.onnx --format triton --out repo     your own file as a Triton model folder
    ptx export --module gru.py:make --input x=stepsxbatchx6 --input h0=1xbatchx12 \\
        --input mode=:int64 --torchscript-mode script --out exports/gru

    --module imports and runs FILE.py, as python would: export only code you trust. A TorchScript
    file runs only its own graph; a pt2 package holds compiled native code.
    """
    from pathlib import Path

    if module_spec is not None:
        if name is not None or run is not None or image is not None:
            given = "NAME" if name is not None else "--run" if run is not None else "--image"
            raise click.UsageError(f"{given} is for a tutorial model; --module exports your own module")
        _export_module_cmd(module_spec, fmt, checkpoint, out, opset, exporter, atol, device, input_args,
                           output_names, model_label, torchscript_mode, force)
        return
    module_only = [o for o, v in (("--output", output_names), ("--name", model_label)) if v]
    if torchscript_mode != "trace":
        module_only.append("--torchscript-mode")
    if module_only:
        raise click.UsageError(f"{module_only[0]} is for --module FILE.py:FACTORY (your own module)")
    declared = [v for v in input_args if "=" in v]
    dtypes = [v.lower() for v in input_args if "=" not in v]
    if any(d not in ("float32", "uint8") for d in dtypes) or len(set(dtypes)) > 1:
        raise click.UsageError(f"--input {' '.join(input_args)}: give float32 or uint8 (once), or declare your own "
                               "model's inputs as NAME=SHAPE[:DTYPE]")
    input_dtype = dtypes[0] if dtypes else "float32"
    if len(fmt) > 1 and {TRITON, KSERVE, "all"} & set(fmt):
        raise click.UsageError(f"--format {','.join(fmt)}: triton, kserve and all are given alone")
    if name is not None and _models_and_files([name])[1]:
        if fmt != [TRITON] or not out:
            raise click.UsageError(f"a model file exports as a Triton repository here: ptx export {name} --format "
                                   "triton --out REPO")
        given = [o for o, v in (("--checkpoint", checkpoint), ("--run", run), ("--exporter", exporter),
                                ("--atol", atol), ("--image", image), ("--input float32|uint8", dtypes),
                                ("--device", device != "cpu")) if v]
        if given:
            raise click.UsageError(f"{given[0]} is for the tutorial models; a model file takes --out, --force, "
                                   "--input NAME=SHAPE[:DTYPE], --batch-axis and --ignore-metadata")
        _export_triton_file(Path(name), out, force, open_options(declared, batch_axes, ignore_metadata))
        return
    if declared or batch_axes or ignore_metadata:
        raise click.UsageError("--input NAME=SHAPE, --batch-axis and --ignore-metadata are for --module or a model "
                               "FILE; the tutorial models carry their contract")
    from ptx.infer import open_artifact

    if run is not None:
        name = _model_of_run(name, run)
        checkpoint = checkpoint or str(Path(run) / "checkpoint.pt")
        if fmt[0] not in (TRITON, KSERVE):
            out = out or run
    elif name is None and out is not None and Path(out, "checkpoint.pt").is_file():
        name = _model_of_run(None, out)  # `--out RUN` exports that run, as before
    if name is None:
        raise click.UsageError("give a model NAME, or --run the run folder to export, or --module FILE.py:FACTORY")
    from ptx.errors import UnknownModelError

    try:
        options = dict(open_predictor=open_artifact, checkpoint=checkpoint, opset=opset, exporter=exporter, atol=atol,
                       log=click.echo)
        if fmt[0] in (TRITON, KSERVE) and input_dtype != "float32":
            raise click.UsageError(f"--input {input_dtype} is for --format onnx or torchscript; --format {fmt[0]} "
                                   "serves the float export")
        if fmt[0] in (TRITON, KSERVE) and device != "cpu":  # refused, not ignored: these folders serve the ONNX export
            raise click.UsageError(f"--device {device} is the device pt2 compiles for; --format {fmt[0]} writes a "
                                   "portable folder: drop --device")
        if fmt[0] == TRITON:
            from ptx.export.triton import export_triton

            if not out:
                raise click.UsageError("--format triton writes a model repository: give it with --out REPO")
            export_triton(name, out, backend=triton_backend, force=force, **options)
            return
        if fmt[0] == KSERVE:
            from ptx.export.kserve import export_kserve

            if not out:
                raise click.UsageError("--format kserve writes a deployment folder: give it with --out DIR")
            export_kserve(name, out, image=image, force=force, **options)
            return
        from ptx.export.api import export_model
        from ptx.infer.records import record_export_judgement

        formats = fmt
        if fmt == ["all"]:  # every file this machine can write for the model, and why any other is left out
            from ptx.export.formats import every_format
            from ptx.models import get as get_spec

            formats, left_out = every_format(get_spec(name), raw_pictures=input_dtype == "uint8")
            click.echo(f"--format all: {', '.join(formats)}" + "".join(f"; left out: {why}" for why in left_out))
        for result in export_model(name, formats, out=out, force=force, device=device, input_dtype=input_dtype,
                                   **options):
            record_export_judgement(result, result.path.parent)  # predict and serve warn on a NOT USABLE verdict
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "export", "`ptx export model.onnx --format triton --out REPO`; your nn.Module: "
                               "`ptx export --module FILE.py:FACTORY --out DIR`") from None


def _export_triton_file(path, out: str, force: bool, options: dict) -> None:
    """A user's model file -> a Triton model folder: its tensors read by opening it (ONNX through ONNX
    Runtime, without torch; TorchScript through torch, with its --input declarations)."""
    from ptx.export.triton import export_triton_file
    from ptx.infer.model_files import PT2, read_model_file
    from ptx.infer.own_model import open_own_model

    kind = read_model_file(path).kind
    if kind == PT2:  # refused before AOTInductor loads it
        export_triton_file(path, kind, None, out, force=force, log=click.echo)
    model = open_own_model(path, **options)
    export_triton_file(path, kind, model.signature, out, force=force, log=click.echo)


def _export_module_cmd(spec, fmt, checkpoint, out, opset, exporter, atol, device, declared, output_names, label,
                       torchscript_mode, force) -> None:
    """`ptx export --module FILE.py:FACTORY`: ptx.export.module.export_module with ptx.infer.load
    validating each file as it will be served."""
    if not out:
        raise click.UsageError("--module writes a folder of files: give it with --out DIR")
    if {TRITON, KSERVE} & set(fmt):
        raise click.UsageError(f"--format {','.join(fmt)}: with --module, choose among onnx, torchscript, pt2, "
                               "onnx-int8 (then `ptx export DIR/model.onnx --format triton` serves the file)")
    from ptx.export.module import DEFAULT_MODULE_FORMATS, export_module, load_factory
    from ptx.infer import load

    made = load_factory(spec)
    export_module(made.module, made.example_inputs, out, open_model=load, inputs=list(declared) or None,
                  output_names=list(output_names) or None,
                  formats=[f for f in fmt if f != "all"] + (list(DEFAULT_MODULE_FORMATS) if "all" in fmt else []),
                  name=label or made.factory, checkpoint=checkpoint, opset=opset, exporter=exporter,
                  torchscript_mode=torchscript_mode, device=device, atol=atol, force=force,
                  provenance=made.provenance, log=click.echo)


@cli.command("predict")
@click.argument("inputs", nargs=-1)  # required, checked below: `--ray DIR` may take the first
@click.option("--model", help="Registered model whose artifacts to use (default: the --run's own model, else convnet), "
                              "or your own model's FILE (.onnx, a TorchScript .pt with --input, a .pt2): INPUTS are "
                              "then tensors in .npz (arrays by input name; NAME:K for several cases), .npy (a "
                              "one-input model) or .json files.")
@click.option("--backend", type=Choice(BACKENDS),
              help="Default: ort-cpu, or with --artifact the file's own kind.")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]),
              help="Device for a backend that runs on several (eager, torchscript, aoti; default cpu); other "
                   "backends refuse one they do not run on (ONNX on the GPU is --backend ort-cuda).")
@click.option("--precision", type=Choice(PRECISIONS),
              help="f32 (default), bf16 (openvino) or int8 (model.int8.onnx from `ptx export NAME --format onnx-int8`).")
@click.option("--artifact", type=click.Path(dir_okay=False), help="An artifact file to use instead of runs/MODEL/.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True, help="Where runs live.")
@click.option("--topk", type=click.IntRange(min=1), help="Also show the K most likely labels.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")
@click.option("--raw", is_flag=True, help="Pictures are already 28x28 dataset samples: skip the artifact's picture pipeline.")
@click.option("-r", "--recursive", is_flag=True, help="A folder gives the pictures of its subfolders too.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), metavar="P",
              help="Mark answers whose probability is below P as `? (low confidence: LABEL)` (JSON: "
                   "low_confidence); what each P costs on the test set: docs/models.md#confidence-threshold.")
@click.option("--output", "output", type=click.Path(dir_okay=True), metavar="FILE",
              help="Write the answers to FILE as they come, with --json's fields, one row each (errors too): "
                   ".jsonl, .csv or .parquet (a folder of part files) by its suffix. docs/batch-scoring.md.")
@click.option("--resume", is_flag=True, help="With --output: answer only the inputs the file does not hold yet.")
@click.option("--workers", type=click.IntRange(min=0), metavar="N",
              help="Processes that decode and prepare pictures (default: the cores ptx may use; 0: none).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (it is shown only on a terminal anyway).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Score with Ray Data (pip install 'ptx[ray]'): a local Ray, or the cluster at ADDRESS "
                   "(auto, ray://HOST:10001); INPUTS may be s3:// or gs:// folders; needs --output (Parquet).")
@RUN
@model_file_options
def predict_cmd(inputs, model, backend, device, precision, artifact, root, topk, as_json, raw, recursive,
                min_confidence, output, resume, workers, quiet, ray_address, run, declared_inputs, batch_axes,
                ignore_metadata) -> None:
    """Predict INPUTS through one backend: image files, folders or globs for the image models;
    numbers for linreg and logistic; CSV rows or CSV files for diabetes; words for rnn-hello and
    gru-classifier. `-` reads standard input: a picture file's bytes, or text (one input per line;
    a CSV file's rows for diabetes). Answers come out in input order as each chunk is done.

    With --model FILE (your own model), INPUTS are .npz/.npy/.json files of its input tensors; each
    output is summarised (dtype, shape, min/mean/max, and the argmax per row of what looks like class
    scores), or given whole by --json, or written by --output FILE.npz (arrays by name; NAME:K for several
    cases) or FILE.parquet (one row per sample, where every output has a batch axis).

    Exit status: 0 all predicted, 1 some inputs failed (each named on stderr), 2 usage error (with
    --model FILE: 2 when an input file does not fit the model, each named on stderr).
    """
    from ptx.infer.batch import STDIN, tsv_field

    if model is not None and _models_and_files([model])[1]:
        ignored = [o for o, v in (("--artifact", artifact), ("--run", run), ("--topk", topk), ("--raw", raw),
                                  ("--recursive", recursive), ("--min-confidence", min_confidence is not None),
                                  ("--resume", resume), ("--workers", workers is not None),
                                  ("--ray", ray_address is not None)) if v]
        if ignored:
            raise click.UsageError(f"{ignored[0]} is for the tutorial models' answers; your own model's predict takes "
                                   "--backend, --device, --json, --output FILE.npz|FILE.parquet and --input, "
                                   "--batch-axis, --ignore-metadata")
        if as_json and output:
            raise click.UsageError("give --json or --output, not both")
        if not inputs:
            raise click.UsageError("Missing argument 'INPUTS...': .npz, .npy or .json files of the model's inputs.")
        sys.exit(_predict_own(model, inputs, backend=backend, device=device, precision=precision, as_json=as_json,
                              output=output, options=open_options(declared_inputs, batch_axes, ignore_metadata)))
    if declared_inputs or batch_axes or ignore_metadata:
        raise click.UsageError("--input, --batch-axis and --ignore-metadata are for --model FILE (your own model); "
                               "the tutorial models carry their contract")

    if artifact is not None:
        _tutorial_artifact(artifact)
    model = _model_of_run(model, run, "--model") if artifact is None else model
    model = model or "convnet"
    if resume and not output:
        raise click.UsageError("--resume needs --output FILE: the file of answers to continue")
    if as_json and output:
        raise click.UsageError("--output writes --json's fields already: give one of them")
    if ray_address is not None:
        from ptx.infer.ray_data import predict_with_ray, split_address

        ray_address, inputs = split_address(ray_address, inputs)
    if not inputs:
        raise click.UsageError("Missing argument 'INPUTS...'.")
    if ray_address is not None:
        if not output:
            raise click.UsageError("--ray writes Parquet: give --output DIR_OR_FILE")
        count = predict_with_ray(list(inputs), output, address=ray_address, model=model, backend=backend,
                                 device=device, precision=precision, artifact=artifact, root=root, run=run,
                                 raw=raw, min_confidence=min_confidence, topk=topk or 0)
        click.echo(f"wrote {count:,} answers to {output}", err=True)
        return
    if inputs.count(STDIN) > 1:
        raise click.UsageError("`-` (standard input) can be read once: give it one time")
    stdin = None
    if STDIN in inputs:
        stream = click.get_binary_stream("stdin")
        if stream.isatty():
            click.echo("reading one input from standard input (end it with Ctrl-D)", err=True)
        stdin = stream.read()
    from ptx.errors import UnknownModelError
    from ptx.infer.scoring import score

    # ONNX Runtime's intra-op threads spin between runs by default; while worker processes prepare a
    # folder's pictures on every core, the spinning took the CPU they needed (10,000 PNGs on 2 cores:
    # main process 2.5 s of CPU with spinning, 1.3 s without; docs/benchmarks.md). One picture
    # makes one run, for which spinning changes nothing. PTX_ORT_SPINNING=1 restores it.
    os.environ.setdefault("PTX_ORT_SPINNING", "0")
    try:
        errors = score(list(inputs), output=output, resume=resume, workers=workers, quiet=quiet, as_json=as_json,
                       topk=topk or 0, model=model, backend=backend, device=device, precision=precision,
                       artifact=artifact, root=root, raw=raw, run=run, recursive=recursive, stdin=stdin,
                       min_confidence=min_confidence, echo=click.echo, field=tsv_field)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "predict", "`ptx predict --model model.onnx INPUTS.npz`") from None
    sys.exit(1 if errors else 0)


def _tutorial_artifact(artifact: str) -> None:
    """--artifact reads a tutorial model's export (its head: pictures, labels); your own model's file
    (ptx export --module's, or a foreign one) has none, and is refused in one line saying how to
    predict with it instead of failing inside scoring."""
    from pathlib import Path

    from ptx.infer.model_files import is_torch_save, read_model_file

    path = Path(artifact)
    if not path.is_file() or is_torch_save(path):  # no such file, a checkpoint: scoring says or reads it
        return
    found = read_model_file(path, digest=False)
    if not found.has_contract:
        raise PtxError(f"--artifact {artifact}: your own model's file (no tutorial model's contract); predict with "
                       f"it by its tensors: `ptx predict --model {artifact} INPUTS.npz`")


def _predict_own(path: str, inputs, *, backend, device, precision, as_json: bool, output: str | None,
                 options: dict) -> int:
    """`ptx predict --model FILE INPUTS`: each input file through your own model. Returns the exit
    status: 0, or 2 when an input file could not be read, did not fit, or the runtime refused it."""
    from ptx.infer import own_predict
    from ptx.infer.own_model import open_own_model

    model = open_own_model(path, backend, device=device, precision=precision, **options)
    signature = model.signature
    fmt = own_predict.check_output_path(output, signature) if output else None
    cases, errors = own_predict.read_inputs(signature, inputs, model.name)
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if output and errors:
        # Cases are numbered across the input files: a file left out would renumber the others.
        click.echo(f"error: nothing written to {output}: give only input files that fit", err=True)
        return 2
    done = list(own_predict.run_cases(model, cases))
    failed = [case.error for case in done if case.error is not None]
    for line in failed:
        click.echo(f"error: {line}", err=True)
    ran = [case for case in done if case.error is None]
    if as_json:
        click.echo(json.dumps({"model": str(path), "backend": model.backend, "device": model.device,
                               "results": [own_predict.case_json(c, signature) for c in ran],
                               "errors": errors + failed}, indent=2))
    elif output:
        if failed:
            click.echo(f"error: nothing written to {output}: {len(failed)} of {len(done)} input cases failed", err=True)
            return 2
        if fmt == "npz":
            keys = own_predict.write_npz(output, ran)
            click.echo(f"wrote {len(keys)} array{'' if len(keys) == 1 else 's'} to {output} ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
                       f"{'; NAME:K is case K of the inputs, in order' if len(ran) > 1 else ''})", err=True)
        else:
            rows = own_predict.write_parquet(output, ran, signature)
            click.echo(f"wrote {rows:,} rows to {output} (one per sample: input, row, "
                       f"{', '.join(signature.output_names)})", err=True)
    else:
        for case in ran:
            for name, value in case.outputs.items():
                doc = own_predict.summarize(value, signature.output(name).batch_axis)
                click.echo(own_predict.summary_line(case.source, name, doc))
    return 2 if errors or failed else 0


def _int_list(ctx, param, value):
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 1,64,1024") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


class ToleranceValue(click.ParamType):
    """--atol/--rtol: a finite number >= 0 for every output, or OUTPUT=NUMBER for one output of a model file."""

    name = "[OUTPUT=]NUMBER"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        output, sep, number = str(value).rpartition("=")
        if sep and not output.strip():
            self.fail(f"{value!r}: write NUMBER, or OUTPUT=NUMBER for one output", param, ctx)
        return (output.strip() or None), NON_NEGATIVE.convert(number, param, ctx)


TOLERANCE = ToleranceValue()
MODEL_FILE_SUFFIXES = (".onnx", ".pt", ".pt2", ".pth", ".ts", ".jit")
# What a tutorial model's command takes that a model file's does not, and the other way round.
TUTORIAL_ONLY = {"verify": ("all_models", "samples", "root", "run", "all_rows"),
                 "bench": ("root", "verify_samples", "run")}
FILE_ONLY = ("declared_inputs", "batch_axes", "ignore_metadata", "shapes", "values", "ranges", "input_files", "seed",
             "against", "reference_file", "save_reference", "strict")


def _given(ctx: click.Context, names) -> list[str]:
    """The options among ``names`` that the command line set (not left at their default), as typed."""
    from click.core import ParameterSource

    params = {p.name: p for p in ctx.command.params}
    return [params[n].opts[0] for n in names if n in params
            and ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]


def _model_file(name: str | None, command: str) -> bool:
    """Whether a tutorial command's NAME is a model file (the own-model path), each mistake one line:
    a path that is not there is "no such file", a folder is not a model file."""
    import os
    from pathlib import Path

    from ptx.contract.catalog import names
    from ptx.own_cli import is_model_file

    if is_model_file(name):
        return True
    if name is None or name in names():
        return False
    if Path(name).is_dir():
        from ptx.infer.model_files import file_kind

        file_kind(Path(name))  # a folder: one line saying what to give instead
    if Path(name).suffix.lower() in MODEL_FILE_SUFFIXES or os.sep in name:
        raise PtxError(f"{name}: no such file (ptx {command} takes a model NAME, see `ptx models`, or a model file: "
                       ".onnx, TorchScript .pt, .pt2)")
    return False


def _check_options(ctx: click.Context, command: str, for_file: bool) -> None:
    if for_file:
        wrong = _given(ctx, TUTORIAL_ONLY[command])
        if wrong:
            raise click.UsageError(f"{wrong[0]} is for a tutorial model NAME; a model file takes --inputs FILE "
                                   "for real samples, and nothing of a run folder")
    else:
        wrong = _given(ctx, FILE_ONLY)
        if wrong:
            raise click.UsageError(f"{wrong[0]} is for a model file (ptx {command} PATH); a tutorial model NAME "
                                   "carries its own contract")


def _tutorial_tolerance(values, option: str) -> float | None:
    if any(name is not None for name, _ in values):
        raise click.UsageError(f"{option} OUTPUT=NUMBER is for a model file's outputs; a tutorial model takes one "
                               f"{option} NUMBER")
    if len(values) > 1:
        raise click.UsageError(f"{option} is given {len(values)} times; give it once")
    return values[0][1] if values else None


def _unknown_or_file(exc, command: str, usage: str | None = None):
    """A name that is neither a registered model nor a file: the registry's did-you-mean, and the
    other thing the command takes (``usage``: how the command takes a model file, where it is not
    `ptx COMMAND model.onnx`)."""
    from ptx.errors import UnknownModelError

    return UnknownModelError(f"{exc}; or give a model file's path ({usage or f'`ptx {command} model.onnx`'})")


@cli.command("verify")
@click.argument("name", required=False, metavar="NAME|PATH")
@click.option("--all", "all_models", is_flag=True,
              help="Verify every run under --root that has an export, whatever its folder is called.")
@BACKENDS_OPTION
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True, help="Real test samples.")
@click.option("--batch-sizes", default="1,7,64", show_default=True, callback=_int_list,
              help="Batch sizes to exercise; the largest also chunks the real samples (a model file: 3,5, neither "
                   "0 nor 1, so that a batch the exporter specialised is caught).")
@click.option("--atol", type=TOLERANCE, multiple=True,
              help="Absolute tolerance (default: the artifact's, per device; a model file's: per output dtype and "
                   "device, float16 judged as float16); OUTPUT=NUMBER for one output of a model file.")
@click.option("--rtol", type=TOLERANCE, multiple=True,
              help="Relative tolerance, as --atol.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: NAME is read from ROOT/NAME, --all verifies every run under it.")
@click.option("--save-inputs", type=click.Path(dir_okay=False), help="Save the inputs used (npz) to reproduce.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (every row, reason and tolerance).")
@click.option("--all-rows", is_flag=True,
              help="List every row this machine cannot run (by default one line per missing device: 12 CUDA rows).")
@RUN
@click.option("--against", type=click.Path(dir_okay=False, exists=True), metavar="OTHER",
              help="A model file: hold another file of the same model (your TorchScript beside its ONNX) to the "
                   "reference too, output by output.")
@click.option("--reference", "reference_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A model file: reference tensors to compare every backend with (default: MODEL.reference.npz "
                   "beside the file, where there is one).")
@click.option("--save-reference", is_flag=True,
              help="A model file: write the reference backend's outputs on these inputs as reference tensors "
                   "(MODEL.reference.npz, or --reference FILE), for `ptx verify` on another machine.")
@click.option("--strict", is_flag=True,
              help="A model file: a backend that cannot run it fails the verdict (by default its row says it could "
                   "not run, and the verdict is over the rows that ran).")
@model_file_options
@generated_input_options
@click.pass_context
def verify_cmd(ctx, name, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
               all_rows, run, against, reference_file, save_reference, strict, declared_inputs, batch_axes,
               ignore_metadata, shapes, values, ranges, input_files, seed) -> None:
    """Check that every backend gives eager's answers for model NAME, on real test samples; or, for a
    model FILE (an ONNX, TorchScript or pt2 file of your own), that every backend that can load it
    gives its reference's answers (ONNX: ort-cpu, with onnx.reference as a third opinion on small
    inputs; TorchScript: the module on the CPU; pt2: aoti on the CPU), output by output, on seeded
    inputs made from its signature at two batch sizes (or --inputs), and those of the reference
    tensors kept beside it. A model file's exit status: 0 all agree, 1 a disagreement (the last line
    names the backend, the output and its error), 2 nothing could be compared.
    """
    from ptx.errors import UnknownModelError
    from ptx.infer.verify import runs_with_artifacts

    if _model_file(name, "verify"):
        _check_options(ctx, "verify", for_file=True)
        _verify_file(name, backends=backends, batch_sizes=batch_sizes if _given(ctx, ["batch_sizes"]) else None,
                     atol=atol, rtol=rtol, as_json=as_json, against=against, reference_file=reference_file,
                     save_reference=save_reference, declared_inputs=declared_inputs, batch_axes=batch_axes,
                     ignore_metadata=ignore_metadata, shapes=shapes, values=values, ranges=ranges,
                     input_files=input_files, seed=seed, strict=strict, save_inputs=save_inputs)
    _check_options(ctx, "verify", for_file=False)
    atol, rtol = _tutorial_tolerance(atol, "--atol"), _tutorial_tolerance(rtol, "--rtol")
    if all_models and (name or run):
        raise click.UsageError("--all verifies every run under --root: give NAME or --run for one, not --all")
    if not (all_models or name or run):
        raise click.UsageError("give a model NAME, --run a run folder, or --all")
    if all_models:  # every run, whatever its folder is called: each says its own model
        runs = []
        for folder in runs_with_artifacts(root):
            try:
                runs.append((_model_of_run(None, folder), folder))
            except PtxError as exc:  # one unreadable run does not stop the others from being verified
                click.echo(f"notice: skipped {folder}: {exc}", err=True)
    else:
        runs = [(_model_of_run(name, run), run)]
    if not runs:
        raise PtxError(f"no run under {root} has an export: run `ptx train NAME` and `ptx export NAME` first")
    try:
        _verify_runs(runs, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
                     all_rows)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "verify") from None


def _verify_runs(runs, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
                 all_rows) -> None:
    """``ptx verify NAME`` (or --all) of the tutorial models' runs."""
    from ptx.infer.api import run_folder
    from ptx.infer.records import record_verify
    from ptx.infer.verify import verify

    chosen = backends
    notice = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    docs, statuses = [], []
    for model, run in runs:
        save = save_inputs if not all_models or not save_inputs else f"{save_inputs}.{run.name}.npz"
        try:
            report = verify(model, backends=chosen, samples=samples, batch_sizes=batch_sizes, atol=atol, rtol=rtol,
                            root=root, save_inputs=save, notice=notice, run=run)
        except Exception as exc:  # noqa: BLE001 - with --all, one model's failure is its row, and the rest go on
            if not all_models:
                raise
            reason = str(exc) if isinstance(exc, PtxError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            docs.append({"model": model, "run": str(run), "ok": False, "exit_status": 1, "error": reason})
            statuses.append(1)
            if not as_json:
                click.echo(f"ptx verify {model} ({run}): FAILED: {reason}\n")
            continue
        record_verify(report, run_folder(model, root, run))  # what `ptx serve --backend auto` builds on
        docs.append(report.to_dict())
        statuses.append(report.exit_status)
        if not as_json:
            click.echo(report.table(all_rows) + "\n")
    failed = [d["model"] for d in docs if d.get("error")]
    if as_json:
        click.echo(json.dumps(docs if all_models else docs[0], indent=2))
    elif failed:
        click.echo(f"verify --all: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)}")
    sys.exit(max(statuses))


def _verify_file(path, *, backends, batch_sizes, atol, rtol, as_json, against, reference_file, save_reference,
                 declared_inputs, batch_axes, ignore_metadata, shapes, values, ranges, input_files, seed,
                 strict=False, save_inputs=None) -> None:
    """``ptx verify PATH``: a model file's backends against its reference; exits with its status."""
    from ptx.contract.tensor_inputs import VERIFY_BATCHES
    from ptx.infer.verify_file import verify_file
    from ptx.own_cli import open_options, plan_options

    report = verify_file(path, backends=backends, options=open_options(declared_inputs, batch_axes, ignore_metadata),
                         plan=plan_options(shapes, values, ranges), input_files=input_files, seed=seed,
                         batch_sizes=batch_sizes or VERIFY_BATCHES, atol=atol, rtol=rtol, against=against,
                         reference_file=reference_file, save=save_reference, strict=strict, save_inputs=save_inputs,
                         progress=lambda msg: click.echo(f"verify: {msg}", err=True))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    sys.exit(report.exit_status)


@cli.command("bench")
@click.argument("name", required=False, metavar="NAME|PATH")
@BACKENDS_OPTION
@click.option("--batch-sizes", default="1,64", show_default=True, callback=_int_list,
              help="Batch sizes to time (the long run: 1,64,1024).")
@click.option("--seconds", type=FiniteFloat(0.01), default=0.25, show_default=True,
              help="Timed seconds per runner and batch size, after warm-up (the long run: 1).")
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True,
              help="Alternating rounds the seconds are shared out over (the long run: 6); a row whose p50 "
                   "moves 2x or more between rounds is flagged noisy.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed runs per runner and batch size before timing.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: NAME is read from ROOT/NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table for docs.")
@click.option("--verify-samples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Real test samples `ptx verify` judges each backend and precision on before one is named "
                   "fastest (0: no verdict).")
@RUN
@model_file_options
@generated_input_options
@click.pass_context
def bench_cmd(ctx, name, backends, batch_sizes, seconds, rounds, warmup, root, as_json, markdown, verify_samples,
              run, declared_inputs, batch_axes, ignore_metadata, shapes, values, ranges, input_files, seed) -> None:
    """Latency (p50/p90/p99) and throughput of model NAME on every available backend and precision, next to
    the bare runtimes, and the fastest verified one per batch size. "vs bare" and "Nx the fastest bare
    peer" are one ratio: images/s over the bare runtime's (below 1: ptx's overhead).

    For a model FILE (an ONNX, TorchScript or pt2 file of your own): every backend that runs it here, at
    --batch-sizes (default 1,8; a model without a batch axis at its fixed shape only), on seeded inputs
    made from its signature (or --inputs), each beside its bare runtime call.

    The default run takes ~20 s on 2 cores; `--batch-sizes 1,64,1024 --seconds 1 --rounds 6` is the
    long one."""
    from dataclasses import asdict

    from ptx.errors import UnknownModelError
    from ptx.infer.api import run_folder
    from ptx.infer.bench import bench, describe_fastest, fastest, noisy_warning, rows_to_dicts, to_markdown, to_text
    from ptx.infer.records import record_bench, record_verify
    from ptx.infer.verify import verify

    if _model_file(name, "bench"):
        _check_options(ctx, "bench", for_file=True)
        from ptx.infer.bench_file import DEFAULT_FILE_BATCH_SIZES, bench_file
        from ptx.own_cli import open_options, plan_options

        result = bench_file(name, backends=backends, options=open_options(declared_inputs, batch_axes, ignore_metadata),
                            plan=plan_options(shapes, values, ranges), input_files=input_files, seed=seed,
                            batch_sizes=batch_sizes if _given(ctx, ["batch_sizes"]) else DEFAULT_FILE_BATCH_SIZES,
                            warmup=warmup, seconds=seconds, rounds=rounds,
                            progress=lambda msg: click.echo(f"timing {msg}", err=True))
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.text(markdown))
        noisy = noisy_warning(result.rows)
        if noisy:
            click.echo(f"warning: {noisy}", err=True)
        return
    _check_options(ctx, "bench", for_file=False)
    name = _model_of_run(name, run)
    if name is None:
        raise click.UsageError("give a model NAME, or --run a run folder")
    chosen = backends
    try:
        rows, skipped = bench(name, backends=chosen, batch_sizes=batch_sizes, root=root, warmup=warmup, seconds=seconds,
                              rounds=rounds, progress=lambda msg: click.echo(f"timing {msg}", err=True), run=run)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "bench") from None
    record_bench(rows, run_folder(name, root, run))  # `ptx serve --backend auto` picks the fastest verified
    verdicts, unverified = [], {}
    if verify_samples:
        timed = sorted({r.runner for r in rows if r.peer_of is None and r.ceiling_of is None})
        click.echo(f"verifying {', '.join(timed)} on {verify_samples} real test samples", err=True)
        report = verify(name, backends=timed, samples=verify_samples, root=root, notice=lambda _: None, run=run)
        record_verify(report, run_folder(name, root, run))
        unverified = {v.label: "; ".join(v.reasons) for v in report.verdicts if not v.ok and v.label in timed}
        verdicts = fastest(rows, {v.label for v in report.verdicts if v.ok})
    if as_json:
        click.echo(json.dumps({"model": name, "rows": rows_to_dicts(rows), "skipped": skipped,
                               "fastest": [asdict(v) for v in verdicts], "unverified": unverified}, indent=2))
        return
    click.echo(to_markdown(name, rows, skipped) if markdown else to_text(name, rows, skipped))
    if verify_samples:
        click.echo("\n".join(describe_fastest(verdicts, unverified)))
    noisy = noisy_warning(rows)
    if noisy:
        click.echo(f"warning: {noisy}", err=True)


@cli.command("serve", short_help="Answer requests for models over the Open Inference Protocol (REST, gRPC).")
@click.argument("names", nargs=-1, required=True, metavar="MODEL|FILE...")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: each MODEL is served from ROOT/MODEL.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token (or --insecure).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="REST port (0: any free port, printed at startup).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="gRPC port (0: any free port, printed at startup).")
@click.option("--backend", type=Choice(["auto", *BACKENDS]), default="auto", show_default=True,
              help="auto: per model, the fastest backend that passed `ptx verify` on this machine for batches up "
                   "to --max-batch-size (by `ptx bench`'s record, else timed at startup; another than ort-cpu only "
                   "when 10% faster), else ort-cpu.")
@click.option("--precision", type=Choice(PRECISIONS), help="f32 (default), bf16 or int8.")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]),
              help="Device for a --backend that runs on several (eager, torchscript, aoti; default cpu); other "
                   "backends refuse one they do not run on, and auto chooses the device itself.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Rows the dynamic batcher runs together at most (1: no batching).")
@click.option("--max-delay-ms", type=FiniteFloat(0.0), default=2.0, show_default=True,
              help="How long a request may wait for company in the batcher.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batches of one model that run at once (inference threads per model).")
@click.option("--token", envvar="PTX_SERVE_TOKEN",
              help="Every request but health needs `Authorization: Bearer TOKEN`. Env: PTX_SERVE_TOKEN.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without a token (prints a warning).")
@click.option("--max-request-bytes", type=click.IntRange(min=1024), default=16 * 1024 * 1024, show_default=True,
              help="Largest request body (after decompression) accepted.")
@click.option("--drain-seconds", type=FiniteFloat(0.0), default=5.0, show_default=True,
              help="After SIGTERM or Ctrl-C: readiness answers 503 and answers say `Connection: close` for this long "
                   "before the server stops accepting (set it past your load balancer's or KServe's probe period).")
@click.option("--header-timeout", type=FiniteFloat(0.1), default=10.0, show_default=True,
              help="Seconds a connection gets to send a complete request header; then it is closed.")
@click.option("--keep-alive-seconds", type=FiniteFloat(0.1), default=5.0, show_default=True,
              help="An idle kept-alive connection is closed after this.")
@click.option("--max-connections", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Open REST connections at most (lowered to fit the file-descriptor limit, with a warning); past "
                   "it the oldest connection still without a request header is closed, or the newcomer gets a 503.")
@click.option("--name", "served_names", multiple=True, metavar="NAME",
              help="The name a model FILE is served as (default: the file's name without its suffix); repeat it "
                   "for several files, in the order they are given.")
@model_file_options  # --input declares the TorchScript and pt2 files' inputs; ONNX files describe their own
def serve_cmd(names, root, host, http_port, grpc_port, backend, precision, device, max_batch_size, max_delay_ms,
              workers, token, insecure, max_request_bytes, drain_seconds, header_timeout, keep_alive_seconds,
              max_connections, served_names, declared_inputs, batch_axes, ignore_metadata) -> None:
    """Serve MODEL... over the Open Inference Protocol (v2, REST and gRPC, as Triton and KServe speak
    it), with a dynamic batcher per model, Prometheus metrics at /metrics and a drawing page at /.

    A MODEL is a tutorial model's name, or your own model's file (.onnx, a TorchScript .pt with
    --input declarations, a .pt2): it is served by its own named inputs and outputs (the v2 metadata
    lists them, -1 for every symbolic dimension), batched only where every input and output has a
    batch axis, else request by request.

    Each tutorial model takes its own tensor (as `ptx export NAME --format triton` configures it) or
    what a user has: `image` (encoded picture files) or `text` (numbers, CSV rows, words), answered
    with `label` and `probabilities`. Ctrl-C or SIGTERM: readiness turns 503, answers go on with
    `Connection: close` for --drain-seconds, then the server stops accepting, finishes the requests in
    flight and exits 0.
    """
    from ptx.serve import ServeOptions, serve  # without the serve extra: one line with the pip command

    tutorial, files = _models_and_files(names)
    if len(served_names) > len(files):
        raise click.UsageError(f"--name is given {len(served_names)} times for {len(files)} model file(s): it names "
                               "model files, in order")
    for given in served_names:
        if not given or any(c in given for c in "/ \t?#%"):
            raise click.UsageError(f"--name {given!r}: a served name is one word without '/', spaces, ?, # or %")
    files = [(served_names[i] if i < len(served_names) else path.name.split(".")[0], path)
             for i, path in enumerate(files)]
    if not files and (declared_inputs or batch_axes or ignore_metadata):
        raise click.UsageError("--input, --batch-axis and --ignore-metadata are for a model FILE; the tutorial "
                               "models carry their contract")

    options = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, max_batch_size=max_batch_size,
                           max_delay_ms=max_delay_ms, workers=workers, token=token or None,
                           max_request_bytes=max_request_bytes, drain_seconds=drain_seconds,
                           header_timeout=header_timeout, keep_alive_seconds=keep_alive_seconds,
                           max_connections=max_connections)
    from ptx.errors import UnknownModelError

    try:
        serve(list(dict.fromkeys(tutorial)), options=options, root=root, backend=backend, precision=precision,
              device=device, insecure=insecure, log=lambda line: click.echo(line, err=line.startswith("warning")),
              files=files, open_options=open_options(declared_inputs, batch_axes, ignore_metadata))
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "serve") from None


@cli.command("inspect", short_help="What a model file (or a run folder's exports) is, and which backends run it here.")
@click.argument("path", metavar="PATH")
@model_file_options
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: a tutorial model NAME given as PATH is ROOT/NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")
def inspect_cmd(path, declared_inputs, batch_axes, ignore_metadata, root, as_json) -> None:
    """Show what PATH is: a model file (.onnx, TorchScript .pt, .pt2) or a run folder's exports.

    For each file: its inputs and outputs (dtypes, shapes with symbolic dimensions, the batch axis),
    where that contract comes from (the graph, ptx metadata, your --input), for ONNX the opsets,
    operator counts, parameters and external data, the weights digest (and whether it matches the
    one its ptx metadata records), and for every backend that reads that kind of file whether it can
    run it on this machine, and if not why: OpenVINO's refusal, the nodes ONNX Runtime's CUDA provider
    would leave on the CPU (decided without a GPU), whether a CUDA graph can capture it, and what
    onnxruntime's int8 quantizers cover. Nothing is run, except a TorchScript or pt2 file's two probe
    runs that learn its outputs (give its inputs with --input).
    """
    from pathlib import Path

    from ptx.contract.catalog import names
    from ptx.infer.inspect_file import inspect_path
    from ptx.own_cli import open_options

    target = Path(path)
    if not target.exists():
        if path in names() and (Path(root) / path).is_dir():
            target = Path(root) / path
        else:
            where = f"; a tutorial model's run folder is {Path(root) / path}, which does not exist either" \
                if path in names() else ""
            raise PtxError(f"{path}: no such file or run folder{where}")
    report = inspect_path(target, open_options(declared_inputs, batch_axes, ignore_metadata))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.text())


inspect_cmd.help = f"{inspect.cleandoc(inspect_cmd.help)}\n\n{SECURITY_NOTE}"


def _verify_help() -> None:
    """verify's --help states the rule its table and JSON state, from the one definition."""
    import textwrap

    from ptx.infer.verify import RULE

    # \b keeps click from rewrapping the block; it is wrapped here, each entry under its name.
    entries = [textwrap.fill(f"{text}.", 78, initial_indent=f"{name + ':':<16}", subsequent_indent=" " * 16,
                             break_on_hyphens=False)
               for name, text in RULE.items()]
    verify_cmd.help = "\n\n".join([inspect.cleandoc(verify_cmd.help), *("\b\n" + e for e in entries), SECURITY_NOTE])


_verify_help()
for _command in (predict_cmd, serve_cmd, export_cmd, bench_cmd):  # the commands that open a user's model file
    _command.help = f"{inspect.cleandoc(_command.help)}\n\n{SECURITY_NOTE}"  # cleandoc: as click reads a docstring


@cli.group("data")
def data_group() -> None:
    """Datasets ptx downloads (MNIST, Fashion-MNIST): what is cached and where, and fetching them.

    \b
    ptx data list                 what each dataset gives, what is in the cache, what `ptx train` reads
    ptx data fetch mnist          download full MNIST (11.6 MB) into the cache, verified
    ptx data fetch fashion-mnist  download Fashion-MNIST (30.9 MB)

    The cache is $PTX_CACHE_DIR/datasets, else $XDG_CACHE_HOME/ptx/datasets, else
    ~/.cache/ptx/datasets. `ptx train` downloads by itself when a dataset is nowhere on the machine;
    PTX_OFFLINE=1 (or `ptx train --offline`) turns that off.
    """


@data_group.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="PTX_DATA_DIR",
              help="The folder `ptx train --data-dir` would read first. Env: PTX_DATA_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def data_list_cmd(data_dir, as_json) -> None:
    """Show what every dataset `ptx train --dataset` takes gives (input and label) and which models
    fit it; and each downloadable dataset's state in the cache and where `ptx train` would read it."""
    from ptx.contract.catalog import MODELS
    from ptx.contract.datasets import DATASET_INFO, DataKind, fits
    from ptx.trainers.data import find_local_idx
    from ptx.trainers.download import REMOTES, cache_state, datasets_dir, offline_requested

    offline = offline_requested()
    rows, reads = [], []
    for name, remote in REMOTES.items():
        state = cache_state(remote)
        found, _ = find_local_idx(name, data_dir)
        if found:
            reads.append(f"{found[1]} ({found[0]})")
        elif offline:
            reads.append("mnist-sample (an error with --dataset mnist)" if name == "mnist" else "nothing: downloads are off")
        else:
            reads.append(f"a download from {remote.mirrors[0]}")
        rows.append({"dataset": name, "cache_folder": str(state.folder), "cache": state.describe(),
                     "files_cached": len(state.complete), "files": len(remote.files),
                     "bytes_cached": state.cached_bytes, "bytes": remote.size,
                     "train_reads": {"how": found[1], "folder": str(found[0])} if found else None})
    # What each dataset gives, the same facts `ptx models` shows for what each model takes.
    kinds = []
    for name, info in DATASET_INFO.items():
        models = [m["name"] for m in MODELS if fits(DataKind.from_dict(m["takes"]), info.gives)]
        kinds.append({"dataset": name, "gives": info.gives.to_dict(), "loader": info.loader, "models": models})
    by_name = {row["dataset"]: row for row in rows}
    if as_json:  # one row per dataset; the downloadable ones also say what is in the cache
        click.echo(json.dumps([{**kind, **by_name.get(kind["dataset"], {})} for kind in kinds], indent=2))
        return
    gives = [DataKind.from_dict(kind["gives"]).short() for kind in kinds]
    name_w, gives_w = max(len(k["dataset"]) for k in kinds), max(len(g) for g in gives)
    click.echo(f"{'dataset':<{name_w}}  {'gives':<{gives_w}}  models that train on it")
    for kind, text in zip(kinds, gives):
        models = kind["models"]
        shown = ", ".join(models) if len(models) <= 4 else f"{len(models)} models: {', '.join(models[:3])}, ..."
        click.echo(f"{kind['dataset']:<{name_w}}  {text:<{gives_w}}  {shown}")
    click.echo(f"\ncache: {datasets_dir()}" + ("  (downloads off: PTX_OFFLINE=1)" if offline else ""))
    width = max(len(r["cache"]) for r in rows)
    click.echo(f"{'dataset':<14} {'in the cache':<{width}}  ptx train reads")
    for r, where in zip(rows, reads):
        click.echo(f"{r['dataset']:<14} {r['cache']:<{width}}  {where}")


@data_group.command("fetch")
# The names of trainers.download.REMOTES, written out: importing it here would load urllib for every command.
@click.argument("names", nargs=-1, required=True, type=Choice(["mnist", "fashion-mnist"]))
@click.option("--mirror", "mirrors", multiple=True, metavar="URL",
              help="A mirror to try before the built-in ones (a folder URL holding the .gz files); repeatable.")
@click.option("--timeout", type=POSITIVE, default=15.0, show_default=True,
              help="Seconds a connection or a read may stall before the next mirror is tried.")
def data_fetch_cmd(names, mirrors, timeout) -> None:
    """Download NAMES into the cache: SHA-256 checked, resumable, mirrors tried in order."""
    from ptx.trainers.download import OFFLINE_ENV, REMOTES, fetch, offline_requested

    if offline_requested():
        raise PtxError(f"downloads are off ({OFFLINE_ENV}=1): unset it to fetch {', '.join(names)}")
    for name in dict.fromkeys(names):
        folder = fetch(name, mirrors=mirrors, timeout=timeout, log=lambda line: click.echo(line, err=True))
        click.echo(f"{name}: {len(REMOTES[name].files)} files verified in {folder}")


def main() -> None:
    """Usage errors (a bad option value, a missing argument) are one line, like every other error."""
    try:
        code = cli.main(prog_name="ptx", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) else ""
        click.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
