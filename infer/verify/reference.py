"""ptx verify PATH: every backend that can load a model file against one reference, output by output,
on the verify engine (infer/verify/comparator.py).

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

import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ptx.contract.reference import Reference, cases_from, load_reference, reference_path, save_reference
from ptx.contract.tensor_inputs import VERIFY_BATCHES, check_feeds, plan_inputs
from ptx.contract.tensors import Signature
from ptx.errors import InputError, PtxError, first_line

from .batch_composition import check_largest_batch
from .comparator import Tolerances, compare_cases, match_outputs, run_cases, tolerance_judge
from ptx.contract.weights import WEIGHTS_KEY

from ..formats.model_files import ONNX, read_model_file, weights_digest
from ..formats.signature import recorded_signature
from ..model.opening import KIND_NAMES
from .cases import Case, batch_hint, file_cases, generated_cases, save_cases
from ..model.readers import FileBackend, file_backends, open_rows
from .report import STORED, Report, Row

THIRD_OPINION = "onnx.reference"
# onnx.reference evaluates every node in numpy, convolutions included: a third opinion on inputs of
# this many values or fewer per case (a few seconds at most for a small CNN), skipped above.
THIRD_OPINION_MAX_VALUES = 100_000
RUNTIME_MODULES = {"ort": "onnxruntime", "openvino": "openvino", "torchscript": "torch", "aoti": "torch"}


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
                progress: Callable[[str], None] = lambda _: None) -> Report:
    """Verify the model file at ``path`` (see the module's docstring). ``options`` are
    ``load``'s (inputs, batch_axes, ignore_metadata), ``plan`` are ``plan_inputs``'
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
    file_options = {**options, "ignore_metadata": True} if changed else options
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
    # what the --locate offer must repeat to meet the same verdict
    given = ([f"--backends {','.join(backends)}"] if backends else []) + \
        [f"--inputs {f}" for f in input_files] + Tolerances.options(atol, rtol)
    report = Report(str(path), found.kind, runtime_of(reference_row.label), signature=signature, inputs=where,
                    cases=[c.label for c in cases], strict=strict, fed=list(cases), against=against, given=given)
    if changed:
        report.notes.append(changed)
    if save_inputs:
        report.notes.append(save_cases(Path(save_inputs), cases))
    progress(f"running {reference_row.label} on {len(cases)} cases")
    want, error = run_cases(reference.run, cases)
    hint = batch_hint(signature) if error and not input_files else None
    if hint:  # the runtime's own message names a node, not the input ptx fed a size it guessed
        error += f"; {hint}"
    if not want:
        raise PtxError(f"{reference_row.label}, the reference, cannot run {path.name}: {error}")

    stored, stored_cases = _stored_reference(path, reference_file, save, signature, found, report)
    stored_want = {}
    if stored:
        names, note = match_outputs(signature.output_names, stored.signature.output_names, "the stored reference")
        if note:
            report.notes.append(note)
        # the stored outputs renamed to the model's own names, so every row compares by name
        stored_want = {i: {ours: case.outputs[theirs] for ours, theirs in names.items()}
                       for i, case in enumerate(stored.cases)}

    report.skipped.update(not_run)
    report.unrunnable.update({r.label: r.device for r in rows if r.label in not_run})
    # the reference's own row: the cases it ran (its composition, and against the stored reference)
    report.rows.append(Row(reference_row.label, against=reference_row.label, cases=[cases[i].label for i in want],
                           error=error))
    for row in rows:
        if row.label in not_run:
            continue
        model = opened[row.label]
        if isinstance(model, Exception):
            report.rows.append(Row(row.label, row.device, against=reference_row.label, error=str(model), optional=True))
            continue
        got, compared = want, report.rows[0]
        if not row.reference:  # the reference's own rows: against the stored reference only
            progress(f"running {row.label}")
            ran, error = run_cases(model.run, [cases[i] for i in sorted(want)])
            got = {sorted(want)[k]: v for k, v in ran.items()}
            compared = _compared(Row(row.label, row.device, against=reference_row.label, error=error, optional=True),
                                 got, want, cases, signature, tolerances)
            report.rows.append(compared)
        # the backend against itself: samples alone against their rows in its largest batch case
        compared.composition = check_largest_batch(model.run, signature, cases, got, lambda name: tolerances.of(
            name, signature.output(name).dtype, row.device))
        if stored:
            ran, error = run_cases(model.run, stored_cases)
            report.rows.append(_compared(Row(row.label, row.device, against=STORED, error=error,
                                             optional=not row.reference), ran, stored_want, stored_cases, signature,
                                         tolerances))
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


def _stored_reference(path: Path, given, save: bool, signature: Signature, found, report: Report):
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
                   report: Report, progress) -> None:
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
    report.rows.append(_compared(Row(THIRD_OPINION, against=report.reference_row.backend), got,
                                     {i: want[i] for i in small}, cases, signature, tolerances))
    if len(small) < len(want):
        report.notes.append(f"note: {THIRD_OPINION} ran on {len(small)} of {len(want)} cases (inputs of at most "
                            f"{THIRD_OPINION_MAX_VALUES:,} values)")


def _against(other: Path, path: Path, signature: Signature, cases: Sequence[Case], want, tolerances: Tolerances,
             options: Mapping, report: Report, progress) -> Row:
    """The other file's own runtime on the same cases, held to this file's reference."""
    found = read_model_file(other)
    row = FileBackend(*next((r.backend, r.device) for r in file_backends(found.kind) if r.reference))
    label = f"{other.name} ({row.label})"
    other_options = {"ignore_metadata": options.get("ignore_metadata", False)}
    if found.kind != ONNX and recorded_signature(found.metadata, other) is None and not found.has_contract:
        # a TorchScript file keeps no inputs: they are this file's, in its order
        other_options["inputs"] = list(signature.inputs)
        report.notes.append(f"note: {other.name}'s inputs are {path.name}'s ({', '.join(signature.input_names)}, "
                            "in that order)")
    progress(f"running {label}")
    model = open_rows(other, [row], other_options)[row.label]
    if isinstance(model, Exception):
        return Row(label, against=report.reference_row.backend, error=str(model))
    if sorted(model.signature.input_names) != sorted(signature.input_names):
        raise PtxError(f"--against {other.name}: it takes inputs {', '.join(model.signature.input_names)}, "
                       f"{path.name} takes {', '.join(signature.input_names)}: declare them alike (--input)")
    names, note = match_outputs(signature.output_names, model.signature.output_names, other.name)
    if note:
        report.notes.append(note)
    got, error = run_cases(model.run, [cases[i] for i in sorted(want)])
    got = {sorted(want)[k]: v for k, v in got.items()}
    return _compared(Row(label, against=report.reference_row.backend, error=error), got, want, cases, signature,
                         tolerances, names)


def _save(path: Path, given, report: Report, cases: Sequence[Case], want, signature: Signature,
          found) -> None:
    where = Path(given) if given else reference_path(path)
    if report.reference_row.error:
        report.notes.append(f"reference tensors not written: the reference failed ({report.reference_row.error})")
        return
    runs = [(cases[i].feeds, want[i]) for i in sorted(want)]
    save_reference(where, Reference(cases_from(runs), report.reference, signature, weights_digest(path, found.kind)))
    report.notes.append(f"wrote {where} ({len(runs)} cases from {report.reference})")
