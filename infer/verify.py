"""ptx verify: the same inputs through every backend, each compared with eager on its own device
(Polygraphy's reference runner) under the contract's one agreement rule (ptx.contract.compare)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.contract import ARTIFACT_FILES, CHECKPOINT_FORMAT, DEFAULT_RUNS_ROOT, Task, Tolerance, compare
from ptx.contract.agreement import (MAX_ACCURACY_DROP, MIN_LABEL_AGREEMENT, Agreement, check_tolerance,
                                    judge_reduced_precision)
from ptx.contract.names import FULL_PRECISION
from ptx.contract.transforms import decisions, normalize, to_layout
from ptx.errors import BackendUnavailableError, MissingArtifactError, PtxError

from . import backends as registry
from .api import open_artifact, open_model

DEFAULT_BATCH_SIZES = (1, 7, 64)
REFERENCE = "eager"


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
    precision: str = FULL_PRECISION  # f32 rows are judged by atol; bf16/int8 rows by labels and accuracy

    @property
    def ok(self) -> bool:
        return not self.failures

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

    @property
    def ok(self) -> bool:
        return bool(self.verdicts) and all(v.ok for v in self.verdicts)

    def to_dict(self) -> dict:
        """JSON-safe: a backend that did not run has no max abs/rel (null, never Infinity)."""
        def finite(doc: dict) -> dict:
            return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in doc.items()}

        return {**{k: v for k, v in asdict(self).items() if k != "verdicts"}, "ok": self.ok,
                "verdicts": [finite({**asdict(v), "ok": v.ok}) for v in self.verdicts]}

    def table(self) -> str:
        rule = "; ".join(f"{d}: atol {t['atol']:g}, rtol {t['rtol']:g}" for d, t in self.tolerances.items())
        head = (f"{'backend':<18} {'precision':<9} {'batch sizes':<14} {'max abs':>9} {'max rel':>9} {'argmax':>8} "
                f"{'accuracy':>9}  verdict")
        rows = [f"ptx verify {self.model}: {self.samples} real samples from {self.data} + edge inputs; "
                f"f32: |diff| <= atol + rtol x |eager| ({rule}); bf16/int8: labels agree with eager on >= "
                f"{100 * MIN_LABEL_AGREEMENT:.0f}% and accuracy at most {MAX_ACCURACY_DROP:g} below eager's",
                head, "-" * len(head)]
        for v in self.verdicts:
            agree = "-" if v.argmax_agreement is None else f"{100 * v.argmax_agreement:.1f}%"
            acc = "-" if v.accuracy is None else f"{v.accuracy:.4f}"
            sizes = ",".join(map(str, v.batch_sizes))
            verdict = "PASS" if v.ok else "FAIL: " + "; ".join(v.failures)
            rows.append(f"{v.backend + ' (' + v.device + ')':<18} {v.precision:<9} {sizes:<14} {v.max_abs:>9.2e} "
                        f"{v.max_rel:>9.2e} {agree:>8} {acc:>9}  {verdict}")
        for backend, why in self.skipped.items():
            rows.append(f"{backend:<18} skipped: {why}")
        rows.append("all backends agree" if self.ok else "backends DISAGREE")
        return "\n".join(rows)


def build_inputs(contract, real: np.ndarray, batch_sizes) -> dict[str, np.ndarray]:
    """Named input batches in model layout: the real samples, then edge cases."""
    x = normalize(real, contract)
    largest = max(batch_sizes)
    cycled = np.concatenate([x] * (-(-largest // len(x))))[:largest]
    inputs = {"real": x}
    if contract.encoding is None:  # all-zero and all-one tensors; token ids have no such edge
        inputs.update(zeros=np.zeros_like(x[:2]), ones=np.ones_like(x[:2]))
    for b in sorted(set(batch_sizes) | {1, 7}):
        inputs[f"batch-{b}"] = cycled[:b]
    return {name: to_layout(batch, contract) for name, batch in inputs.items()}


def _run(predictor, batch: np.ndarray, axis: int, chunk: int) -> np.ndarray:
    n = batch.shape[axis]
    return np.concatenate([predictor.predict_array(np.take(batch, range(s, min(s + chunk, n)), axis=axis))
                           for s in range(0, n, chunk)])


def verify(name: str, *, backends: list[str] | None = None, samples: int = 1000, batch_sizes=DEFAULT_BATCH_SIZES,
           atol: float | None = None, rtol: float | None = None, root: str | Path = DEFAULT_RUNS_ROOT,
           save_inputs: str | Path | None = None, notice: Callable[[str], None] = print) -> VerifyReport:
    """Run ``name``'s artifacts through the chosen backends (default: all) and compare each with eager.

    A backend this machine cannot run is skipped with its reason; an artifact that exists but fails
    to load is a failure, never a skip."""
    from ptx.trainers.data import load_dataset

    pairs = registry.variants(backends)
    reference = open_model(name, REFERENCE, root)
    contract = reference.contract
    overrides = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    tolerance_of = {d: check_tolerance(Tolerance(**{**contract.tolerance(d).to_dict(), **overrides}))
                    for d in dict.fromkeys(d for _, d, _ in pairs)}
    dataset = reference.info.get("dataset") or name
    data = load_dataset(dataset, labels=contract.labels, picture=contract.picture, explicit=False, notice=notice)
    # A fixed-seed draw across the whole test split: some test sets are stored class by class
    # (words: 1,000 English first), and the first N would then be one class.
    pick = np.sort(np.random.default_rng(0).permutation(len(data.y_test))[:samples])
    real, truth = data.x_test[pick], data.y_test[pick]
    inputs = build_inputs(contract, real, batch_sizes)
    if save_inputs:
        from ptx.atomic import atomic_path

        with atomic_path(save_inputs) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, labels=truth, **inputs)
    report = VerifyReport(name, len(real), data.name, {d: t.to_dict() for d, t in tolerance_of.items()})
    chunk = max(batch_sizes)
    axis = contract.input.batch_axis
    sizes = sorted(int(k.split("-")[1]) for k in inputs if k.startswith("batch-"))
    references: dict[str, dict[str, np.ndarray]] = {}

    reduced_ok = contract.task is not Task.REGRESSION  # reduced precision is judged by labels
    for backend, device, precision in pairs:
        label = backend.label(device, precision)
        why = backend.unavailable(device)
        ref_device = reference_device(backend, device)
        if why or ref_device is None:
            ref_why = registry.get(REFERENCE).unavailable(device)
            report.skipped[label] = why or f"no {REFERENCE} reference on {device}: {ref_why}"
            continue
        if precision != FULL_PRECISION and not reduced_ok:
            report.skipped[label] = (f"{precision} is judged by labels and accuracy; {name} is a regression with "
                                     "neither: use f32")
            continue
        failures: list[str] = []
        try:
            if ref_device not in references:  # eager on that device, loaded and run once
                device_ref = reference if ref_device == "cpu" else open_artifact(reference.path, REFERENCE, ref_device)
                references[ref_device] = {k: _run(device_ref, v, axis, chunk) for k, v in inputs.items()}
            if backend.name == REFERENCE:
                predictor, outputs = reference, references[ref_device]
            else:
                predictor = open_model(name, backend.name, root, device, precision)
                outputs = {k: _run(predictor, v, axis, chunk) for k, v in inputs.items()}
        except (MissingArtifactError, BackendUnavailableError) as exc:  # not exported, or this CPU cannot
            report.skipped[label] = str(exc)
            continue
        except PtxError as exc:  # the artifact is there but does not load or run: that is a failure
            report.verdicts.append(BackendVerdict(backend.name, device, sizes, float("inf"), float("inf"), None, None,
                                                  [str(exc)], precision))
            continue
        if predictor.info.get("checkpoint_sha256") != reference.info.get("checkpoint_sha256"):
            failures.append(f"artifact was exported from another checkpoint: re-run `ptx export {name}`")
        if predictor.contract != contract:
            failures.append(f"its contract differs from the checkpoint's: re-run `ptx export {name}`")
        total = Agreement()
        for key, out in outputs.items():
            total.merge(compare(out, references[ref_device][key], contract, tolerance=tolerance_of[device]), f"{key}: ")
        agreement = accuracy = None
        labels = decisions(outputs["real"], contract)
        if labels is not None:
            agreement = float((labels == decisions(references[ref_device]["real"], contract)).mean())
            accuracy = float((labels == truth.reshape(labels.shape)).mean())
        if precision == FULL_PRECISION:
            failures += total.failures
        else:
            # Reduced precision cannot meet the f32 atol: shapes and finiteness still hold, and then
            # the labels users see decide (judge_reduced_precision), on the real test samples.
            failures += [f for f in total.failures if "shape" in f or "NaN" in f]
            eager_labels = decisions(references[ref_device]["real"], contract)
            eager_accuracy = float((eager_labels == truth.reshape(eager_labels.shape)).mean())
            failures += judge_reduced_precision(agreement, accuracy, eager_accuracy)
        report.verdicts.append(BackendVerdict(backend.name, device, sizes, total.max_abs, total.max_rel, agreement,
                                              accuracy, failures, precision))
    if not report.verdicts:
        raise PtxError(f"no backend could run {name}: " + "; ".join(f"{b}: {w}" for b, w in report.skipped.items()))
    return report


def reference_device(backend, device: str) -> str | None:
    """Where eager runs as ``backend``-on-``device``'s reference: on the same device when torch can
    run there; else a torch-free backend (ort-cuda next to a CPU-only torch, as scripts/setup.sh
    installs it) is held to that device's tolerance against eager on the CPU; else nowhere."""
    if not registry.get(REFERENCE).unavailable(device):
        return device
    return "cpu" if not backend.needs_torch and not registry.get(REFERENCE).unavailable("cpu") else None


def models_with_artifacts(root: str | Path = DEFAULT_RUNS_ROOT) -> list[str]:
    """Run folders under ``root`` that hold a checkpoint and at least one exported artifact."""
    root = Path(root)
    if not root.is_dir():
        return []
    exported = [f for fmt, f in ARTIFACT_FILES.items() if fmt != CHECKPOINT_FORMAT]
    return sorted(d.name for d in root.iterdir() if d.is_dir() and (d / ARTIFACT_FILES[CHECKPOINT_FORMAT]).is_file()
                  and any((d / f).is_file() for f in exported))
