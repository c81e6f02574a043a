"""ptx verify: the same inputs through every backend, each compared with eager on its own device
(Polygraphy's reference runner) under the contract's one agreement rule (ptx.contract.compare)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract import CHECKPOINT_FILE, DEFAULT_RUNS_ROOT, Task, Tolerance, compare
from ptx.contract.comparison import (JUDGING_BATCH, JUDGING_SAMPLES, MAX_ACCURACY_DROP, MIN_LABEL_AGREEMENT,
                                    check_tolerance, judge_reduced_outputs)
from ptx.contract.names import FULL_PRECISION
from ptx.contract.runs import exported, run_folders
from ptx.contract.transforms import decisions, normalize, run_in_batches, to_layout
from ptx.errors import BackendUnavailableError, MissingArtifactError, NothingToCompareError, PtxError, first_line

from . import backends as registry
from .batch_composition import CompositionCheck, check_batch_composition
from .cases import Case
from .comparator import compare_cases, run_cases
from .api import artifact_path, export_command, open_artifact, open_model, run_folder

DEFAULT_BATCH_SIZES = (1, 7, JUDGING_BATCH)  # the real samples run in batches of the largest
REFERENCE = "eager"

# What verify judges and what its exit status means: `ptx verify --help`, the table's heading and
# the JSON's "rule" all print this, so the three cannot drift apart.
RULE = {
    "f32": "every output within atol + rtol x |eager| of eager's, finite, with the same decisions; a decision "
           "that flips between two outputs closer than that tolerance is a tie (counted, not a failure)",
    "bf16/tf32/int8": f"outputs of the right shape with no NaN/Inf (else FAIL); then labels agree with eager's on >= "
                 f"{100 * MIN_LABEL_AGREEMENT:.0f}% of the real samples and accuracy at most {MAX_ACCURACY_DROP:g} "
                 "below eager's, else NOT USABLE: that precision is not for this model (bench and serve never pick "
                 "it), a FAIL only when you named the row (--backends ort-cpu-int8, openvino-bf16, ort-cuda-tf32)",
    "reference": "CPU rows: eager on the CPU; CUDA rows: eager on the same GPU at f32, TF32 off (ptx.cuda_math), "
                 "or eager on the CPU for ort-cuda where torch has no CUDA; tf32 rows (CUDA's "
                 "TensorFloat-32 math on the f32 file) are judged like bf16 against that f32 reference",
    "FAIL": "an f32 row outside the tolerance; an artifact that does not load, or was exported from another "
            "checkpoint or contract (stale); a reduced-precision row with wrong shapes or NaN/Inf",
    "exit status": "0 when every compared backend passes (ties and NOT USABLE rows noted); 1 when any row FAILs; "
                   "2 when nothing could be compared (no export yet, or no backend runs here) or on a usage error",
}


@dataclass
class BackendVerdict:
    backend: str
    device: str
    batch_sizes: list[int]
    max_abs: float
    max_rel: float
    argmax_agreement: float | None
    accuracy: float | None
    failures: list[str] = field(default_factory=list)
    precision: str = FULL_PRECISION  # f32 rows are judged by atol; bf16/tf32/int8 rows by labels and accuracy
    ties: int = 0  # decisions that flipped on a tie within tolerance: not failures
    # A reduced-precision row that missed its label/accuracy gate: the artifact works, the precision
    # does not suit this model. A failure only when the user named the row (``required``).
    unusable: list[str] = field(default_factory=list)
    required: bool = False
    # A few samples alone against their rows in the largest batch (f32 rows, by the same tolerance):
    # an answer that depends on its batch-mates is a failure of the row.
    composition: CompositionCheck | None = None

    @property
    def status(self) -> str:
        """PASS, FAIL (a real disagreement), or NOT USABLE (a reduced precision below its gate)."""
        if self.failures or (self.unusable and self.required):
            return "FAIL"
        return "NOT USABLE" if self.unusable else "PASS"

    @property
    def ok(self) -> bool:
        """Passed: the backend at this precision may be used (bench and serve choose only these)."""
        return self.status == "PASS"

    @property
    def reasons(self) -> list[str]:
        return self.failures + self.unusable

    def describe(self) -> str:
        if self.status == "PASS":
            return "PASS" + (f" ({self.ties} tie{'s' * (self.ties != 1)} within tolerance)" if self.ties else "")
        detail = "; ".join(self.reasons)
        if self.status == "NOT USABLE":
            return f"NOT USABLE: {detail}: do not use {self.precision} for this model"
        return f"FAIL: {detail}"

    @property
    def label(self) -> str:
        return registry.get(self.backend).label(self.device, self.precision)


@dataclass
class VerifyReport:
    model: str
    samples: int
    data: str
    tolerances: dict[str, dict]
    verdicts: list[BackendVerdict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # Skipped rows whose artifact was checked without running it (ort-cuda's CUDA placement).
    static: dict[str, str] = field(default_factory=dict)
    # Device -> what that device's rows were compared with (the header says it).
    references: dict[str, str] = field(default_factory=dict)
    # Skipped rows on a device this machine cannot run (a CPU machine's dozen CUDA rows): label ->
    # device. The table sums them up in a line per device; CPU rows keep their own lines, which say
    # what to install or export.
    unrunnable: dict[str, str] = field(default_factory=dict)

    @property
    def compared(self) -> bool:
        """Whether anything besides the eager reference ran: eager alone proves nothing."""
        return any(v.backend != REFERENCE for v in self.verdicts)

    @property
    def ok(self) -> bool:
        return self.compared and not any(v.status == "FAIL" for v in self.verdicts)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1 if self.compared else 2

    def to_dict(self) -> dict:
        """JSON-safe: a backend that did not run has no max abs/rel (null, never Infinity)."""
        def finite(doc: dict) -> dict:
            return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in doc.items()}

        return {**{k: v for k, v in asdict(self).items() if k != "verdicts"}, "ok": self.ok,
                "exit_status": self.exit_status, "rule": RULE,
                "verdicts": [finite({**asdict(v), "label": v.label, "status": v.status, "ok": v.ok,
                                     "composition": v.composition.to_dict() if v.composition else None})
                             for v in self.verdicts]}

    def summary(self) -> str:
        """The table's last line: the outcome, with what passed only on a tie or is not usable."""
        if not self.ok:
            failed = [v.label for v in self.verdicts if v.status == "FAIL"]
            return f"backends DISAGREE: {', '.join(failed)} failed"
        notes = []
        ties = sum(v.ties for v in self.verdicts)
        if ties:
            notes.append(f"{ties} tie{'s' * (ties != 1)} within tolerance")
        unusable = [v.label for v in self.verdicts if v.status == "NOT USABLE"]
        if unusable:
            notes.append(f"not usable at their precision: {', '.join(unusable)}")
        return "all backends agree" + (f" ({'; '.join(notes)})" if notes else "")

    def table(self, all_rows: bool = False) -> str:
        """The report as `ptx verify` prints it (infer/verify_table.py); ``all_rows`` lists every row
        this machine cannot run instead of one line per device."""
        from .verify_table import table

        return table(self, all_rows)


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
    """`ptx verify` of any model: a model file against its reference (infer/verify_reference.py:
    options ``backends``, ``options``, ``plan``, ``input_files``, ``against``...), a tutorial model's
    name against eager, judged by its head (``verify_run``'s options)."""
    if Path(str(target)).is_file():
        from .verify_reference import verify_reference

        return verify_reference(target, **options)
    return verify_run(str(target), **options)


def verify_run(name: str, *, backends: list[str] | None = None, samples: int = JUDGING_SAMPLES, batch_sizes=DEFAULT_BATCH_SIZES,
           atol: float | None = None, rtol: float | None = None, root: str | Path = DEFAULT_RUNS_ROOT,
           save_inputs: str | Path | None = None, notice: Callable[[str], None] = print,
           run: str | Path | None = None) -> VerifyReport:
    """Run ``name``'s artifacts (in ROOT/NAME, or the run folder ``run``) through the chosen backends
    (default: all) and compare each with eager.

    A backend this machine cannot run is skipped with its reason; an artifact that exists but fails
    to load is a failure, never a skip."""
    from ptx.trainers.data import judging_samples

    pairs = registry.variants(backends)
    named = set(backends or ())
    reference = open_model(name, REFERENCE, root, run=run)
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
    report = VerifyReport(name, len(real), data_name, {d: t.to_dict() for d, t in tolerance_of.items()},
                          references={d: reference_name(d) for d in tolerance_of})
    chunk = max(batch_sizes)
    sizes = sorted(int(k.split("-")[1]) for k in inputs if k.startswith("batch-"))
    cases = [Case(key, {contract.input.name: x}, None) for key, x in inputs.items()]  # "real" first
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
        try:
            if ref_device not in references:  # eager on that device, loaded and run once
                device_ref = reference if ref_device == "cpu" else open_artifact(reference.path, REFERENCE, ref_device)
                references[ref_device] = run_cases(_run_of(device_ref, chunk), cases)
            predictor = (reference if backend.name == REFERENCE and precision == FULL_PRECISION else
                         open_model(name, backend.name, root, device, precision, run))
        except (MissingArtifactError, BackendUnavailableError) as exc:  # not exported, or this CPU cannot
            report.skipped[label] = str(exc)
            if isinstance(exc, BackendUnavailableError) and device != "cpu":
                report.unrunnable[label] = device
            continue
        except Exception as exc:  # noqa: BLE001 - the artifact is there but does not load: a failure
            # A runtime's own exception (torchscript-cuda's "Expected all tensors to be on the same
            # device") is that row's FAIL, in one line; the other rows and models still run.
            reason = str(exc) if isinstance(exc, PtxError) else f"{type(exc).__name__}: {first_line(exc)}"
            report.verdicts.append(_failed(backend.name, device, sizes, reason, precision))
            continue
        want, error = references[ref_device]
        got, error = (want, error) if predictor is reference else run_cases(_run_of(predictor, chunk), cases)
        error = error or references[ref_device][1]
        if error:
            report.verdicts.append(_failed(backend.name, device, sizes, error, precision))
            continue
        failures: list[str] = []
        if predictor.info.get("checkpoint_sha256") != reference.info.get("checkpoint_sha256"):
            failures.append(f"artifact was exported from another checkpoint: re-run `ptx export {name}`")
        if predictor.contract != contract:
            failures.append(f"its contract differs from the checkpoint's: re-run `ptx export {name}`")
        _, (total,) = compare_cases(got, want, cases, [output], lambda _, g, w: compare(g, w, contract,
                                                                                      tolerance=tolerance_of[device]))
        agreement = accuracy = None
        labels = decisions(got[0][output], contract)  # case 0: the real samples
        if labels is not None:
            agreement = float((labels == decisions(want[0][output], contract)).mean())
            accuracy = float((labels == truth.reshape(labels.shape)).mean())
        unusable: list[str] = []
        composition = None
        if precision == FULL_PRECISION:
            failures += total.failures
            composition = _composition(predictor, chunk, cases, got, contract, tolerance_of[device])
            if not composition.ok:
                failures.append(f"batch composition: {composition.summary()}")
        else:
            # Reduced precision cannot meet the f32 atol: shapes and finiteness still hold, and then
            # the labels users see decide (judge_reduced_precision), on the real test samples.
            failures += [f for f in total.failures if "shape" in f or "NaN" in f]
            unusable = judge_reduced_outputs(got[0][output], want[0][output], truth, contract).unusable
        report.verdicts.append(BackendVerdict(
            backend.name, device, sizes, total.max_abs, total.max_rel, agreement, accuracy, failures, precision,
            ties=total.ties if precision == FULL_PRECISION else 0, unusable=unusable,
            required=precision != FULL_PRECISION and label in named, composition=composition))
    if not report.compared:
        raise NothingToCompareError(_nothing_compared(name, report, run_folder(name, root, run), run))
    return report


def _composition(model, chunk: int, cases: list[Case], got, contract, tolerance: Tolerance) -> CompositionCheck:
    """A few samples of the largest batch case run alone against their rows in it (``got``: the
    row's outputs per case, already run)."""
    batches = [i for i, c in enumerate(cases) if c.label.startswith("batch-")]
    index = max(batches, key=lambda i: len(cases[i].feeds[contract.input.name]))
    return check_batch_composition(_run_of(model, chunk), contract.signature, cases[index].feeds, got[index],
                                   lambda _: tolerance)


def _run_of(model, chunk: int):
    """A tutorial model's run over a case: its one input in batches of ``chunk``, through its head."""
    contract = model.contract
    return lambda feeds: {contract.output.name: run_in_batches(model.predict_array, feeds[contract.input.name],
                                                                contract.input.batch_axis, chunk)}


def _failed(backend: str, device: str, sizes: list[int], reason: str, precision: str) -> BackendVerdict:
    return BackendVerdict(backend, device, sizes, float("inf"), float("inf"), None, None, [reason], precision)


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


def _nothing_compared(name: str, report: VerifyReport, run_dir: Path, run: str | Path | None) -> str:
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
