"""ptx verify PATH: every backend that can load a model file against one reference, output by output,
on the verify engine (infer/comparator.py).

The reference is the file's own runtime on the CPU (an ONNX file: ort-cpu, with onnx.reference's
pure-numpy evaluator as a third opinion on small inputs; a TorchScript file: the module through
torch.jit; a pt2 package: aoti on the CPU). Inputs are generated from the signature, seeded, at two
batch sizes that are neither 0 nor 1 (a batch the exporter specialised runs at one and fails at the
other), or given as real samples. Reference tensors kept beside the file (model.reference.npz,
``--save-reference``) are a second reference every backend is also held to: on a GPU server or in a
container without torch, that checks a deployment against eager PyTorch without PyTorch.

``--against OTHER`` holds another file of the same model (a user's TorchScript beside its ONNX) to
the reference too, output by output.

Exit status: 0 every compared row agrees; 1 a row disagrees or fails (a disagreement is never a
warning); 2 nothing could be compared (the reference cannot run the file, or no other backend can).
A backend that cannot run the file at all (OpenVINO's front end refusing an operator) is no
disagreement, the one false alarm verify must never raise: its row says it could not run, with the
runtime's reason in short, and the verdict is over the rows that ran (``strict=True``, ``--strict``:
such a row fails). One that runs some cases and fails at another still fails: that is the file's.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ptx.contract.comparison import HISTOGRAM_EDGES, OutputAgreement, needed_atol_text
from ptx.contract.reference import Reference, cases_from, load_reference, reference_path, save_reference
from ptx.contract.tensor_inputs import VERIFY_BATCHES, check_feeds, plan_inputs
from ptx.contract.tensors import Signature
from ptx.errors import InputError, PtxError, first_line

from .comparator import Tolerances, compare_cases, match_outputs, run_cases, short_reason, tolerance_judge
from .model_files import ONNX, WEIGHTS_KEY, read_model_file, recorded_signature, weights_digest
from .api import KIND_NAMES
from .cases import Case, batch_hint, file_cases, generated_cases, save_cases
from .readers import FileBackend, file_backends, group_reasons, open_options_for, open_rows

THIRD_OPINION = "onnx.reference"
# onnx.reference evaluates every node in numpy, convolutions included: a third opinion on inputs of
# this many values or fewer per case (a few seconds at most for a small CNN), skipped above.
THIRD_OPINION_MAX_VALUES = 100_000
STORED = "stored reference"
RUNTIME_MODULES = {"ort": "onnxruntime", "openvino": "openvino", "torchscript": "torch", "aoti": "torch"}


@dataclass
class Row:
    """One backend's outputs compared with one reference, over every case both ran."""

    backend: str  # ort-cpu, openvino, onnx.reference, "model.pt (torchscript)"
    against: str  # the reference's label, or "stored reference"
    device: str = "cpu"
    cases: list[str] = field(default_factory=list)
    outputs: list[OutputAgreement] = field(default_factory=list)
    error: str | None = None  # the backend did not load or run: the row FAILs, the others go on
    # A backend of this machine's (not --against's file) that ran no case: it cannot run the file,
    # which says nothing about the file's answers; it fails only under --strict.
    optional: bool = False
    worst_case: int | None = None  # index of the case that disagrees most (what --locate traces)
    # The backend against itself: samples alone against their rows in the largest batch case (its
    # answer must not depend on its batch-mates), judged by the same tolerance.
    composition: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outputs)

    @property
    def could_not_run(self) -> bool:
        return self.optional and self.error is not None and not self.cases

    def first_problem(self) -> str:
        """The row's failure in words: the backend, what it was compared with, the output and its error."""
        if self.error:
            return f"{self.backend}: {self.error}"
        bad = next(o for o in self.outputs if not o.ok)
        return f"{self.backend} vs {self.against}, output {bad.summary()}"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "against": self.against, "device": self.device, "cases": self.cases,
                "ok": self.ok, "could_not_run": self.could_not_run, "error": self.error, "composition": self.composition,
                "outputs": [o.to_dict() for o in self.outputs]}


@dataclass
class ReferenceReport:
    path: Path
    kind: str
    reference_label: str  # ort-cpu, torchscript, aoti
    reference: str  # "ort-cpu (onnxruntime 1.31.1)"
    signature: Signature
    inputs: str  # where the inputs came from
    cases: list[str]
    rows: list[Row] = field(default_factory=list)
    reference_error: str | None = None  # the reference ran some cases and failed at a later one
    not_run: dict[str, str] = field(default_factory=dict)  # label -> why this machine cannot run it
    skipped: dict[str, str] = field(default_factory=dict)  # label -> why it was not asked (third opinion)
    notes: list[str] = field(default_factory=list)
    strict: bool = False  # a backend that cannot run the file fails, as a disagreement does
    fed: list = field(default_factory=list, repr=False)  # the cases' inputs (what --locate feeds again)
    against: str | Path | None = None  # --against's file (named in the --locate offer)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if not r.ok and (self.strict or not r.could_not_run)]

    @property
    def unrunnable(self) -> list[Row]:
        """The rows of backends that could not run the file (not judged without --strict)."""
        return [r for r in self.rows if r.could_not_run]

    @property
    def exit_status(self) -> int:
        if self.failed or self.reference_error:
            return 1
        return 0 if any(not r.could_not_run for r in self.rows) else 2

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def summary(self) -> str:
        """The last line: the verdict, naming the backend, the output and its error where one disagrees."""
        problems = [r.first_problem() for r in self.failed]
        if self.reference_error:
            problems.insert(0, f"{self.reference_label} (the reference): {self.reference_error}")
        if problems:
            more = (f" (and {len(problems) - 1} more table row{'s' * (len(problems) > 2)} fail"
                    f"{'s' * (len(problems) == 2)})" if problems[1:] else "")
            return f"DISAGREE: {problems[0]}{more}"
        unrunnable = list(dict.fromkeys(r.backend for r in self.unrunnable))
        could_not = (f"; could not run: {', '.join(unrunnable)} (not a disagreement; --strict fails it)"
                     if unrunnable else "")
        ran = [r for r in self.rows if not r.could_not_run]
        if not ran:
            others = "; ".join(group_reasons(self.not_run)) or "no other backend reads this kind of file"
            return (f"nothing compared: only {self.reference_label} ran ({others}); give --reference FILE or "
                    f"--against OTHER to compare with{could_not}")
        compared = list(dict.fromkeys(r.backend for r in ran if not r.composition))
        against = ", ".join(dict.fromkeys(r.against for r in ran if not r.composition))
        alone = (f"; each alone as inside a batch: {', '.join(r.backend for r in ran if r.composition)}"
                 if any(r.composition for r in ran) else "")
        return f"all agree: {', '.join(compared)} (against {against}){alone}{could_not}"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "reference": self.reference,
                "signature": self.signature.to_dict(), "inputs": self.inputs, "cases": self.cases,
                "rows": [r.to_dict() for r in self.rows], "reference_error": self.reference_error,
                "not_run": self.not_run, "not_run_summary": group_reasons(self.not_run), "skipped": self.skipped,
                "notes": self.notes, "histogram_edges": [e if math.isfinite(e) else "inf" for e in HISTOGRAM_EDGES],
                "ok": self.ok, "exit_status": self.exit_status, "summary": self.summary()}

    def table(self) -> str:
        lines = [f"ptx verify {self.path.name}: {KIND_NAMES[self.kind]}, reference {self.reference}",
                 "inputs: " + "; ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in self.signature.inputs),
                 f"cases: {self.inputs}", *self.notes]
        head = ["backend", "against", "output", "max abs", "max rel", "needed atol", "atol / rtol", "argmax", "verdict"]
        cells = [head]
        ran = f"ran {len(self.cases)} case{'s' * (len(self.cases) != 1)}"
        cells.append([self.reference_label, "(the reference)", "", "", "", "", "", "",
                      f"FAIL: {self.reference_error}" if self.reference_error else ran])
        for row in self.rows:
            if row.could_not_run:
                verdict = "FAIL" if self.strict else "could not run"
                cells.append([row.backend, row.against, "", "", "", "", "", "",
                              f"{verdict}: {short_reason(row.error, self.path)}"])
                continue
            if row.error:
                cells.append([row.backend, row.against, "", "", "", "", "", "", f"FAIL: {row.error}"])
                continue
            for o in row.outputs:
                argmax = f"{o.same_decisions}/{o.decisions}" if o.decisions else "-"
                verdict = "PASS" if o.ok else "FAIL" + (f": {o.problem}" if o.problem else
                                                         f": {o.beyond:,} of {o.compared:,} beyond")
                cells.append([row.backend, row.against, o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}",
                              needed_atol_text(o), f"{o.tolerance.atol:g} / {o.tolerance.rtol:g}", argmax, verdict])
        widths = [max(len(r[i]) for r in cells) for i in range(len(head) - 1)]
        text = ["  ".join(c.rjust(w) if 3 <= i <= 5 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                + "  " + r[-1] for r in cells]
        lines += [text[0], "-" * len(text[0]), *text[1:]]
        lines += [f"not run: {line}" for line in group_reasons(self.not_run)]
        lines += [f"skipped: {label}: {why}" for label, why in self.skipped.items()]
        if any(not r.composition for r in self.failed) and self.kind == ONNX:
            from .locate_file import offer

            lines.append(offer(self.path, self.against))
        lines.append(self.summary())
        return "\n".join(lines)


def _composition_row(row, model, cases: Sequence[Case], got, signature: Signature, tolerances: Tolerances) -> Row | None:
    """``row``'s backend against itself: a few samples of its largest batch case run alone, each
    compared with its rows in that batch; None where no case has a batch of two or more."""
    from .batch_composition import check_batch_composition

    batched = [i for i in got if (cases[i].batch or 0) > 1]
    if not batched:
        return None
    index = max(batched, key=lambda i: cases[i].batch)
    composed = Row(row.label, f"itself, batch of {cases[index].batch}", row.device, composition=True, optional=True)
    try:
        check = check_batch_composition(model.run, signature, cases[index].feeds, got[index],
                                        lambda name: tolerances.of(name, signature.output(name).dtype, row.device))
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot run one sample alone: this row's reason
        composed.error = f"a sample alone: {exc if isinstance(exc, PtxError) else first_line(exc)}"
        return composed
    if check.skipped:
        return None
    composed.cases, composed.outputs = [f"samples {', '.join(map(str, check.alone))} alone"], check.outputs
    return composed


def runtime_of(label: str) -> str:
    """``ort-cpu`` -> ``ort-cpu (onnxruntime 1.31.1)``: what produced a reference's outputs."""
    module = next((m for prefix, m in RUNTIME_MODULES.items() if label.startswith(prefix)), None)
    version = getattr(sys.modules.get(module or ""), "__version__", None)
    return f"{label} ({module} {version})" if version else label


def _compared(row: Row, got, want, cases: Sequence[Case], signature: Signature, tolerances: Tolerances,
              names: Mapping[str, str] | None = None) -> Row:
    """``row`` with every output compared over the cases both sides ran, and the case that departs most."""
    worst: dict[int, float] = {}
    row.cases, row.outputs = compare_cases(got, want, cases, signature.output_names,
                                           tolerance_judge(signature, tolerances, row.device), names, worst)
    row.worst_case = max(worst, key=worst.get) if worst else None
    return row


def verify_reference(path: str | Path, *, backends: Sequence[str] | None = None, options: Mapping | None = None,
                plan: Mapping | None = None, input_files: Sequence[str | Path] = (), seed: int = 0,
                batch_sizes: Sequence[int] = VERIFY_BATCHES, atol: Sequence = (), rtol: Sequence = (),
                against: str | Path | None = None, reference_file: str | Path | None = None,
                save: bool = False, third_opinion: bool = True, strict: bool = False,
                save_inputs: str | Path | None = None,
                progress: Callable[[str], None] = lambda _: None) -> ReferenceReport:
    """Verify the model file at ``path`` (see the module's docstring). ``options`` are
    ``open_own_model``'s (inputs, batch_axes, ignore_metadata), ``plan`` are ``plan_inputs``'
    (shapes, values, ranges, default_range); ``atol``/``rtol`` are (output name or None, value) pairs.
    ``strict``: a backend that cannot run the file fails the verdict (by default its row says it
    could not run, and the verdict is over the rows that ran). ``save_inputs``: write the cases'
    inputs to this .npz (``NAME:K`` keys, one K per case), which ``input_files`` reads back."""
    path = Path(path)
    found = read_model_file(path)
    options = dict(options or {})
    changed = _changed_since_export(path, found, options)
    # A file changed since export is judged by its outputs: run as the user's own model, against what
    # was kept at export (--against keeps the user's own choice for the other file).
    file_options = open_options_for(found, {**options, "ignore_metadata": True} if changed else options)
    options = open_options_for(found, options)
    rows = file_backends(found.kind, backends)
    reference_row = next(r for r in file_backends(found.kind) if r.reference)
    not_run = {r.label: r.unavailable() for r in rows if not r.reference}
    not_run = {label: why for label, why in not_run.items() if why}
    to_open = [reference_row] + [r for r in rows if not r.reference and r.label not in not_run]
    progress(f"opening {path.name} with {', '.join(r.label for r in to_open)} ({reference_row.label}: the reference)")
    opened = open_rows(path, to_open, file_options)
    reference = opened[reference_row.label]
    if isinstance(reference, Exception):
        raise PtxError(f"{reference_row.label}, the reference for {KIND_NAMES[found.kind]}, cannot open it: "
                       f"{reference}") from None
    signature = reference.signature
    tolerances = Tolerances.parse(atol, rtol, signature.output_names)
    if input_files:
        cases = file_cases(input_files, signature)
        where = f"{len(cases)} from {', '.join(Path(p).name for p in input_files)}"
    else:
        chosen = plan_inputs(signature, **(plan or {}))
        cases = generated_cases(signature, chosen, batch_sizes, seed)
        where = (f"generated, seed {seed}, " + (" and ".join(c.label for c in cases) if cases[0].batch is not None
                                                  else "at the fixed shape (no input has a batch axis)"))
        where += f"; {chosen.describe_choices()}" if chosen.describe_choices() else ""
    report = ReferenceReport(path, found.kind, reference_row.label, runtime_of(reference_row.label), signature, where,
                              [c.label for c in cases], strict=strict, fed=list(cases), against=against)
    if changed:
        report.notes.append(changed)
    if save_inputs:
        report.notes.append(save_cases(Path(save_inputs), cases))
    progress(f"running {reference_row.label} on {len(cases)} cases")
    want, report.reference_error = run_cases(reference.run, cases)
    hint = batch_hint(signature) if report.reference_error and not input_files else None
    if hint:  # the runtime's own message names a node, not the input ptx fed a size it guessed
        report.reference_error += f"; {hint}"
    if not want:
        raise PtxError(f"{reference_row.label}, the reference, cannot run {path.name}: {report.reference_error}")

    stored, stored_cases = _stored_reference(path, reference_file, save, signature, found, report)
    stored_want = {}
    if stored:
        names, note = match_outputs(signature.output_names, stored.signature.output_names, "the stored reference")
        if note:
            report.notes.append(note)
        # the stored outputs renamed to the model's own names, so every row compares by name
        stored_want = {i: {ours: case.outputs[theirs] for ours, theirs in names.items()}
                       for i, case in enumerate(stored.cases)}

    report.not_run = not_run
    for row in rows:
        if row.label in not_run:
            continue
        model = opened[row.label]
        if isinstance(model, Exception):
            report.rows.append(Row(row.label, reference_row.label, row.device, error=str(model), optional=True))
            continue
        got = want
        if not row.reference:  # the reference's own rows: against the stored reference only
            progress(f"running {row.label}")
            ran, error = run_cases(model.run, [cases[i] for i in sorted(want)])
            got = {sorted(want)[k]: v for k, v in ran.items()}
            report.rows.append(_compared(Row(row.label, reference_row.label, row.device, error=error,
                                                 optional=True), got, want, cases, signature, tolerances))
        alone = _composition_row(row, model, cases, got, signature, tolerances)
        if alone is not None:
            report.rows.append(alone)
        if stored:
            ran, error = run_cases(model.run, stored_cases)
            report.rows.append(_compared(Row(row.label, STORED, row.device, error=error, optional=not row.reference),
                                             ran, stored_want, stored_cases, signature, tolerances))
    if found.kind == ONNX and third_opinion:
        _third_opinion(path, cases, want, signature, tolerances, report, progress)
    if against is not None:
        report.rows.append(_against(Path(against), path, signature, cases, want, tolerances, options, report, progress))
    if save:
        _save(path, reference_file, report, cases, want, signature, found)
    return report


def _changed_since_export(path: Path, found, options: Mapping) -> str | None:
    """The note for a file whose weights are not the ones its ptx metadata records (changed after
    export): predict and serve refuse such a file; verify says so and judges it by its outputs, so
    that the reference tensors kept at export, or --against, name what changed."""
    recorded = found.metadata.get(WEIGHTS_KEY)
    if options.get("ignore_metadata") or not recorded:
        return None
    actual = weights_digest(path, found.kind)
    if actual is None or actual == recorded:
        return None
    return (f"note: {path.name}'s weights are not the ones it was exported with (sha256 {actual[:12]}... where its "
            f"ptx.{WEIGHTS_KEY} records {recorded[:12]}...): checked as your own model, by its outputs")


def _stored_reference(path: Path, given, save: bool, signature: Signature, found, report: ReferenceReport):
    """The reference tensors kept beside the file (or given), checked against the model's inputs."""
    where = Path(given) if given else reference_path(path)
    if save or not (given or where.is_file()):
        return None, []
    stored = load_reference(where)
    if sorted(stored.signature.input_names) != sorted(signature.input_names):
        raise PtxError(f"{where}: its cases feed inputs {', '.join(stored.signature.input_names)}, and "
                       f"{path.name} takes {', '.join(signature.input_names)}: not reference tensors of this model")
    cases = []
    for k, case in enumerate(stored.cases):
        try:
            feeds = check_feeds(signature, case.inputs, f"{where.name} case {k}", from_file=True)
        except InputError as exc:
            raise PtxError(f"{where}: {exc}") from None
        cases.append(Case(f"stored #{k}", feeds, None))
    digest = weights_digest(path, found.kind)
    if stored.weights_sha256 and digest and stored.weights_sha256 != digest:
        report.notes.append(f"note: {where.name} was made for other weights than {path.name}'s (sha256 "
                            f"{stored.weights_sha256[:12]} vs {digest[:12]}): the file changed since")
    report.notes.append(f"stored reference: {where.name}, {len(cases)} case{'s' * (len(cases) != 1)} from "
                        f"{stored.produced_by}")
    return stored, cases


def _third_opinion(path: Path, cases: Sequence[Case], want, signature: Signature, tolerances: Tolerances,
                   report: ReferenceReport, progress) -> None:
    """onnx.reference's evaluator on the cases small enough for it."""
    small = [i for i in want if sum(a.size for a in cases[i].feeds.values()) <= THIRD_OPINION_MAX_VALUES]
    if not small:
        largest = min(sum(a.size for a in cases[i].feeds.values()) for i in want)
        report.skipped[THIRD_OPINION] = (f"inputs are large ({largest:,} values a case; it evaluates up to "
                                         f"{THIRD_OPINION_MAX_VALUES:,} in numpy)")
        return
    progress(f"running {THIRD_OPINION} on {len(small)} cases")
    from onnx.reference import ReferenceEvaluator

    got = {}
    try:
        evaluator = ReferenceEvaluator(str(path))
        for i in small:
            got[i] = dict(zip(evaluator.output_names, evaluator.run(None, cases[i].feeds)))
    except Exception as exc:  # noqa: BLE001 - an op it does not implement: no opinion, not a disagreement
        report.skipped[THIRD_OPINION] = f"it cannot evaluate this graph ({type(exc).__name__}: {first_line(exc)[:200]})"
        return
    report.rows.append(_compared(Row(THIRD_OPINION, report.reference_label), got,
                                     {i: want[i] for i in small}, cases, signature, tolerances))
    if len(small) < len(want):
        report.notes.append(f"note: {THIRD_OPINION} ran on {len(small)} of {len(want)} cases (inputs of at most "
                            f"{THIRD_OPINION_MAX_VALUES:,} values)")


def _against(other: Path, path: Path, signature: Signature, cases: Sequence[Case], want, tolerances: Tolerances,
             options: Mapping, report: ReferenceReport, progress) -> Row:
    """The other file's own runtime on the same cases, held to this file's reference."""
    found = read_model_file(other)
    row = FileBackend(*next((r.backend, r.device) for r in file_backends(found.kind) if r.reference))
    label = f"{other.name} ({row.label})"
    other_options = {"ignore_metadata": options.get("ignore_metadata", False)}
    if found.kind != ONNX and recorded_signature(found, other) is None and not found.has_contract:
        # a TorchScript file keeps no inputs: they are this file's, in its order
        other_options["inputs"] = list(signature.inputs)
        report.notes.append(f"note: {other.name}'s inputs are {path.name}'s ({', '.join(signature.input_names)}, "
                            "in that order)")
    other_options = open_options_for(found, other_options)
    progress(f"running {label}")
    model = open_rows(other, [row], other_options)[row.label]
    if isinstance(model, Exception):
        return Row(label, report.reference_label, error=str(model))
    if sorted(model.signature.input_names) != sorted(signature.input_names):
        raise PtxError(f"--against {other.name}: it takes inputs {', '.join(model.signature.input_names)}, "
                       f"{path.name} takes {', '.join(signature.input_names)}: declare them alike (--input)")
    names, note = match_outputs(signature.output_names, model.signature.output_names, other.name)
    if note:
        report.notes.append(note)
    got, error = run_cases(model.run, [cases[i] for i in sorted(want)])
    got = {sorted(want)[k]: v for k, v in got.items()}
    return _compared(Row(label, report.reference_label, error=error), got, want, cases, signature,
                         tolerances, names)


def _save(path: Path, given, report: ReferenceReport, cases: Sequence[Case], want, signature: Signature,
          found) -> None:
    where = Path(given) if given else reference_path(path)
    if report.reference_error:
        report.notes.append(f"reference tensors not written: the reference failed ({report.reference_error})")
        return
    runs = [(cases[i].feeds, want[i]) for i in sorted(want)]
    save_reference(where, Reference(cases_from(runs), report.reference, signature, weights_digest(path, found.kind)))
    report.notes.append(f"wrote {where} ({len(runs)} cases from {report.reference})")
