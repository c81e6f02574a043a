"""The command-line options every command shares for a user's own model file (inspect, verify,
bench, predict, serve, export): how its inputs are declared and where its batch is, and how
generated inputs are made. ptx/cli.py's commands take them with ``@model_file_options`` and
``@generated_input_options`` and hand ``open_options(...)`` / ``plan_options(...)`` to the library.
"""
from __future__ import annotations

from pathlib import Path

import click

from ptx.contract.tensors import parse_assignments, parse_batch_axes, parse_declaration

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
    """What ptx.infer.own_model.open_own_model takes, from the command line's options."""
    return {"inputs": [parse_declaration(text) for text in declared_inputs],
            "batch_axes": parse_batch_axes(batch_axes), "ignore_metadata": ignore_metadata}


def plan_options(shapes=(), values=(), ranges=()) -> dict:
    """What ptx.contract.tensor_inputs.plan_inputs takes: a bare LOW,HIGH in --range is every input's."""
    overall = [r for r in ranges if "=" not in r]
    if len(overall) > 1:
        raise click.UsageError("--range LOW,HIGH is given twice (NAME=LOW,HIGH ranges one input)")
    return {"shapes": parse_assignments(shapes, "--shape"), "values": parse_assignments(values, "--value"),
            "ranges": parse_assignments([r for r in ranges if "=" in r], "--range"),
            "default_range": overall[0] if overall else None}


def is_model_file(argument: str | None) -> bool:
    """Whether a command's NAME argument names a file (a user's model) rather than a tutorial model."""
    return argument is not None and Path(argument).is_file()
