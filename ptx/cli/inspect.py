"""`ptx inspect`: what a model file or a run folder's exports are (ptx.infer.inspect.file).
"""
from __future__ import annotations

import inspect
import json

import click

from ptx.cli.options import SECURITY_NOTE, model_file_options, open_options
from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FORMAT, DEFAULT_RUNS_ROOT
from ptx.errors import ArtifactError, PtxError


@click.command("inspect", short_help="What a model file (or a run folder's exports) is, and which backends run it here.")
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
    from ptx.contract.runs import is_run
    from ptx.infer.inspect.file import inspect_file, inspect_run
    from ptx.infer.model.opening import require_run_folder
    from ptx.infer.model.target import Target

    target = Path(path)
    if not target.exists():
        if path in names() and (Path(root) / path).is_dir():
            target = Path(root) / path
        else:
            where = f"; a tutorial model's run folder is {Path(root) / path}, which does not exist either" \
                if path in names() else ""
            raise PtxError(f"{path}: no such file or run folder{where}")
    options = open_options(declared_inputs, batch_axes, ignore_metadata)
    if not target.is_dir():  # a file, read as verify reads it: one changed since export is your own model, with a note
        report = inspect_file(Target.of(target, options=options, verifying=True))
    elif is_run(target) and any(options.values()):
        raise PtxError("--input, --batch-axis and --ignore-metadata are for a model file, not a run folder "
                       "(its exports carry their contract)")
    else:
        report = inspect_run(require_run_folder(target), _exports(target))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.text())


def _exports(folder) -> list[tuple]:
    """Each export file in a run folder (the checkpoint aside), as the file Target it is read as when
    given by its path (verifying: a file changed since export is the user's own model, with a note),
    or the one-line reason it cannot be read."""
    from ptx.infer.model.target import Target

    found = []
    for path in (folder / name for fmt, name in ARTIFACT_FILES.items() if fmt != CHECKPOINT_FORMAT):
        if path.is_file():
            try:
                found.append((path, Target.of(path, verifying=True)))
            except ArtifactError as exc:
                found.append((path, exc))
    return found


inspect_cmd.help = f"{inspect.cleandoc(inspect_cmd.help)}\n\n{SECURITY_NOTE}"
