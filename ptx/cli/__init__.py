"""The `ptx` command: each subcommand is a thin wrapper over one library function, one module per
command (ptx/cli/models.py, train.py, ...), their shared options in ptx/cli/options.py.

Imports are lazy: `ptx predict` with an ONNX Runtime backend must start without importing torch.
"""
from __future__ import annotations

import sys
import warnings

import click

from ptx.errors import PtxError, PtxWarning


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


def _add_commands() -> None:
    from ptx.cli.bench import bench_cmd
    from ptx.cli.data import data_group
    from ptx.cli.export import export_cmd
    from ptx.cli.inspect import inspect_cmd
    from ptx.cli.models import models_cmd
    from ptx.cli.predict import predict_cmd
    from ptx.cli.runs import runs_cmd
    from ptx.cli.serve import serve_cmd
    from ptx.cli.train import train_cmd
    from ptx.cli.verify import verify_cmd

    for command in (models_cmd, runs_cmd, train_cmd, export_cmd, predict_cmd, verify_cmd, bench_cmd, serve_cmd,
                    inspect_cmd, data_group):
        cli.add_command(command)


_add_commands()


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
