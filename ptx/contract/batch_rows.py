"""Which outputs are per row, learned rather than assumed (torch-free; issue 68, 3).

An output with a batch axis is taken to be per row: its row i is sample i's answer, whatever the
other samples are. Batch-composition checks, a server's batcher (which joins requests and splits the
answer along that axis) and per-row comparisons all rest on that. Many models are not like that:
CLIP's logits_per_image is [images, texts] (with both inputs batched it spans the batch on axis 1
too), a pooling or normalisation across the batch mixes the rows, a set model answers the set.
Export runs the module on a batch and on some of its rows alone and sees, for each output, whether
its slice depends only on its row and follows the batch on one axis only; an output that does not
keeps no batch axis in the file's signature, and the finding is recorded in its shape certificate
(``Certificate.rows``) so that verify says why it left the output out.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .comparison import compare_output
from .schema import Tolerance
from .tensors import Signature

MAX_ALONE = 3  # rows run alone: the first, the middle and the last of the batch
PER_ROW = "per row"


def take_rows(x: np.ndarray, axis: int, rows: Sequence[int]) -> np.ndarray:
    """The ``rows`` of ``x`` along ``axis``, C-ordered as runtimes want them."""
    return np.ascontiguousarray(np.take(np.asarray(x), list(rows), axis=axis))


def alone_rows(batch: int) -> list[int]:
    return sorted({0, batch // 2, batch - 1})[:MAX_ALONE]


def alone_feeds(signature: Signature, feeds: Mapping[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """One sample of ``feeds``: each batched input's row, every other input whole."""
    return {t.name: feeds[t.name] if t.batch_axis is None else take_rows(feeds[t.name], t.batch_axis, [row])
            for t in signature.inputs}


def probe_rows(run: Callable[[dict], Mapping[str, np.ndarray]], signature: Signature,
               feeds: Mapping[str, np.ndarray], batched: Mapping[str, np.ndarray],
               tolerance_of: Callable[[str], Tolerance]) -> dict[str, str]:
    """{output: PER_ROW or why it is not} for each output of ``signature`` with a batch axis, from a few
    rows of ``feeds`` (a batch of 3 or more) run alone through ``run`` against ``batched``, the batch's
    own outputs: an output whose size on another axis follows the batch too spans it there; one whose
    rows alone differ from its rows in the batch depends on the other rows. {} where nothing can be
    learned (no batched input, a batch under 3, or ``run`` refuses a row alone)."""
    batch = next((int(np.asarray(feeds[t.name]).shape[t.batch_axis]) for t in signature.inputs
                  if t.batch_axis is not None), None)
    outputs = [t for t in signature.outputs if t.batch_axis is not None and t.name in batched]
    if batch is None or batch < 3 or not outputs:
        return {}
    rows = alone_rows(batch)
    try:
        answers = [run(alone_feeds(signature, feeds, row)) for row in rows]
    except Exception:  # noqa: BLE001 - a model that takes no batch of one: nothing learned, nothing assumed away
        return {}
    found = {}
    for t in outputs:
        whole = np.asarray(batched[t.name])
        shapes = [np.asarray(a[t.name]).shape for a in answers]
        want = tuple(1 if axis == t.batch_axis else n for axis, n in enumerate(whole.shape))
        odd = next((s for s in shapes if s != want), None)
        if odd is not None:
            spans = [axis for axis, n in enumerate(whole.shape)
                     if axis != t.batch_axis and n == batch and len(odd) == whole.ndim and odd[axis] == 1]
            found[t.name] = (f"spans the batch on axis {spans[0]} as well as axis {t.batch_axis}" if spans else
                             f"its shape alone {list(odd)} does not follow its shape in a batch of {batch} "
                             f"{list(whole.shape)}")
            continue
        alone = np.concatenate([np.asarray(a[t.name]) for a in answers], axis=t.batch_axis)
        agreement = compare_output(t.name, alone, take_rows(whole, t.batch_axis, rows), tolerance_of(t.name),
                                   t.batch_axis)
        found[t.name] = PER_ROW if agreement.ok else (
            f"depends on the other rows of its batch (rows {', '.join(map(str, rows))} alone differ from their rows "
            f"in a batch of {batch} by up to {agreement.max_abs:.2e})")
    return found


def not_per_row(rows: Mapping[str, str]) -> dict[str, str]:
    """The outputs a record of probe_rows' findings says are not per row, with why."""
    return {name: why for name, why in rows.items() if why != PER_ROW}


def describe_left_out(rows: Mapping[str, str]) -> str:
    """``logits_per_image (spans the batch on axis 1 ...), ...``: the outputs not per row, in one line ('' where none)."""
    return "; ".join(f"{name} ({why})" for name, why in not_per_row(rows).items())
