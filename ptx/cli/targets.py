"""What a command's argument names: a tutorial model's name, a run folder (the model its files say), or
a user's model file; and the one-line errors when it is none of them.
"""
from __future__ import annotations

from pathlib import Path

from ptx.contract.catalog import names
from ptx.contract.names import MODEL_FILE_SUFFIXES
from ptx.errors import PtxError, UnknownModelError
from ptx.files import is_dir, is_file


def names_model_file(argument: str) -> bool:
    """Whether a positional argument is a user's model file: there, and named as one (.onnx, .pt, .pt2,
    ...), so that a picture, a tensor file or a folder given first is still an input."""
    return is_file(argument) and Path(argument).suffix.lower() in MODEL_FILE_SUFFIXES


def _model_file(name: str | None, command: str) -> bool:
    """Whether a tutorial command's NAME is a model file (the own-model path), each mistake one line:
    a path that is not there is "no such file", a folder is not a model file."""
    if name is not None and is_file(name):
        return True
    if name is None or name in names():
        return False
    if is_dir(name):
        from ptx.infer.formats.model_files import file_kind

        file_kind(Path(name))  # a folder: one line saying what to give instead
    missing_path(name, command)
    return False


def missing_path(name: str | None, command: str) -> None:
    """A NAME that reads as a model file's path (a model file's suffix, a /) where nothing is: one line
    saying what the command takes. Anything else is left to Target.of (a folder, a model's name)."""
    import os
    import re

    factory = re.fullmatch(r"(.+\.py):(\w+)", name or "")
    if factory:  # FILE.py:FACTORY, the form --module takes, given as NAME
        todo = (f"give it with --module: `ptx export --module {name} --out DIR`" if command == "export" else
                f"export it first (`ptx export --module {name} --out DIR`), then give DIR's model file")
        missing = "" if is_file(factory[1]) else f" ({factory[1]}: no such file)"
        raise PtxError(f"{name}: an nn.Module's factory{missing}, not a model NAME or file; {todo}")
    if name is not None and not Path(name).exists() and (Path(name).suffix.lower() in MODEL_FILE_SUFFIXES
                                                         or os.sep in name):
        raise PtxError(f"{name}: no such file (ptx {command} takes a model NAME, see `ptx models`, or a model file: "
                       ".onnx, TorchScript .pt, .pt2)")


def target_of(ctx, name: str | None, command: str, *, root, run, options: dict, verifying: bool = False):
    """The Target ``ptx COMMAND NAME|PATH`` (or --run) names, decided here where the argument enters: a
    model file, else a tutorial model's run, the options that mean nothing for it refused in one line
    (a run's before the run is looked for), an unknown name with the registry's did-you-mean."""
    from ptx.cli.options import refuse_meaningless
    from ptx.infer.model.target import Target

    if not _model_file(name, command):
        refuse_meaningless(ctx, "run")
    try:
        target = Target.of(name, root=root, run=run, options=options, verifying=verifying)
        looked_for(target)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, command) from None
    refuse_meaningless(ctx, target)
    return target


def looked_for(target):
    """``target``, its run looked for now, where the argument entered (a missing run is said here, before
    anything else runs), rather than when it is first opened."""
    target.run_dir
    return target


def _unknown_or_file(exc, command: str, usage: str | None = None):
    """A name that is neither a registered model nor a file: the registry's did-you-mean, and the
    other thing the command takes (``usage``: how the command takes a model file, where it is not
    `ptx COMMAND model.onnx`)."""

    return UnknownModelError(f"{exc}; or give a model file's path ({usage or f'`ptx {command} model.onnx`'})")


def served_target(url, served: dict, against, root, run, opening, verifying: bool = False, say=None):
    """(the served model, reached before anything loads, as the Model of its URL, through served_options'
    values (a --header that is not NAME:VALUE: one line); the local reference it is held to) for `ptx
    verify|bench URL`: the reference is --against a model FILE, a tutorial model NAME or a RUN folder;
    by default --run, else the URL's model name where it is a tutorial model's (its run under --root).
    ``say``: where the command prints a line about how the server is talked to (a fallback to JSON)."""
    from ptx.infer.model.target import Target
    from ptx.infer.runtime.oip_transport import Connection, Endpoint, parse_header
    from ptx.infer.verify.served import open_served

    endpoint = Endpoint.parse(url)
    connection = Connection(token=served["token"], headers=dict(map(parse_header, served["headers"])),
                            timeout_s=served["timeout"], insecure=served["insecure"], ca_file=served["ca_file"],
                            concurrency=served["concurrency"], binary=not served["json_data"],
                            max_batch=served["max_batch"])
    if against is not None and is_dir(against):  # --against RUN_FOLDER, as --run
        run, against = against, None
    # --against FILE|NAME, else the --run folder's model, else the URL's model name
    given = against if against is not None else None if run is not None else endpoint.model
    if given is not None and not is_file(given) and given not in names():
        raise _not_tutorial(endpoint, given)
    target = Target.of(given, root=root, run=run, options=opening, verifying=verifying)
    if target.is_run and target.name not in names():  # a run folder of a model the user registered
        raise _not_tutorial(endpoint, target.name)
    return open_served(endpoint, connection, say), looked_for(target)


def _not_tutorial(endpoint, model: str) -> PtxError:
    return PtxError(f"{endpoint.url}: {model!r} is not a tutorial model: give --against the model file the server "
                    "serves (or a tutorial model NAME, or its run folder)")
