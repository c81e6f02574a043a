"""`ptx bench`: latency and throughput per backend of a tutorial model or a model file (ptx.infer.bench.timing).
"""
from __future__ import annotations

import inspect
import json

import click

from ptx.cli.options import (RUN, SECURITY_NOTE, FiniteFloat, TargetedCommand, _given, _int_list,
                             backends_option, generated_input_options, is_url, model_file_options, refuse_given,
                             open_options, plan_options, served_options)
from ptx.cli.targets import served_target, target_of
from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.contract.verdict import in_one_line


@click.command("bench", cls=TargetedCommand, help_defaults={"batch_sizes": ("1,64", "1,8")})
@click.argument("name", required=False, metavar="NAME|PATH")
@backends_option()
@click.option("--batch-sizes", default=None, callback=_int_list,
              help="Batch sizes to time (default: 1,64 for a tutorial model's run, 1,8 for a model file; the long "
                   "run: 1,64,1024); with --inputs, the samples are cut or repeated to each size.")
@click.option("--seconds", type=FiniteFloat(0.01), default=0.25, show_default=True,
              help="Timed seconds per runner and batch size, after warm-up (the long run: 1).")
@click.option("--rounds", type=click.IntRange(min=1), default=4, show_default=True,
              help="Alternating rounds the seconds are shared out over (the long run: 6); a row whose p50 "
                   "moves 2x or more between rounds is flagged noisy.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed runs per runner and batch size before timing.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: NAME is read from ROOT/NAME.")
@click.option("--generate", type=click.IntRange(min=1), metavar="N",
              help="A file exported with its key/value cache (--task text-generation): time greedy decoding of N new "
                   "tokens per backend and precision instead (a decoder's int8 and int4 files beside it come "
                   "along): the prompt's run (prefill ms, tokens/s), ms per new token and tokens/s, the median of "
                   "--rounds decodings (default 3 here) after one warm-up; and each row against the wall: the bytes "
                   "a step reads over the read bandwidth of its device's memory (the host's, a GPU's), measured in "
                   "the same run, as a share of its time.")
@click.option("--prompt-length", type=click.IntRange(min=1), metavar="L",
              help="With --generate: the seeded prompt's tokens (default 32, clipped to the model's positions).")
@click.option("--batch", type=click.IntRange(min=1), metavar="B",
              help="With --generate: prompts decoded together (default 1).")
@click.option("--speculate", metavar="ngram|FILE",
              help="With --generate: each backend timed again with speculative decoding (ngram: prompt lookup's "
                   "guesses; FILE: a draft model's, a small LM exported by ptx with the model's tokenizer, run on the "
                   "same backend), kept where greedy confirms them, a row beside plain greedy's.")
@click.option("--json-schema", "json_schema", type=click.Path(dir_okay=False), metavar="FILE.json",
              help="With --generate: each backend's greedy decoding timed again held to this JSON schema (each "
                   "step's choice masked as `ptx generate --json-schema` and the server's response_format mask it): "
                   "its ms per token, and the mask's cost over the row's own.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table for docs.")
@click.option("--verify-samples", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Real test samples `ptx verify` judges each backend and precision on before one is named "
                   "fastest (a model file: verified on the inputs it is timed on; 0: verify nothing now, the "
                   "verify column shows the verdict recorded for each file).")
@RUN
@click.option("--against", metavar="FILE|NAME|RUN",
              help="A served model (NAME a URL): the local model timed beside it (default: the URL's model name's "
                   "run, where it is a tutorial model).")
@model_file_options
@generated_input_options
@served_options
@click.pass_context
def bench_cmd(ctx, name, backends, batch_sizes, seconds, rounds, warmup, root, generate, prompt_length, batch, speculate,
              json_schema, as_json, markdown, verify_samples,
              run, against, declared_inputs, batch_axes, ignore_metadata, shapes, values, ranges, input_files, seed,
              **served) -> None:
    """Latency (p50/p90/p99) and throughput of model NAME on every available backend and precision, next to
    the bare runtimes, and the fastest verified one per batch size. "vs bare" and "Nx the fastest bare
    peer" are one ratio: images/s over the bare runtime's (below 1: ptx's overhead).

    For a model FILE (an ONNX, TorchScript or pt2 file of your own): every backend that runs it here, at
    --batch-sizes (default 1,8; a model without a batch axis at its fixed shape only), on seeded inputs
    made from its signature (or --inputs), each beside its bare runtime call.

    The default run takes ~20 s on 2 cores; `--batch-sizes 1,64,1024 --seconds 1 --rounds 6` is the
    long one. A URL (http(s)://HOST:PORT/v2/models/NAME, grpc://HOST:PORT/NAME) times the served model at
    --concurrency beside the local file (--against) on the same inputs."""
    from dataclasses import asdict

    from ptx.errors import PtxError
    from ptx.infer.bench.reduced import heading, reduced_rows, slower_line, to_dicts, to_markdown, to_text
    from ptx.infer.bench.timing import bench, describe_fastest, fastest, noisy_warning
    from ptx.machine import describe_cpu
    from ptx.infer.model.records import record_bench, record_verify, recorded_statuses
    from ptx.infer.verify.verify import verify

    if name is None and run is None:
        raise click.UsageError("give a model NAME, --run a run folder, or a model file")
    if is_url(name):
        _bench_url(ctx, name, against, root, run, batch_sizes, seconds, warmup, as_json, markdown, served,
                   seed if _given(ctx, ["seed"]) else None)
        return
    if generate is not None:
        _bench_generate(ctx, name, root, run, backends, generate, prompt_length, batch, rounds, seed, as_json, markdown,
                        ignore_metadata, speculate, json_schema)
        return
    refuse_given(ctx, ["prompt_length", "batch", "speculate", "json_schema"],
                 "is for --generate N (a file exported with its cache)")
    if against is not None:
        raise click.UsageError("--against is for a served model: give its URL (http://HOST:PORT/v2/models/NAME)")
    options = open_options(declared_inputs, batch_axes, ignore_metadata)
    target = target_of(ctx, name, "bench", root=root, run=run, options=options)
    if not target.is_run and verify_samples and _given(ctx, ["verify_samples"]):
        raise click.UsageError("--verify-samples N counts a run's real test samples; a model file is verified on the "
                               "inputs it is timed on, as `ptx verify FILE` would (--verify-samples 0 skips that)")
    inputs = dict(plan=plan_options(shapes, values, ranges), input_files=input_files,
                  seed=seed if _given(ctx, ["seed"]) else None)
    result = bench(target, backends=backends, batch_sizes=batch_sizes, warmup=warmup, seconds=seconds, rounds=rounds,
                   progress=lambda msg: click.echo(f"timing {msg}", err=True), **inputs)
    verdicts, unverified, judged = [], {}, []
    timed = sorted({r.runner for r in result.rows if r.peer_of is None and r.ceiling_of is None})
    if target.is_run:
        record_bench(result.rows, target.run_dir)  # `ptx serve --backend auto` picks the fastest verified
    if verify_samples:
        # The verdict bench shows is verify's own, on the rows timed: the same rule, the same words
        # (a row is required only where the user named it, as `ptx verify --backends` would), and a
        # run's record is the one serve reads.
        click.echo(f"verifying {', '.join(timed)}" + (f" on {verify_samples} real test samples" if target.is_run
                                                      else " as `ptx verify` would"), err=True)
        try:
            # a file as verify opens it: one changed since export is judged as your own model, with a note
            judged_target = target.verifying()
            # A file is verified on the inputs it was timed on, as `ptx verify FILE --inputs ...` would; a
            # run on its real test samples, as the record serve reads was always made.
            report = verify(judged_target, backends=timed, named=backends or (), samples=verify_samples,
                            notice=lambda _: None, **({} if target.is_run else inputs))
        except PtxError as exc:
            if target.is_run:
                raise
            report = None  # a file its own verify cannot judge is timed still: its rows say "not verified"
            click.echo(f"not verified: {exc}", err=True)
        if target.is_run:
            record_verify(report, target.run_dir)
        if report is not None:
            judged = report.rows
            unverified = {v.label: in_one_line(v.reasons) or v.status for v in report.rows
                          if not v.ok and v.label in timed}
            # a label is verified where every row of it passed (its row against the stored reference too)
            verdicts = fastest(result.rows, {v.label for v in report.rows if v.ok} - set(unverified))
    # Not verified now: each row's recorded verdict where one was kept for its file as it is, else none.
    recorded = recorded_statuses(target, timed) if not judged else {}
    reduced = reduced_rows(result.rows, judged, recorded)  # what each bf16/int8 row buys in speed and costs
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "fastest": [asdict(v) for v in verdicts], "unverified": unverified,
                               "reduced": to_dicts(reduced), "cpu": describe_cpu()}, indent=2))
    else:
        click.echo(result.text(markdown))
        if reduced:
            click.echo(("\n" if markdown else "")
                       + (to_markdown if markdown else to_text)(reduced, heading(describe_cpu(), judged, result.unit),
                                                                result.unit))
            slower = slower_line(reduced, describe_cpu())
            if slower:
                click.echo(slower)
        if verdicts or unverified:
            click.echo("\n".join(describe_fastest(verdicts, unverified, result.unit)))
    noisy = noisy_warning(result.rows)
    if noisy:
        click.echo(f"warning: {noisy}", err=True)



def _bench_generate(ctx, name, root, run, backends, new_tokens, prompt_length, batch, rounds, seed, as_json,
                    markdown, ignore_metadata, speculate=None, json_schema=None) -> None:
    """`ptx bench FILE --generate N`: greedy decoding's speed per backend (ptx.infer.bench.generation);
    ``ignore_metadata``: a decoder changed since export (another tool's int4 of it) timed as your own."""
    from ptx.infer.bench.generation import DEFAULT_REPEATS, bench_generation
    from ptx.infer.bench.timing import NOISY_SPREAD
    from ptx.machine import describe_cpu

    refuse_given(ctx, ["batch_sizes", "seconds", "warmup", "verify_samples", "against", "declared_inputs", "batch_axes",
                       "shapes", "values", "ranges", "input_files"],
                 "is not for --generate (it times decoding a seeded prompt: --prompt-length, --batch, --rounds)")
    if name is None:
        raise click.UsageError("--generate times a model file exported with its cache: give its path")
    target = target_of(ctx, name, "bench", root=root, run=run, options={"ignore_metadata": ignore_metadata})
    from ptx.contract.grammar import GrammarError

    from .generate import schema_grammar

    grammar = schema_grammar(json_schema) if json_schema is not None else None
    try:
        result = bench_generation(target, new_tokens, prompt_length=prompt_length, batch=batch or 1,
                                  repeats=rounds if _given(ctx, ["rounds"]) else DEFAULT_REPEATS, backends=backends,
                                  seed=seed if _given(ctx, ["seed"]) else 0, speculate=speculate, grammar=grammar,
                                  progress=lambda msg: click.echo(f"timing {msg}", err=True))
    except GrammarError as exc:  # the schema, compiled for the model's tokenizer before any row was timed
        raise click.BadParameter(str(exc), param_hint="--json-schema") from None
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "cpu": describe_cpu()}, indent=2))
    else:
        click.echo(result.text(markdown))
        noisy = [r.runner for r in result.rows if r.spread >= NOISY_SPREAD]
        if noisy:
            click.echo(f"warning: {', '.join(noisy)}: decode time moved {NOISY_SPREAD:g}x or more between decodings: the machine "
                       "was busy; re-run, or time more with --rounds", err=True)


def _bench_url(ctx, url, against, root, run, batch_sizes, seconds, warmup, as_json, markdown, served, seed) -> None:
    """`ptx bench URL`: the served model at --concurrency beside its local model (--against, as verify
    URL decides it), on the same inputs (ptx.infer.bench.served)."""
    from ptx.infer.bench.served import bench_served
    from ptx.infer.model.target import Variant
    from ptx.infer.runtime import backends as registry

    refuse_given(ctx, ["backends", "input_files", "verify_samples", "rounds", "generate", "prompt_length", "batch",
                       "speculate", "json_schema"],
                 "is not for a served model (ptx bench URL times it beside its local file)")
    model, target = served_target(url, served, against, root, run, {},
                                  say=lambda msg: click.echo(f"notice: {msg}", err=True))
    # the file a server serves: a run's ONNX export through ort-cpu, a file through its own runtime
    variant = Variant(registry.get("ort-cpu" if target.is_run else target.reference), "cpu", target.precision)
    with model, target.open(variant) as local:
        result = bench_served(local, model, url, batch_sizes=batch_sizes or (1, 8), seed=seed,
                              concurrency=served["concurrency"], seconds=seconds, warmup=min(warmup, 3),
                              progress=lambda msg: click.echo(f"timing {msg}", err=True))
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.text(markdown))


bench_cmd.help = f"{inspect.cleandoc(bench_cmd.help)}\n\n{SECURITY_NOTE}"  # cleandoc: as click reads a docstring
