"""The cases a user's module is validated on at export (export/module.py): the user's own inputs (--inputs), or two
seeded cases made from its signature, each with eager's answers."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ptx.contract.cases import Case
from ptx.contract.tensor_inputs import VERIFY_BATCHES, InputPlan, load_input_file, make_feeds, symbol_steps
from ptx.contract.tensors import Signature
from ptx.errors import PtxError


def file_cases(paths, signature: Signature, eager) -> list[Case]:
    """The user's own inputs (--inputs), each case checked against the signature, with eager's answers."""
    cases = []
    for path in paths:
        loaded = load_input_file(path, signature)
        for k, feeds in enumerate(loaded):
            cases.append(case_of(signature, eager, feeds, Path(path).name + (f" #{k}" if len(loaded) > 1 else "")))
    return cases


def case_of(signature: Signature, eager, feeds, label: str) -> Case:
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    sizes = {s: n for s, n in signature.symbol_sizes(feeds).items() if s not in batch_symbols}
    batch = next((int(feeds[t.name].shape[t.batch_axis]) for t in signature.inputs if t.batch_axis is not None), None)
    return Case(label, feeds, batch, dict(zip(signature.output_names, eager.run(dict(feeds)).values())), sizes)


def validation_cases(signature: Signature, eager, first: InputPlan, seed: int) -> list[Case]:
    """Two seeded cases at VERIFY_BATCHES (or twice at the declared shapes without a batch axis),
    the second with every other symbol ptx sized larger by its own even step (symbol_steps: 2, 4,
    ...; twice as large for a model that takes no such size, a UNet of stride 16; the first's sizes
    for one that takes neither), so that a size an exporter fixed is caught. Seeded and
    sized as the eager runner's two runs that learned its outputs (torch_runner.probe_outputs), which
    answers them from those runs rather than running the module again. A scalar integer or boolean
    input (a flag that picks a branch) is 0/False in the first case and 1/True in the second, so that
    a traced branch is caught too. ``first``: the plan of the first case (the user's --shape, --value,
    --range; the embeddings' limits)."""
    inputs_only = Signature(signature.inputs, ())
    steps = symbol_steps(inputs_only)
    seconds = [replace(first, bound={**first.bound, **{s: v * grow + steps[s] * step for s, v in first.chosen.items()}})
               for grow, step in ((1, 1), (2, 0))] if first.chosen else []
    batched = any(t.batch_axis is not None for t in signature.inputs)
    cases = []
    for k, batch in enumerate(VERIFY_BATCHES if batched else (None, None)):
        for plan in ([first] if k == 0 else [*seconds, first]):
            feeds = make_feeds(inputs_only, plan, batch, seed=seed + k)
            for sig in signature.inputs:
                if sig.shape == () and (sig.dtype == "bool" or sig.dtype_info.is_integer) and sig.name not in plan.values:
                    low = int(sig.value_range[0]) if sig.value_range else 0
                    feeds[sig.name] = np.array(bool(k) if sig.dtype == "bool" else low + k, dtype=sig.dtype)
            try:
                produced = list(eager.run(feeds).values())
                break
            except PtxError:
                if plan is first:
                    raise
        cases.append(Case(f"batch {batch}" if batch is not None else ("the first case", "the second case")[k], feeds,
                          batch, dict(zip(signature.output_names, produced)),
                          {s: plan.bound.get(s) or plan.chosen[s] for s in {**first.chosen, **plan.bound}}))
    return cases
