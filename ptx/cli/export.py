"""`ptx export`: a tutorial model's checkpoint, a user's nn.Module (--module) or model file, exported
and validated (ptx.export).
"""
from __future__ import annotations

import inspect

import click

from ptx.cli.options import (BATCH_AXIS_OPTION, FORCE, IGNORE_METADATA_OPTION, INPUT_SYNTAX, NON_NEGATIVE,
                             SECURITY_NOTE, Choice, DeviceChoice, open_options)
from ptx.cli.targets import _model_of_run, _models_and_files, _unknown_or_file
from ptx.contract import DEFAULT_OPSET
from ptx.export.formats import default_formats, list_formats
from ptx.export.formats.onnx import Exporter


FORMATS = tuple(list_formats())
TRITON = "triton"  # a model repository folder (export/triton.py), not one file of the format registry
KSERVE = "kserve"  # a deployment folder: Dockerfile + InferenceService manifest (export/kserve.py)


def _format_list(ctx, param, value) -> list[str]:
    """--format NAME or NAME,NAME (any case): each one of the choices."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    choices = [*FORMATS, TRITON, KSERVE, "all"]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise click.BadParameter(f"{unknown[0] if unknown else value!r} is not one of {', '.join(choices)}")
    return names


@click.command("export")
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
@click.option("--keep-f32", "keep_f32", metavar="auto|NODE[,NODE]",
              help="onnx-int8 of a tutorial model: nodes onnxruntime's quantizer leaves in f32 (its nodes_to_exclude), "
                   "as `ptx verify NAME --backends ort-cpu-int8 --locate` names them; auto keeps the nodes that add "
                   "most error, a few at a time, until the int8 labels pass verify's gate, and says what it cost in "
                   "speed. The list is recorded in the file (ptx.keep_f32).")
@BATCH_AXIS_OPTION
@IGNORE_METADATA_OPTION
@FORCE
def export_cmd(name, module_spec, fmt, checkpoint, out, opset, exporter, atol, device, triton_backend, image, run,
               input_args, output_names, model_label, torchscript_mode, keep_f32, batch_axes, ignore_metadata,
               force) -> None:
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

    from ptx.export.keep_f32 import parse

    keep_f32 = parse(keep_f32)
    if keep_f32 and (module_spec is not None or (name is not None and _models_and_files([name])[1])):
        raise click.UsageError("--keep-f32 is for a tutorial model's onnx-int8 (ptx export NAME --format onnx-int8 "
                               "--keep-f32 auto); a model file or --module is not quantized with it yet")
    if keep_f32 and fmt != ["onnx-int8"]:
        raise click.UsageError(f"--keep-f32 leaves nodes of the int8 file in f32: give --format onnx-int8 (not "
                               f"{','.join(fmt)})")
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
        from ptx.infer.model.records import record_export_judgement

        formats = fmt
        if fmt == ["all"]:  # every file this machine can write for the model, and why any other is left out
            from ptx.export.formats import every_format
            from ptx.models import get as get_spec

            formats, left_out = every_format(get_spec(name), raw_pictures=input_dtype == "uint8")
            click.echo(f"--format all: {', '.join(formats)}" + "".join(f"; left out: {why}" for why in left_out))
        if keep_f32 == "auto":  # infer's triage ranks the nodes; export never imports infer
            from ptx.infer.locate.triage_run import rank_int8

            options["rank"] = rank_int8
        for result in export_model(name, formats, out=out, force=force, device=device, input_dtype=input_dtype,
                                   keep_f32=keep_f32, **options):
            record_export_judgement(result, result.path.parent)  # predict and serve warn on a NOT USABLE verdict
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "export", "`ptx export model.onnx --format triton --out REPO`; your nn.Module: "
                               "`ptx export --module FILE.py:FACTORY --out DIR`") from None


def _export_triton_file(path, out: str, force: bool, options: dict) -> None:
    """A user's model file -> a Triton model folder (export/triton.py's one writer): its tensors read by
    opening it (ONNX through ONNX Runtime, without torch; TorchScript through torch, with its --input
    declarations)."""
    from ptx.export.sources import file_source
    from ptx.export.triton import export_triton
    from ptx.infer import load
    from ptx.infer.formats.model_files import read_model_file

    kind = read_model_file(path).kind
    export_triton(file_source(path, kind, open_model=load, **options), out, force=force, log=click.echo,
                  backend="pytorch" if kind == "torchscript" else "onnxruntime")  # the file's own kind decides


def _export_module_cmd(spec, fmt, checkpoint, out, opset, exporter, atol, device, declared, output_names, label,
                       torchscript_mode, force) -> None:
    """`ptx export --module FILE.py:FACTORY`: ptx.export.module.export_module with ptx.infer.load
    validating each file as it will be served."""
    if not out:
        raise click.UsageError("--module writes a folder of files: give it with --out DIR")
    if {TRITON, KSERVE} & set(fmt):
        raise click.UsageError(f"--format {','.join(fmt)}: with --module, choose among onnx, torchscript, pt2, "
                               "onnx-int8 (then `ptx export DIR/model.onnx --format triton` serves the file)")
    from ptx.export.factory import load_factory
    from ptx.export.module import DEFAULT_MODULE_FORMATS, export_module
    from ptx.infer import load

    made = load_factory(spec)
    export_module(made.module, made.example_inputs, out, open_model=load, inputs=list(declared) or None,
                  output_names=list(output_names) or None,
                  formats=[f for f in fmt if f != "all"] + (list(DEFAULT_MODULE_FORMATS) if "all" in fmt else []),
                  name=label or made.factory, checkpoint=checkpoint, opset=opset, exporter=exporter,
                  torchscript_mode=torchscript_mode, device=device, atol=atol, force=force,
                  provenance=made.provenance, log=click.echo)


export_cmd.help = f"{inspect.cleandoc(export_cmd.help)}\n\n{SECURITY_NOTE}"  # cleandoc: as click reads a docstring
