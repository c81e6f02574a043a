"""What ``verify`` is asked to do, one record: the CLI makes it from its options, bench from the rows it
timed, a library caller from keywords (``verify(target, backends=["ort-cpu"], samples=20)``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ptx.contract.accuracy_rule import JUDGING_SAMPLES


@dataclass(frozen=True)
class VerifyOptions:
    """The rows, the cases and the bounds of one verify, each field said beside it."""

    backends: Sequence[str] | None = None  # the rows (default: every one the model has that this machine runs)
    # the rows the user asked for (default ``backends``): one that cannot open FAILs, a reduced one below its
    # gate too; bench runs the rows it timed, which the user may not have named
    named: Sequence[str] | None = None
    samples: int = JUDGING_SAMPLES  # real test samples, for a model with a head and a dataset
    batch_sizes: Sequence[int] | None = None
    input_files: Sequence[str | Path] = ()  # --inputs: the cases, as given
    seed: int | None = None  # generated inputs, seeded
    plan: Mapping | None = None  # plan_inputs' shapes, values, ranges, default_range
    atol: Sequence = ()  # (output name or None, value) pairs
    rtol: Sequence = ()
    reference_file: str | Path | None = None  # reference tensors kept beside a file (default MODEL.reference.npz)
    save: bool = False  # --save-reference: write them
    strict: bool = False  # a row that cannot run, and onnx.reference departing alone, fail the verdict
    save_inputs: str | Path | None = None
    triaged: bool = False  # --locate: the offers say the triage is done here
    # --metric (export/bound.py's load_metric, metric(run) -> float): measures again the bound an int8 file records
    metric: Callable | None = None
    # a file's dynamic axes, for the shape certificate: --max-shape and --min-shape, {symbol: size}
    max_sizes: Mapping[str, int] | None = None
    min_sizes: Mapping[str, int] | None = None
