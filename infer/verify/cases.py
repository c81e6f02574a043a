"""The cases every backend is run on: a head's real test samples and edge inputs, seeded inputs
generated from a model's signature at each batch size, or the user's samples, each checked against
the signature."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.cases import Case
from ptx.contract.tensor_inputs import InputPlan, load_input_file, make_feeds
from ptx.contract.tensors import Signature
from ptx.errors import PtxError


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
        return [Case("fixed shape", make_feeds(signature, plan, None, seed))]
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


def head_cases(contract, real: np.ndarray, batch_sizes: Sequence[int]) -> list[Case]:
    """A tutorial model's real samples (raw, as its dataset holds them) in its model layout, then its
    edge inputs, then a batch of each size cut from the samples: "real" first (the case labels and
    accuracy are judged on), each batch-N case carrying its batch (the largest is the batch
    composition's). Keyed by the contract's input: each model runs them through its head."""
    from ptx.contract.transforms import normalize, to_layout

    x = normalize(real, contract)
    sizes = sorted(set(batch_sizes) | {1, 7})
    cycled = np.resize(x, (sizes[-1], *x.shape[1:]))  # the samples again and again, up to the largest batch
    inputs = {"real": x}
    if contract.picture is not None:
        # A blank picture and one all ink, normalised: the extremes of what a picture model is fed,
        # and pictures still, so that an --input uint8 export (which takes only pictures) is fed them too.
        blank = np.zeros((2, *np.asarray(real).shape[1:]), dtype=np.uint8)
        inputs.update(zeros=normalize(blank, contract), ones=normalize(np.full_like(blank, 255), contract))
    elif contract.encoding is None:  # all-zero and all-one tensors; token ids have no such edge
        inputs.update(zeros=np.zeros_like(x[:2]), ones=np.ones_like(x[:2]))
    for b in sizes:
        inputs[f"batch-{b}"] = cycled[:b]
    return [Case(key, {contract.input.name: to_layout(batch, contract)}, int(key[6:]) if key.startswith("batch-") else None)
            for key, batch in inputs.items()]


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


def save_cases(where: Path, cases: Sequence[Case], labels: np.ndarray | None = None) -> str:
    """The cases' inputs as one .npz that --inputs reads back: ``NAME:K`` for case K (the cases'
    batches differ, so they cannot share one array per name); ``labels``, the true labels of the real
    samples (case 0), under ``labels``."""
    from ptx.atomic import atomic_path

    if where.suffix.lower() != ".npz":
        raise PtxError(f"--save-inputs {where}: give a .npz file name (it is read back with --inputs {where.stem}.npz)")
    arrays = {f"{name}:{k}": array for k, case in enumerate(cases) for name, array in case.feeds.items()}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    with atomic_path(where) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return f"saved the inputs: {where} ({len(cases)} case{'s' * (len(cases) != 1)}; --inputs {where} feeds them again)"
