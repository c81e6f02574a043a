"""The `ptx` command: each subcommand is a thin wrapper over one library function.

Imports are lazy: `ptx predict` with an ONNX Runtime backend must start without importing torch.
"""
from __future__ import annotations

import json
import math
import sys
import warnings

import click

from ptx.contract import DEFAULT_OPSET, DEFAULT_RUNS_ROOT
from ptx.contract.names import PRECISIONS
from ptx.errors import PtxError, PtxWarning
from ptx.export.formats import default_formats, list_formats
from ptx.export.formats.onnx import Exporter
from ptx.infer.backends import list_backends

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
    """Train the tutorials' models, export them, and predict through six agreeing backends.

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
    for r in rows:
        r["shape"] = "(" + ", ".join(str(d) for d in r["input_shape"]) + ")"
        r["format_list"] = ",".join(r["formats"])
        r["data"] = DataKind.from_dict(r["takes"]).short()
    keys = ("name", "shape", "data", "dataset", "tutorial", "format_list")
    width = {key: max(len(key), *(len(str(r[key])) for r in rows)) for key in keys}
    header = (f"{'name':<{width['name']}}  {'input shape':<{width['shape']}}  {'takes':<{width['data']}}  {'params':>10}  "
              f"{'dataset':<{width['dataset']}}  {'tutorial':<{width['tutorial']}}  {'formats':<{width['format_list']}}  "
              "description")
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        click.echo(f"{r['name']:<{width['name']}}  {r['shape']:<{width['shape']}}  {r['data']:<{width['data']}}  "
                   f"{r['params']:>10,}  {r['dataset']:<{width['dataset']}}  {r['tutorial']:<{width['tutorial']}}  "
                   f"{r['format_list']:<{width['format_list']}}  {r['description']}")
    from ptx.tutorials import legend

    click.echo("\ntutorial: the document each model and its recipe come from\n" + legend())


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
            f"\b\nRecipes come from the tutorial that documents each model (`ptx models`, column tutorial):\n"
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
@click.option("--device", type=DeviceChoice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
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


@cli.command("export")
@click.argument("name", required=False)
@click.option("--format", "fmt", type=Choice([*FORMATS, TRITON, KSERVE, "all"]), default="all",
              show_default=True,
              help=f"all: {', '.join(default_formats())}; the others only when named (pt2 compiles for ~40 s; "
                   "onnx-int8 is quantized, model.int8.onnx; triton and kserve write deployment folders).")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Checkpoint (default: the one in --out when it holds a run, else runs/NAME/checkpoint.pt).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder (default: the checkpoint's folder): a run folder `ptx train --out` wrote exports "
                   "that run; for triton the model repository, for kserve the deployment folder (required).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--exporter", type=Choice([e.value for e in Exporter]),
              help="ONNX exporter: torch.export-based dynamo (default), or the deprecated TorchScript-based "
                   "one (the default for gru-classifier, whose packed sequences dynamo cannot export).")
@click.option("--atol", type=NON_NEGATIVE, help="Absolute tolerance against eager (default: the contract's CPU atol).")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="pt2 only: the device AOTInductor compiles for (the package runs there only).")
@click.option("--triton-backend", type=Choice(["onnxruntime", "pytorch"]), default="onnxruntime",
              show_default=True,
              help="triton only: serve model.onnx (onnxruntime_onnx) or model.pt (pytorch_libtorch).")
@click.option("--image", help="kserve only: the container image the manifest names (default ptx-NAME:VERSION).")
@click.option("--run", "run", type=click.Path(file_okay=False),
              help="The run folder to export (its checkpoint; the exports are written there unless --out says "
                   "where); NAME defaults to the run's model.")
@click.option("--input", "input_dtype", type=Choice(["float32", "uint8"]), default="float32", show_default=True,
              help="onnx/torchscript, picture models: uint8 makes the graph take raw (batch, 28, 28) pictures and "
                   "normalise them itself (a quarter of the bytes to move; docs/artifact-format.md).")
@FORCE
def export_cmd(name, fmt, checkpoint, out, opset, exporter, atol, device, triton_backend, image, input_dtype,
               force, run) -> None:
    """Export model NAME's checkpoint with a dynamic batch, validated against eager: ONNX and TorchScript
    (all), an int8 ONNX (onnx-int8, judged by labels), a pt2 package (torch.export + AOTInductor), a
    Triton model repository folder (--out REPO), or a KServe deployment (--out DIR: a Dockerfile running
    `ptx serve` and an InferenceService manifest)."""
    from pathlib import Path

    from ptx.infer import open_artifact

    if run is not None:
        name = _model_of_run(name, run)
        checkpoint = checkpoint or str(Path(run) / "checkpoint.pt")
        if fmt not in (TRITON, KSERVE):
            out = out or run
    elif name is None and out is not None and Path(out, "checkpoint.pt").is_file():
        name = _model_of_run(None, out)  # `--out RUN` exports that run, as before
    if name is None:
        raise click.UsageError("give a model NAME, or --run the run folder to export")
    options = dict(open_predictor=open_artifact, checkpoint=checkpoint, opset=opset, exporter=exporter, atol=atol,
                   log=click.echo)
    if fmt in (TRITON, KSERVE) and input_dtype != "float32":
        raise click.UsageError(f"--input {input_dtype} is for --format onnx or torchscript; --format {fmt} serves "
                               "the float export")
    if fmt in (TRITON, KSERVE) and device != "cpu":  # refused, not ignored: these folders serve the ONNX export
        raise click.UsageError(f"--device {device} is the device pt2 compiles for; --format {fmt} writes a portable "
                               "folder: drop --device")
    if fmt == TRITON:
        from ptx.export.triton import export_triton

        if not out:
            raise click.UsageError("--format triton writes a model repository: give it with --out REPO")
        export_triton(name, out, backend=triton_backend, force=force, **options)
        return
    if fmt == KSERVE:
        from ptx.export.kserve import export_kserve

        if not out:
            raise click.UsageError("--format kserve writes a deployment folder: give it with --out DIR")
        export_kserve(name, out, image=image, force=force, **options)
        return
    from ptx.export.api import export_model
    from ptx.infer.records import record_export_judgement

    formats = default_formats() if fmt == "all" else [fmt]
    for result in export_model(name, formats, out=out, force=force, device=device, input_dtype=input_dtype, **options):
        record_export_judgement(result, result.path.parent)  # predict and serve warn on a NOT USABLE verdict


@cli.command("predict")
@click.argument("inputs", nargs=-1)  # required, checked below: `--ray DIR` may take the first
@click.option("--model", help="Registered model whose artifacts to use (default: the --run's own model, else convnet).")
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
                   "low_confidence); README says what each P costs on the test set.")
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
def predict_cmd(inputs, model, backend, device, precision, artifact, root, topk, as_json, raw, recursive,
                min_confidence, output, resume, workers, quiet, ray_address, run) -> None:
    """Predict INPUTS through one backend: image files, folders or globs for the image models;
    numbers for linreg and logistic; CSV rows or CSV files for diabetes; words for rnn-hello and
    gru-classifier. `-` reads standard input: a picture file's bytes, or text (one input per line;
    a CSV file's rows for diabetes). Answers come out in input order as each chunk is done.

    Exit status: 0 all predicted, 1 some inputs failed (each named on stderr), 2 usage error.
    """
    from ptx.infer.batch import STDIN, tsv_field

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
    from ptx.infer.scoring import score

    errors = score(list(inputs), output=output, resume=resume, workers=workers, quiet=quiet, as_json=as_json,
                   topk=topk or 0, model=model, backend=backend, device=device, precision=precision,
                   artifact=artifact, root=root, raw=raw, run=run, recursive=recursive, stdin=stdin,
                   min_confidence=min_confidence, echo=click.echo, field=tsv_field)
    sys.exit(1 if errors else 0)


def _int_list(ctx, param, value):
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 1,64,1024") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


@cli.command("verify")
@click.argument("name", required=False)
@click.option("--all", "all_models", is_flag=True,
              help="Verify every run under --root that has an export, whatever its folder is called.")
@BACKENDS_OPTION
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True, help="Real test samples.")
@click.option("--batch-sizes", default="1,7,64", show_default=True, callback=_int_list,
              help="Batch sizes to exercise; the largest also chunks the real samples.")
@click.option("--atol", type=NON_NEGATIVE, help="Absolute tolerance (default: the artifact's, per device).")
@click.option("--rtol", type=NON_NEGATIVE, help="Relative tolerance (default: the artifact's, per device).")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True)
@click.option("--save-inputs", type=click.Path(dir_okay=False), help="Save the inputs used (npz) to reproduce.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@RUN
def verify_cmd(name, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json, run) -> None:
    """Check that every backend gives eager's answers for model NAME, on real test samples."""
    from ptx.infer.api import run_folder
    from ptx.infer.records import record_verify
    from ptx.infer.verify import runs_with_artifacts, verify

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
            click.echo(report.table() + "\n")
    failed = [d["model"] for d in docs if d.get("error")]
    if as_json:
        click.echo(json.dumps(docs if all_models else docs[0], indent=2))
    elif failed:
        click.echo(f"verify --all: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)}")
    sys.exit(max(statuses))


@cli.command("bench")
@click.argument("name", required=False)
@BACKENDS_OPTION
@click.option("--batch-sizes", default="1,64", show_default=True, callback=_int_list,
              help="Batch sizes to time (the long run: 1,64,1024).")
@click.option("--seconds", type=FiniteFloat(0.01), default=0.25, show_default=True,
              help="Timed seconds per runner and batch size, after warm-up (the long run: 1).")
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True,
              help="Alternating rounds the seconds are shared out over (the long run: 6); a row whose p50 "
                   "moves 2x or more between rounds is flagged noisy.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table for docs.")
@click.option("--verify-samples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Real test samples `ptx verify` judges each backend and precision on before one is named "
                   "fastest (0: no verdict).")
@RUN
def bench_cmd(name, backends, batch_sizes, seconds, rounds, warmup, root, as_json, markdown, verify_samples,
              run) -> None:
    """Latency (p50/p90/p99) and throughput of model NAME on every available backend and precision, next to
    the bare runtimes, and the fastest verified one per batch size. "vs bare" and "Nx the fastest bare
    peer" are one ratio: images/s over the bare runtime's (below 1: ptx's overhead).

    The default run takes ~20 s on 2 cores; `--batch-sizes 1,64,1024 --seconds 1 --rounds 6` is the
    long one."""
    from dataclasses import asdict

    from ptx.infer.api import run_folder
    from ptx.infer.bench import bench, describe_fastest, fastest, noisy_warning, rows_to_dicts, to_markdown, to_text
    from ptx.infer.records import record_bench, record_verify
    from ptx.infer.verify import verify

    name = _model_of_run(name, run)
    if name is None:
        raise click.UsageError("give a model NAME, or --run a run folder")
    chosen = backends
    rows, skipped = bench(name, backends=chosen, batch_sizes=batch_sizes, root=root, warmup=warmup, seconds=seconds,
                          rounds=rounds, progress=lambda msg: click.echo(f"timing {msg}", err=True), run=run)
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
@click.argument("names", nargs=-1, required=True, metavar="MODEL...")
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
def serve_cmd(names, root, host, http_port, grpc_port, backend, precision, device, max_batch_size, max_delay_ms,
              workers, token, insecure, max_request_bytes, drain_seconds, header_timeout, keep_alive_seconds,
              max_connections) -> None:
    """Serve MODEL... over the Open Inference Protocol (v2, REST and gRPC, as Triton and KServe speak
    it), with a dynamic batcher per model, Prometheus metrics at /metrics and a drawing page at /.

    Each model takes its own tensor (as `ptx export NAME --format triton` configures it) or what a
    user has: `image` (encoded picture files) or `text` (numbers, CSV rows, words), answered with
    `label` and `probabilities`. Ctrl-C or SIGTERM: readiness turns 503, answers go on with
    `Connection: close` for --drain-seconds, then the server stops accepting, finishes the requests in
    flight and exits 0.
    """
    from ptx.serve import ServeOptions, serve  # without the serve extra: one line with the pip command

    options = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, max_batch_size=max_batch_size,
                           max_delay_ms=max_delay_ms, workers=workers, token=token or None,
                           max_request_bytes=max_request_bytes, drain_seconds=drain_seconds,
                           header_timeout=header_timeout, keep_alive_seconds=keep_alive_seconds,
                           max_connections=max_connections)
    serve(list(dict.fromkeys(names)), options=options, root=root, backend=backend, precision=precision,
          device=device, insecure=insecure, log=lambda line: click.echo(line, err=line.startswith("warning")))


def _verify_help() -> None:
    """verify's --help states the rule its table and JSON state, from the one definition."""
    import textwrap

    from ptx.infer.verify import RULE

    # \b keeps click from rewrapping the block; it is wrapped here, each entry under its name.
    entries = [textwrap.fill(f"{text}.", 78, initial_indent=f"{name + ':':<16}", subsequent_indent=" " * 16,
                             break_on_hyphens=False)
               for name, text in RULE.items()]
    verify_cmd.help = "\n\n".join([verify_cmd.help.strip(), *("\b\n" + e for e in entries)])


_verify_help()


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
