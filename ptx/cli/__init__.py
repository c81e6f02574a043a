"""The `ptx` command: each subcommand is a thin wrapper over one library function, one module per
command (ptx/cli/models.py, train.py, ...), their shared options in ptx/cli/options.py.

Imports are lazy: `ptx predict` with an ONNX Runtime backend must start without importing torch, and
`import ptx.cli` imports no command's module until that command runs (COMMANDS below).
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import NamedTuple

import click

from ptx.errors import PtxError, PtxWarning


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
    summary: str  # its help's first sentence, shortened to fit as click shortens a help text
    short_help: bool = False  # summary is the command's short_help: listed whole, as click lists one


# Each command's module is imported when the command runs (or its --help is asked for), never for
# another command: `ptx predict` starts without the trainers', exporters' and server's imports. The
# summaries are the commands' own; tests/test_layers.py checks that the listing matches them.
COMMANDS = {
    "bench": Listed("ptx.cli.bench", "bench_cmd",
                    "Latency (p50/p90/p99) and throughput of model NAME on every available backend and precision, "
                    "next to the bare runtimes, and the fastest verified one per batch size."),
    "data": Listed("ptx.cli.data", "data_group",
                   "Datasets ptx downloads (MNIST, Fashion-MNIST): what is cached and where, and fetching them."),
    "export": Listed("ptx.cli.export", "export_cmd",
                     "Export model NAME's checkpoint with a dynamic batch, validated against eager: ONNX and "
                     "TorchScript (by default), an int8 ONNX for ONNX Runtime (onnx-int8) or for OpenVINO "
                     "(openvino-int8, through NNCF), each judged as verify judges it, a pt2 package "
                     "(torch.export + AOTInductor), a Triton model repository folder (--out REPO), or a KServe "
                     "deployment (--out DIR: a Dockerfile running `ptx serve` and an InferenceService manifest)."),
    "inspect": Listed("ptx.cli.inspect", "inspect_cmd",
                      "What a model file (or a run folder's exports) is, and which backends run it here.",
                      short_help=True),
    "models": Listed("ptx.cli.models", "models_cmd",
                     "List the registered models: the data each takes (and so the datasets it trains on), its "
                     "default dataset and the export formats it supports."),
    "predict": Listed("ptx.cli.predict", "predict_cmd",
                      "Predict INPUTS through one backend: image files, folders or globs for the image models; "
                      "numbers for linreg and logistic; CSV rows or CSV files for diabetes; words for rnn-hello and "
                      "gru-classifier."),
    "runs": Listed("ptx.cli.runs", "runs_cmd",
                   "List the runs under --root: model, dataset, epochs, test accuracy or MSE, date, exports, the "
                   "verify verdict and fastest verified backend recorded on this machine, and what is wrong (stale "
                   "exports, a model that learned nothing, a broken run)."),
    "serve": Listed("ptx.cli.serve", "serve_cmd",
                    "Answer requests for models over the Open Inference Protocol (REST, gRPC).", short_help=True),
    "train": Listed("ptx.cli.train", "train_cmd",
                    "Train model NAME with the recipe of the tutorial that documents it, on real data; writes "
                    "checkpoint.pt, metrics.json and curves.png into the run folder (default runs/NAME)."),
    "verify": Listed("ptx.cli.verify", "verify_cmd",
                     "Check that every backend gives its reference's answers, output by output: for model NAME (a "
                     "tutorial model's run: --run its folder, --all every run) eager's, on real test samples and edge"
                     " inputs; for a model FILE (an ONNX, TorchScript or pt2 file, your own or a tutorial model's "
                     "export) its own runtime's on the CPU (ONNX: ort-cpu; TorchScript: torchscript; pt2: aoti), on "
                     "real test samples where its contract names a dataset, else on seeded inputs made from its "
                     "signature at two batch sizes (or --inputs, --seed for any model), and those of the reference "
                     "tensors kept beside it. onnx.reference is a third opinion on small inputs. Exit status: 0 all "
                     "agree, 1 a disagreement (the last line names the backend, the output and its error), 2 nothing "
                     "could be compared."),
}


def _listing_stub(name: str, listed: Listed) -> click.Command:
    """A bodiless command holding what `ptx --help` lists, shortened by click as the real one's help is."""
    if listed.short_help:
        return click.Command(name, short_help=listed.summary)
    return click.Command(name, help=listed.summary)


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
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = self.commands.get(name) or _listing_stub(name, COMMANDS[name])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
