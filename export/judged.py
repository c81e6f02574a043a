"""A reduced-precision file judged on every runtime that reads it, not only the one it was made for:
an int8 file is a Q/DQ graph that ONNX Runtime and OpenVINO both run, and NNCF's file through ONNX
Runtime (or onnxruntime's through OpenVINO) may miss a bound its own runtime holds. Each runtime's
verdict (ptx.contract.verdict) is recorded in the file, so whichever runtime opens it later reads its
own.
"""
from __future__ import annotations

from typing import Callable

from ptx.contract.verdict import NOT_USABLE, Verdict, decide
from ptx.errors import BackendUnavailableError, PtxError
from ptx.machine import describe_cpu

from . import formats


def runtimes_of(fmt) -> list[str]:
    """The backends that read ``fmt``'s files on the CPU: its own serving backend first, then the
    other formats' of the same precision (an int8 file is read by ort-cpu and openvino alike)."""
    others = [f.serving_backend for f in map(formats.get, formats.list_formats())
              if f.precision == fmt.precision and f.name != fmt.name]
    return list(dict.fromkeys([fmt.serving_backend, *others]))


def judge_on_runtimes(fmt, evidence: Callable[[str], list], log: Callable[[str], None]) -> list[Verdict]:
    """One Verdict per runtime that reads ``fmt``'s file here, ``evidence(backend)`` giving its
    (kind, judgement) pairs; the serving runtime's first. A runtime this machine lacks is said and
    skipped; one that cannot run the file is NOT USABLE through it (its own runtime's failure stops
    the export, as any validation failure does)."""
    verdicts = []
    for backend in runtimes_of(fmt):
        label = f"{backend}-{fmt.precision}"
        try:
            verdicts.append(decide(label, evidence(backend), by="export"))
        except BackendUnavailableError as exc:
            if backend == fmt.serving_backend:
                raise
            log(f"{'':<11} {label}: not judged here ({exc})")
        except PtxError as exc:
            if backend == fmt.serving_backend:
                raise
            # judged on what the file's own runtime was judged on, which this runtime could not run
            verdicts.append(Verdict(label, NOT_USABLE, verdicts[0].evidence, "the file does not run through it",
                                    [str(exc)], by="export"))
    return verdicts


def verdict_line(verdict: Verdict, advice: str) -> str:
    """How export says one runtime's verdict: what decided it, and what to do where it is NOT USABLE."""
    why = f": {'; '.join(verdict.reasons)}: {advice}" if verdict.reasons else ""
    return f"{'':<11} {verdict.label} on {describe_cpu()}, {verdict.measured}: {verdict.status}{why}"
