"""`ptx export`: a tutorial model's checkpoint, a user's nn.Module (--module) or model file, exported
and validated (ptx.export).

What the command line names decides, once, which of three functions exports it (``_tutorial``,
``_module``, ``_file``); an option that function takes no parameter for cannot mean anything for
that kind of model, and is refused from one place (``_refuse_unmeant``), saying why. There is no
list of options per kind to keep in step: a function's parameters are what its kind takes.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import click
from click.core import ParameterSource

from ptx.cli.options import (BATCH_AXIS_OPTION, FORCE, IGNORE_METADATA_OPTION, INPUT_SYNTAX,
                             NON_NEGATIVE, SECURITY_NOTE, Choice, DeviceChoice, decoder_layout_options,
                             decoding_bound_options, decoding_bounds, generated_input_options, open_options,
                             certificate_sizes, plan_options, shape_certificate_options)
from ptx.cli.targets import _model_file, _unknown_or_file
from ptx.contract import DEFAULT_OPSET
from ptx.contract.names import INT8_FORMATS, WEIGHT_ONLY_FORMATS
from ptx.export.formats import default_formats, every_format, get as get_format, list_formats
from ptx.export.formats.onnx import Exporter

FORMATS = tuple(list_formats())
TRITON = "triton"  # a model repository folder (export/triton.py), not one file of the format registry
KSERVE = "kserve"  # a deployment folder: Dockerfile + InferenceService manifest (export/kserve.py)
FOLDERS = (TRITON, KSERVE)
# Why an option a kind's function does not take means nothing for it.
TUTORIAL = ("a tutorial model NAME", "its checkpoint holds its weights and the real training samples its int8 is "
            "calibrated on, and its contract its tensors")
# Where an option means nothing for a kind for a reason of its own, not the kind's: (option, kind's function) -> why.
OWN_REASONS = {("metric", "_tutorial"): "its int8 is held to its accuracy on the real test samples verify judges "
                                        "it on: --max-drop X counts accuracy points"}
FILE = ("a model file", "it holds its weights and its tensors already; ptx export FILE writes its int8 "
        "(--format onnx-int8 or openvino-int8, ONNX files), its weights in 4 or 8 bits (onnx-int4, onnx-int8w, "
        "openvino-int4, openvino-int8w), a Triton or a KServe folder")
PRETRAINED = ("a transformers folder", "it holds its model (config.json, weights) and its tokenizer; ptx export DIR "
              "exports a model that generates with its cache, checked by decoding prompts, or a sentence-transformers "
              "model's encoder with its pooling, its tokenizer beside it")
# What makes a folder one ptx export DIR takes: a transformers model's config, or a sentence-transformers model's
# modules (whose transformer may lie in a subfolder: 0_Transformer/ in older ones).
PRETRAINED_FILES = ("config.json", "modules.json")
MODULE = ("--module", "it exports your own nn.Module, built by FACTORY, to files in --out; its int8 is quantized "
          "dynamically, without samples (to calibrate one, quantize the exported file: ptx export DIR/model.onnx "
          "--format onnx-int8 --calibration SAMPLES.npz)")


def _format_list(ctx, param, value) -> list[str]:
    """--format NAME or NAME,NAME (any case): each one of the choices."""
    names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    choices = [*FORMATS, *FOLDERS, "all"]
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
              help=f"{', '.join([*FORMATS, *FOLDERS])}, or all: every file this machine can write for a tutorial model "
                   f"({', '.join(FORMATS)}; it says which it leaves out and why). pt2 compiles for ~40 s; onnx-int8 is "
                   "quantized, model.int8.onnx (FILE.int8.onnx for a model file); onnx-int4, onnx-int8w, openvino-int4 "
                   "and openvino-int8w keep a language model's weights in 4 or 8 bits (model.int4.onnx, ...; a decoder "
                   "with its cache too, from its ONNX file or --module); triton and kserve write deployment folders, "
                   "named alone with --out.")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Checkpoint (default: the one in --out when it holds a run, else runs/NAME/checkpoint.pt); with "
                   "--module, a state_dict loaded into the module strictly.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder (default: the checkpoint's folder; beside a model file): a run folder `ptx train "
                   "--out` wrote exports that run; for triton the model repository, for kserve the deployment folder "
                   "(required); with --module the folder of this export (required; replaced as a whole).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--exporter", type=Choice([e.value for e in Exporter]),
              help="ONNX exporter: torch.export-based dynamo (default), or the deprecated TorchScript-based "
                   "one (the default for gru-classifier, whose packed sequences dynamo cannot export). With --module "
                   "the default is dynamo, falling back to legacy where dynamo refuses (said in one line).")
@click.option("--atol", type=NON_NEGATIVE,
              help="Absolute tolerance against eager (default: the contract's CPU atol; with --module, per dtype, and "
                   "recorded in the files: `ptx verify FILE` judges by it by default).")
@click.option("--rtol", type=NON_NEGATIVE,
              help="--module: relative tolerance of float outputs against eager (default per dtype), recorded in the "
                   "files as --atol is.")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="pt2 only: the device AOTInductor compiles for (the package runs there only).")
@click.option("--triton-backend", type=Choice(["onnxruntime", "pytorch"]), default="onnxruntime",
              show_default=True,
              help="triton only: serve model.onnx (onnxruntime_onnx) or model.pt (pytorch_libtorch); a model file's "
                   "own kind decides for it.")
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
@click.option("--task", type=Choice(["auto", "text-generation", "text2text-generation", "forward"]), default="auto",
              show_default=True,
              help="--module: text-generation exports a causal LM with its key/value cache (past key/values in, "
                   "present out) for `ptx generate`; text2text-generation an encoder-decoder (T5, BART, Whisper) as an "
                   "encoder file beside a decoder file with its cache; auto does either for a transformers model that "
                   "generates and was not built with use_cache=False, and exports a recurrent state (Mamba) as "
                   "forward, saying why; forward exports one forward pass (its tensors, the cache left out).")
@decoder_layout_options
@click.option("--name", "model_label", help="--module or a transformers folder: the model's name in the files (default: "
                                            "FACTORY's name, the folder's).")
@click.option("--tokenizer", "tokenizer", type=click.Path(file_okay=False), metavar="DIR",
              help="--module of a model that generates, or a transformers folder: the tokenizer folder whose "
                   "tokenizer.json, tokenizer_config.json (the chat template), chat_template.jinja and "
                   "generation_config.json are kept beside the files, so `ptx generate --prompt` and `ptx serve`'s "
                   "OpenAI API take text (default for a folder: the folder itself).")
@click.option("--torchscript-mode", type=Choice(["trace", "script"]), default="trace", show_default=True,
              help="--module: torch.jit.trace the module, or torch.jit.script it (also what the TorchScript-based ONNX "
                   "exporter is given: Python control flow becomes an ONNX If).")
@click.option("--keep-f32", "keep_f32", metavar="auto|NODE[,NODE]",
              help="onnx-int8 of a tutorial model or an ONNX file: nodes onnxruntime's quantizer leaves in f32, as "
                   "`ptx verify NAME --backends ort-cpu-int8 --locate` names them; auto keeps the nodes that add most "
                   "error, a few at a time, until the int8 passes (a tutorial model's labels, a file's outputs against "
                   "the f32 file's) and says what it cost in speed. The list is recorded in the file (ptx.keep_f32).")
@click.option("--max-drop", "max_drop", type=float, metavar="X",
              help="onnx-int8 or openvino-int8: the most int8 may lose, and the file keeps the fewest nodes in f32 "
                   "that hold it (a ranking, then a revert pass; openvino-int8: NNCF's accuracy control first). A "
                   "tutorial model: accuracy points on the real test samples verify judges on (0.5: half a "
                   "percentage point below eager's). A model FILE: in --metric's units. The file records the bound, "
                   "the metric, the f32 and int8 values, the nodes kept and its speed against f32 on this CPU.")
@click.option("--metric", "metric", metavar="FILE.py:FN",
              help="A model FILE's metric for --max-drop: FN(run) -> float (higher is better), where run({name: "
                   "array}) -> {name: array} runs the model; FN feeds your own data and scores your labels. ptx calls "
                   "it for the f32 file and for each int8 candidate. It imports and runs FILE.py, as python would: "
                   "name only code you trust.")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="onnx-int8 of a model FILE: real inputs to calibrate on (.npz by input name, .npy, .json, as verify's "
                   "--inputs reads them); some are held out to judge the int8 file (default: inputs generated from "
                   "the file's signature).")
@click.option("--block-size", "block_size", type=int, metavar="N",
              help="onnx-int4, onnx-int8w, openvino-int4, openvino-int8w: weights per block sharing one scale, a power "
                   "of two (16 to 256 for onnx-int4/int8w; default 32 there, as onnxruntime-genai; NNCF's 128 for "
                   "openvino-int4, and for openvino-int8w one scale per output channel, -1).")
@click.option("--symmetric/--asymmetric", "symmetric", default=None,
              help="Weight-only formats: blocks centred on 0 (symmetric: a scale each), or with a zero point each "
                   "(default: symmetric for onnx-int4/int8w, asymmetric for openvino-int4/int8w, as NNCF).")
@click.option("--accuracy-level", "accuracy_level", type=click.IntRange(0, 4), metavar="0-4",
              help="onnx-int4, onnx-int8w: the arithmetic of MatMulNBits on the CPU: 4 (default) int8 (activations "
                   "quantized per block as it runs, VNNI/AMX), 0 f32 on the dequantized weights.")
@click.option("--ratio", type=float, metavar="R",
              help="openvino-int4: the share of MatMul weights in 4 bits, the others in 8 (default 1; NNCF ranks them by "
                   "their activations on the recorded prompts, else by their quantization error).")
@click.option("--data-aware", "data_aware", is_flag=True, default=None,
              help="openvino-int4 of a decoder: NNCF reads the activations of the prompts the file records (AWQ and "
                   "scale estimation, and the ranking --ratio keeps int4 by); several times the memory and time of "
                   "the data-free default.")
@BATCH_AXIS_OPTION
@IGNORE_METADATA_OPTION
@generated_input_options
@shape_certificate_options
@decoding_bound_options
@FORCE
def export_cmd(**given) -> None:
    """Export model NAME's checkpoint with a dynamic batch, validated against eager: ONNX and TorchScript
    (by default), an int8 ONNX for ONNX Runtime (onnx-int8) or for OpenVINO (openvino-int8, through NNCF),
    each judged as verify judges it, a pt2 package (torch.export + AOTInductor), a
    Triton model repository folder (--out REPO), or a KServe deployment (--out DIR: a Dockerfile running
    `ptx serve` and an InferenceService manifest).

    NAME may be your own model's file (.onnx, or a TorchScript .pt with --input declarations):
    `ptx export my.onnx --format triton --out repo` writes repo/my, a Triton model folder with the file
    and a config.pbtxt of its inputs and outputs (max_batch_size 0 unless every tensor's batch is on
    axis 0); `ptx export my.onnx --format onnx-int8` writes my.int8.onnx, quantized and judged against
    my.onnx on held-out inputs (--calibration SAMPLES.npz to calibrate on real ones). --max-drop X
    names the loss you accept (a tutorial model's accuracy points; your FILE's own --metric), and the
    int8 file keeps the fewest nodes in f32 that hold it. onnx-int4 and onnx-int8w (onnxruntime's MatMulNBits)
    and openvino-int4 and openvino-int8w (NNCF's compress_weights) store the MatMul weights alone in 4 or 8
    bits, a head tied to the embedding included: a language model's decoding reads every weight once per
    token, so fewer bytes are fewer milliseconds. A decoder exported with its cache is judged by its
    decoding of the prompts it records, and the verdict is written into the file (docs/quantized-lms.md).

    NAME may be a transformers folder (what save_pretrained writes, or a downloaded snapshot: config.json,
    safetensors, tokenizer files), as `optimum-cli export onnx --model DIR` takes one: `ptx export DIR --out
    OUT` opens it with transformers (float32, nothing downloaded) and exports a model that generates with its
    key/value cache, its tokenizer.json, tokenizer_config.json, chat template and generation config kept
    beside the files, so `ptx generate OUT/model.onnx --prompt TEXT --chat` and `ptx serve`'s OpenAI API
    take text.

    With --module FILE.py:FACTORY, export your own nn.Module instead: ONNX and TorchScript (and pt2,
    onnx-int8 on request), each loaded as ptx serves it and checked against the module at batches 3
    and 5, refused (exit 1) where it disagrees; the contract (ptx.signature, ptx.weights_sha256) is
    written into each file and model.reference.npz beside them.

    \b
    ptx export convnet                            a tutorial model: model.onnx, model.torchscript.pt
    ptx export --module net.py:build --input image=batchx3x224x224 --out exports/net
    ptx export --module net.py:build --checkpoint weights.pt --out exports/net --format onnx,pt2
    ptx export ./SmolLM2-135M-Instruct --out exports/smol    a transformers folder, its tokenizer beside
    ptx export ./all-MiniLM-L6-v2 --out exports/mini     a sentence-transformers folder: its sentence vectors
    ptx export my.onnx --format triton --out repo     your own file as a Triton model folder
    ptx export my.onnx --format onnx-int8 --calibration samples.npz
    ptx export convnet --format openvino-int8 --max-drop 0.5      at most half an accuracy point lost
    ptx export my.onnx --format onnx-int8 --max-drop 0.5 --metric score.py:accuracy
    ptx export lm/model.onnx --format onnx-int4       a decoder's weights in 4 bits: lm/model.int4.onnx
    ptx export --module lm.py:build --format onnx,onnx-int4,openvino-int4 --out lm
    ptx export --module gru.py:make --input x=stepsxbatchx6 --input h0=1xbatchx12 \\
        --input mode=:int64 --torchscript-mode script --out exports/gru

    --metric imports and runs its FILE.py as --module does.
    """
    from ptx.export.keep_f32 import parse
    from ptx.extras import MissingExtraError

    ctx = click.get_current_context()
    name = given["name"]
    if given["module_spec"] is not None:
        export, (what, why) = _module, MODULE
    elif name is not None and Path(name).is_dir() and any((Path(name) / f).is_file() for f in PRETRAINED_FILES):
        export, (what, why) = _pretrained, PRETRAINED
    elif _model_file(name, "export"):
        export, (what, why) = _file, FILE
    else:
        export, (what, why) = _tutorial, TUTORIAL
    _refuse_unmeant(ctx, export, what, why)
    fmt = given["fmt"]
    if len(fmt) > 1 and {*FOLDERS, "all"} & set(fmt):
        raise click.UsageError(f"--format {','.join(fmt)}: triton, kserve and all are given alone")
    for name in fmt:  # openvino-int8 without nncf: refused before a file of another format named with it is written
        why = name in FORMATS and get_format(name).unavailable and get_format(name).unavailable()
        if why:
            raise MissingExtraError(why)
    given["keep_f32"] = parse(given["keep_f32"])
    if given["keep_f32"] and fmt != ["onnx-int8"]:
        raise click.UsageError(f"--keep-f32 leaves nodes of the int8 file in f32: give --format onnx-int8 (not "
                               f"{','.join(fmt)})")
    if given["max_drop"] is not None:
        from ptx.export.bound import check_max_drop

        check_max_drop(given["max_drop"])
        if not all(f in FORMATS and get_format(f).calibrated for f in fmt):
            raise click.UsageError(f"--max-drop bounds what int8 may lose: give --format onnx-int8 or openvino-int8 "
                                   f"(not {','.join(fmt)})")
        if given["keep_f32"] not in (None, "auto"):
            raise click.UsageError("--max-drop chooses the nodes kept in f32 itself: leave out --keep-f32 "
                                   f"{','.join(given['keep_f32'])}")
    _check_weights(fmt, given)
    export(**{key: value for key, value in given.items() if key in inspect.signature(export).parameters})


WEIGHT_OPTIONS = {"block_size": ("--block-size", WEIGHT_ONLY_FORMATS), "symmetric": ("--symmetric", WEIGHT_ONLY_FORMATS),
                  "accuracy_level": ("--accuracy-level", ("onnx-int4", "onnx-int8w")), "ratio": ("--ratio", ("openvino-int4",)),
                  "data_aware": ("--data-aware", ("openvino-int4",))}


def _check_weights(fmt: list[str], given: dict) -> None:
    """A weight-only option given where no format it shapes is named: refused, not ignored."""
    for key, (option, meant) in WEIGHT_OPTIONS.items():
        if given.get(key) is not None and not set(meant) & set(fmt):
            raise click.UsageError(f"{option} shapes {', '.join(meant)}: give --format {meant[0]} (not {','.join(fmt)})")


def _weights(block_size, symmetric, accuracy_level, ratio, data_aware=None) -> dict:
    """The weight-only formats' options, as export hands them to the writers."""
    return {k: v for k, v in dict(block_size=block_size, symmetric=symmetric, accuracy_level=accuracy_level,
                                  ratio=ratio, data_aware=data_aware).items() if v is not None}


def _refuse_unmeant(ctx: click.Context, export, what: str, why: str) -> None:
    """The one place an option is refused for a kind of model: one given on the command line that
    ``export`` (the kind's function) takes no parameter for."""
    takes = inspect.signature(export).parameters
    for param in ctx.command.params:
        if param.name not in takes and ctx.get_parameter_source(param.name) not in (None, ParameterSource.DEFAULT):
            shown = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            reason = OWN_REASONS.get((param.name, export.__name__), why)
            raise click.UsageError(f"{shown} means nothing for {what}: {reason}")


def _tutorial(name, fmt, checkpoint, out, opset, exporter, atol, device, triton_backend, image, run, input_args,
              keep_f32, max_drop, force) -> None:
    """A tutorial model NAME (or the run in --run): export_model, or its Triton or KServe folder."""
    dtypes = {v.lower() for v in input_args}
    if not dtypes <= {"float32", "uint8"} or len(dtypes) > 1:
        raise click.UsageError(f"--input {' '.join(input_args)}: a tutorial model's graph takes float32 or uint8 "
                               "(once); NAME=SHAPE declares a model file's or a module's inputs, and a tutorial model "
                               "carries its contract")
    input_dtype = dtypes.pop() if dtypes else "float32"
    from ptx.infer.model.target import Target

    if run is not None:
        name = Target.of(name, run=run).name
        checkpoint = checkpoint or str(Path(run) / "checkpoint.pt")
        if fmt[0] not in FOLDERS:
            out = out or run
    elif name is None and out is not None and Path(out, "checkpoint.pt").is_file():
        name = Target.of(None, run=out).name  # `--out RUN` exports that run, as before
    if name is None:
        raise click.UsageError("give a model NAME, or --run the run folder to export, or --module FILE.py:FACTORY")
    from ptx.errors import UnknownModelError

    options = dict(checkpoint=checkpoint, opset=opset, exporter=exporter, atol=atol)
    try:
        if fmt[0] in FOLDERS:
            if input_dtype != "float32":
                raise click.UsageError(f"--input {input_dtype} is for --format onnx or torchscript; --format {fmt[0]} "
                                       "serves the float export")
            if device != "cpu":  # refused, not ignored: these folders serve the ONNX export
                raise click.UsageError(f"--device {device} is the device pt2 compiles for; --format {fmt[0]} writes a "
                                       "portable folder: drop --device")
            _folder(name, fmt[0], out, triton_backend, image, force, **options)
            return
        from ptx.export.api import export_model

        formats = fmt
        if fmt == ["all"]:  # every file this machine can write for the model, and why any other is left out
            from ptx.models import get as get_spec

            formats, left_out = every_format(get_spec(name), raw_pictures=input_dtype == "uint8")
            click.echo(f"--format all: {', '.join(formats)}" + "".join(f"; left out: {why}" for why in left_out))
        export_model(name, formats, out=out, force=force, device=device, input_dtype=input_dtype, keep_f32=keep_f32,
                     rank=_rank(keep_f32, max_drop), max_drop=max_drop, log=click.echo, **options)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "export", "`ptx export model.onnx --format triton --out REPO`; your nn.Module: "
                               "`ptx export --module FILE.py:FACTORY --out DIR`") from None


def _pretrained(name, fmt, out, opset, exporter, atol, rtol, task, model_label, tokenizer, force, min_agreement=(),
                max_kl=(), max_kl_p99=(), block_size=None, symmetric=None, accuracy_level=None, ratio=None,
                data_aware=None, all_logits=False, ort_attention=False, static_cache=False) -> None:
    """`ptx export DIR`, a transformers folder as save_pretrained wrote it (or a downloaded snapshot): its model
    opened by transformers, exported as --module exports one, its tokenizer's files beside the files; a
    sentence-transformers folder (a modules.json) as an encoder of sentence vectors (export/embedder.py)."""
    if not out:
        raise click.UsageError(f"ptx export {name} writes a folder of files: give it with --out DIR")
    if {*fmt} & {*FOLDERS, "all"}:
        raise click.UsageError(f"--format {','.join(fmt)}: a transformers folder exports to onnx, torchscript or pt2 "
                               "files, its weights in 4 or 8 bits too (onnx-int4, ...; then `ptx export FILE --format "
                               "triton|kserve` folds one into a folder)")

    from ptx.export.embedder import export_embedder, is_sentence_transformers
    from ptx.export.seq2seq import chosen_task
    from ptx.export.module import export_module
    from ptx.export.pretrained import open_folder, text_files

    if click.get_current_context().get_parameter_source("fmt") in (None, ParameterSource.DEFAULT):
        fmt = ["onnx"]  # a language model needs no TorchScript file unless asked for one
    if is_sentence_transformers(name):  # an encoder of sentence vectors (export/embedder.py), not a decoder
        decoding = {"--task": task not in ("auto", "forward"), "--min-agreement": min_agreement, "--max-kl": max_kl,
                    "--max-kl-p99": max_kl_p99, "--all-logits": all_logits, "--ort-attention": ort_attention,
                    "--static-cache": static_cache}
        given = next((option for option, on in decoding.items() if on), None)
        if given:
            raise click.UsageError(f"{given} shapes a model that generates; {name} is a sentence-transformers model, "
                                   "exported as an encoder of sentence vectors")
        export_embedder(name, out, formats=fmt, name=model_label, opset=opset, exporter=exporter, atol=atol, rtol=rtol,
                        tokenizer=tokenizer, force=force, log=click.echo)
        return
    opened = open_folder(name, fmt, click.echo)
    module, folder_name, fmt = opened.module, opened.name, opened.formats
    if chosen_task(module, task, click.echo) == "forward":
        raise click.UsageError(f"ptx export {name} exports a model that generates, with its cache; export "
                               f"{type(module).__name__}'s forward pass from a factory, with its inputs declared: "
                               "ptx export --module FILE.py:FACTORY --input input_ids=batchxseq:int64 ...")
    text = text_files(tokenizer or name, click.echo, "--tokenizer" if tokenizer else "the folder")
    export_module(module, None, out, name=model_label or folder_name, formats=fmt, opset=opset, exporter=exporter,
                  atol=atol, rtol=rtol, task=task, text=text, force=force, provenance={"source": f"{folder_name} (a transformers folder)"},
                  bounds=decoding_bounds(min_agreement, max_kl, max_kl_p99), all_logits=all_logits,
                  ort_attention=ort_attention, static_cache=static_cache, folder=opened.folder,
                  weights=_weights(block_size, symmetric, accuracy_level, ratio, data_aware) or None, log=click.echo)


def _module(module_spec, fmt, checkpoint, out, opset, exporter, atol, device, triton_backend, image, input_args,
            output_names, model_label, torchscript_mode, shapes, values, ranges, input_files, seed, min_shapes,
            max_shapes, force, rtol=None, task="auto", tokenizer=None, min_agreement=(), max_kl=(),
            max_kl_p99=(), block_size=None, symmetric=None, accuracy_level=None, ratio=None, data_aware=None,
            all_logits=False, ort_attention=False, static_cache=False) -> None:
    """`ptx export --module FILE.py:FACTORY`: export_module with ptx.infer.load validating each file as it
    will be served, or the module's Triton or KServe folder."""
    if not out:
        raise click.UsageError("--module writes a folder of files: give it with --out DIR")
    from ptx.export.factory import load_factory
    from ptx.export.module import DEFAULT_MODULE_FORMATS, export_module

    made = load_factory(module_spec)
    options = dict(inputs=list(input_args) or None, output_names=list(output_names) or None,
                   checkpoint=checkpoint, opset=opset, exporter=exporter, torchscript_mode=torchscript_mode, atol=atol,
                   provenance=made.provenance)
    bounds = decoding_bounds(min_agreement, max_kl, max_kl_p99)
    weights = _weights(block_size, symmetric, accuracy_level, ratio, data_aware)
    if fmt[0] in FOLDERS:
        if bounds:
            raise click.UsageError(f"--{next(iter(bounds)).replace('_', '-')} bounds a decoder's reduced precisions, "
                                   f"recorded in its files: --format {fmt[0]} writes a folder of its forward pass")
        for flag, on in (("--all-logits", all_logits), ("--ort-attention", ort_attention),
                         ("--static-cache", static_cache)):
            if on:
                raise click.UsageError(f"{flag} shapes a decoder exported with its cache: --format {fmt[0]} writes a "
                                       "folder of its forward pass")
        from ptx.export.sources import module_source

        source = module_source(made.module, made.example_inputs, name=model_label or made.factory,
                               subject=f"--module {module_spec}", device=device, **options)
        _folder(source, fmt[0], out, triton_backend, image, force)
        return
    if input_files and (shapes or values or ranges):
        raise click.UsageError("--inputs validates on your own samples; --shape, --value and --range shape generated "
                               "ones: give one of them")
    # Your samples, or inputs generated as you shaped them, are what the files are validated on; the
    # factory's example too where it returns one and you named neither.
    chosen = input_files or shapes or values or ranges
    if tokenizer:
        from ptx.export.pretrained import text_files

        options["text"] = text_files(tokenizer, click.echo, "--tokenizer")
    export_module(made.module, made.example_inputs, out, name=model_label or made.factory, device=device, force=force,
                  formats=[f for f in fmt if f != "all"] + (list(DEFAULT_MODULE_FORMATS) if "all" in fmt else []),
                  input_files=input_files, plan=plan_options(shapes, values, ranges), seed=seed,
                  **certificate_sizes(min_shapes, max_shapes), example_label="the factory's example",
                  use_example=not chosen, rtol=rtol, task=task, bounds=bounds, log=click.echo, weights=weights or None,
                  all_logits=all_logits, ort_attention=ort_attention, static_cache=static_cache, **options)


def _file(name, fmt, out, input_args, batch_axes, ignore_metadata, calibration, keep_f32, max_drop, metric, image,
          force, block_size=None, symmetric=None, accuracy_level=None, ratio=None, data_aware=None) -> None:
    """A user's model file: its int8 (an ONNX file), or its Triton or KServe folder."""
    from ptx.infer.formats.model_files import read_model_file

    path, kind = Path(name), read_model_file(Path(name)).kind
    opening = open_options(input_args, batch_axes, ignore_metadata)
    if all(f in (*INT8_FORMATS, *WEIGHT_ONLY_FORMATS) for f in fmt):  # one file per format named, as for a tutorial model
        if kind != "onnx":
            raise click.UsageError(f"{path.name} is a {kind} file: {','.join(fmt)} quantizes an ONNX file (export your "
                                   "module to ONNX first: ptx export --module FILE.py:FACTORY --format onnx)")
        if max_drop is not None and metric is None:
            raise click.UsageError(f"--max-drop X bounds a metric, and ptx knows none for {path.name}: give --metric "
                                   "FILE.py:FN (your data and labels; X in its units), or leave --max-drop out and "
                                   "the int8 file is judged by its outputs against the f32 file's")
        if metric is not None and max_drop is None:
            raise click.UsageError("--metric is what --max-drop X bounds: give --max-drop too")
        from ptx.export.file import export_int8_file

        for fmt_name in fmt:
            export_int8_file(path, fmt_name, out=out, calibration=calibration, keep_f32=keep_f32,
                             rank=_rank(keep_f32, max_drop), max_drop=max_drop, metric=metric, force=force,
                             weights=_weights(block_size, symmetric, accuracy_level, ratio, data_aware), log=click.echo,
                             **opening)
        return
    if fmt[0] not in FOLDERS:
        raise click.UsageError(f"a model file exports as its int8 (ptx export {name} --format onnx-int8, "
                               f"openvino-int8 or both), its weights in 4 or 8 bits (onnx-int4, onnx-int8w, "
                               f"openvino-int4, openvino-int8w) or as a folder: ptx export {name} --format "
                               "triton|kserve --out DIR")
    for given, what in ((calibration, "--calibration calibrates"), (metric, "--metric bounds")):
        if given is not None:
            raise click.UsageError(f"{what} an int8 file: give --format onnx-int8 or openvino-int8 (not {fmt[0]})")
    from ptx.export.sources import file_source

    backend = "pytorch" if kind == "torchscript" else "onnxruntime"  # the file's own kind decides
    _folder(file_source(path, kind, **opening), fmt[0], out, backend, image, force)


def _folder(source, fmt: str, out, triton_backend, image, force, **export_options) -> None:
    """A Triton model folder or a KServe deployment, of any kind of model (export/sources.py)."""
    if not out:
        what, where = ("model repository", "REPO") if fmt == TRITON else ("deployment folder", "DIR")
        raise click.UsageError(f"--format {fmt} writes a {what}: give it with --out {where}")
    if fmt == TRITON:
        from ptx.export.triton import export_triton

        export_triton(source, out, backend=triton_backend, force=force, log=click.echo, **export_options)
    else:
        from ptx.export.kserve import export_kserve

        export_kserve(source, out, image=image, force=force, log=click.echo, **export_options)


def _rank(keep_f32, max_drop=None):
    """infer's triage ranking, which --keep-f32 auto and --max-drop keep nodes in f32 by (export never
    imports infer)."""
    from ptx.infer.locate.triage_run import rank_int8

    return rank_int8 if keep_f32 == "auto" or max_drop is not None else None


export_cmd.help = f"{inspect.cleandoc(export_cmd.help)}\n\n{SECURITY_NOTE}"  # cleandoc: as click reads a docstring
