"""The `ptx` command: each subcommand is a thin wrapper over one library function, one module per
command (ptx/cli/models.py, train.py, ...), their shared options in ptx/cli/options.py.

Imports are lazy: `ptx predict` with an ONNX Runtime backend must start without importing torch, and
`import ptx.cli` imports no command's module until that command runs (COMMANDS below).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import NamedTuple

import click

from ptx.errors import PtxError, PtxWarning, Terminated


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """ptx's own warnings are one `warning:` line on stderr; others keep Python's format."""
    if issubclass(category, PtxWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


class Listed(NamedTuple):
    """A command as `ptx --help` lists it, known without importing its module (which may import much)."""

    module: str  # ptx.cli.<module> defines it ...
    attribute: str  # ... under this name


# Each command's module is imported when the command runs (or its --help is asked for), never for
# another command: `ptx predict` starts without the trainers', exporters' and server's imports.
# `ptx --help` lists them from their modules' sources (_listing_stub).
COMMANDS = {
    "bench": Listed("ptx.cli.bench", "bench_cmd"),
    "data": Listed("ptx.cli.data", "data_group"),
    "export": Listed("ptx.cli.export", "export_cmd"),
    "generate": Listed("ptx.cli.generate", "generate_cmd"),
    "inspect": Listed("ptx.cli.inspect", "inspect_cmd"),
    "models": Listed("ptx.cli.models", "models_cmd"),
    "predict": Listed("ptx.cli.predict", "predict_cmd"),
    "runs": Listed("ptx.cli.runs", "runs_cmd"),
    "serve": Listed("ptx.cli.serve", "serve_cmd"),
    "train": Listed("ptx.cli.train", "train_cmd"),
    "verify": Listed("ptx.cli.verify", "verify_cmd"),
}


def _listing_stub(name: str, listed: Listed) -> click.Command:
    """A bodiless command holding what `ptx --help` lists of ``listed``: its docstring and short_help,
    read from its module's source without running it (tests/test_layers.py checks the listing)."""
    source = importlib.util.find_spec(listed.module).loader.get_source(listed.module)
    if source is None:  # installed without its sources: the command itself
        return getattr(importlib.import_module(listed.module), listed.attribute)
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == listed.attribute)
    short_help = {keyword.arg: ast.literal_eval(keyword.value) for keyword in function.decorator_list[0].keywords
                  if keyword.arg == "short_help"}  # @click.command(..., short_help=...)
    return click.Command(name, help=ast.get_docstring(function), **short_help)


class PtxGroup(click.Group):
    """Turns a PtxError into one line on stderr and its exit code; a traceback only with --debug. Loads
    each command from COMMANDS when it is asked for (click's "Lazily Loading Subcommands")."""

    def list_commands(self, ctx):
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS:
            listed = COMMANDS[name]
            self.add_command(getattr(importlib.import_module(listed.module), listed.attribute), name)
        return self.commands.get(name)

    def format_commands(self, ctx, formatter):
        """The listing click writes, from COMMANDS for each command not imported yet."""
        listing = {name: self.commands.get(name) or _listing_stub(name, COMMANDS[name])
                   for name in self.list_commands(ctx)}
        click.Group.format_commands(click.Group(commands=listing), ctx, formatter)

    def invoke(self, ctx):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except Exception as exc:
            stopped = _interruption(exc)
            if stopped is not None:  # Ctrl-C or SIGTERM that a library wrapped (onnxruntime's import: ImportError)
                _interrupted(stopped)
            if not isinstance(exc, PtxError):
                raise
            if ctx.params.get("debug"):
                # Messages are one line with `from None`; --debug shows the cause they came from.
                exc.__suppress_context__ = False
                import traceback

                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            _interrupted(exc)


def _interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM an exception was raised while handling, if any (its causes and contexts)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _interrupted(exc: KeyboardInterrupt) -> None:
    # A command that knows what it kept says so (predict --output: the count and --resume).
    click.echo(str(exc) or "interrupted: files already written are complete; nothing half-written was kept", err=True)
    if isinstance(exc, Terminated):
        # Its clean-up has run. Python's exit then joins every thread, and a worker a library started as the
        # signal landed (its executor never told to stop) kept one `ptx verify` alive 15 minutes: past a grace
        # the process ends as SIGTERM's default would have ended it, where Ctrl-C's user can press it again.
        watchdog = threading.Timer(TERMINATED_GRACE_S, os._exit, args=(143,))
        watchdog.daemon = True
        watchdog.start()
        sys.exit(143)
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


TERMINATED_GRACE_S = 5.0  # after SIGTERM's clean-up, the most Python's own exit may take


def _terminated(signum, frame) -> None:
    raise Terminated("terminated: files already written are complete; nothing half-written was kept")


def main() -> None:
    """Usage errors (a bad option value, a missing argument) are one line, like every other error. SIGTERM (a
    job's timeout, `kill`, a container's stop) ends a command as Ctrl-C does: Python's default would end the
    process at once, leaving scratch folders (an int4 export's copy of the model) and staged files behind.
    Commands with their own (serve's drain, predict --output's) set theirs while they run."""
    with _terminating():
        _main()


@contextmanager
def _terminating():
    """SIGTERM raises Terminated while the command runs, where nothing else handles it (Python's default is
    set; main() called in a process's main thread), and the default again after (a caller's process, a test's)."""
    ours = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and threading.current_thread() is threading.main_thread()
    if ours:
        signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main() -> None:
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
