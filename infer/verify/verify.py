"""ptx verify: every variant of a model run on the same cases, each output compared with its
reference's by one rule (ptx.contract.comparison), Polygraphy's Comparator.run(runners, data_loader).

One path for every model (model/target.py decides once what the argument is):
- the reference: eager for a tutorial model's run (on the variant's own device where torch runs
  there, else on the CPU for a torch-free variant); a model file's own runtime on the CPU;
- the cases (cases.py): ``--inputs`` files; else a model's head's real test samples and edge inputs
  where it has a head and a dataset; else inputs generated from its signature, seeded, at batch
  sizes neither 0 nor 1 (a batch the exporter specialised runs at one and fails at the other);
- the judge: f32 within atol + rtol x its row's largest |reference| (ptx.contract.error_model; a head's
  contract tolerance, else per output dtype and device), with a head's decisions; a reduced precision (bf16, tf32, int8) by a head's
  labels and accuracy on real samples, else by its tensors (class scores keep their argmax, other
  outputs a relative error);
- beside the variants: onnx.reference as a third opinion (a note unless --strict), ``--against``
  another file of the same model, reference tensors kept beside a file (``--save-reference``).

A variant this machine cannot run is skipped with its reason; a file a backend cannot open at all
(OpenVINO's front end refusing an operator) is no disagreement: its row says it could not run and
the verdict is over the rows that ran (``strict``: such a row fails). Exit status: 0 every compared
row agrees; 1 a row disagrees or fails (a disagreement is never a warning); 2 nothing was compared.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.cases import Case
from ptx.contract.comparison import compare
from ptx.contract.accuracy_rule import recorded_max_drop
from ptx.contract.embedding import RULE, embedding_judge
from ptx.contract.verdict import (bound_metric, decide, differs_note, outweighed_note, recorded_bound, recorded_evidence,
                                  recorded_verdicts)
from ptx.contract.names import FULL_PRECISION
from ptx.contract.runs import exported
from ptx.contract.schema import Tolerance
from ptx.contract.batch_rows import describe_left_out
from ptx.contract.tensor_inputs import VERIFY_BATCHES
from ptx.contract.validated import recorded_tolerance
from ptx.contract.transforms import decisions, run_in_batches
from ptx.errors import MissingArtifactError, NothingToCompareError, PtxError

from ..formats.signature import graph_ids
from ..model.model import answered_otherwise
from ..model.opening import export_command
from ..model.target import REFERENCE, Skip, Target, Variant, require_targets
from ..runtime import backends as registry
from ..runtime.memory_plan import OutOfMemoryPlan
from .batch_composition import check_largest_batch
from .cases import batch_hint, file_cases, generated_cases, head_cases, save_cases
from .comparator import Tolerances, compare_cases, match_outputs, output_dtype, run_until_failure
from .offers import offers
from .options import VerifyOptions
from .reduced import reduced_verdict
from .reference_choice import ReferenceChoice, open_reference, reference_choice
from .report import Report, Row, against_label
from .served import served_rows
from .shapes import certificate_notes, recorded_rows
from .stored import held_to_stored, stored_reference

HEAD_BATCHES = (1, 7, 64)  # a head's real samples run in batches of the largest
RUNTIME_MODULES = {"ort": "onnxruntime", "openvino": "openvino", "torchscript": "torch", "aoti": "torch",
                   "eager": "torch", "onnx.reference": "onnx"}


def verify(target: Target, options: VerifyOptions | None = None, *, against: Target | None = None, served=None,
           progress: Callable[[str], None] = lambda _: None, notice: Callable[[str], None] = print,
           **fields) -> Report:
    """Verify ``target``, a tutorial model's run or a model file (see the module's docstring), decided
    where the argument entered: ``verify(Target.of("convnet", verifying=True))``,
    ``verify(Target.of("net.onnx", options={"inputs": [...]}, verifying=True))`` (``root=``, ``run=``
    for a run elsewhere; ``options`` are load()'s for a file: inputs, batch_axes, ignore_metadata).
    ``options`` (VerifyOptions: the rows, the cases, the bounds, each field said there); keywords (``fields``)
    replace its fields (``verify(target, backends=["ort-cpu"], samples=20)``). ``against`` is another file of
    the same model, a Target too (``Target.of(path, options={"ignore_metadata": target.options.get(
    "ignore_metadata", False)})``, as ``ptx verify --against`` makes it). ``served``: a model on a server
    (served.open_served), one more row held to the reference (no export needed). A model file's dynamic axes
    are tried at 1, 2, 7 (or from ``min_sizes`` up) and at ``max_sizes`` through its own runtime, and the shape
    certificate said in the notes (infer/verify/shapes.py)."""
    opts = replace(options or VerifyOptions(), **fields)
    require_targets("verify", target, against, verifying=True)
    # a served model is held to the reference at the reference's own precision: no twin's row beside it
    variants = [v for v in target.variants(opts.backends) if served is None or v.precision == target.precision]
    if served is None and target.is_run and not exported(target.run_dir):  # said before eager is loaded and run
        raise NothingToCompareError(f"nothing to compare for {target.name}: {target.run_dir} holds no export yet; run "
                                    f"`{export_command(target.name, run=target.run)}` first (verify compares each "
                                    "export with eager)")
    # the file's own runtime, unless the file records it NOT USABLE
    choice = reference_choice(target, against.path if against is not None else None)
    reference = open_reference(target, choice, progress)
    head = reference.head
    metadata = getattr(getattr(target, "found", None), "metadata", None) or {}
    # the tolerance the user gave export, as the file records it, where none is given here
    recorded, unreadable = ({}, "") if opts.atol or opts.rtol or target.is_run else recorded_tolerance(metadata)
    tolerances = Tolerances.parse(opts.atol or [(None, v) for k, v in recorded.items() if k == "atol"],
                                  opts.rtol or [(None, v) for k, v in recorded.items() if k == "rtol"],
                                  reference.signature.output_names, head.contract if head else None)
    cases, truth, described, data = _cases(target, reference, opts.samples, opts.batch_sizes, opts.input_files,
                                           opts.seed, opts.plan, notice)
    report = Report(target.name, target.kind, _runtime_of(reference.backend if not target.is_run else REFERENCE)
                    + (f" on {choice.path.name}, the f32 file {target.path.name} was made from" if choice.path else ""),
                    signature=reference.signature, inputs=described, cases=[c.label for c in cases],
                    strict=opts.strict,
                    fed=list(cases), against=against.path if against is not None else None, head=head is not None,
                    given=_given(opts.backends, opts.input_files, opts.seed, opts.atol, opts.rtol), data=data,
                    samples=len(truth) if truth is not None else 0,
                    tolerances={d: tolerances.of(o, reference.signature.output(o).dtype, d).to_dict()
                                for d in ("cpu", "cuda") for o in reference.signature.output_names[:1]} if head else {})
    report.notes += target.notes + ([choice.note] if choice.note else [])
    if unreadable:
        report.notes.append(unreadable)
    if recorded:
        report.notes.append("using the tolerance export validated at: " + ", ".join(f"{k} {v:g}" for k, v in
                            recorded.items()) + " (recorded in the file; --atol/--rtol give another)")
    if not target.is_run:
        report.certificate, notes, report.shape_failures = certificate_notes(
            target, reference, opts.plan if not opts.input_files else None, opts.max_sizes, opts.min_sizes)
        report.notes += notes
    if opts.save_inputs:
        report.notes.append(save_cases(Path(opts.save_inputs), cases, truth))
    this = Run(target, reference, cases, truth, tolerances, report, progress, opts.input_files, opts.metric, choice)
    this.left_out = describe_left_out(recorded_rows(metadata))
    if this.embedding_judge is not None and (opts.atol or opts.rtol):  # said, not silently ignored
        report.notes.append(f"note: {reference.embedding.output} is judged by its vectors' rule ({RULE}): --atol and "
                            "--rtol do not change it")
    to_run, unrunnable = _skip_unrunnable(target, variants, report)
    asked = set(opts.backends or ()) if opts.named is None else set(opts.named)
    stored = stored_reference(this, opts.reference_file, opts.save)
    held: list[Row] = []  # each row held to the stored reference too, while it is open; said after every row
    # One runtime open at a time: the reference's row first (its answers are kept as arrays, and where nothing
    # after runs it, its runtime goes), then each other row opened, run, held to the stored reference, closed.
    def asked_of(variant: Variant) -> dict:  # what the user asked of a row: it must run, it must agree
        # a reduced file verified by its own path asks of its precision: NOT USABLE fails it (a CI step's exit 0
        # would pass a file ptx predict warns of), as a row named by --backends does and as a decoder's does
        own = not target.is_run and variant.precision == target.precision != FULL_PRECISION
        return dict(required=variant.precision != FULL_PRECISION and (variant.label in asked or own),
                    strict=opts.strict, asked=variant.asked_by(asked))

    mine = [(v, reference) for v in to_run if choice.path is None and v.label == choice.label]
    others = target.each_opened([v for v in to_run if choice.path is not None or v.label != choice.label],
                                skipped=lambda skip: this.not_opened(skip, **asked_of(skip.variant)))
    for variant, model in itertools.chain(mine, others):  # a row that does not open is not_opened's, in its turn
        row = this.row(variant, model, **asked_of(variant))
        if stored is not None and not (row.error or row.advisory):
            held.append(held_to_stored(this, stored, row, model))
        this.release_reference(keep=target.is_run or opts.metric is not None or served is not None)
    report.rows += held
    _static_checks(target, unrunnable, report)  # once the rows' runtimes have gone: each opens the file too
    said = answered_otherwise([reference, *this.opened])  # the file's declared outputs, as answered
    if said:
        report.notes.append(said)
    if against is not None:
        report.rows.append(_against(against, this))
    if served is not None:
        report.rows += served_rows(served, this, choice.label)
    report.offers = offers(target, report, opts.atol, opts.rtol, opts.triaged)
    if target.is_run and not any(not r.is_reference for r in report.rows):  # eager alone proves nothing
        raise NothingToCompareError(f"nothing to compare for {target.name}: no backend besides eager ran ("
                                    + "; ".join(f"{b}: {w}" for b, w in report.skipped.items()) + ")")
    return report


class Run:
    """One verify's shared state: the target, its reference and cases, how a model runs a case and
    is judged, and the reference's outputs per device (each run once)."""

    def __init__(self, target: Target, reference, cases: Sequence[Case], truth, tolerances: Tolerances,
                 report: Report, progress, input_files, metric: Callable | None = None,
                 choice: "ReferenceChoice | None" = None):
        self.target, self.reference, self.cases, self.truth = target, reference, cases, truth
        self.choice = choice or reference_choice(target)
        self.metric, self._metric_f32 = metric, None
        # what the cases are, as a reduced row judged by its tensors says: the user's, or generated
        self.source = "inputs" if input_files else "generated"
        self.tolerances, self.report, self.progress, self.input_files = tolerances, report, progress, input_files
        self.head, self.signature = reference.head, reference.signature
        self.run_on = _runner(self.head, max(c.batch or 1 for c in cases))
        self._references: dict[str, tuple[dict, str | None]] = {}
        self.opened: list[object] = []  # the models rows ran (closed once run: answered_otherwise reads what they saw)
        self.left_out = ""  # outputs not per row, as the file's certificate records export found them
        # an embedding file's vectors, judged by their cosine and length (ptx.contract.embedding)
        embedding = None if target.is_run else reference.embedding
        self.embedding_judge = embedding_judge(embedding) if embedding is not None else None

    def reference_on(self, device: str) -> tuple[dict, str | None]:
        """(the reference's outputs on ``device`` by case, its failure), run once; one line when it
        cannot run the model at all."""
        if device not in self._references:
            self.progress(f"running {self.choice.label} on {len(self.cases)} cases"
                          + (f" ({device})" if device != "cpu" else ""))
            model = self.reference if device == "cpu" else self.target.open(Variant(registry.get(REFERENCE), device))
            self._references[device] = run_until_failure(self.run_on(model), self.cases)
            if not self._references[device][0]:
                hint = batch_hint(self.signature) if not self.input_files and self.head is None else None
                raise PtxError(f"{self.choice.label}, the reference, cannot run {self.target.name}: "
                               f"{self._references[device][1]}" + (f"; {hint}" if hint else ""))
        return self._references[device]

    def release_reference(self, keep: bool) -> None:
        """The reference's runtime closed once its answers on the CPU are kept as arrays, unless ``keep``
        (a later step runs it: --metric, a served row, a tutorial model's head)."""
        if not keep and "cpu" in self._references and not self.reference.runner.closed:
            self.reference.close()

    def not_opened(self, skip: Skip, required: bool, strict: bool, asked: bool = False) -> "Row | None":
        """The Row of a variant that did not open (its error), or its skip: not exported, or this machine
        cannot run that precision, is a skip, but never of a row the user named (verify would judge the
        others and exit 0 without the one asked for)."""
        if skip.unavailable or (skip.missing and not asked):
            self.report.skipped[skip.variant.label] = skip.why
            return None
        row = self._new_row(skip.variant, required, strict, asked)
        row.error = skip.why
        return row

    def _new_row(self, variant: Variant, required: bool, strict: bool, asked: bool) -> Row:
        """``variant``'s Row, added to the report, before anything is run."""
        ref_device = reference_device(variant.backend, variant.device) if self.target.is_run else "cpu"
        row = Row(variant.backend.name, variant.device, variant.precision,
                  against=registry.get(self.target.reference).label(ref_device, self.target.precision) if self.target.is_run
                  else self.choice.label,
                  batch_sizes=sorted({c.batch for c in self.cases if c.batch}),
                  optional=not self.target.is_run and not asked, required=required,
                  advisory=variant.backend.third_opinion and not strict)
        self.report.rows.append(row)
        return row

    def row(self, variant: Variant, model, required: bool, strict: bool, asked: bool = False) -> Row:
        """``variant``'s Row in the report, opened as ``model``: its outputs on the cases against the
        reference's, judged."""
        ref_device = reference_device(variant.backend, variant.device) if self.target.is_run else "cpu"
        row = self._new_row(variant, required, strict, asked)
        want, ref_error = self.reference_on(ref_device)
        shared = _cases_for(variant, self.cases, want, self.report)
        if want and not shared:  # every case over its limit: it compared nothing, and the summary says so
            row.no_case = f"inputs over its limit of {variant.backend.case_values:,} values"
            return row
        self.progress(f"running {variant.label}")
        run = self.run_on(model)
        ran, row.error = ({i: want[i] for i in shared}, ref_error) if model is self.reference else \
            run_until_failure(run, self.cases, shared)
        if model is self.reference and self.choice.recorded is not None:  # no other to hold the rows to: said so
            row.verdict = decide(row.label, [recorded_evidence(self.choice.recorded)])
            row.unusable = row.verdict.reasons
        if ran:
            self.ran(row, run, ran, want, model,
                     composition=variant.precision == FULL_PRECISION and not variant.backend.third_opinion)
            row.provenance += _provenance(self.target, model, self.reference)
        self.opened.append(model)
        return row

    def ran(self, row: Row, run, got, want, model=None, composition: bool = True) -> None:
        """What a row's run ``got`` on the cases says, into ``row``: judged against the
        reference's ``want``, and where ``composition``, whether a sample's answer depends on its
        batch-mates (``run`` asked again: a few samples alone)."""
        self.judge(row, got, want, self.truth, model)
        if composition:
            row.composition = check_largest_batch(run, self.signature, self.cases, got, lambda name: self.tolerances.of(
                name, output_dtype(self.signature, name), row.device), self.left_out)

    def judge(self, row: Row, got, want, truth, model=None) -> None:
        """``row``'s outputs compared; a reduced row's verdict by the one rule (ptx.contract.verdict),
        from the strongest evidence at hand, and said where it differs from the one its file records."""
        metadata = model.metadata if model is not None else {}
        row.max_drop = recorded_max_drop(metadata) if row.precision != FULL_PRECISION else None
        self.held_to(row, got, want, self.cases, truth, self.head, (self.source, self.report.inputs), metadata,
                     lambda: self._bound_again(model, metadata))
        if row.verdict is None:  # f32, or the reference, which is what others are held to
            return
        recorded = recorded_verdicts(metadata).get(row.label)
        note = differs_note(recorded, row.verdict) if recorded is not None and recorded.status != row.verdict.status \
            else outweighed_note(row.verdict)
        if note and not any(n.startswith(f"note: {row.label}: ") for n in self.report.notes):  # one per row label
            self.report.notes.append(note)

    def held_to(self, row: Row, got, want, cases, truth, head, source: tuple[str, str], metadata, bound_again) -> None:
        """``row``'s outputs compared over the ``cases`` both sides ran (the case that departs most kept for
        --locate), a head's labels and accuracy on the real samples; a reduced row's verdict by the one rule,
        the cases being ``source`` (their kind, in words) and ``bound_again()`` the evidence beside them: the
        bound measured again with --metric, or (a stored-reference row) what the row's own verdict rests on."""
        def tolerance(name: str) -> Tolerance:
            return self.tolerances.of(name, self.signature.output(name).dtype, row.device)

        judge = (lambda name, g, w, allowed: compare(g, w, head.contract, tolerance=allowed)) if head is not None else \
            self.embedding_judge
        row.cases, row.outputs, row.worst_case = compare_cases(got, want, cases, self.signature, tolerance, judge)
        if head is not None and truth is not None and 0 in got:
            labels, wanted = (decisions(side[0][head.output_name], head.contract) for side in (got, want))
            if labels is not None:
                row.argmax_agreement = float((labels == wanted).mean())
                row.accuracy = float((labels == truth.reshape(labels.shape)).mean())
                row.reference_accuracy = float((wanted == truth.reshape(wanted.shape)).mean())
        if row.precision != FULL_PRECISION and row.cases and not row.is_reference:
            row.verdict = reduced_verdict(row, got, want, truth, head, self.signature, source, metadata, bound_again(),
                                          reference_reduced=self.target.precision != FULL_PRECISION)
            row.unusable = row.verdict.reasons

    def _bound_again(self, model, metadata):
        """The bound the file records on the user's metric, measured again with --metric (on the
        reference for f32's value, once, and on ``model``); None without --metric or a bound."""
        if self.metric is None or model is None or bound_metric(metadata) is None:
            return None
        if self.target.precision != FULL_PRECISION:  # no f32 here to measure the drop from
            note = (f"note: --metric: {self.target.path.name} is {self.target.precision} itself; give the f32 file it "
                    "was made from (ptx verify SOURCE.onnx --metric ...) to measure its bound again")
            self.report.notes += [note] if note not in self.report.notes else []
            return None
        if self._metric_f32 is None:
            self.progress(f"--metric {getattr(self.metric, 'shown', '')} on {self.target.reference} (f32)")
            self._metric_f32 = self.metric(self.reference.run)
        return recorded_bound(metadata, again=(getattr(self.metric, "shown", bound_metric(metadata)), self._metric_f32,
                                               self.metric(model.run)))


def reference_device(backend, device: str) -> str | None:
    """Where eager runs as ``backend``-on-``device``'s reference: on the variant's own device where torch
    runs there, else (a torch-free variant beside a CPU-only torch) on the CPU; None: nowhere, a torch
    variant on a device torch cannot see. A file's reference runs on the CPU."""
    if not registry.get(REFERENCE).unavailable(device):
        return device
    return "cpu" if not backend.needs_torch and not registry.get(REFERENCE).unavailable("cpu") else None


def _skip_unrunnable(target: Target, variants: Sequence[Variant], report: Report) -> tuple[list[Variant], list[Variant]]:
    """(the variants this machine can run, those it cannot): the latter skipped with their reason."""
    runnable, unrunnable = [], []
    for variant in variants:
        why = variant.unavailable()
        if not why and target.is_run and reference_device(variant.backend, variant.device) is None:
            why = f"no {REFERENCE} reference on {variant.device}: {registry.get(REFERENCE).unavailable(variant.device)}"
        if not why:
            runnable.append(variant)
            continue
        unrunnable.append(variant)
        report.skipped[variant.label] = why
        if variant.device != "cpu":
            report.unrunnable[variant.label] = variant.device
    return runnable, unrunnable


def _static_checks(target: Target, unrunnable: Sequence[Variant], report: Report) -> None:
    """What can be proven of the file for the rows this machine cannot run, where their backend has a
    static check (ort-cuda's CUDA placement), said in their rows; one that cannot fit is skipped."""
    for variant in unrunnable:
        if variant.backend.static is not None:
            try:
                report.static[variant.label] = variant.backend.static(target.file_for(variant))
            except MissingArtifactError:
                pass  # no file to check: the skip reason stands alone
            except OutOfMemoryPlan as exc:
                report.static[variant.label] = f"static check skipped: {exc}"
            except Exception as exc:  # noqa: BLE001 - a check that cannot run says so in its row
                report.static[variant.label] = f"static check failed: {' '.join(str(exc).split())[:200]}"


def _cases(target: Target, reference, samples: int, batch_sizes, input_files, seed, plan, notice):
    """(cases, the real samples' true labels or None, how the cases were made in words)."""
    from ptx.contract.tensor_inputs import describe_inputs, plan_inputs

    head, signature = reference.head, reference.signature
    if input_files:
        cases = file_cases(input_files, signature)
        return cases, None, f"{len(cases)} from {', '.join(Path(p).name for p in input_files)}", ""
    dataset = head.info.get("dataset") if head is not None else None
    if head is not None and seed is None and (dataset or target.is_run):
        if plan and any(plan.values()):
            raise PtxError(f"--shape, --value and --range shape generated inputs; {target.name} is fed its real test "
                           "samples: add --seed N for generated ones")
        from ptx.trainers.data import judging_samples

        sizes = tuple(batch_sizes or HEAD_BATCHES)
        real, truth, data = judging_samples(dataset or target.name, head.contract, samples, notice=notice)
        return head_cases(head.contract, real, sizes), truth, (
            f"{len(real):,} real test samples ({data}) + edge inputs, batch sizes {', '.join(map(str, sizes))}"), data
    chosen = plan_inputs(signature, **(plan or {}))
    if target.kind == "onnx":  # ids within the rows of the graph's embedding: said with the Gather that says so
        chosen.limits = {n: v for n, v in graph_ids(signature, target.path).items()
                         if signature.input(n).value_range == (0, v[0] - 1)}
    cases = generated_cases(signature, chosen, tuple(batch_sizes or VERIFY_BATCHES), seed or 0)
    where = (f"generated, seed {seed or 0}, " + (" and ".join(c.label for c in cases) if cases[0].batch is not None
                                                 else "at the fixed shape (no input has a batch axis)"))
    where += f": {describe_inputs(signature, chosen)}"  # what was fed, as export's 'validation inputs' line says it
    return cases, None, where + (f"; {chosen.describe_choices()}" if chosen.describe_choices() else ""), ""


def _runner(head, chunk: int) -> Callable:
    """How a model runs a case: a model with a head takes the head's samples (its one input, fed as
    its graph takes it: an --input uint8 export gets the pictures back) in batches of ``chunk``;
    any other its named tensors as they are."""
    if head is None:
        return lambda model: model.run
    contract, name = head.contract, head.contract.input.name

    def run_on(model):
        def run(feeds):
            feed = model.head.feeds if model.head is not None else (lambda x: {model.signature.input_names[0]: x})
            out = model.head.output_name if model.head is not None else model.signature.output_names[0]
            return {contract.output.name: run_in_batches(lambda x: model.run(feed(x))[out], feeds[name],
                                                         contract.input.batch_axis, chunk)}
        return run

    return run_on


def _cases_for(variant: Variant, cases: Sequence[Case], want: Mapping, report: Report) -> list[int]:
    """The cases ``variant`` runs: those the reference ran, within what its backend takes (a third
    opinion evaluates small inputs only, and says on how many it ran)."""
    shared = sorted(want)
    limit = variant.backend.case_values
    if limit is None:
        return shared
    small = [i for i in shared if sum(np.asarray(a).size for a in cases[i].feeds.values()) <= limit]
    if len(small) < len(shared):
        report.notes.append(f"note: {variant.label} ran on {len(small)} of {len(shared)} cases (inputs of at most "
                            f"{limit:,} values)")
    return small


def _provenance(target: Target, model, reference) -> list[str]:
    """Why a run's export is not its checkpoint's current weights or contract (stale)."""
    if not target.is_run or model is reference or model.head is None:
        return []
    found = []
    if model.info.get("checkpoint_sha256") != reference.info.get("checkpoint_sha256"):
        found.append(f"artifact was exported from another checkpoint: re-run `ptx export {target.name}`")
    if model.contract != reference.contract:
        found.append(f"its contract differs from the checkpoint's: re-run `ptx export {target.name}`")
    return found


def _against(other_target: Target, this: Run) -> Row:
    """Another file of the same model on its own runtime, on the same cases, held to the reference."""
    target, signature, report = this.target, this.signature, this.report
    mine = target.name if target.is_run else target.path.name
    other = other_target.path
    variant = Variant(registry.get(other_target.reference), "cpu", other_target.precision)
    label = against_label(other, variant.label)
    if other_target.kind != "onnx" and other_target.found.metadata.get("signature") is None \
            and not other_target.found.has_contract:
        # a TorchScript file keeps no inputs: they are the model's, in its order
        other_target.options["inputs"] = list(signature.inputs)
        report.notes.append(f"note: {other.name}'s inputs are {mine}'s ({', '.join(signature.input_names)}, in that "
                            "order)")
    this.progress(f"running {label}")
    # An int8 file against its f32 source, or the other way round: the pair is judged by the reduced
    # rule (atol is f32's), whichever of the two files is the reduced one.
    precision = next((f.precision for f in (other_target.found, target.found) if f.precision != FULL_PRECISION),
                     FULL_PRECISION) if not target.is_run and other_target.found is not None else FULL_PRECISION
    refused: list[Skip] = []
    with other_target.opened_together([variant], skipped=refused.append) as opened:
        if refused:
            return Row(label, precision=precision, against=this.choice.label, error=refused[0].why)
        return _against_row(this, opened[0][1], label, precision, other.name, mine)


def _against_row(this: Run, model, label: str, precision: str, other: str, mine: str) -> Row:
    """--against's row: the other file, opened as ``model``, on the cases, held to the reference."""
    signature, report = this.signature, this.report
    if this.head is None and sorted(model.signature.input_names) != sorted(signature.input_names):
        raise PtxError(f"--against {other}: it takes inputs {', '.join(model.signature.input_names)}, "
                       f"{mine} takes {', '.join(signature.input_names)}: not one model's files")
    names = match_outputs(signature.output_names, model.signature.output_names, other, report.notes) \
        if this.head is None else {n: n for n in signature.output_names}
    want, _ = this.reference_on("cpu")
    got, error = run_until_failure(this.run_on(model), this.cases, sorted(want))
    got = {i: {ours: outs[theirs] for ours, theirs in names.items()} for i, outs in got.items()}
    row = Row(label, precision=precision, against=this.choice.label, error=error)
    this.judge(row, got, want, None)
    return row


def _given(backends, input_files, seed, atol, rtol) -> list[str]:
    """What a printed --locate command repeats to meet the same verdict."""
    return ([f"--backends {','.join(backends)}"] if backends else []) + [f"--inputs {f}" for f in input_files] + \
        ([f"--seed {seed}"] if seed else []) + Tolerances.options(atol, rtol)


def _runtime_of(label: str) -> str:
    """``ort-cpu`` -> ``ort-cpu (onnxruntime 1.31.1)``: what produced a reference's outputs."""
    module = next((m for prefix, m in RUNTIME_MODULES.items() if label.startswith(prefix)), None)
    version = getattr(sys.modules.get(module or ""), "__version__", None)
    return f"{label} ({module} {version})" if version else label
