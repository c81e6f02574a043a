"""The sizes a module's generated inputs are made at, found where ptx's defaults fail, and what the
files record of how export shaped its inputs (issue 68, 4).

ptx makes a symbol 8 long (64 for an image's height and width) where nobody gave its size; a model
may refuse that (Wav2Vec2's first convolution has a kernel of 10 samples). Export then searches larger
sizes of that axis, doubling up to a stated cap, before refusing, and says what it chose. The sizes
export validated at, and the ranges and values the user gave, are recorded in each file's signature
(``Signature.sizes``, ``TensorSig.value_range``) and the user's tolerance beside it (``ptx.tolerance``),
so that verify, bench and the server's own checks generate inputs the model takes and judge them as
export did, saying so in one line."""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable, Sequence

import torch

from ptx.contract.tensor_inputs import InputPlan, plan_inputs
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError

from .certificate import attributes_restorer
from .examples import generated_examples
from .refusal import describe_refusal, user_files

# The largest size the search tries: an image's side grows fast in memory (1024 x 1024 at batch 2),
# a sequence or a signal's samples much less (16384 samples: a second of 16 kHz audio).
SPATIAL_CAP = 1024
OTHER_CAP = 16384
# The search's time, its eager runs together: each symbol alone doubles to its cap (11 runs from 8 to 16384,
# 4 from 64 to 1024), then all together, so a model that refuses every size (a wrong --input, a value it
# refuses, not a size) ran (symbols + 1) x 11 runs, its largest at 16384 samples (a transformer's attention
# over 16384 positions runs for minutes). The search stops before a run that it expects to end past this:
# a larger size takes at least as long as the last one did.
SEARCH_SECONDS = 30.0


def _spatial(sigs: Sequence[TensorSig], symbol: str) -> bool:
    """A height or width (as plan_inputs sizes it): one of the last two axes of a float input of rank 4 or more."""
    return any(t.dtype_info.is_float and len(t.shape) >= 4 and symbol in t.shape[-2:] for t in sigs)


def search_sizes(module: torch.nn.Module, sigs: Sequence[TensorSig], plan: InputPlan, log: Callable[[str], None],
                 name: str, example: Sequence[torch.Tensor] | None = None) -> dict[str, int]:
    """Where the module refuses inputs generated at ``plan``'s sizes: the sizes of the ``example`` it was
    given (tensors in ``sigs``' order), where there is one, else larger sizes of the symbols ptx chose (not
    the user's), each alone doubling up to its cap, then all together, for SEARCH_SECONDS at most; the sizes
    of the first that runs are set in ``plan.chosen`` and returned ({} where the module takes ``plan``'s, or
    none runs beside an example; without one, a PtxError in one line says the search and what to do)."""
    restore = attributes_restorer(module)
    files = user_files(module)
    spent = {"runs": 0, "seconds": 0.0, "last": 0.0}

    def refusal(p: InputPlan) -> str:  # '' where the module runs on inputs made by ``p``
        began = time.monotonic()
        try:
            with torch.inference_mode():
                module(*generated_examples(sigs, p))
            return ""
        except Exception as exc:  # noqa: BLE001 - any failure at this size is what the search looks past
            return describe_refusal(exc, files)
        finally:
            restore()
            spent["last"] = time.monotonic() - began
            spent["seconds"] += spent["last"]
            spent["runs"] += 1

    def out_of_time() -> bool:  # the next, larger run would end past the search's time
        return spent["seconds"] + 2 * spent["last"] > SEARCH_SECONDS

    first = refusal(plan)
    searched = [s for s in plan.chosen if s not in plan.bound]
    if not first or not searched:
        return {}
    caps = {s: SPATIAL_CAP if _spatial(sigs, s) else OTHER_CAP for s in searched}
    at = ", ".join(f"{s}={plan.chosen[s]}" for s in searched)
    if example is not None:  # the example's own sizes: the module took them
        sizes = {s: n for s, n in Signature(tuple(sigs), ()).symbol_sizes(
            {t.name: a for t, a in zip(sigs, example)}).items() if s in searched}
        if sizes and not refusal(replace(plan, chosen={**plan.chosen, **sizes})):
            plan.chosen.update(sizes)
            log(f"sizes: {name} refuses the generated inputs at {at} ({first}); they are made at the example's "
                f"{', '.join(f'{s}={n}' for s, n in sizes.items())} instead (recorded in the files, where verify and "
                "bench generate inputs at it; a --shape of yours there overrides it)")
            return sizes

    def larger(symbols: Sequence[str]):
        steps = max(int(math.log2(max(caps[s] // plan.chosen[s], 1))) for s in symbols)
        for k in range(1, steps + 1):
            sizes = {s: min(plan.chosen[s] << k, caps[s]) for s in symbols}
            if all(sizes[s] > plan.chosen[s] for s in symbols):
                yield sizes

    stopped = ""  # where the time bound cut the search short, in words
    for symbols in ([[s] for s in searched] + ([searched] if len(searched) > 1 else [])):
        spent["last"] = 0.0  # each symbol's doubling starts again from ptx's size
        for sizes in larger(symbols):
            if out_of_time():
                stopped = (f"; stopped after {spent['runs']} runs in {spent['seconds']:.0f} s, before "
                           f"{', '.join(f'{s}={n}' for s, n in sizes.items())} (the search's bound: "
                           f"{SEARCH_SECONDS:.0f} s)")
                break
            if not refusal(replace(plan, chosen={**plan.chosen, **sizes})):
                plan.chosen.update(sizes)
                chose = ", ".join(f"{s}={n}" for s, n in sizes.items())
                log(f"sizes: {name} refuses the generated inputs at {at} ({first}); searched larger sizes, doubling "
                    f"up to {', '.join(f'{s}={caps[s]}' for s in symbols)}, and chose {chose}, the first it takes "
                    "(recorded in the files, where verify and bench generate inputs at it; a --shape of yours there "
                    "overrides it)")
                return sizes
        if stopped:
            break
    why = (f"{name} refuses the generated inputs at {at} ({first}), and every larger size tried, doubling up to "
           + ", ".join(f"{s}={caps[s]}" for s in searched) + stopped)
    if example is None:  # nothing else to run it on: one line, the first refusal, the search and what to do
        raise PtxError(why + ": not a matter of those sizes, or sizes ptx does not try: check --input (names in "
                       "forward()'s order, shapes, dtypes), or shape the inputs it takes with --shape, --min-shape, "
                       "--range or --value")
    log(f"sizes: {why}: not a matter of those sizes, or sizes ptx does not try")
    return {}


def recorded_signature(signature: Signature, plan: InputPlan) -> Signature:
    """``signature`` with what export's inputs were shaped by, for the files to keep: the sizes it validated
    at where they are not ptx's defaults (``Signature.sizes``), and the user's --range and --value as
    each input's own range (``TensorSig.value_range``, both ends included)."""
    defaults = plan_inputs(Signature(signature.inputs, ())).chosen
    batch_symbols = {t.batch_symbol for t in signature.inputs if t.batch_axis is not None}
    sizes = {s: plan.size(s) for s in signature.symbols()
             if s not in batch_symbols and (s in plan.bound or s in plan.chosen) and plan.size(s) != defaults.get(s)}

    def ranged(t: TensorSig) -> TensorSig:
        if t.dtype == "bool":
            return t
        if t.name in plan.values:
            return replace(t, value_range=(plan.values[t.name], plan.values[t.name]))
        given = plan.ranges.get(t.name) or (plan.default_range if t.value_range is None else None)
        if given is None:
            return t
        low, high = given  # [low, high): an integer's largest value is the one below high
        return replace(t, value_range=(math.ceil(low), max(math.ceil(high) - 1, math.ceil(low)))
                       if t.dtype_info.is_integer else (float(low), float(high)))

    return replace(signature, inputs=tuple(ranged(t) for t in signature.inputs),
                   sizes=tuple(sorted(sizes.items())))
