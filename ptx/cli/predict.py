"""`ptx predict`: inputs through one backend (ptx.infer.predict.scoring.score), or through a user's model
file (ptx.infer.predict.named_outputs).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path

import click

from ptx.cli.options import (RUN, SECURITY_NOTE, Choice, DeviceChoice, backend_names, model_file_options,
                             open_options, refuse_given, refuse_meaningless)
from ptx.files import exists
from ptx.cli.targets import MODEL_FILE_SUFFIXES, _unknown_or_file, missing_path, names_model_file
from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.contract.names import PRECISIONS
from ptx.errors import PtxError, UnknownModelError


@click.command("predict")
@click.argument("inputs", nargs=-1)  # required, checked below: `--ray DIR` may take the first
@click.option("--model", help="Registered model whose artifacts to use (default: the --run's own model, else convnet), "
                              "or your own model's FILE (.onnx, a TorchScript .pt with --input, a .pt2): INPUTS are "
                              "then tensors in .npz (arrays by input name; NAME:K for several cases), .npy (a "
                              "one-input model) or .json files.")
@click.option("--backend", type=Choice(backend_names()),
              help="Default: ort-cpu, or with --artifact the file's own kind.")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]),
              help="Device for a backend that runs on several (eager, torchscript, aoti; default cpu); other "
                   "backends refuse one they do not run on (ONNX on the GPU is --backend ort-cuda).")
@click.option("--precision", type=Choice(PRECISIONS),
              help="f32 (default), bf16 (openvino) or int8 (model.int8.onnx from `ptx export NAME --format onnx-int8`).")
@click.option("--artifact", type=click.Path(dir_okay=False), help="An artifact file to use instead of runs/MODEL/.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True, help="Where runs live.")
@click.option("--topk", type=click.IntRange(min=1), help="Also show the K most likely labels (your own model's file: the K highest scores of each row of an "
                   "output of scores, by index).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")
@click.option("--draw", type=click.Path(file_okay=False), metavar="FOLDER",
              help="Your own detection model's file (one dict of boxes per picture): draw each picture's boxes, labels "
                   "and scores into FOLDER/NAME.detections.png (INPUTS may then be pictures).")
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
def predict_cmd(inputs, model, backend, device, precision, artifact, root, topk, as_json, draw, raw, recursive,
                min_confidence, output, resume, workers, quiet, ray_address, run, declared_inputs, batch_axes,
                ignore_metadata) -> None:
    """Predict INPUTS through one backend: image files, folders or globs for the image models;
    numbers for linreg and logistic; CSV rows or CSV files for diabetes; words for rnn-hello and
    gru-classifier. `-` reads standard input: a picture file's bytes, or text (one input per line;
    a CSV file's rows for diabetes). Answers come out in input order as each chunk is done.

    With your own model's FILE first (`ptx predict model.onnx inputs.npz`, or --model FILE), INPUTS
    are .npz/.npy/.json files of its input tensors; each
    output is summarised (dtype, shape, min/mean/max, and the argmax per row of what looks like class
    scores), or given whole by --json, or written by --output FILE.npz (arrays by name; NAME:K for several
    cases) or FILE.parquet (one row per sample, where every output has a batch axis).

    Exit status: 0 all predicted, 1 some inputs failed (each named on stderr), 2 usage error (with
    --model FILE: 2 when an input file does not fit the model, each named on stderr).
    """
    from ptx.infer.model.target import Target
    from ptx.infer.predict.scoring import STDIN, score, tsv_field

    if inputs and not exists(inputs[0]) and Path(inputs[0]).suffix.lower() in MODEL_FILE_SUFFIXES:
        # a mistyped model file would otherwise be read as a picture for the default model, convnet
        raise PtxError(f"{inputs[0]}: no such file (give your model file's path, or a picture for a tutorial model)")
    if inputs and names_model_file(inputs[0]):  # `ptx predict model.onnx INPUTS...`, as `--model model.onnx`
        if model is not None:
            raise click.UsageError(f"{inputs[0]} is a model file and --model {model} names another: give one")
        model, inputs = inputs[0], inputs[1:]
    # --model: your own model's file (answered by its tensors), or a tutorial model's name or run folder;
    # a path that is not there is said with what --model takes
    missing_path(model, "predict --model")
    target = None if model is None else Target.of(model, root=root, run=run, option="--model",
                                                  options=open_options(declared_inputs, batch_axes, ignore_metadata))
    if target is not None and not target.is_run:
        refuse_given(click.get_current_context(), ["artifact", "run", "raw", "recursive", "min_confidence", "resume",
                                                   "workers", "ray_address"],
                     "is for the tutorial models' answers; your own model's predict takes --backend, --device, --json, "
                     "--topk, --output FILE.npz|FILE.parquet and --input, --batch-axis, --ignore-metadata")
        if as_json and output:
            raise click.UsageError("give --json or --output, not both")
        if topk and output:
            raise click.UsageError("--output writes the outputs whole; --topk is for the answers printed (or --json)")
        if not inputs:
            raise click.UsageError("Missing argument 'INPUTS...': .npz, .npy or .json files of the model's inputs.")
        sys.exit(_predict_own(target, inputs, backend=backend, device=device, precision=precision, as_json=as_json,
                              output=output, topk=topk or 0, draw=draw))
    refuse_meaningless(click.get_current_context(), "run")
    if draw is not None:
        raise click.UsageError("--draw draws a detection model's boxes: give its file (ptx predict --model MODEL.onnx "
                               "PICTURES --draw FOLDER)")

    if artifact is not None:
        target = _tutorial_artifact(Target.of(artifact))
    elif target is None:
        target = Target.of(None if run is not None else "convnet", root=root, run=run, option="--model")
    if resume and not output:
        raise click.UsageError("--resume needs --output FILE: the file of answers to continue")
    if as_json and output:
        raise click.UsageError("--output writes --json's fields already: give one of them")
    if ray_address is not None:
        from ptx.infer.predict.ray_data import predict_with_ray, split_address

        ray_address, inputs = split_address(ray_address, inputs)
    if not inputs:
        raise click.UsageError("Missing argument 'INPUTS...'.")
    # what the answers are, with Ray Data or here
    answers = dict(target=target, backend=backend, device=device, precision=precision, raw=raw,
                   min_confidence=min_confidence, topk=topk or 0)
    if ray_address is not None:
        if not output:
            raise click.UsageError("--ray writes Parquet: give --output DIR_OR_FILE")
        count = predict_with_ray(list(inputs), output, address=ray_address, **answers)
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

    # ONNX Runtime's intra-op threads spin between runs by default; while worker processes prepare a
    # folder's pictures on every core, the spinning took the CPU they needed (10,000 PNGs on 2 cores:
    # main process 2.5 s of CPU with spinning, 1.3 s without; docs/batch-scoring.md). One picture
    # makes one run, for which spinning changes nothing. PTX_ORT_SPINNING=1 restores it.
    os.environ.setdefault("PTX_ORT_SPINNING", "0")
    try:
        errors = score(list(inputs), output=output, resume=resume, workers=workers, quiet=quiet, as_json=as_json,
                       recursive=recursive, stdin=stdin, echo=click.echo, field=tsv_field, **answers)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "predict", "`ptx predict --model model.onnx INPUTS.npz`") from None
    sys.exit(1 if errors else 0)


def _tutorial_artifact(target):
    """--artifact reads a tutorial model's export (its head: pictures, labels); your own model's file
    (ptx export --module's, or a foreign one) has none, and is refused in one line saying how to
    predict with it instead of failing inside scoring (a checkpoint's contract is read when it opens)."""
    if target.kind not in ("run", "checkpoint") and not target.found.has_contract:
        raise PtxError(f"--artifact {target.name}: your own model's file (no tutorial model's contract); predict with "
                       f"it by its tensors: `ptx predict --model {target.name} INPUTS.npz`")
    return target


def _predict_own(target, inputs, *, backend, device, precision, as_json: bool, output: str | None,
                 topk: int = 0, draw: str | None = None) -> int:
    """`ptx predict --model FILE INPUTS`: each input file through your own model. Returns the exit
    status: 0, or 2 when an input file could not be read, did not fit, or the runtime refused it."""
    from ptx.infer.predict import named_outputs as predict_outputs
    from ptx.infer import load

    model = load(target, backend, device=device, precision=precision)
    if model.opened:  # the file that answers is not the one given: said before any answer
        click.echo(f"note: {model.opened}", err=True)
    signature = model.signature
    predict_outputs.check_topk(topk, signature, model.name)
    fmt = predict_outputs.check_output_path(output, signature) if output else None
    pictures = {}  # a detection model's pictures: case label -> (path, model pixels to the picture's)
    if signature.detections is not None or draw is not None:
        from ptx.infer.predict.detections import split_pictures

        inputs, picture_cases, pictures = split_pictures(inputs, signature, model.name, draw)
    cases, errors = predict_outputs.read_inputs(signature, inputs, model.name)
    if pictures:
        cases = picture_cases + cases
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if output and errors:
        # Cases are numbered across the input files: a file left out would renumber the others.
        click.echo(f"error: nothing written to {output}: give only input files that fit", err=True)
        return 2
    done = list(predict_outputs.answer_cases(model, cases))
    failed = [case.error for case in done if case.error is not None]
    for line in failed:
        click.echo(f"error: {line}", err=True)
    ran = [case for case in done if case.error is None]
    if pictures:  # boxes in the pixels of the pictures given, not of the size the model saw them at
        from ptx.infer.predict.detections import in_picture_pixels

        for case in ran:
            if case.label in pictures:
                case.outputs = in_picture_pixels(case.outputs, signature.detections, pictures[case.label])
    if draw is not None:
        from ptx.infer.predict.detections import draw_cases

        for line in draw_cases(ran, pictures, signature.detections, draw):
            click.echo(line, err=True)
    # The answers are flat named tensors (as run() and serve give them); a module that nested them is said once.
    structure = model.output_structure
    nested = structure is not None and structure.nested
    if as_json:
        click.echo(json.dumps({"model": target.name, "file": str(model.path), "backend": model.backend,
                               "device": model.device, "precision": model.precision,
                               **({"output_structure": structure.tree} if nested else {}),
                               "results": [_with_detections(predict_outputs.case_json(c, signature, topk), c, signature,
                                                            pictures) for c in ran],
                               "errors": errors + failed}, indent=2))
    elif output:
        if failed:
            click.echo(f"error: nothing written to {output}: {len(failed)} of {len(done)} input cases failed", err=True)
            return 2
        if fmt == "npz":
            keys = predict_outputs.write_npz(output, ran)
            click.echo(f"wrote {len(keys)} array{'' if len(keys) == 1 else 's'} to {output} ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
                       f"{'; NAME:K is case K of the inputs, in order' if len(ran) > 1 else ''})", err=True)
        else:
            rows = predict_outputs.write_parquet(output, ran, signature)
            click.echo(f"wrote {rows:,} rows to {output} (one per sample: input, row, "
                       f"{', '.join(signature.output_names)})", err=True)
    else:
        if nested and ran:
            click.echo(f"outputs as the module returned them: {structure.describe()}", err=True)
        for case in ran:
            if signature.detections is not None:  # one dict per image: its detections, not the flat tensors
                from ptx.infer.predict.detections import detection_lines

                names = [str(path) for path, _ in pictures[case.label]] if case.label in pictures else None
                click.echo("\n".join(detection_lines(case.label, case.outputs, signature.detections, names)))
                continue
            for name, value in case.outputs.items():
                doc = predict_outputs.summarize(value, signature.output(name).batch_axis, topk)
                click.echo(predict_outputs.summary_line(case.label, name, doc))
    return 2 if errors or failed else 0


def _with_detections(doc: dict, case, signature, pictures: dict) -> dict:
    """A case's --json, with one dict per image where the model answers detections (per picture given,
    ``pictures``: the copies that filled a fixed batch left out)."""
    if signature.detections is not None:
        from ptx.infer.predict.detections import detections_json

        found = detections_json(case.outputs, signature.detections)
        if case.label in pictures:
            found = [{"picture": str(path), **d} for (path, _), d in zip(pictures[case.label], found)]
        doc["detections"] = found
    return doc


predict_cmd.help = f"{inspect.cleandoc(predict_cmd.help)}\n\n{SECURITY_NOTE}"  # cleandoc: as click reads a docstring
