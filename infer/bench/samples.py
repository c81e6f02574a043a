"""The user's samples (--inputs) at the batch sizes bench was asked for: cut to the first N samples,
or repeated up to N, so that `--inputs x16.npz --batch-sizes 1,16` times batch 1 and 16 (issue 58:
bench timed batch 16 only, and never said so). Where the samples cannot be resized (no input has a
batch axis, or the files' cases differ in shape), the sizes not timed are named with the reason."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ptx.contract.cases import Case
from ptx.contract.tensors import Signature

from ..verify.cases import has_batch


def _sizes(sizes: Sequence[int]) -> str:
    return ",".join(map(str, sizes))


def _pooled(cases: Sequence[Case], signature: Signature) -> dict[str, np.ndarray] | None:
    """Every case's samples joined along each input's batch axis (an input without one must be the
    same in every case), or None where they differ in another axis and cannot be joined."""
    pooled = {}
    for t in signature.inputs:
        arrays = [np.asarray(c.feeds[t.name]) for c in cases]
        if t.batch_axis is None:
            if any(a.shape != arrays[0].shape or not np.array_equal(a, arrays[0]) for a in arrays[1:]):
                return None
            pooled[t.name] = arrays[0]
            continue
        rest = {a.shape[:t.batch_axis] + a.shape[t.batch_axis + 1:] for a in arrays}
        if len(rest) != 1:
            return None
        pooled[t.name] = np.concatenate(arrays, axis=t.batch_axis)
    return pooled


def _how(batch: int, have: int) -> str:
    if batch == have:
        return f"{batch} (all of them)"
    if batch < have:
        return f"{batch} (the first {'sample' if batch == 1 else f'{batch}'})"
    return f"{batch} (repeated {batch / have:.3g}x)"


def sized_cases(cases: Sequence[Case], signature: Signature, sizes: Sequence[int] | None,
                names: str) -> tuple[list[Case], str]:
    """(the cases to time, one line saying what they are). ``sizes``: the --batch-sizes asked for,
    None where the user gave none (each case is timed at its own batch, as it comes); ``names``: the
    input files, as the line names them."""
    by_batch: dict[int | None, Case] = {}
    for case in cases:
        by_batch.setdefault(case.batch, case)
    as_given = list(by_batch.values())
    own = ", ".join(c.label for c in as_given)
    if sizes is None:
        if not has_batch(signature):
            return as_given, f"timed on the samples given ({own})"
        return as_given, (f"timed on the samples given ({own}) at their own batch "
                          f"({_sizes(b for b in by_batch if b is not None)}; --batch-sizes cuts or repeats them)")
    if not has_batch(signature):
        return as_given, (f"timed on the samples given ({own}) at their own shape: --batch-sizes {_sizes(sizes)} "
                          f"dropped, as no input of the model has a batch axis to cut or repeat")
    pooled = _pooled(cases, signature)
    if pooled is None:
        return as_given, (f"timed on the samples given ({own}) at their own batch: --batch-sizes {_sizes(sizes)} "
                          f"dropped, as the cases differ in a non-batch axis and cannot be joined into one batch to "
                          f"cut or repeat (give one case per file, or one batch size)")
    have = sum(c.batch or 0 for c in cases)
    if have == 0:
        return as_given, (f"timed on the samples given ({own}): --batch-sizes {_sizes(sizes)} dropped, as they "
                          f"hold no sample (a batch of 0) to cut or repeat")
    sized = []
    for b in sizes:
        rows = np.arange(b) % have  # the first b samples, wrapping round where b is more than there are
        feeds = {t.name: pooled[t.name] if t.batch_axis is None else np.take(pooled[t.name], rows, axis=t.batch_axis)
                 for t in signature.inputs}
        sized.append(Case(f"batch {b}", feeds, b))
    return sized, (f"timed on the {have} samples given ({names}) at batch "
                   + ", ".join(_how(b, have) for b in sizes))
