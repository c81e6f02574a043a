"""Comparing one named output of two runs (torch-free): the verdict ``ptx verify`` gives a model of
any kind, the way the best checkers report it (Polygraphy's per-output atol/rtol and "minimum
required tolerance", torch.onnx's log-binned error histogram).

A value agrees when |got - want| <= atol + rtol * |want| (numpy's allclose rule, the one rule the
tutorial models are judged by too); NaN agrees with NaN and an infinity with the same infinity,
at the same place. Integers and booleans agree only when equal. The default tolerance follows
the dtype: float16 is judged as float16, not as float32.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .schema import Tolerance

# Per dtype and device kind. float32 on the CPU is the tutorial models' band (runtimes reorder sums);
# CUDA kernels round differently again. float16 keeps 11 bits: its band is about 10 units in the last place.
DEFAULT_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "cpu"): Tolerance(1e-4, 1e-3),
    ("float32", "cuda"): Tolerance(1e-3, 1e-2),
    ("float64", "cpu"): Tolerance(1e-7, 1e-6),
    ("float64", "cuda"): Tolerance(1e-6, 1e-5),
    ("float16", "cpu"): Tolerance(1e-2, 1e-2),
    ("float16", "cuda"): Tolerance(2e-2, 2e-2),
}
EXACT = Tolerance(0.0, 0.0)
# |got - want| histogram: one bin per decade, as torch.onnx's verification report bins them.
HISTOGRAM_EDGES = (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, math.inf)
MAX_CLASSES = 100_000  # an output's last axis up to this size may be class scores
# Outputs whose names say they are no class scores, whatever their shape: hidden states, recurrent
# states, embeddings, pooled features (a [batch, hidden] pooler_output or h_n is 2-D like logits).
NOT_SCORES = re.compile(r"hidden|state|embed|pool|feature|encod|^[hc](_?n|_?t|\d*)$|^(h|c|hx|cx)_|_(h|c|hx|cx)$",
                        re.IGNORECASE)


def default_tolerance(dtype: str, device: str = "cpu") -> Tolerance:
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return DEFAULT_TOLERANCES.get((dtype, kind), EXACT if not dtype.startswith("float") else
                                  DEFAULT_TOLERANCES[("float32", kind)])


@dataclass
class OutputAgreement:
    """How one output of one run compares with the reference's."""

    name: str
    tolerance: Tolerance
    compared: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0  # over the values whose reference is not 0 (elsewhere a relative error is infinite)
    beyond: int = 0  # values outside the tolerance
    needed_atol: float = 0.0  # the smallest atol that would have passed, at this rtol (0: rtol alone passes)
    histogram: list[int] = field(default_factory=list)
    argmax_compared: int = 0  # rows of class scores compared by their argmax (0: not class-like)
    argmax_same: int = 0
    problem: str | None = None  # a shape, dtype or NaN mismatch: no value comparison is meaningful

    @property
    def ok(self) -> bool:
        return self.problem is None and self.beyond == 0

    def summary(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        text = (f"{self.name}: max abs {self.max_abs:.2e}, max rel {self.max_rel:.2e}"
                + ("" if self.ok else f", {self.beyond:,} of {self.compared:,} values beyond atol "
                   f"{self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x |ref| (passes with atol "
                   f">= {self.needed_atol:.2e})"))
        if self.argmax_compared:
            text += f"; argmax agrees on {self.argmax_same:,} of {self.argmax_compared:,}"
        return text

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "atol": self.tolerance.atol, "rtol": self.tolerance.rtol,
                "compared": self.compared, "max_abs": _json_float(self.max_abs), "max_rel": _json_float(self.max_rel),
                "beyond": self.beyond, "needed_atol": _json_float(self.needed_atol),
                "histogram": {"edges": [_json_float(e) for e in HISTOGRAM_EDGES], "counts": self.histogram},
                "argmax": ({"compared": self.argmax_compared, "same": self.argmax_same}
                           if self.argmax_compared else None),
                "problem": self.problem}


def _json_float(x: float):
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf") if not math.isnan(x) else "nan"


def needed_atol_text(agreement: "OutputAgreement") -> str:
    """The needed atol as a table shows it: "none" where the rtol alone passes every value (a 0
    beside a non-zero max abs reads as a mistake)."""
    return f"{agreement.needed_atol:.2e}" if agreement.needed_atol > 0 else "none"


def compare_output(name: str, got, want, tolerance: Tolerance, batch_axis: int | None = None) -> OutputAgreement:
    """``got`` against the reference ``want`` under ``tolerance``."""
    got, want = np.asarray(got), np.asarray(want)
    result = OutputAgreement(name, tolerance, compared=int(want.size))
    if got.shape != want.shape:
        result.problem = f"shape {list(got.shape)} where the reference's is {list(want.shape)}"
        return result
    if got.dtype.kind in "biu" or want.dtype.kind in "biu" or got.dtype == bool:
        if got.dtype.kind != want.dtype.kind and not (got.dtype.kind in "iu" and want.dtype.kind in "iu"):
            result.problem = f"dtype {got.dtype} where the reference's is {want.dtype}"
            return result
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        result.beyond = int((diff > 0).sum())
        result.max_abs = float(diff.max(initial=0.0))
        result.needed_atol = result.max_abs
        result.histogram = np.histogram(diff, bins=HISTOGRAM_EDGES)[0].tolist() if diff.size else []
        return result
    g, w = got.astype(np.float64), want.astype(np.float64)
    same_special = (np.isnan(g) & np.isnan(w)) | (np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w)))
    finite = np.isfinite(g) & np.isfinite(w)
    mismatched_special = ~finite & ~same_special
    diff = np.where(finite, np.abs(g - w), 0.0)
    scale = np.abs(np.where(finite, w, 0.0))
    beyond = finite & (diff > tolerance.atol + tolerance.rtol * scale)
    result.beyond = int(beyond.sum() + mismatched_special.sum())
    if mismatched_special.any():
        result.problem = (f"{int(mismatched_special.sum()):,} NaN or infinite values where the reference's differ "
                          f"(first at index {np.unravel_index(int(np.argmax(mismatched_special)), w.shape)})")
    if diff.size:
        result.max_abs = float(diff.max())
        # relative to the reference where it is not 0: beside a 0 (a state's padding, a ReLU's zeros)
        # any difference is infinitely relative, and "max rel inf" says nothing max abs does not
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(scale > 0, diff / scale, 0.0)
        result.max_rel = float(rel.max())
        result.needed_atol = float(max(0.0, (diff - tolerance.rtol * scale).max()))
        result.histogram = np.histogram(diff[finite], bins=HISTOGRAM_EDGES)[0].tolist()
    if class_scores(want, batch_axis, name):
        # every row of scores (batch first, any axes between) compared by the class it ranks first
        rows_got = np.moveaxis(g, batch_axis, 0).reshape(-1, g.shape[-1])
        rows_want = np.moveaxis(w, batch_axis, 0).reshape(-1, w.shape[-1])
        same = rows_got.argmax(-1) == rows_want.argmax(-1)
        result.argmax_compared, result.argmax_same = int(same.size), int(same.sum())
    return result


def class_scores(want: np.ndarray, batch_axis: int | None, name: str | None = None) -> bool:
    """An output that looks like class scores: floats with a batch axis and a last axis of 2 or more
    classes (the argmax of each row is then a label worth comparing). Comparing, ``name`` is given
    too, and only a 2-D [batch, classes] output whose name is no state's or hidden state's
    (last_hidden_state, h_n, pooler_output) counts: the argmax of a hidden state is no label."""
    if name is not None and (want.ndim != 2 or NOT_SCORES.search(name)):
        return False
    return (batch_axis is not None and want.dtype.kind == "f" and want.ndim >= 2 and batch_axis != want.ndim - 1
            and 2 <= want.shape[-1] <= MAX_CLASSES)
