"""What kind of difference a served model's answers show, where the evidence supports one: the four
that users of deployed models report (a preprocessing drift, a reduced precision, a batch-mate
dependence, replicas of different versions), each named only when a measurement shows it.

- identical requests that answer differently (sent again a few times): replicas of another version
  behind one address (or a model that is not deterministic);
- the same sample alone and inside a batch differing (verify's batch-composition check);
- every answer a bf16 (or fp16) value where the reference's are not: the server computes or returns
  at that precision;
- the server's answers are the reference's on inputs ``a*x + b`` (a and b fitted by a small search on
  the reference, which runs here): a constant scale or offset of an input, a preprocessing drift;
- the answers are the reference's times c plus d: a constant scale of an output;
- errors of the size a reduced precision's rounding makes (the weakest evidence, said as such).
numpy only.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

REPEATS = 4  # an identical request sent again this many times
FIT_SAMPLES = 8  # the samples an input fit runs the reference on
FIT_EVALUATIONS = 160  # runs of the reference one input's fit may take
SCALES = tuple(s * 2.0 ** k for k in range(-8, 9) for s in (1, -1))  # the fit's starting scales
BF16_EPS, FP16_EPS = 2.0 ** -8, 2.0 ** -11

Outputs = Mapping[str, np.ndarray]


def name_difference(run_served: Callable[[dict], Outputs], run_reference: Callable[[dict], Outputs],
                    feeds: Mapping[str, np.ndarray], got: Outputs, want: Outputs,
                    agrees: Callable[[str, np.ndarray, np.ndarray], bool], axes: Mapping[str, int | None],
                    composition=None) -> list[str]:
    """The kinds of difference between ``got`` (the server's answers to ``feeds``) and ``want`` (the
    reference's) that a measurement supports, strongest first; [] where none does. ``agrees(name,
    got, want)`` is the row's tolerance; ``axes`` each tensor's batch axis (the input fit runs on a
    few samples of the batch)."""
    names = [n for n in want if n in got]
    varies = _repeats(run_served, feeds, got, want, agrees, names)
    if varies:
        return [varies]  # which answer is "the server's" is not one thing: nothing else can be fitted
    found = []
    if composition is not None and composition.checked and not composition.ok:
        found.append(f"a batch-composition dependence: the same sample alone and inside a batch of "
                     f"{composition.batch} answer differently ({composition.summary()})")
    exact = _reduced_values(got, want, names)
    if exact:
        found.append(exact)
    fitted = _input_fit(run_reference, feeds, got, agrees, names, axes)
    if fitted:
        found.append(fitted)
    elif not found:
        found += [k for k in (_output_fit(got, want, agrees, names), _rounding_sized(got, want, names)) if k][:1]
    return found


def _repeats(run, feeds, got, want, agrees, names) -> str | None:
    answers = [got] + [run(dict(feeds)) for _ in range(REPEATS)]
    same = [all(agrees(n, a[n], got[n]) for n in names) for a in answers]
    if all(same):
        return None
    right = sum(all(agrees(n, a[n], want[n]) for n in names) for a in answers)
    return (f"answers that differ for some requests: of {len(answers)} identical requests, {same.count(False)} were "
            f"answered otherwise than the first, and {right} as the reference answers: replicas serving different "
            "versions behind one address (or a model that is not deterministic)")


def _reduced_values(got, want, names) -> str | None:
    """Every float the server answered is a bf16 (fp16) value, where the reference's are not."""
    floats = [n for n in names if np.asarray(got[n]).dtype.kind == "f" and np.asarray(got[n]).size]
    if not floats:
        return None
    for label, fits in (("bf16", _is_bf16), ("fp16", _is_fp16)):
        if all(fits(got[n]) for n in floats) and not all(fits(want[n]) for n in floats):
            count = sum(np.asarray(got[n]).size for n in floats)
            return (f"a reduced precision: all {count:,} values the server answered are {label} values (the "
                    f"reference's are not): it computes or answers at {label}")
    return None


def _is_bf16(x) -> bool:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return bool(np.all((x.view(np.uint32) & 0xFFFF) == 0))


def _is_fp16(x) -> bool:
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return bool(np.array_equal(x, x.astype(np.float16).astype(np.float32)))


def _input_fit(run_reference, feeds, got, agrees, names, axes) -> str | None:
    """The reference on ``a * x + b`` for one float input: (a, b) fitted by a pattern search; named
    where the fitted answers agree with the server's within the row's tolerance and (a, b) is not
    (1, 0)."""
    floats = [n for n, x in feeds.items() if np.asarray(x).dtype.kind == "f"]
    feeds, got = _few(feeds, axes), _few(got, axes)
    if len(floats) > 3:  # a fit per input: a few inputs only
        return None
    for name in floats:
        x = np.asarray(feeds[name])

        def cost(a: float, b: float) -> float:
            try:
                out = run_reference({**feeds, name: (a * x + b).astype(x.dtype)})
                return sum(float(np.linalg.norm(np.asarray(out[n], np.float64) - np.asarray(got[n], np.float64)))
                           for n in names)
            except Exception:  # noqa: BLE001 - inputs the reference refuses (or answers otherwise shaped) fit nothing
                return math.inf

        a, b = _search(cost)
        if abs(a - 1) < 1e-4 and abs(b) < 1e-4:
            continue
        out = run_reference({**feeds, name: (a * x + b).astype(x.dtype)})
        if all(agrees(n, np.asarray(got[n]), np.asarray(out[n])) for n in names):
            return (f"a constant scale or offset of input {name!r} (a preprocessing drift): the server answers "
                    f"as the reference does on {a:.4g} * {name} {'+' if b >= 0 else '-'} {abs(b):.4g}")
    return None


def _search(cost: Callable[[float, float], float]) -> tuple[float, float]:
    """(a, b) minimising ``cost``: the best start of a grid of scales (b = 0), then a pattern search
    that halves its steps, within FIT_EVALUATIONS."""
    scored = sorted((cost(s, 0.0), s) for s in SCALES)
    evaluations = len(SCALES)
    best, (a, b) = scored[0][0], (scored[0][1], 0.0)
    steps = [abs(a) / 2, 0.5]
    while evaluations < FIT_EVALUATIONS and max(steps) > 1e-7 and best > 0:
        moved = False
        for k in (0, 1):
            for sign in (1, -1):
                trial = (a + sign * steps[0], b) if k == 0 else (a, b + sign * steps[1])
                value = cost(*trial)
                evaluations += 1
                if value < best:
                    best, (a, b), moved = value, trial, True
                    break
        if not moved:
            steps = [s / 2 for s in steps]
    return a, b


def _few(tensors: Mapping[str, np.ndarray], axes: Mapping[str, int | None]) -> dict:
    """The first FIT_SAMPLES samples of each tensor along its batch axis (whole where it has none)."""
    out = {}
    for name, x in tensors.items():
        axis = axes.get(name)
        x = np.asarray(x)
        out[name] = np.take(x, range(min(FIT_SAMPLES, x.shape[axis])), axis=axis) if axis is not None and x.ndim else x
    return out


def _output_fit(got, want, agrees, names) -> str | None:
    """The server's answers are the reference's times c plus d, one (c, d) per output."""
    fits = []
    for n in names:
        g, w = np.asarray(got[n], np.float64).ravel(), np.asarray(want[n], np.float64).ravel()
        if g.size < 3 or np.ptp(w) == 0:
            return None
        c, d = np.polyfit(w, g, 1)
        if not agrees(n, np.asarray(got[n]), (c * np.asarray(want[n], np.float64) + d).astype(np.asarray(got[n]).dtype)):
            return None
        fits.append(f"{c:.4g} * {n} {'+' if d >= 0 else '-'} {abs(d):.4g}")
    return f"a constant scale or offset of the output: the server answers the reference's {'; '.join(fits)}"


def _rounding_sized(got, want, names: Sequence[str]) -> str | None:
    """Relative errors of the size bf16's or fp16's rounding makes (the weakest evidence: said so)."""
    errors = []
    for n in names:
        g, w = np.asarray(got[n], np.float64), np.asarray(want[n], np.float64)
        big = np.abs(w) > 1e-2 * max(float(np.abs(w).max(initial=0)), 1e-30)
        if big.any():
            errors.append(np.abs(g - w)[big] / np.abs(w)[big])
    if not errors:
        return None
    median = float(np.median(np.concatenate(errors)))
    if median == 0:
        return None
    k = math.log2(median)
    for label, eps in (("bf16", BF16_EPS), ("fp16", FP16_EPS)):
        if math.log2(eps) - 5 <= k <= math.log2(eps) + 1:
            return (f"errors of a reduced precision's size (median relative error {median:.2g}, where {label}'s "
                    f"rounding is {eps / 2:.2g}): the server may compute at {label} (no other kind fits)")
    return None
