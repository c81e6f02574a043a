"""The one Case (torch-free): a set of inputs every command runs a model on, with what is known of
it. Each command fills the fields it needs and leaves the rest at their defaults:

- ``ptx verify`` and ``ptx bench`` (infer/verify/cases.py): ``label``, ``feeds`` and ``batch``,
  the batch size that batch-composition and bench's rows are keyed by; a tutorial model's bench case
  has ``feeds`` None, as its head makes its inputs at ``batch``.
- ``ptx export`` (export/validate.py, module.py, file.py) and the reference tensors kept beside a
  file (contract/reference.py): ``outputs`` too, what the reference (eager PyTorch, the f32 file)
  answered on ``feeds``, which the written file must match; ``sizes``, the other symbols' sizes in
  this case (seq 8), so that the export can say which sizes it checked.
- ``ptx predict`` on a model file (infer/predict/named_outputs.py): ``outputs`` the model's answer,
  or ``error`` why the runtime refused ``feeds``; ``label`` names the input file (``in.npz:2``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from ptx.errors import PtxError, first_line


@dataclass
class Case:
    label: str  # how a line names it: "batch 3", "fixed shape", "samples.npz #2", "stored #0", "in.npz:1"
    feeds: dict[str, np.ndarray] | None  # inputs by name; None: a tutorial model's bench case (its head makes them)
    batch: int | None = None  # the size of the batch axis, where the inputs have one
    outputs: dict[str, np.ndarray] | None = None  # by output name: the reference's (export), the model's (predict)
    sizes: dict[str, int] = field(default_factory=dict)  # the other symbols' sizes in this case: seq 8
    error: str | None = None  # why the runtime refused the feeds (predict: the other cases still run)


def run_cases(run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]], cases: Sequence[Case],
              refused: type[BaseException] | tuple[type[BaseException], ...] = Exception
              ) -> Iterator[tuple[Case, dict[str, np.ndarray] | None, str | None]]:
    """ptx's one run loop (Polygraphy's Comparator.run): ``run`` (a model's ``run(feeds)``) on each
    case in turn, yielding (the case, its answers, None), or (the case, None, why it failed in one
    line). It runs a case only when the caller asks for the next: a caller that stops at the first
    failure (verify, export) stops reading, one that goes on (predict) keeps reading. ``refused``: the
    failures that are a case's (any runtime's, for verify); the others propagate."""
    for case in cases:
        try:
            answers = dict(run(case.feeds))
        except refused as exc:
            yield case, None, str(exc) if isinstance(exc, PtxError) else f"{type(exc).__name__}: {first_line(exc)}"
            continue
        yield case, answers, None
