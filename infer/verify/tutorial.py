"""ptx verify: the same inputs through every backend, each compared with eager on its own device
(Polygraphy's reference runner) under the contract's one agreement rule (ptx.contract.compare)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract import CHECKPOINT_FILE, DEFAULT_RUNS_ROOT, Task, Tolerance, compare
from ptx.contract.comparison import JUDGING_BATCH, JUDGING_SAMPLES, check_tolerance, judge_reduced_outputs
from ptx.contract.names import FULL_PRECISION
from ptx.contract.runs import exported, run_folders
from ptx.contract.transforms import decisions, normalize, run_in_batches, to_layout
from ptx.errors import BackendUnavailableError, MissingArtifactError, NothingToCompareError, PtxError, first_line

from ..runtime import backends as registry
from .batch_composition import check_largest_batch
from .cases import Case
from .comparator import Tolerances, compare_cases, run_cases
from ..model.opening import artifact_path, export_command, load, run_folder, run_option
from .report import REFERENCE, Report, Row

DEFAULT_BATCH_SIZES = (1, 7, JUDGING_BATCH)  # the real samples run in batches of the largest


def build_inputs(contract, real: np.ndarray, batch_sizes) -> dict[str, np.ndarray]:
    """Named input batches in model layout: the real samples, then edge cases."""
    x = normalize(real, contract)
    largest = max(batch_sizes)
    cycled = np.concatenate([x] * (-(-largest // len(x))))[:largest]
    inputs = {"real": x}
    if contract.picture is not None:
        # A blank picture and one all ink, normalised: the extremes of what a picture model is fed,
        # and pictures still, so that an --input uint8 export (which takes only pictures) is fed them too.
        blank = np.zeros((2, *np.asarray(real).shape[1:]), dtype=np.uint8)
        inputs.update(zeros=normalize(blank, contract), ones=normalize(np.full_like(blank, 255), contract))
    elif contract.encoding is None:  # all-zero and all-one tensors; token ids have no such edge
        inputs.update(zeros=np.zeros_like(x[:2]), ones=np.ones_like(x[:2]))
    for b in sorted(set(batch_sizes) | {1, 7}):
        inputs[f"batch-{b}"] = cycled[:b]
    return {name: to_layout(batch, contract) for name, batch in inputs.items()}


def verify(target: str | Path, **options):
    """`ptx verify` of any model: a model file against its reference (infer/verify/reference.py:
    options ``backends``, ``options``, ``plan``, ``input_files``, ``against``...), a tutorial model's
    name against eager, judged by its head (``verify_run``'s options)."""
    if Path(str(target)).is_file():
        from .reference import verify_reference

        return verify_reference(target, **options)
    return verify_run(str(target), **options)


def verify_run(name: str, *, backends: list[str] | None = None, samples: int = JUDGING_SAMPLES, batch_sizes=DEFAULT_BATCH_SIZES,
           atol: float | None = None, rtol: float | None = None, root: str | Path = DEFAULT_RUNS_ROOT,
           save_inputs: str | Path | None = None, notice: Callable[[str], None] = print,
           run: str | Path | None = None, triaged: bool = False) -> Report:
    """Run ``name``'s artifacts (in ROOT/NAME, or the run folder ``run``) through the chosen backends
    (default: all) and compare each with eager.

    A backend this machine cannot run is skipped with its reason; an artifact that exists but fails
    to load is a failure, never a skip."""
    from ptx.trainers.data import judging_samples

    pairs = registry.variants(backends)
    named = set(backends or ())
    reference = load(name, REFERENCE, root=root, run=run)
    contract = reference.contract
    overrides = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    tolerance_of = {d: check_tolerance(Tolerance(**{**contract.tolerance(d).to_dict(), **overrides}))
                    for d in dict.fromkeys(d for _, d, _ in pairs)}
    # The same draw export judges a reduced precision on (one file, one verdict).
    real, truth, data_name = judging_samples(reference.info.get("dataset") or name, contract, samples, notice=notice)
    inputs = build_inputs(contract, real, batch_sizes)
    if save_inputs:
        from ptx.atomic import atomic_path

        with atomic_path(save_inputs) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, labels=truth, **inputs)
    report = Report(name, samples=len(real), data=data_name, tolerances={d: t.to_dict() for d, t in tolerance_of.items()},
                    references={d: reference_name(d) for d in tolerance_of})
    chunk = max(batch_sizes)
    sizes = sorted(int(k.split("-")[1]) for k in inputs if k.startswith("batch-"))
    # "real" first; the batch-N cases carry their batch (the largest is the batch composition's)
    cases = [Case(key, {contract.input.name: x}, int(key[6:]) if key.startswith("batch-") else None)
             for key, x in inputs.items()]
    output = contract.output.name
    references: dict[str, tuple[dict, str | None]] = {}  # device -> eager's outputs there, and its failure

    reduced_ok = contract.task is not Task.REGRESSION  # reduced precision is judged by labels
    for backend, device, precision in pairs:
        label = backend.label(device, precision)
        why = backend.unavailable(device)
        ref_device = reference_device(backend, device)
        if why or ref_device is None:
            ref_why = registry.get(REFERENCE).unavailable(device)
            report.skipped[label] = why or f"no {REFERENCE} reference on {device}: {ref_why}"
            if device != "cpu":
                report.unrunnable[label] = device
            if backend.static is not None:
                report.static.update(_static_check(backend, name, root, precision, run, label))
            continue
        if precision != FULL_PRECISION and not reduced_ok:
            report.skipped[label] = (f"{precision} is judged by labels and accuracy; {name} is a regression with "
                                     "neither: use f32")
            continue
        row = Row(backend.name, device, precision, batch_sizes=sizes,
                  required=precision != FULL_PRECISION and label in named)
        try:
            if ref_device not in references:  # eager on that device, loaded and run once
                device_ref = reference if ref_device == "cpu" else load(reference.path, REFERENCE, ref_device)
                references[ref_device] = run_cases(_run_of(device_ref, chunk), cases)
            predictor = (reference if backend.name == REFERENCE and precision == FULL_PRECISION else
                         load(name, backend.name, device, precision, root=root, run=run))
        except (MissingArtifactError, BackendUnavailableError) as exc:  # not exported, or this CPU cannot
            report.skipped[label] = str(exc)
            if isinstance(exc, BackendUnavailableError) and device != "cpu":
                report.unrunnable[label] = device
            continue
        except Exception as exc:  # noqa: BLE001 - the artifact is there but does not load: a failure
            # A runtime's own exception (torchscript-cuda's "Expected all tensors to be on the same
            # device") is that row's FAIL, in one line; the other rows and models still run.
            row.error = str(exc) if isinstance(exc, PtxError) else f"{type(exc).__name__}: {first_line(exc)}"
            report.rows.append(row)
            continue
        report.rows.append(row)
        want, error = references[ref_device]
        got, error = (want, error) if predictor is reference else run_cases(_run_of(predictor, chunk), cases)
        row.error = error or references[ref_device][1]
        if row.error:
            continue
        if predictor.info.get("checkpoint_sha256") != reference.info.get("checkpoint_sha256"):
            row.provenance.append(f"artifact was exported from another checkpoint: re-run `ptx export {name}`")
        if predictor.contract != contract:
            row.provenance.append(f"its contract differs from the checkpoint's: re-run `ptx export {name}`")
        row.cases, row.outputs = compare_cases(got, want, cases, [output], lambda _, g, w: compare(
            g, w, contract, tolerance=tolerance_of[device]))
        labels = decisions(got[0][output], contract)  # case 0: the real samples
        if labels is not None:
            row.argmax_agreement = float((labels == decisions(want[0][output], contract)).mean())
            row.accuracy = float((labels == truth.reshape(labels.shape)).mean())
        if precision == FULL_PRECISION:
            row.composition = check_largest_batch(_run_of(predictor, chunk), contract.signature, cases, got,
                                                  lambda _: tolerance_of[device])
        else:
            # Reduced precision cannot meet the f32 atol (the row fails only on shapes and NaN/Inf):
            # the labels users see decide (judge_reduced_precision), on the real test samples.
            row.unusable = judge_reduced_outputs(got[0][output], want[0][output], truth, contract).unusable
    if not any(r.backend != REFERENCE for r in report.rows):  # eager alone proves nothing
        raise NothingToCompareError(_nothing_compared(name, report, run_folder(name, root, run), run))
    report.offers = locate_offers(name, report, run_folder(name, root, run), overrides, triaged)
    return report


def locate_offers(name: str, report: Report, run_dir: Path, tolerance: dict | None = None,
                  triaged: bool = False) -> list[str]:
    """The command that says where each failing row parts, one line each (issue 44: offered under
    every DISAGREE). An f32 ONNX row is traced on model.onnx: a runtime against ort-cpu there, and
    ort-cpu itself against the TorchScript export, module by module (eager's own code, scripted); a
    reduced row by its triage. A row that failed to load, or only on its batch composition, has no
    second side to trace. ``tolerance``: the --atol/--rtol given, passed on (the file's default would
    find nothing to locate). ``triaged``: --locate was given, whose triage of the reduced rows follows
    the table, so they offer nothing."""
    onnx_file = run_dir / "model.onnx"
    given = "".join(f" {arg}" for arg in Tolerances.options(**{k: [(None, v)] for k, v in (tolerance or {}).items()}))
    where = run_option(name, run_dir)
    offers = []
    for row in report.failed + [r for r in report.rows if r.status == "NOT USABLE"]:
        if row.error or (row.disagreeing is None and not row.unusable):
            continue
        if row.precision != FULL_PRECISION:
            if triaged:
                continue
            offers.append(f"where {row.label} loses labels: ptx verify {name}{where} --backends {row.label} --locate "
                          "(the nodes to keep in f32)")
        elif row.backend == "ort-cpu":
            offers.append(f"where ort-cpu parts from eager: ptx verify {onnx_file} --against "
                          f"{run_dir / 'model.torchscript.pt'}{given} --locate [--repro DIR]")
        elif registry.get(row.backend).artifact == "onnx":
            offers.append(f"where {row.label} parts: ptx verify {onnx_file} --backends {row.label}{given} --locate "
                          "[--repro DIR] (against ort-cpu on the same file)")
    return offers


def _run_of(model, chunk: int):
    """A tutorial model's run over a case: its one input in batches of ``chunk``, fed as its graph
    takes it (the head's feeds: an --input uint8 export gets the pictures back)."""
    contract, head = model.contract, model.head
    return lambda feeds: {contract.output.name: run_in_batches(lambda x: model.run(head.feeds(x))[head.output_name],
                                                                feeds[contract.input.name],
                                                                contract.input.batch_axis, chunk)}


def _static_check(backend, name: str, root, precision: str, run, label: str) -> dict[str, str]:
    """{label: what ``backend.static`` proves of the artifact}, or {} when there is no artifact
    (the skip reason then stands alone). Never a verdict: a row that did not run is not compared."""
    try:
        path = artifact_path(name, backend.name, root, precision, run)
    except PtxError:
        return {}
    try:
        return {label: backend.static(path)}
    except Exception as exc:  # noqa: BLE001 - a check that cannot run says so in its row
        return {label: f"static check failed: {' '.join(str(exc).split())[:200]}"}


def _nothing_compared(name: str, report: Report, run_dir: Path, run: str | Path | None) -> str:
    if not exported(run_dir):
        return (f"nothing to compare for {name}: {run_dir} holds no export yet; run `{export_command(name, run=run)}` "
                "first (verify compares each export with eager)")
    return (f"nothing to compare for {name}: no backend besides eager ran ("
            + "; ".join(f"{b}: {w}" for b, w in report.skipped.items()) + ")")


def reference_name(device: str) -> str:
    """What ``device``'s rows are compared with, in words, for the table's header and the JSON."""
    if device == "cpu":
        return "eager-cpu"
    if not registry.get(REFERENCE).unavailable(device):
        return f"eager-{device} at f32, TF32 off"
    return "eager-cpu for torch-free rows (torch sees no CUDA here)"


def reference_device(backend, device: str) -> str | None:
    """Where eager runs as ``backend``-on-``device``'s reference: on the same device when torch can
    run there; else a torch-free backend (ort-cuda next to a CPU-only torch, as scripts/setup.sh
    installs it) is held to that device's tolerance against eager on the CPU; else nowhere."""
    if not registry.get(REFERENCE).unavailable(device):
        return device
    return "cpu" if not backend.needs_torch and not registry.get(REFERENCE).unavailable("cpu") else None


def runs_with_artifacts(root: str | Path = DEFAULT_RUNS_ROOT) -> list[Path]:
    """Run folders under ``root``, whatever they are called, that hold a checkpoint and at least one
    exported artifact."""
    return [d for d in run_folders(root) if (d / CHECKPOINT_FILE).is_file() and exported(d)]
