"""`ptx verify`: every backend against eager for a tutorial model's run (ptx.infer.verify), or
against a model file's reference (ptx.infer.verify_reference).
"""
from __future__ import annotations

import inspect
import json
import sys

import click

from ptx.cli.options import (BACKENDS_OPTION, RUN, SECURITY_NOTE, TOLERANCE, TUTORIAL_ONLY, TargetedCommand,
                             _check_options, _given, _int_list, _tutorial_tolerance, generated_input_options,
                             model_file_options)
from ptx.contract.tensor_inputs import VERIFY_BATCHES
from ptx.cli.targets import _model_file, _model_of_run, _unknown_or_file
from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.errors import PtxError


@click.command("verify", cls=TargetedCommand, tutorial_only=TUTORIAL_ONLY["verify"],
               file_defaults={"batch_sizes": ",".join(map(str, VERIFY_BATCHES))})
@click.argument("name", required=False, metavar="NAME|PATH")
@click.option("--all", "all_models", is_flag=True,
              help="Verify every run under --root that has an export, whatever its folder is called.")
@BACKENDS_OPTION
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True, help="Real test samples.")
@click.option("--batch-sizes", default="1,7,64", show_default=True, callback=_int_list,
              help="Batch sizes to exercise; the largest also chunks the real samples (a model file: 3,5, neither "
                   "0 nor 1, so that a batch the exporter specialised is caught).")
@click.option("--atol", type=TOLERANCE, multiple=True,
              help="Absolute tolerance (default: the artifact's, per device; a model file's: per output dtype and "
                   "device, float16 judged as float16); OUTPUT=NUMBER for one output of a model file.")
@click.option("--rtol", type=TOLERANCE, multiple=True,
              help="Relative tolerance, as --atol.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: NAME is read from ROOT/NAME, --all verifies every run under it.")
@click.option("--save-inputs", type=click.Path(dir_okay=False), help="Save the inputs used (npz) to reproduce.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (every row, reason and tolerance).")
@click.option("--all-rows", is_flag=True,
              help="List every row this machine cannot run (by default one line per missing device: 12 CUDA rows).")
@RUN
@click.option("--against", type=click.Path(dir_okay=False, exists=True), metavar="OTHER",
              help="A model file: hold another file of the same model (your TorchScript beside its ONNX) to the "
                   "reference too, output by output.")
@click.option("--reference", "reference_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A model file: reference tensors to compare every backend with (default: MODEL.reference.npz "
                   "beside the file, where there is one).")
@click.option("--save-reference", is_flag=True,
              help="A model file: write the reference backend's outputs on these inputs as reference tensors "
                   "(MODEL.reference.npz, or --reference FILE), for `ptx verify` on another machine.")
@click.option("--strict", is_flag=True,
              help="A model file: a backend that cannot run it fails the verdict (by default its row says it could "
                   "not run, and the verdict is over the rows that ran).")
@click.option("--locate", is_flag=True,
              help="An ONNX file: where a disagreement is born: on the case that disagrees most, the first node whose "
                   "output departs while its inputs agree (its module and line of forward where torch exported it), "
                   "and the path to the output with the error at each step.")
@click.option("--repro", type=click.Path(file_okay=False), metavar="DIR",
              help="With --locate: write the smallest graph that still disagrees to DIR (repro.onnx, inputs.npz, both "
                   "sides' outputs, and a three-line note with the one command that shows it).")
@model_file_options
@generated_input_options
@click.pass_context
def verify_cmd(ctx, name, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
               all_rows, run, against, reference_file, save_reference, strict, locate, repro, declared_inputs,
               batch_axes, ignore_metadata, shapes, values, ranges, input_files, seed) -> None:
    """Check that every backend gives eager's answers for model NAME, on real test samples; or, for a
    model FILE (an ONNX, TorchScript or pt2 file of your own), that every backend that can load it
    gives its reference's answers (ONNX: ort-cpu, with onnx.reference as a third opinion on small
    inputs; TorchScript: the module on the CPU; pt2: aoti on the CPU), output by output, on seeded
    inputs made from its signature at two batch sizes (or --inputs), and those of the reference
    tensors kept beside it. A model file's exit status: 0 all agree, 1 a disagreement (the last line
    names the backend, the output and its error), 2 nothing could be compared.
    """
    from ptx.errors import UnknownModelError
    from ptx.infer.verify import runs_with_artifacts

    if repro and not locate:
        raise click.UsageError("--repro DIR writes what --locate finds: add --locate")
    if repro and not _model_file(name, "verify"):
        raise click.UsageError("--repro DIR writes a model file's located node: give the ONNX file "
                               "(ptx verify RUN_FOLDER/model.onnx --locate --repro DIR)")
    if locate and all_models:
        raise click.UsageError("--locate triages one model's rows: give NAME, not --all")
    if _model_file(name, "verify"):
        _check_options(ctx, "verify", for_file=True)
        _verify_reference(name, backends=backends, batch_sizes=batch_sizes if _given(ctx, ["batch_sizes"]) else None,
                     atol=atol, rtol=rtol, as_json=as_json, against=against, reference_file=reference_file,
                     save_reference=save_reference, declared_inputs=declared_inputs, batch_axes=batch_axes,
                     ignore_metadata=ignore_metadata, shapes=shapes, values=values, ranges=ranges,
                     input_files=input_files, seed=seed, strict=strict, save_inputs=save_inputs, locate=locate,
                     repro=repro)
    _check_options(ctx, "verify", for_file=False)
    atol, rtol = _tutorial_tolerance(atol, "--atol"), _tutorial_tolerance(rtol, "--rtol")
    if all_models and (name or run):
        raise click.UsageError("--all verifies every run under --root: give NAME or --run for one, not --all")
    if not (all_models or name or run):
        raise click.UsageError("give a model NAME, --run a run folder, or --all")
    if all_models:  # every run, whatever its folder is called: each says its own model
        runs = []
        for folder in runs_with_artifacts(root):
            try:
                runs.append((_model_of_run(None, folder), folder))
            except PtxError as exc:  # one unreadable run does not stop the others from being verified
                click.echo(f"notice: skipped {folder}: {exc}", err=True)
    else:
        runs = [(_model_of_run(name, run), run)]
    if not runs:
        raise PtxError(f"no run under {root} has an export: run `ptx train NAME` and `ptx export NAME` first")
    try:
        _verify_runs(runs, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
                     all_rows, locate)
    except UnknownModelError as exc:
        raise _unknown_or_file(exc, "verify") from None


def _verify_runs(runs, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
                 all_rows, locate=False) -> None:
    """``ptx verify NAME`` (or --all) of the tutorial models' runs."""
    from ptx.infer.api import run_folder
    from ptx.infer.records import record_verify
    from ptx.infer.verify import verify

    chosen = backends
    notice = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    docs, statuses = [], []
    for model, run in runs:
        save = save_inputs if not all_models or not save_inputs else f"{save_inputs}.{run.name}.npz"
        try:
            report = verify(model, backends=chosen, samples=samples, batch_sizes=batch_sizes, atol=atol, rtol=rtol,
                            root=root, save_inputs=save, notice=notice, run=run)
        except Exception as exc:  # noqa: BLE001 - with --all, one model's failure is its row, and the rest go on
            if not all_models:
                raise
            reason = str(exc) if isinstance(exc, PtxError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            docs.append({"model": model, "run": str(run), "ok": False, "exit_status": 1, "error": reason})
            statuses.append(1)
            if not as_json:
                click.echo(f"ptx verify {model} ({run}): FAILED: {reason}\n")
            continue
        record_verify(report, run_folder(model, root, run))  # what `ptx serve --backend auto` builds on
        docs.append(report.to_dict())
        statuses.append(report.exit_status)
        if not as_json:
            click.echo(report.table(all_rows) + "\n")
        if locate:
            docs[-1]["triage"] = _triage(report, model, root, run, as_json)
    failed = [d["model"] for d in docs if d.get("error")]
    if as_json:
        click.echo(json.dumps(docs if all_models else docs[0], indent=2))
    elif failed:
        click.echo(f"verify --all: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)}")
    sys.exit(max(statuses))


def _verify_reference(path, *, backends, batch_sizes, atol, rtol, as_json, against, reference_file, save_reference,
                 declared_inputs, batch_axes, ignore_metadata, shapes, values, ranges, input_files, seed,
                 strict=False, save_inputs=None, locate=False, repro=None) -> None:
    """``ptx verify PATH``: a model file's backends against its reference; exits with its status."""
    from ptx.infer.verify import verify
    from ptx.cli.options import open_options, plan_options

    if locate:
        from ptx.infer.locate_file import check_locatable

        check_locatable(path, repro)
    report = verify(path, backends=backends, options=open_options(declared_inputs, batch_axes, ignore_metadata),
                         plan=plan_options(shapes, values, ranges), input_files=input_files, seed=seed,
                         batch_sizes=batch_sizes or VERIFY_BATCHES, atol=atol, rtol=rtol, against=against,
                         reference_file=reference_file, save=save_reference, strict=strict, save_inputs=save_inputs,
                         progress=lambda msg: click.echo(f"verify: {msg}", err=True))
    if not as_json:  # the table first: a locate that cannot trace the row still leaves the verdict shown
        click.echo(report.table())
    located = _locate(report, against, atol, rtol, repro, as_json) if locate else None
    if as_json:
        doc = report.to_dict()
        if locate:
            doc["locate"] = located.to_dict() if located is not None else None
        click.echo(json.dumps(doc, indent=2))
    elif located is not None:
        click.echo("\n" + located.text() + (f"\nrepro: {located.repro['folder']} ({located.repro['nodes']} "
                                             f"node{'s' * (located.repro['nodes'] != 1)}): {located.repro['command']}"
                                             if located.repro else ""))
    sys.exit(report.exit_status)


def _triage(report, model, root, run, as_json) -> list:
    """--locate after a tutorial model's verify: its reduced-precision rows triaged (the nodes where
    their error is born, a keep-in-f32 list); an f32 row that fails is located on the ONNX file."""
    from ptx.contract.names import FULL_PRECISION
    from ptx.infer.api import run_folder
    from ptx.infer.triage_run import triage_rows

    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    reduced = [v.label for v in report.rows if v.precision != FULL_PRECISION and not v.failures]
    failed = [v.label for v in report.rows if v.precision == FULL_PRECISION and v.status == "FAIL"]
    if failed:
        say(f"where {', '.join(failed)} parts from eager: ptx verify {run_folder(model, root, run) / 'model.onnx'} "
            "--locate (the f32 rows trace on the ONNX file)")
    if not reduced:
        say("nothing to triage: no bf16, int8 or tf32 row ran (--backends ort-cpu-int8, openvino-bf16)")
        return []
    docs = []
    for found in triage_rows(model, reduced, root, run, notice=lambda msg: click.echo(msg, err=True)):
        if isinstance(found, str):
            say(found)
            continue
        docs.append(found.to_dict())
        say(found.text() + (f"\nthen: ptx export {model} --format onnx-int8 --keep-f32 auto (or --keep-f32 "
                            f"{','.join(b.node for b in found.keep())})" if found.row.endswith("int8") and found.keep()
                            else "") + "\n")
    return docs


def _locate(report, against, atol, rtol, repro, as_json):
    """--locate after a file's verify: where its first disagreeing row is born (None: all agree)."""
    from ptx.infer.locate import NothingToLocate
    from ptx.infer.locate_file import locate_report

    say = lambda msg: click.echo(msg, err=True)  # noqa: E731 - beside the table, or out of the JSON's way
    if not report.failed:
        say("nothing to locate: every backend agrees" if report.exit_status == 0 else
            "nothing to locate: nothing was compared")
        return None
    try:
        return locate_report(report, against=against, atol=atol, rtol=rtol, repro=repro,
                             progress=lambda msg: say(f"verify: {msg}"))
    except NothingToLocate as exc:
        say(str(exc))
        return None


def _verify_help() -> None:
    """verify's --help states the rule its table and JSON state, from the one definition."""
    import textwrap

    from ptx.infer.report import RULE

    # \b keeps click from rewrapping the block; it is wrapped here, each entry under its name.
    entries = [textwrap.fill(f"{text}.", 78, initial_indent=f"{name + ':':<16}", subsequent_indent=" " * 16,
                             break_on_hyphens=False)
               for name, text in RULE.items()]
    verify_cmd.help = "\n\n".join([inspect.cleandoc(verify_cmd.help), *("\b\n" + e for e in entries), SECURITY_NOTE])


_verify_help()
