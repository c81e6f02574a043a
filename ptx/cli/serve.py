"""`ptx serve`: models behind the Open Inference Protocol (ptx.serve.serve).
"""
from __future__ import annotations

import inspect
from dataclasses import fields

import click

from ptx.cli.options import (NON_NEGATIVE, SECURITY_NOTE, Choice, DeviceChoice, FiniteFloat, backend_names,
                             model_file_options, open_options, refuse_meaningless)
from ptx.cli.targets import _unknown_or_file, missing_path
from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.contract.names import PRECISIONS, model_name


@click.command("serve", short_help="Answer requests for models over the Open Inference Protocol (REST, gRPC), "
                                        "and OpenAI's API for a language model.")
@click.argument("names", nargs=-1, metavar="MODEL|FILE...")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: each MODEL is served from ROOT/MODEL.")
@click.option("--run", "runs", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="A tutorial model's run folder served by the model it holds (the folder `ptx train NAME --out "
                   "DIR` wrote); repeat it for several models.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token (or --insecure).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="REST port (0: any free port, printed at startup).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="gRPC port (0: any free port, printed at startup).")
@click.option("--backend", type=Choice(["auto", *backend_names()]), default="auto", show_default=True,
              help="auto: per model, the fastest backend that passed `ptx verify` on this machine for batches up "
                   "to --max-batch-size (by `ptx bench`'s record, else timed at startup; another than ort-cpu only "
                   "when 10% faster), else ort-cpu.")
@click.option("--precision", type=Choice(PRECISIONS), help="f32 (default), bf16 or int8.")
@click.option("--device", type=DeviceChoice(["cpu", "cuda"]),
              help="Device for a --backend that runs on several (eager, torchscript, aoti; default cpu); other "
                   "backends refuse one they do not run on, and auto chooses the device itself.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Rows the dynamic batcher runs together at most (1: no batching).")
@click.option("--max-delay-ms", type=NON_NEGATIVE, default=2.0, show_default=True,
              help="How long a request may wait for company in the batcher.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batches of one model that run at once (inference threads per model).")
@click.option("--token", envvar="PTX_SERVE_TOKEN",
              help="Every request but health needs `Authorization: Bearer TOKEN`. Env: PTX_SERVE_TOKEN.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without a token (prints a warning).")
@click.option("--max-request-bytes", type=click.IntRange(min=1024), default=16 * 1024 * 1024, show_default=True,
              help="Largest request body (after decompression) accepted.")
@click.option("--drain-seconds", type=NON_NEGATIVE, default=5.0, show_default=True,
              help="After SIGTERM or Ctrl-C: readiness answers 503 and answers say `Connection: close` for this long "
                   "before the server stops accepting (set it past your load balancer's or KServe's probe period).")
@click.option("--header-timeout", type=FiniteFloat(0.1), default=10.0, show_default=True,
              help="Seconds a connection gets to send a complete request header; then it is closed.")
@click.option("--keep-alive-seconds", type=FiniteFloat(0.1), default=5.0, show_default=True,
              help="An idle kept-alive connection is closed after this.")
@click.option("--max-connections", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Open REST connections at most (lowered to fit the file-descriptor limit, with a warning); past "
                   "it the oldest connection still without a request header is closed, or the newcomer gets a 503.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="New tokens one generate request may ask for at most (a model exported with its cache; its "
                   "positions bound it too).")
@click.option("--speculate", metavar="ngram|FILE",
              help="Speculative decoding for a model exported with its cache: each request's steps run prompt "
                   "lookup's guesses (ngram) or a draft model's (FILE: a small LM exported by ptx with the model's "
                   "tokenizer, on the model's backend) and keep those its choice confirms: a greedy request's own "
                   "tokens (with its logit_bias and penalties) in fewer steps, a sampled one's by speculative "
                   "sampling (its distribution kept), held to a grammar or with logprobs alike.")
@click.option("--name", "served_names", multiple=True, metavar="NAME",
              help="The name a model FILE is served as (default: the name `ptx export` recorded in it, the "
                   "--module factory's or export's --name, else the file's name without its suffix); repeat it "
                   "for several files, in the order they are given.")
@model_file_options  # --input declares the TorchScript and pt2 files' inputs; ONNX files describe their own
def serve_cmd(names, root, runs, host, http_port, grpc_port, backend, precision, device, max_batch_size, max_delay_ms,
              workers, token, insecure, max_request_bytes, drain_seconds, header_timeout, keep_alive_seconds,
              max_connections, max_tokens, speculate, served_names, declared_inputs, batch_axes, ignore_metadata) -> None:
    """Serve MODEL... over the Open Inference Protocol (v2, REST and gRPC, as Triton and KServe speak
    it), with a dynamic batcher per model, Prometheus metrics at /metrics and a drawing page at /.

    A MODEL is a tutorial model's name, or your own model's file (.onnx, a TorchScript .pt with
    --input declarations, a .pt2): it is served by its own named inputs and outputs (the v2 metadata
    lists them, -1 for every symbolic dimension), batched only where every input and output has a
    batch axis, else request by request.

    Each tutorial model takes its own tensor (as `ptx export NAME --format triton` configures it) or
    what a user has: `image` (encoded picture files) or `text` (numbers, CSV rows, words), answered
    with `label` and `probabilities`. A file exported with its key/value cache (`--task text-generation`)
    also answers Triton's generate extension: POST /v2/models/NAME/generate with `input_ids` and
    `max_tokens` (and generate_stream, one event per token); with its tokenizer beside it (`ptx export DIR`
    of a transformers folder), OpenAI's API: /v1/models, /v1/completions and /v1/chat/completions, streamed
    or not, for the openai client and every other client of that API (its api_key is --token). Ctrl-C or SIGTERM: readiness turns 503, answers go on with
    `Connection: close` for --drain-seconds, then the server stops accepting, finishes the requests in
    flight and exits 0.
    """
    from ptx.infer.model.target import Target
    from ptx.serve import ServeOptions, serve  # without the serve extra: one line with the pip command

    if not names and not runs:
        raise click.UsageError("Missing argument 'MODEL|FILE...': give a tutorial model's NAME, a model FILE, or "
                               "--run DIR")
    from ptx.errors import UnknownModelError

    opening = open_options(declared_inputs, batch_axes, ignore_metadata)
    for name in names:  # a path that is not there, said with what serve takes
        missing_path(name, "serve")
    try:
        targets = [Target.of(name, root=root, options=opening) for name in names]
        targets += [Target.of(None, root=root, run=run, option="--run") for run in runs]
        # a run named twice is served once; two runs of one model are refused, as two files of one name are
        tutorial = list({(t.name, str(t.run_dir.resolve())): t for t in targets if t.is_run}.values())
        files = [t for t in targets if not t.is_run]
        if len(served_names) > len(files):
            raise click.UsageError(f"--name is given {len(served_names)} times for {len(files)} model file(s): it "
                                   "names model files, in order")
        for given in served_names:
            if not _servable(given):
                raise click.UsageError(f"--name {given!r}: a served name is one word without '/', spaces, ?, # or %")
        files = [(served_names[i] if i < len(served_names) else _served_name(t), t) for i, t in enumerate(files)]
        if not files:
            refuse_meaningless(click.get_current_context(), "run")

        params = click.get_current_context().params  # each of ServeOptions' fields is an option of this command's
        options = ServeOptions(**{**{f.name: params[f.name] for f in fields(ServeOptions)}, "token": token or None})
        serve(tutorial, options=options, backend=backend, precision=precision, device=device, insecure=insecure,
              log=lambda line: click.echo(line, err=line.startswith("warning")), files=files)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "serve") from None


def _served_name(target) -> str:
    """The name a model file is served as without --name: the one ptx export recorded in it (the
    factory's, or export's --name: `--module net.py:build --out exp1` wrote exp1/model.onnx, served
    as "model" until issue 58), else the file's name without its suffix."""
    found = target.found
    if target.options.get("ignore_metadata"):  # --ignore-metadata changes how it runs, not the name it is served as
        from ptx.infer.formats.model_files import read_model_file

        try:
            found = read_model_file(target.path, digest=False)
        except Exception:  # noqa: BLE001 - a file that cannot be read is said once, where serve opens it
            found = None
    name = found.name if found is not None else None  # the recorded name, else the file's
    return name if name and _servable(name) else model_name(target.path)


def _servable(name: str) -> bool:
    """Whether ``name`` can be a served model's name: one word of a URL path."""
    return bool(name) and not any(c in name for c in "/ \t?#%")


serve_cmd.help = f"{inspect.cleandoc(serve_cmd.help)}\n\n{SECURITY_NOTE}"  # cleandoc: as click reads a docstring
