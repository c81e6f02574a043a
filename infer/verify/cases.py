"""The cases every backend is run on: seeded inputs generated from a model's signature at each batch
size, or the user's samples, each checked against the signature."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.tensor_inputs import InputPlan, load_input_file, make_feeds
from ptx.contract.tensors import Signature
from ptx.errors import PtxError


@dataclass
class Case:
    """One set of inputs every backend is run on."""

    label: str  # "batch 3", "fixed shape", "samples.npz #2", "stored #0"
    feeds: dict[str, np.ndarray] | None  # None: a tutorial model's bench case, whose head makes its inputs
    batch: int | None  # the size of the batch axis, where the inputs have one


def batch_of(signature: Signature, feeds: Mapping[str, np.ndarray]) -> int | None:
    for t in signature.inputs:
        if t.batch_axis is not None:
            return int(np.asarray(feeds[t.name]).shape[t.batch_axis])
    return None


def has_batch(signature: Signature) -> bool:
    return any(t.batch_axis is not None for t in signature.inputs)


def generated_cases(signature: Signature, plan: InputPlan, batch_sizes: Sequence[int], seed: int) -> list[Case]:
    """Seeded inputs at each batch size, or once at the fixed shape where no input has a batch axis."""
    if not has_batch(signature):
        return [Case("fixed shape", make_feeds(signature, plan, None, seed), None)]
    return [Case(f"batch {b}", make_feeds(signature, plan, b, seed), b) for b in batch_sizes]


def file_cases(paths: Sequence[str | Path], signature: Signature) -> list[Case]:
    """The user's samples (--inputs, several files allowed), each case checked against the signature."""
    cases = []
    for path in paths:
        loaded = load_input_file(path, signature)
        for k, feeds in enumerate(loaded):
            label = Path(path).name + (f" #{k}" if len(loaded) > 1 else "")
            cases.append(Case(label, feeds, batch_of(signature, feeds)))
    return cases


def batch_hint(signature: Signature) -> str | None:
    """Where generated inputs may have put the batch wrong: an input with symbolic sizes but no batch
    axis ptx could tell, beside inputs that have one (a recurrent state [2, state_1, 128] beside
    input [N, T]): it was fed a size of its own, and a runtime's message about it names no input."""
    if not has_batch(signature):
        return None
    for t in signature.inputs:
        axes = [i for i, d in enumerate(t.shape) if isinstance(d, str)]
        if t.batch_axis is None and axes:
            which = str(axes[0]) if len(axes) == 1 else f"AXIS (one of {', '.join(map(str, axes))})"
            return (f"{t.name} {t.dims_text()} may hold the batch, which ptx could not tell, and was fed a size of "
                    f"its own: if its batch is axis {axes[0]}, say so with --batch-axis {t.name}={which}")
    return None


def save_cases(where: Path, cases: Sequence[Case]) -> str:
    """The cases' inputs as one .npz that --inputs reads back: ``NAME:K`` for case K (the cases'
    batches differ, so they cannot share one array per name)."""
    from ptx.atomic import atomic_path

    if where.suffix.lower() != ".npz":
        raise PtxError(f"--save-inputs {where}: give a .npz file name (it is read back with --inputs {where.stem}.npz)")
    arrays = {f"{name}:{k}": array for k, case in enumerate(cases) for name, array in case.feeds.items()}
    with atomic_path(where) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return f"saved the inputs: {where} ({len(cases)} case{'s' * (len(cases) != 1)}; --inputs {where} feeds them again)"
