"""ptx verify: the same inputs through every backend, each compared with eager on its device.

Polygraphy's rule: an element fails only when it exceeds both atol and rtol; NaN or Inf fails.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.errors import PtxError

from .api import load
from .preprocess import decisions, normalize, to_layout

DEFAULT_BATCH_SIZES = (1, 7, 64)
REL_EPS = 1e-6


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

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class VerifyReport:
    model: str
    samples: int
    data: str
    atol: float
    rtol: float
    verdicts: list[BackendVerdict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "verdicts"}, "ok": self.ok,
                "verdicts": [{**asdict(v), "ok": v.ok} for v in self.verdicts]}

    def table(self) -> str:
        head = f"{'backend':<18} {'batch sizes':<14} {'max abs':>9} {'max rel':>9} {'argmax':>8} {'accuracy':>9}  verdict"
        rows = [f"ptx verify {self.model}: {self.samples} real samples from {self.data} + edge inputs; "
                f"atol {self.atol:g}, rtol {self.rtol:g}", head, "-" * len(head)]
        for v in self.verdicts:
            agree = "-" if v.argmax_agreement is None else f"{100 * v.argmax_agreement:.1f}%"
            acc = "-" if v.accuracy is None else f"{v.accuracy:.4f}"
            sizes = ",".join(map(str, v.batch_sizes))
            verdict = "PASS" if v.ok else "FAIL: " + "; ".join(v.failures)
            rows.append(f"{v.backend + ' (' + v.device + ')':<18} {sizes:<14} {v.max_abs:>9.2e} {v.max_rel:>9.2e} "
                        f"{agree:>8} {acc:>9}  {verdict}")
        for backend, why in self.skipped.items():
            rows.append(f"{backend:<18} skipped: {why}")
        rows.append("all backends agree" if self.ok else "backends DISAGREE")
        return "\n".join(rows)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def candidate_backends() -> list[tuple[str, str]]:
    """(backend, device) pairs to try; the first of each device is that device's eager reference."""
    pairs = [("eager", "cpu"), ("torchscript", "cpu"), ("ort-cpu", "cpu")]
    return pairs + [("eager", "cuda"), ("torchscript", "cuda"), ("ort-cuda", "cuda")]


def build_inputs(meta: dict, real: np.ndarray, batch_sizes) -> dict[str, np.ndarray]:
    """Named input batches in model layout: the real samples, then edge cases."""
    x = normalize(real, meta)
    largest = max(batch_sizes)
    cycled = np.concatenate([x] * (-(-largest // len(x))))[:largest]
    inputs = {"real": x, "zeros": np.zeros_like(x[:2]), "ones": np.ones_like(x[:2])}
    for b in sorted(set(batch_sizes) | {1, 7}):
        inputs[f"batch-{b}"] = cycled[:b]
    return {name: to_layout(batch, meta) for name, batch in inputs.items()}


def _run(predictor, batch: np.ndarray, meta: dict, chunk: int) -> np.ndarray:
    axis = meta["batch_axis"]
    n = batch.shape[axis]
    outs = [predictor.predict_array(np.take(batch, range(s, min(s + chunk, n)), axis=axis)) for s in range(0, n, chunk)]
    return np.concatenate(outs)


def compare(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> tuple[float, float, list[str]]:
    problems = []
    if got.shape != want.shape:
        return float("inf"), float("inf"), [f"shape {got.shape} != {want.shape}"]
    if not np.isfinite(got).all():
        problems.append("NaN/Inf in output")
    abs_diff = np.abs(got.astype(np.float64) - want)
    rel_diff = abs_diff / (np.abs(want) + REL_EPS)
    failing = (abs_diff > atol) & (rel_diff > rtol)
    if failing.any():
        problems.append(f"{int(failing.sum())} values beyond atol and rtol")
    finite = np.isfinite(abs_diff)
    return (float(abs_diff[finite].max(initial=0)), float(rel_diff[finite].max(initial=0)), problems)


def _label(backend: str, device: str) -> str:
    return backend if backend.startswith("ort-") else f"{backend}-{device}"


def select_backends(names: list[str] | None) -> list[tuple[str, str]]:
    """The (backend, device) pairs that ``names`` pick (a backend, or backend-device); all if None."""
    pairs = candidate_backends()
    if not names:
        return pairs
    known = {b for b, _ in pairs} | {_label(b, d) for b, d in pairs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PtxError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [(b, d) for b, d in pairs if b in names or _label(b, d) in names]


def verify(name: str, *, backends: list[str] | None = None, samples: int = 1000, batch_sizes=DEFAULT_BATCH_SIZES,
           atol: float | None = None, rtol: float | None = None, root: str | Path = "runs",
           save_inputs: str | Path | None = None, notice: Callable[[str], None] = print) -> VerifyReport:
    """Run ``name``'s artifacts through ``backends`` (default: all) and compare each with eager."""
    from ptx.trainers.data import load_dataset

    pairs = select_backends(backends)
    cpu_reference = load(name, backend="eager", root=root)
    meta = cpu_reference.meta
    atol = meta["atol"] if atol is None else atol
    rtol = meta["rtol"] if rtol is None else rtol
    data = load_dataset(meta["dataset"], labels=tuple(meta["labels"]), explicit=False, notice=notice)
    real, truth = data.x_test[:samples], data.y_test[:samples]
    inputs = build_inputs(meta, real, batch_sizes)
    if save_inputs:
        np.savez(save_inputs, labels=truth, **inputs)
    report = VerifyReport(name, len(real), data.name, atol, rtol)
    chunk = max(batch_sizes)
    sizes = sorted(int(k.split("-")[1]) for k in inputs if k.startswith("batch-"))

    def run_all(predictor) -> dict[str, np.ndarray]:
        return {k: _run(predictor, v, meta, chunk) for k, v in inputs.items()}

    for device in dict.fromkeys(d for _, d in pairs):
        device_pairs = [p for p in pairs if p[1] == device]
        if device == "cuda" and not _cuda_available():
            report.skipped.update({_label(*p): "no CUDA GPU visible to torch" for p in device_pairs})
            continue
        # Each backend is compared with eager on its own device (Polygraphy's reference runner).
        reference = run_all(cpu_reference if device == "cpu" else load(name, backend="eager", root=root, device=device))
        for backend, _ in device_pairs:
            try:
                predictor = cpu_reference if backend == "eager" else load(name, backend=backend, root=root, device=device)
            except PtxError as exc:  # unavailable backend or missing artifact: reported, not fatal
                report.skipped[_label(backend, device)] = str(exc)
                continue
            outputs = reference if backend == "eager" else run_all(predictor)
            failures = []
            if predictor.meta.get("checkpoint_sha256") != meta["checkpoint_sha256"]:
                failures.append(f"artifact was exported from another checkpoint: re-run `ptx export {name}`")
            max_abs = max_rel = 0.0
            for key, out in outputs.items():
                a, r, problems = compare(out, reference[key], atol, rtol)
                max_abs, max_rel = max(max_abs, a), max(max_rel, r)
                failures += [f"{key}: {p}" for p in problems]
            agreement = accuracy = None
            labels = decisions(outputs["real"], meta)
            if labels is not None:
                agreement = float((labels == decisions(reference["real"], meta)).mean())
                accuracy = float((labels == truth.reshape(labels.shape)).mean())
                if agreement < 1.0:
                    failures.append(f"predicted label differs on {100 * (1 - agreement):.1f}% of real samples")
            report.verdicts.append(BackendVerdict(backend, device, sizes, max_abs, max_rel, agreement, accuracy, failures))
    if not report.verdicts:
        raise PtxError(f"no backend could run {name}: " + "; ".join(f"{b}: {w}" for b, w in report.skipped.items()))
    return report


def models_with_artifacts(root: str | Path = "runs") -> list[str]:
    from ptx.models import list_models

    return [n for n in list_models() if (Path(root) / n / "checkpoint.pt").is_file()
            and ((Path(root) / n / "model.onnx").is_file() or (Path(root) / n / "model.torchscript.pt").is_file())]
