"""`ptx verify`: every backend against the reference of a tutorial model's run (eager) or of a model
file (its own runtime), one path for both (ptx.infer.verify.verify).
"""
from __future__ import annotations

import inspect
import json
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import click

from ptx.cli.options import (RUN, SECURITY_NOTE, TOLERANCE, TargetedCommand, backends_option, decoding_bound_options,
                             decoding_bounds, _given, _int_list, generated_input_options, is_url, model_file_options,
                             certificate_sizes,
                             open_options, plan_options, shape_certificate_options,
                             refuse_given, refuse_meaningless, served_options)
from ptx.cli.targets import _model_file, served_target, target_of
from ptx.contract import DEFAULT_RUNS_ROOT
from ptx.errors import PtxError
from ptx.infer.verify.options import VerifyOptions
from ptx.infer.verify.rule import RULE


@click.command("verify", cls=TargetedCommand, help_defaults={"batch_sizes": ("1,7,64", "3,5")})
@click.argument("name", required=False, metavar="NAME|PATH")
@click.option("--all", "all_models", is_flag=True,
              help="Verify every run under --root that has an export, whatever its folder is called.")
@backends_option()
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Real test samples (a model with a head and a dataset: a tutorial model's run or export).")
@click.option("--batch-sizes", default=None, callback=_int_list,
              help="Batch sizes to exercise (default: 1,7,64 for real samples, whose largest also chunks them; "
                   "3,5 for generated inputs, neither 0 nor 1, so that a batch the exporter specialised is caught).")
@click.option("--atol", type=TOLERANCE, multiple=True,
              help="Absolute tolerance (default: a tutorial model's contract's, per device; else per output dtype "
                   "and device, float16 judged as float16); OUTPUT=NUMBER for one output.")
@click.option("--rtol", type=TOLERANCE, multiple=True,
              help="Relative tolerance, as --atol.")
@click.option("--root", type=click.Path(file_okay=False), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Where runs live: NAME is read from ROOT/NAME, --all verifies every run under it.")
@click.option("--save-inputs", type=click.Path(dir_okay=False),
              help="Save the cases' inputs (npz; --inputs reads it back) to reproduce.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (every row, reason and tolerance).")
@click.option("--all-rows", is_flag=True,
              help="List every row this machine cannot run (by default one line per missing device: 12 CUDA rows).")
@RUN
@click.option("--against", metavar="OTHER",
              help="Hold another file of the same model (your TorchScript beside its ONNX, another export) to the "
                   "reference too, output by output, on its own runtime; a decoder's by its decoding, at the precision "
                   "its graph has (another tool's int4 of it that lost its record). With a URL: the reference, a model FILE, a "
                   "tutorial model NAME or a RUN folder (default: the URL's model name's run, where it is a tutorial "
                   "model).")
@click.option("--reference", "reference_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A model file: reference tensors to compare every backend with (default: MODEL.reference.npz "
                   "beside the file, where there is one).")
@click.option("--save-reference", is_flag=True,
              help="A model file: write the reference backend's outputs on these inputs as reference tensors "
                   "(MODEL.reference.npz, or --reference FILE), for `ptx verify` on another machine.")
@click.option("--strict", is_flag=True,
              help="A backend that cannot run a model file, and onnx.reference (a third opinion) departing alone, "
                   "fail the verdict (by default each is said, and the verdict is over the rows that ran).")
@click.option("--locate", is_flag=True,
              help="An ONNX file: where a disagreement is born: on the case that disagrees most, each node measured "
                   "as the graph runs and alone (fed the reference's tensors); the node that departs both ways (its "
                   "module and line of forward where torch exported it), else the smallest region that departs "
                   "alone (a runtime that fuses nodes); for int8/float16/bf16, the nodes by the error each adds and "
                   "what keeping them in f32 does, measured; and the path to the output. A tutorial NAME: its "
                   "bf16/int8 rows triaged (a keep-in-f32 list).")
@click.option("--repro", type=click.Path(file_okay=False), metavar="DIR",
              help="With --locate: write the smallest graph that still disagrees to DIR (repro.onnx, inputs.npz, both "
                   "sides' outputs, and a three-line note with the one command that shows it and what that command "
                   "did when it was written).")
@click.option("--metric", "metric", metavar="FILE.py:FN",
              help="A model file's int8 made with `ptx export --max-drop X --metric FILE.py:FN`: run your metric "
                   "again, on the f32 file and on each int8 row, to judge it by the bound it records (without it, "
                   "the value export measured is read from the file, and said so). It imports and runs FILE.py.")
@click.option("--text", "text_file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="A decoder: judge every row on your text (a UTF-8 file, its first 512 tokens and 16 steps after "
                   "them) instead of the recorded prompts, against the f32 file's own runtime's decoding of it: the "
                   "int8 or int4 file beside it, openvino-bf16, --against's file. Encoded with the tokenizer beside "
                   "FILE (ptx export keeps it there) or --tokenizer's.")
@click.option("--tokenizer", metavar="DIR",
              help="With --text: a local transformers tokenizer folder (its tokenizer.json; default: the one beside "
                   "FILE).")
@model_file_options
@generated_input_options
@shape_certificate_options
@decoding_bound_options
@served_options
@click.pass_context
def verify_cmd(ctx, name, all_models, backends, samples, batch_sizes, atol, rtol, root, save_inputs, as_json,
               all_rows, run, against, reference_file, save_reference, strict, locate, repro, metric, declared_inputs,
               batch_axes, ignore_metadata, shapes, values, ranges, input_files, seed, min_shapes, max_shapes,
               min_agreement, max_kl, max_kl_p99, text_file, tokenizer, **served) -> None:
    """Check that every backend gives its reference's answers, output by output: for model NAME (a tutorial
    model's run: --run its folder, --all every run) eager's, on real test samples and edge inputs; for a
    model FILE (an ONNX, TorchScript or pt2 file, your own or a tutorial model's export) its own runtime's
    on the CPU (ONNX: ort-cpu; TorchScript: torchscript; pt2: aoti), on real test samples where its
    contract names a dataset, else on seeded inputs made from its signature at two batch sizes (or
    --inputs, --seed for any model), and those of the reference tensors kept beside it. onnx.reference
    is a third opinion on small inputs. A URL (http(s)://HOST:PORT/v2/models/NAME[/versions/V],
    grpc://HOST:PORT/NAME[/V]) is a served model, one more row held to --against's reference. Exit status: 0 all agree, 1 a disagreement (the last line names
    the backend, the output and its error), 2 nothing could be compared.
    """
    from ptx.infer.model.target import Target
    from ptx.infer.inspect.runs import runs_with_artifacts

    if text_file and (all_models or is_url(name)):
        raise click.UsageError("--text judges one decoder file's rows on your text: give the file, not --all or a URL")
    if tokenizer and not text_file:
        raise click.UsageError("--tokenizer encodes --text: add --text FILE")
    if repro and not locate:
        raise click.UsageError("--repro DIR writes what --locate finds: add --locate")
    if locate and all_models:
        raise click.UsageError("--locate triages one model's rows: give NAME, not --all")
    if all_models and (name or run):
        raise click.UsageError("--all verifies every run under --root: give NAME or --run for one, not --all")
    if not (all_models or name or run):
        raise click.UsageError("give a model NAME, --run a run folder, a model file, or --all")
    if against is not None and not is_url(name) and not Path(against).is_file():
        raise click.BadParameter(f"{against}: no such file" if not Path(against).exists() else
                                 f"{against} is a folder: give a model file", param_hint="'--against'")
    if metric is not None and (all_models or is_url(name) or not _model_file(name, "verify")):
        raise click.UsageError("--metric measures again the bound a model file's int8 was made with; a tutorial "
                               "model's is its accuracy, which verify measures on its real test samples")
    opening = open_options(declared_inputs, batch_axes, ignore_metadata)
    chosen = VerifyOptions(backends=backends, samples=samples, batch_sizes=batch_sizes, atol=atol, rtol=rtol,
                           plan=plan_options(shapes, values, ranges), input_files=input_files,
                           seed=seed if _given(ctx, ["seed"]) else None, reference_file=reference_file,
                           save=save_reference, strict=strict, triaged=locate,
                           **certificate_sizes(min_shapes, max_shapes))
    said = Said(notice=(lambda msg: click.echo(msg, err=True)) if as_json else click.echo,
                progress=lambda msg: click.echo(f"verify: {msg}", err=True))

    if is_url(name):  # a served model: one more row held to a local reference
        _verify_url(ctx, name, against, root, run, opening, chosen, said, served, as_json, all_rows)
    if metric is not None:
        from ptx.export.bound import load_metric  # one line for a file or function that is not there

        chosen = replace(chosen, metric=load_metric(metric))

    def with_against(target: Target) -> tuple[Target, Target | None]:
        # --against's file, read with the verified file's choice of metadata (a changed file: ignored)
        return target, (None if against is None else
                        Target.of(against, options={"ignore_metadata": target.options.get("ignore_metadata", False)}))
    if all_models:  # every run, whatever its folder is called: each says its own model
        refuse_meaningless(ctx, "run")
        runs = []
        for folder in runs_with_artifacts(root):
            try:
                runs.append(Target.of(None, root=root, run=folder))
            except PtxError as exc:  # one unreadable run does not stop the others from being verified
                click.echo(f"notice: skipped {folder}: {exc}", err=True)
        if not runs:
            raise PtxError(f"no run under {root} has an export: run `ptx train NAME` and `ptx export NAME` first")
        jobs = [(one.name, one.run, lambda one=one: with_against(one),
                 replace(chosen, save_inputs=f"{save_inputs}.{one.run.name}.npz" if save_inputs else None))
                for one in runs]
        _verify(jobs, said, as_json=as_json, many=True, all_rows=all_rows)
    if not _model_file(name, "verify") and _given(ctx, ["shapes", "values", "ranges"]) and not _given(ctx, ["seed"]):
        raise click.UsageError("--shape, --value and --range shape generated inputs; a tutorial model is fed its "
                               "real test samples: add --seed N for generated ones")
    # as verify opens it: a file changed since export is the user's own model, with a note
    target = target_of(ctx, name, "verify", root=root, run=run, options=opening, verifying=True)
    bounds = decoding_bounds(min_agreement, max_kl, max_kl_p99)
    if _decodes(target):
        # --against's decoder (a file another tool made of this one) read as verify reads one: changed since
        # export, or without a record, it is judged by its decoding, at the precision its graph has
        _verify_generation(ctx, target, backends, as_json, atol, rtol, bounds, against=None if against is None else
                           Target.of(against, options=dict(target.options), verifying=True),
                           text=_user_text(text_file, tokenizer, target.path) if text_file else None)
    refuse_given(ctx, ["min_agreement", "max_kl", "max_kl_p99", "text_file", "tokenizer"], "is for a decoder's "
                 "generation (a model exported with its cache, or a decoder in Optimum's layout)")
    if locate and not target.is_run:
        from ptx.infer.locate.file import check_locatable

        check_locatable(name, repro)
    elif repro:
        raise click.UsageError("--repro DIR writes a model file's located node: give the ONNX file "
                               "(ptx verify RUN_FOLDER/model.onnx --locate --repro DIR)")

    def then(report, doc) -> None:
        # a file's trace first: where it traces a reduced pair, the pair's triage is read from its sweep
        found = _trace(report, against, atol, rtol, repro) if not target.is_run else None
        doc["triage"] = _triage(report, target, as_json, against, found)
        if not target.is_run:
            _show_located(report, doc, found, as_json)

    _verify([(target.name if target.is_run else name, run, lambda: with_against(target),
              replace(chosen, save_inputs=save_inputs))], said, as_json=as_json, all_rows=all_rows,
            then=then if locate else None)


def _decodes(target) -> bool:
    from ptx.infer.verify.generation import decodes

    return decodes(target)


def _user_text(text_file, tokenizer, path: Path):
    """--text's file as token ids, by --tokenizer's tokenizer or the one beside the decoder file."""
    from ptx.infer.model.text import Text
    from ptx.infer.verify.generation import UserText

    words = Text.beside(path, tokenizer)
    if words is None:
        raise click.UsageError(f"--text is encoded with a tokenizer, and there is no tokenizer.json beside {path}: "
                               "give --tokenizer DIR")
    try:
        content = Path(text_file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter(f"{text_file} is not UTF-8 text", param_hint="'--text'") from None
    return UserText(words.encode(content), Path(text_file).name)


def _verify_generation(ctx, target, backends, as_json, atol=(), rtol=(), bounds=None, against=None,
                       text=None) -> None:
    """A decoder (exported with its cache, or in Optimum's layout): its generation judged step by step, per
    prompt (ptx.infer.verify.generation); ``against``: another decoder file's row held to the same reference."""
    from ptx.infer.verify.generation import verify_generation

    refuse_given(ctx, ["locate", "repro", "metric", "save_reference", "reference_file", "save_inputs", "input_files",
                       "shapes", "values", "ranges", "batch_sizes"],
                 "is not for a decoder (verify decodes the prompts its reference decoded, step by step)")
    per_output = [name for name, _ in (*atol, *rtol) if name is not None]
    if per_output:
        raise click.UsageError(f"--atol/--rtol {per_output[0]}=...: a decoder's generation is judged on its logits "
                               "alone: give the number without an output's name")
    report = verify_generation(target, backends, atol=next((v for _, v in atol), None),
                               rtol=next((v for _, v in rtol), None), bounds=bounds, against=against,
                               progress=lambda msg: click.echo(f"verify: {msg}", err=True), text=text)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    ctx.exit(report.exit_code())


def _verify_url(ctx, url, against, root, run, opening, chosen, said, served, as_json, all_rows) -> None:
    """`ptx verify URL`: the model a server serves, one more row beside its reference's own (--against
    FILE|NAME|RUN, by default the URL's model name's run where it names a tutorial model); the reference
    decided here, where the argument enters, and the endpoint reached before anything runs."""
    refuse_given(ctx, ["all_models", "locate", "repro", "metric", "save_reference", "reference_file", "save_inputs"],
                 "is not for a served model (ptx verify URL compares its answers)")
    model, target = served_target(url, served, against, root, run, opening, verifying=True, say=said.progress)
    chosen = replace(chosen, backends=chosen.backends or [target.reference])
    with model:
        _verify([(target.name if target.is_run else str(target.path), run, lambda: (target, None), chosen)],
                said, as_json=as_json, all_rows=all_rows, served=model)


@dataclass(frozen=True)
class Said:
    """Where verify's words go: notes (stdout beside the table; stderr with --json, which keeps stdout for the
    JSON) and progress (stderr)."""

    notice: Callable[[str], None]
    progress: Callable[[str], None]


def _verify(jobs, said: Said, *, as_json, many=False, all_rows=False, then=None, served=None) -> None:
    """``ptx verify``'s one path for a tutorial model's runs (NAME, --run, --all), a model file and a
    served model (``served``, one more row): each (name, run folder, targets, options) of ``jobs``:
    ``targets()`` gives the Target and --against's (made here for --all, so that a run that cannot be read is
    its row), verified by ptx.infer.verify.verify with ``options`` (VerifyOptions), its words where ``said``
    sends them, its table printed (or, --json, its dict kept), a run's
    verdicts kept in its folder (verify.json: what `ptx serve --backend auto` and bench's fastest pick
    build on; a served model's in served.json), then ``then(report, doc)`` (--locate's triage and
    trace); exits with the worst status. With ``many`` (--all), a run that fails to verify is its row."""
    from ptx.infer.model.records import record_served, record_verify
    from ptx.infer.verify.verify import verify

    docs, statuses = [], []
    for name, folder, targets, options in jobs:
        try:
            target, other = targets()
            report = verify(target, options, against=other, served=served, notice=said.notice,
                            progress=said.progress)
        except Exception as exc:  # noqa: BLE001 - with --all, one model's failure is its row, and the rest go on
            if not many:
                raise
            reason = str(exc) if isinstance(exc, PtxError) else f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            docs.append({"model": name, "run": str(folder), "ok": False, "exit_status": 1, "error": reason})
            statuses.append(1)
            if not as_json:
                click.echo(f"ptx verify {name} ({folder}): FAILED: {reason}\n")
            continue
        docs.append(report.to_dict())
        statuses.append(report.exit_status)
        if not as_json:  # the table first: a locate that cannot trace the row still leaves the verdict shown
            click.echo(report.table(all_rows) + "\n" * many)
        if target.is_run:
            (record_served if served is not None else record_verify)(report, target.run_dir)
        if then is not None:
            then(report, docs[-1])
    failed = [d["model"] for d in docs if d.get("error")]
    if as_json:
        click.echo(json.dumps(docs if many else docs[0], indent=2))
    elif failed:
        click.echo(f"verify --all: {len(failed)} of {len(jobs)} runs failed: {', '.join(failed)}")
    sys.exit(max(statuses))


def _triage(report, target, as_json, against, located=None) -> list:
    """--locate after a verify: its reduced-precision rows triaged on the file each ran (the nodes
    where their error is born, a keep-in-f32 list); an f32 row that fails is traced on the ONNX file
    (a file's: below; a run's: by the command its table offers, report.offers, on stderr beside
    --json). An int8 file's own rows run the file its reference runs: only an --against row pairs
    it with its f32 source."""
    from ptx.contract.names import FULL_PRECISION
    from ptx.infer.locate.triage_run import triage_rows

    say = (lambda msg: click.echo(msg, err=True)) if as_json else click.echo
    reduced = list(dict.fromkeys(  # each row label once: its row against the stored reference runs the same file
        v.label for v in report.rows if v.precision != FULL_PRECISION and not v.error
        and not [f for f in v.failures if f not in v.unusable]
        and (v.precision != target.precision or v.of_file(against))))
    if as_json:
        for offer in report.offers:
            say(offer)
    if not reduced:
        if not target.is_run and target.precision != FULL_PRECISION and against is None:
            say(f"nothing to triage on {target.path.name} alone: its rows run it against its own runtime at "
                f"{target.precision}; give --against the f32 file it was made from to trace where the two part"
                + (" (the command above)" if any(" --against " in offer for offer in report.offers) else ""))
        elif target.is_run or not report.failed:
            say("nothing to triage: no bf16, int8 or tf32 row ran (--backends ort-cpu-int8, openvino-bf16)")
        return []
    worst = max(report.fed, key=lambda case: case.batch or 0, default=None)
    fed = (worst.feeds, f"{worst.label} of the cases verify fed") if worst is not None else None
    traced = {located.triage.row: located.triage} if located is not None and located.triage is not None else {}
    rest = iter(triage_rows(target, [label for label in reduced if label not in traced], fed,
                            notice=lambda msg: click.echo(msg, err=True), against=against))
    docs = []
    for found in (traced[label] if label in traced else next(rest) for label in reduced):
        if isinstance(found, str):
            say(found)
            continue
        docs.append(found.to_dict())
        say(found.text() + "".join(f"\n{line}" for line in keep_commands(found, target, against)) + "\n")
    return docs


# The ops onnxruntime's quantizer makes int8 on their own (the others follow a quantized neighbour).
INT8_KERNEL_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention"})


def keep_commands(found, target, against) -> list[str]:
    """The export commands a triage offers, each as it runs: --keep-f32 is onnx-int8's (ONNX Runtime's
    nodes_to_exclude), made from the f32 file (a run's export, the file, or an int8 file's --against
    source); the names are the f32 graph's, which that export resolves."""
    from ptx.infer.locate.triage_run import against_files
    from ptx.infer.model.opening import run_option
    from ptx.infer.verify.report import is_against_row

    keep = found.keep()
    if not keep or not (found.row.endswith("int8") or found.row.endswith(")")):
        return []
    if target.is_run:
        source = f"{target.name}{run_option(target.name, target.run_dir)}"
    else:
        source = str(against_files(target, Path(against))[0]) if is_against_row(found.row, against) \
            else str(target.path)
    if target.precision != "f32" and source == str(target.path):
        return []  # an int8 file alone: its f32 source is not at hand (--against SOURCE.onnx)
    why = "" if found.row == "ort-cpu-int8" or found.row.endswith(")") else \
        f" (--keep-f32 is onnx-int8's; {found.row}'s quantizer keeps no node list)"
    # the triaged file, by its name, where the commands' files are (the triage keeps no folder)
    folders = [target.run_dir] if target.is_run else [target.path.parent, *([Path(against).parent] if against else [])]
    calibration, missing = _calibration_option(next((f / found.file for f in folders if (f / found.file).is_file()),
                                                    None))
    why += f" (the int8 file was calibrated on {missing}, not found here: add --calibration with it)" if missing else ""
    command = f"ptx export {source} --format onnx-int8{calibration}"
    names = [b.node for b in keep]
    # export refuses a list that leaves nothing in int8: a Relu, a Reshape or a pool is quantized only
    # beside a quantized node, so the list leaves out at least one node with an int8 kernel of its own
    own = {b.node for b in found.blames if b.quantized and b.op in INT8_KERNEL_OPS}
    while names and set(names) >= own:
        names = names[:-1]
    return [f"then{why}: {command} --keep-f32 auto"] + ([f"or: {command} --keep-f32 {','.join(names)}"] if names else [])


def _calibration_option(int8_file) -> tuple[str, str]:
    """(' --calibration FILE' where the triaged int8 file was calibrated on the user's FILE and the same
    bytes are there, else ''; the file it names where they are not, else ''): an export command
    offered calibrates as the file it would replace was made, not on generated inputs."""
    import shlex

    from ptx.files import file_sha256
    from ptx.infer.formats.model_files import read_model_file

    try:
        recorded = read_model_file(int8_file, digest=False).metadata if int8_file else {}
    except (PtxError, OSError):
        return "", ""
    given = recorded.get("calibration")
    if not given:
        return "", ""
    if Path(given).is_file() and file_sha256(Path(given)) == recorded.get("calibration_sha256"):
        return f" --calibration {shlex.quote(given)}", ""
    return "", given


def _trace(report, against, atol, rtol, repro):
    """--locate after a file's table: where its first disagreeing row is born (file.locate_report), or,
    where every f32 row agrees, where the error of an --against reduced pair is born and added, its
    verdict whatever it is; None where there is nothing to trace. What --locate cannot trace is one
    line on stderr, and the exit status stays verify's."""
    from ptx.infer.locate.file import locate_report, reduced_pair
    from ptx.infer.locate.origin import NothingToLocate

    say = lambda msg: click.echo(msg, err=True)  # noqa: E731 - beside the table, or out of the JSON's way
    failed = [r for r in report.failed if r.precision == "f32"]
    third = [r for r in report.rows if r.status == "DIFFERS" and r.precision == "f32"] if not failed else []
    if not failed and not third and reduced_pair(report, against) is None:
        say("nothing to locate: every f32 row agrees" if report.exit_status == 0 or report.failed else
            "nothing to locate: nothing was compared")
        return None
    try:
        return locate_report(report, against=against, atol=atol, rtol=rtol, repro=repro,
                             progress=lambda msg: say(f"verify: {msg}"))
    except NothingToLocate as exc:
        say(str(exc))
    except PtxError as exc:  # the verdict above stands: its exit status is verify's
        say(f"error: {exc}")
    return None


def _show_located(report, doc, found, as_json) -> None:
    """What _trace found, printed (or, --json, ``doc["locate"]``: None when nothing was traced). Where
    only a third opinion departs, where it does is a note; a reduced pair's verdict is said above it."""
    if as_json:
        doc["locate"] = found.to_dict() if found is not None else None
        return
    if found is None:
        return
    failed = [r for r in report.failed if r.precision == "f32"]
    third = [r for r in report.rows if r.status == "DIFFERS" and r.precision == "f32"] if not failed else []
    pair = None if failed or third else next((r for r in report.rows if r.backend == found.other), None)
    head = (f"\nnote: {third[0].label} departs alone, a third opinion and no verdict (exit status 0; --strict "
            "fails it); where:\n" if third else
            f"\nnote: {pair.label}: {pair.status} by the {pair.precision} rule (the verdict above, unchanged); where "
            f"its {pair.precision} error is born and where it is added:\n" if pair is not None else "\n")
    click.echo(head + found.text() + (f"\nrepro: {found.repro['folder']} ({found.repro['nodes']} "
                                      f"node{'s' * (found.repro['nodes'] != 1)}): {found.repro['command']}"
                                      if found.repro else ""))


# verify's --help states the rule its table and JSON state, from the one definition. \b keeps click
# from rewrapping the block; it is wrapped here, each entry under its name.
_entries = [textwrap.fill(f"{text}.", 78, initial_indent=f"{name + ':':<16}", subsequent_indent=" " * 16,
                          break_on_hyphens=False)
            for name, text in RULE.items()]
verify_cmd.help = "\n\n".join([inspect.cleandoc(verify_cmd.help), *("\b\n" + e for e in _entries), SECURITY_NOTE])
