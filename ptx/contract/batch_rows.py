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


def group_feeds(signature: Signature, feeds: Mapping[str, np.ndarray], rows: Sequence[int]) -> dict[str, np.ndarray]:
    """The ``rows`` of ``feeds`` as a batch of their own: each batched input's rows, every other input whole."""
    return {t.name: feeds[t.name] if t.batch_axis is None else take_rows(feeds[t.name], t.batch_axis, rows)
            for t in signature.inputs}


def probe_rows(run: Callable[[dict], Mapping[str, np.ndarray]], signature: Signature,
               feeds: Mapping[str, np.ndarray], batched: Mapping[str, np.ndarray],
               tolerance_of: Callable[[str], Tolerance]) -> dict[str, str]:
    """{output: PER_ROW or why it is not} for each output of ``signature`` with a batch axis, from a few
    rows of ``feeds`` (a batch of 3 or more) run alone through ``run`` against ``batched``, the batch's
    own outputs: an output whose size on another axis follows the batch too spans it there; one whose
    rows alone differ from its rows in the batch depends on the other rows. Where ``run`` refuses a row
    alone (a batch norm computing its batch's statistics takes no batch of one), pairs of rows are run
    as batches of 2 instead. {} where nothing can be learned (no batched input, a batch under 3, or
    ``run`` refuses those too)."""
    batch = next((int(np.asarray(feeds[t.name]).shape[t.batch_axis]) for t in signature.inputs
                  if t.batch_axis is not None), None)
    outputs = [t for t in signature.outputs if t.batch_axis is not None and t.name in batched]
    if batch is None or batch < 3 or not outputs:
        return {}
    # a model that takes no batch of one (BatchNorm's statistics in training mode) is still probed, by pairs:
    # kept silent, it kept its batch axis and verify's composition check called it a disagreement of itself
    for groups in ([[row] for row in alone_rows(batch)], [[0, 1], [batch - 2, batch - 1]]):
        try:
            answers = [run(group_feeds(signature, feeds, group)) for group in groups]
            break
        except Exception:  # noqa: BLE001 - refused at this sub-batch: the next, else nothing learned, nothing assumed away
            continue
    else:
        return {}
    rows = [row for group in groups for row in group]
    alone = (f"rows {', '.join(map(str, rows))} alone" if all(len(g) == 1 for g in groups) else
             "rows " + " and ".join(", ".join(map(str, g)) for g in groups) + " as batches of 2")
    found = {}
    for t in outputs:
        whole = np.asarray(batched[t.name])
        shapes = [(np.asarray(a[t.name]).shape, len(g)) for a, g in zip(answers, groups)]
        odd, n = next(((s, n) for s, n in shapes
                       if s != tuple(n if axis == t.batch_axis else k for axis, k in enumerate(whole.shape))),
                      (None, 0))
        if odd is not None:
            spans = [axis for axis, k in enumerate(whole.shape)
                     if axis != t.batch_axis and k == batch and len(odd) == whole.ndim and odd[axis] == n]
            found[t.name] = (f"spans the batch on axis {spans[0]} as well as axis {t.batch_axis}" if spans else
                             f"its shape in a batch of {n} {list(odd)} does not follow its shape in a batch of "
                             f"{batch} {list(whole.shape)}")
            continue
        together = np.concatenate([np.asarray(a[t.name]) for a in answers], axis=t.batch_axis)
        agreement = compare_output(t.name, together, take_rows(whole, t.batch_axis, rows), tolerance_of(t.name),
                                   t.batch_axis)
        found[t.name] = PER_ROW if agreement.ok else (
            f"depends on the other rows of its batch ({alone} differ from their rows in a batch of {batch} by up "
            f"to {agreement.max_abs:.2e})")
    return found


def not_per_row(rows: Mapping[str, str]) -> dict[str, str]:
    """The outputs a record of probe_rows' findings says are not per row, with why."""
    return {name: why for name, why in rows.items() if why != PER_ROW}


def describe_left_out(rows: Mapping[str, str]) -> str:
    """``logits_per_image (spans the batch on axis 1 ...), ...``: the outputs not per row, in one line ('' where none)."""
    return "; ".join(f"{name} ({why})" for name, why in not_per_row(rows).items())
