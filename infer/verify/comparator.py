"""The verify engine, Polygraphy's Comparator.run(runners, data_loader) in ptx's terms: every model is
run on the same cases (infer/verify/cases.py), and each output is compared with a reference's by the one
comparison (ptx.contract.comparison). ``ptx verify`` of a tutorial model (its head judges decisions, labels
and accuracy) and of a model file both run here (infer/verify/verify.py).
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.cases import Case, run_cases
from ptx.contract.comparison import Judge, OutputAgreement, check_tolerance, compare_outputs, default_tolerance
from ptx.contract.schema import Tolerance
from ptx.errors import PtxError

# The names torch gives the outputs of a module it cannot name (torch_runner.flatten_outputs).
PROBE_NAMES = ("output",)
Outputs = dict[str, np.ndarray]


@dataclass
class Tolerances:
    """--atol/--rtol: overall, or per output (``--atol scores=1e-3``); otherwise a head's contract
    tolerance for the device where the model has one, else per output dtype and device."""

    atol: float | None = None
    rtol: float | None = None
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)
    contract: object = None  # a head's Contract: its tolerance per device is the base

    @classmethod
    def parse(cls, atol: Sequence[tuple[str | None, float]] = (), rtol: Sequence[tuple[str | None, float]] = (),
              outputs: Sequence[str] = (), contract=None) -> "Tolerances":
        tolerances = cls(contract=contract)
        for option, given in (("atol", atol), ("rtol", rtol)):
            for name, value in given:
                check_tolerance(Tolerance(**{"atol": 0.0, "rtol": 0.0, option: value}))
                if name is None:
                    if getattr(tolerances, option) is not None:
                        raise PtxError(f"--{option} is given twice for every output; give it once (or NAME=VALUE "
                                       "for one output)")
                    setattr(tolerances, option, value)
                    continue
                if name not in outputs:
                    raise PtxError(f"--{option} {name}=...: the model has no output {name!r}; its outputs are "
                                   f"{', '.join(outputs)}")
                if option in tolerances.per_output.get(name, {}):
                    raise PtxError(f"--{option} {name}=... is given twice")
                tolerances.per_output.setdefault(name, {})[option] = value
        return tolerances

    @staticmethod
    def options(atol: Sequence[tuple[str | None, float]] = (), rtol: Sequence[tuple[str | None, float]] = ()
                ) -> list[str]:
        """The command-line arguments that give these (output name or None, value) pairs back, as
        parse reads them: what a printed command (a --locate offer, a repro's README) repeats."""
        return [arg for option, given in (("atol", atol), ("rtol", rtol)) for name, value in given
                for arg in (f"--{option}", f"{name + '=' if name else ''}{value:g}")]

    def of(self, name: str, dtype: str, device: str) -> Tolerance:
        base = self.contract.tolerance(device.partition(":")[0]) if self.contract is not None else \
            default_tolerance(dtype, device)
        own = self.per_output.get(name, {})
        return Tolerance(own.get("atol", base.atol if self.atol is None else self.atol),
                         own.get("rtol", base.rtol if self.rtol is None else self.rtol))


def run_until_failure(run: Callable[[Mapping[str, np.ndarray]], Outputs], cases: Sequence[Case],
              shared: Sequence[int] | None = None) -> tuple[dict[int, Outputs], str | None]:
    """``run`` (a model's run) on the cases (those at the indices ``shared``; all by default) by ptx's
    one run loop (ptx.contract.cases.run_cases), until one fails: (outputs by case index, the failure
    that stopped it). A model that runs one batch size and fails at another is told so: the batch was
    specialised."""
    indices = range(len(cases)) if shared is None else list(shared)
    results: dict[int, Outputs] = {}
    for i, (case, answers, why) in zip(indices, run_cases(run, [cases[i] for i in indices])):
        if why is None:
            results[i] = answers
            continue
        passed = cases[next(reversed(results))] if results else None
        if passed is not None and case.batch is not None and passed.batch not in (None, case.batch):
            why = f"runs at {passed.label} but fails at {case.label}: {why} (the exporter specialised the batch?)"
        return results, why
    return results, None


def output_dtype(signature, name: str) -> str:
    """An output's dtype as its tolerance is chosen by: a head's output the signature does not list
    is judged as float32."""
    try:
        return signature.output(name).dtype
    except Exception:  # noqa: BLE001 - a head's output the signature does not list
        return "float32"


def compare_cases(got: Mapping[int, Outputs], want: Mapping[int, Outputs], cases: Sequence[Case], signature,
                  tolerance: Callable[[str], Tolerance], judge: Judge | None = None
                  ) -> tuple[list[str], list[OutputAgreement], int | None]:
    """(the labels of the cases both sides ran, each output compared over them by the one loop over outputs
    (``compare_outputs``: a model's detections as detections, ``judge`` a head's comparison), the index of the
    case that departs most: what `--locate` traces)."""
    shared = [i for i in want if i in got]
    runs = {i: compare_outputs(got[i], want[i], signature, tolerance, judge=judge) for i in shared}
    compared, worst = [], {}
    for name in runs[shared[0]] if shared else ():
        parts = [runs[i][name] for i in shared]
        for i, part in zip(shared, parts):
            worst[i] = max(worst.get(i, -1.0), math.inf if part.problem else part.needed_atol + part.beyond)
        compared.append(functools.reduce(OutputAgreement.merge, parts))
    return [cases[i].label for i in shared], compared, max(worst, key=worst.get) if worst else None


def match_outputs(ours: Sequence[str], theirs: Sequence[str], what: str, notes: list[str]) -> dict[str, str]:
    """{our output name: theirs}: by name where both sides name them alike; by position where one side
    has only the names torch gives unnamed outputs (said in ``notes``)."""
    if set(ours) == set(theirs):
        return {n: n for n in ours}
    probe_named = lambda names: all(n in PROBE_NAMES or n.startswith("output_") for n in names)  # noqa: E731
    if len(ours) == len(theirs) and (probe_named(ours) or probe_named(theirs)):
        pairs = ", ".join(f"{t} -> {o}" for o, t in zip(ours, theirs))
        notes.append(f"note: {what}'s outputs matched by position ({pairs}): torch does not name a TorchScript or "
                     "pt2 file's outputs")
        return dict(zip(ours, theirs))
    raise PtxError(f"{what} gives outputs {', '.join(theirs)}; the model verified gives {', '.join(ours)}: they are "
                   "not outputs of one model")


# The runtimes' own framing around the reason a backend gives: where in its sources it failed.
_RUNTIME_FRAMING = [re.compile(p) for p in (
    r"Exception from \S+:\d+:\s*", r"Check '[^']*' failed at \S+:\d+:\s*", r"\[ONNXRuntimeError\] : \d+ : \w+ :\s*",
    r"/onnxruntime_src/\S+:\d+ [^ ]+\([^)]*\)\s*", r"FrontEnd API failed with \w+:\s*")]
SHORT_REASON = 160


def short_reason(error: str | None, path: Path | None = None, limit: int = SHORT_REASON) -> str:
    """A backend's failure in one readable line: without the file's path (the table is about it),
    without where in the runtime's sources it was raised, cut to ``limit`` characters."""
    text = " ".join(str(error or "").split())
    if path is not None:
        text = text.replace(f"{path}: ", "").replace(f"{path.name}: ", "")
    for pattern in _RUNTIME_FRAMING:
        text = pattern.sub("", text)
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."
