"""The option types and option groups ptx's commands share: finite floats, case-blind choices, devices,
backends, tolerances, --run and --force; and for a user's own model file (inspect, verify, bench, predict,
serve, export) how its inputs are declared and where its batch is (``@model_file_options``), and how
generated inputs are made (``@generated_input_options``), handed to the library as
``open_options(...)`` / ``plan_options(...)``.
"""
from __future__ import annotations

import copy
import math

import click


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
RUN = click.option("--run", "run", type=click.Path(file_okay=False),
                   help="The run folder (default: ROOT/NAME), e.g. the one `ptx train NAME --out DIR` wrote.")


def _backends_option():
    return click.option(
        "--backends", multiple=True, callback=lambda ctx, param, value: [b.strip() for v in value
                                                                         for b in v.split(",") if b.strip()] or None,
        help="Backends, comma-separated or the option repeated (default: all available): "
             + ", ".join(__getattr__("BACKENDS"))
             + "; a backend means all its precisions, ort-cpu-int8 or openvino-bf16 one of them.")


def __getattr__(name: str):
    """BACKENDS (the backend registry's names) and BACKENDS_OPTION, made when a command first asks: the
    registry imports neither torch nor onnxruntime, yet ptx.infer and numpy, which `ptx data`, `ptx
    train --help` and the rest of this module's users need not load."""
    if name == "BACKENDS":
        from ptx.infer.runtime.backends import list_backends

        value = tuple(list_backends())
    elif name == "BACKENDS_OPTION":
        value = _backends_option()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


SECURITY_NOTE = ("A model file is code of a kind: an ONNX file runs no code of its own, a TorchScript file runs "
                 "only its own graph, a pt2 package holds compiled native code, and --module imports and runs "
                 "your Python file. Open only files you trust.")


INPUT_SYNTAX = ("e.g. x=batchx3x224x224:float32. A dim named batch (or N) is the batch; other names are symbolic "
                "sizes.")
INPUT_HELP = ("Declare an input, in forward()'s order, for a TorchScript or pt2 file (they keep no description of "
              "their inputs): " + INPUT_SYNTAX)
BATCH_AXIS_OPTION = click.option("--batch-axis", "batch_axes", multiple=True, metavar="NAME=AXIS|none",
                                 help="Where input NAME's batch is, where ptx reads it wrong (none: it has no batch "
                                      "axis).")
IGNORE_METADATA_OPTION = click.option("--ignore-metadata", is_flag=True,
                                      help="Run the file as your own model even where it carries ptx.* metadata.")


def model_file_options(command):
    """--input, --batch-axis, --ignore-metadata: how ptx reads a user's model file."""
    for option in reversed([
        click.option("--input", "declared_inputs", multiple=True, metavar="NAME=SHAPE[:DTYPE]", help=INPUT_HELP),
        BATCH_AXIS_OPTION,
        IGNORE_METADATA_OPTION,
    ]):
        command = option(command)
    return command


def generated_input_options(command):
    """--shape, --value, --range, --inputs, --seed: the inputs verify and bench feed."""
    for option in reversed([
        click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS",
                     help="Bind input NAME's symbolic sizes, e.g. image=1x3x224x224 (the batch axis is still varied)."),
        click.option("--value", "values", multiple=True, metavar="NAME=NUMBER",
                     help="Feed input NAME this fixed value, e.g. sr=16000."),
        click.option("--range", "ranges", multiple=True, metavar="[NAME=]LOW,HIGH",
                     help="Draw every input (or input NAME) from [LOW, HIGH), integers too (default: floats 0,1; "
                          "integers 0-9, 0 or 1 where the input is named like a mask)."),
        click.option("--inputs", "input_files", multiple=True, type=click.Path(dir_okay=False, exists=True),
                     help="Real samples instead of generated ones: .npz (arrays by input name), .npy or .json."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated inputs."),
    ]):
        command = option(command)
    return command


def open_options(declared_inputs=(), batch_axes=(), ignore_metadata=False) -> dict:
    """What ptx.infer.load takes, from the command line's options."""
    from ptx.contract.tensors import parse_batch_axes, parse_declaration

    return {"inputs": [parse_declaration(text) for text in declared_inputs],
            "batch_axes": parse_batch_axes(batch_axes), "ignore_metadata": ignore_metadata}


def plan_options(shapes=(), values=(), ranges=()) -> dict:
    """What ptx.contract.tensor_inputs.plan_inputs takes: a bare LOW,HIGH in --range is every input's."""
    overall = [r for r in ranges if "=" not in r]
    if len(overall) > 1:
        raise click.UsageError("--range LOW,HIGH is given twice (NAME=LOW,HIGH ranges one input)")
    from ptx.contract.tensors import parse_assignments

    return {"shapes": parse_assignments(shapes, "--shape"), "values": parse_assignments(values, "--value"),
            "ranges": parse_assignments([r for r in ranges if "=" in r], "--range"),
            "default_range": overall[0] if overall else None}



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
# What a tutorial model's command takes that a model file's does not, and the other way round.
TUTORIAL_ONLY = {"verify": ("all_models", "samples", "root", "run", "all_rows"),
                 "bench": ("root", "verify_samples", "run")}
FILE_ONLY = ("declared_inputs", "batch_axes", "ignore_metadata", "shapes", "values", "ranges", "input_files", "seed",
             "against", "reference_file", "save_reference", "strict")


class TargetedCommand(click.Command):
    """A command that takes a tutorial model NAME or a model FILE: its --help given after one
    (`ptx verify model.onnx --help`) lists only the options that apply to that kind, each with the
    default that applies to it (a file's batch sizes are not a tutorial model's); plain --help lists
    every option. Parsing is untouched: an option of the other kind is still refused in one line."""

    def __init__(self, *args, tutorial_only: tuple[str, ...] = (), file_defaults: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tutorial_only, self.file_defaults = tutorial_only, dict(file_defaults or {})

    def parse_args(self, ctx, args):
        if {"--help", "-h"} & set(args):  # --help is eager: it runs before NAME is parsed
            ctx.meta["ptx.target"] = _target_kind(args)
        return super().parse_args(ctx, args)

    def format_options(self, ctx, formatter):
        kind = ctx.meta.get("ptx.target")
        if kind is None:
            return super().format_options(ctx, formatter)
        hidden = set(self.tutorial_only) if kind == "file" else set(FILE_ONLY)
        records = []
        for param in self.get_params(ctx):
            if param.name in hidden:
                continue
            if kind == "file" and param.name in self.file_defaults:
                param = copy.copy(param)  # the help's copy: the parsed option keeps its own default
                param.default = self.file_defaults[param.name]
            record = param.get_help_record(ctx)
            if record is not None:
                records.append(record)
        what = "a model file" if kind == "file" else "a tutorial model"
        with formatter.section(f"Options for {what} (`{ctx.command_path} --help` lists every option)"):
            formatter.write_dl(records)


def _target_kind(args) -> str | None:
    """"file" where the command line names a model file, "tutorial" where it names a registered
    model, else None (the full help)."""
    from ptx.cli.targets import is_model_file

    if any(is_model_file(a) for a in args if not a.startswith("-")):
        return "file"
    from ptx.contract.catalog import names

    return "tutorial" if set(args) & set(names()) else None


def _given(ctx: click.Context, names) -> list[str]:
    """The options among ``names`` that the command line set (not left at their default), as typed."""
    from click.core import ParameterSource

    params = {p.name: p for p in ctx.command.params}
    return [params[n].opts[0] for n in names if n in params
            and ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]


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
