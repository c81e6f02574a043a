"""``ptx export NAME --format onnx-int8 --keep-f32 auto|NODE,NODE``: nodes left in f32 by
onnxruntime.quantization's own ``nodes_to_exclude``.

``auto`` quantizes everything, judges the labels as verify does, and while they miss verify's gate
keeps the worst nodes of the triage (how much relative error each node adds, infer/locate/triage.py) in
f32, ``STEP`` at a time, ranking again after each step (a kept node changes what the next one
receives). The ranking and the judge are handed in as callables (the ranking by the CLI: locate sits
above export, which never imports it). Torch-free: onnx and onnxruntime only.

Where the ranking runs out first (keeping its next nodes would leave nothing in int8, or no
quantized node adds error any more: a barely trained model, whose scores sit so close that the
activations' rounding alone flips labels), the search turns round: every quantizable node starts in
f32 and each is released into int8 in turn, least error first, kept in int8 only if the labels still
pass. Tensor error is a proxy; this judges each node by the labels themselves, one quantization and
one judgement per node (16 for the tutorials' resnet), so it runs only where the proxy failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ptx.errors import PtxError

AUTO = "auto"
STEP = 2  # nodes kept in f32 per round: few, so that no node is kept that the labels did not need

Rank = Callable[[Path, Path, dict], list[tuple[str, float]]]  # (f32 file, int8 file, feeds) -> (node, born)
Judge = Callable[[Path], object]  # an int8 file -> its Evidence (ptx.contract.verdict; unusable: [] when it passes)


@dataclass
class Kept:
    nodes: list[str] = field(default_factory=list)
    rounds: list[str] = field(default_factory=list)  # what each round judged, for the log


def parse(value: str | None) -> str | list[str] | None:
    """``auto``, or the node names of NODE,NODE (None: not asked)."""
    if value is None:
        return None
    if value.strip().lower() == AUTO:
        return AUTO
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise PtxError("--keep-f32: give auto or NODE[,NODE] (names `ptx verify NAME --backends ort-cpu-int8 "
                       "--locate` lists)")
    return names


def resolve(names: Sequence[str], quantized_input, f32, model: str) -> list[str]:
    """The quantizer's node names for ``names``: a node of the graph it quantizes, or a node of the
    f32 export, mapped by the tensor it makes (onnxruntime's pre-processing fuses Gemm+Relu under
    the Gemm's name, keeping the Relu's output)."""
    own = {n.name for n in quantized_input.graph.node}
    maker = {o: n.name for n in quantized_input.graph.node for o in n.output}
    outputs = {n.name: list(n.output) for n in f32.graph.node}
    found = []
    for name in names:
        mapped = name if name in own else next((maker[o] for o in outputs.get(name, ()) if o in maker), None)
        if mapped is None:
            raise PtxError(f"--keep-f32 {name}: {model}'s graph has no node of that name ({', '.join(sorted(own)[:4])}"
                           ", ...): name nodes of its f32 graph (`ptx verify NAME --backends ort-cpu-int8 --locate` "
                           "lists a tutorial model's that add most error; --keep-f32 auto chooses them)")
        found.append(mapped)
    return list(dict.fromkeys(found))


def keep_auto(quantize: Callable[[list[str]], Path], f32: Path, feeds: dict, rank: Rank, judge: Judge,
              model: str, log: Callable[[str], None], quantizable: Sequence[str] = ()) -> Kept:
    """Quantize with more nodes kept in f32 until ``judge`` passes; ``quantize(nodes)`` writes the
    int8 file keeping ``nodes`` in f32 and returns its path. ``quantizable``: the quantizer's nodes
    that can be kept in f32 (its graph's names), for the search by labels where the ranking runs out."""
    kept = Kept()
    path = quantize([])
    judged = judge(path)
    kept.rounds.append(f"all in int8: {judged.describe()}")
    if not judged.unusable:
        return kept
    log(f"onnx-int8   --keep-f32 auto: {judged.describe()}: {'; '.join(judged.unusable)}; keeping the nodes that "
        "add most error in f32")
    # The all-int8 file's ranking, for when a later file's runs dry: a node kept in f32 leaves its
    # neighbours' tensors unquantized, so fewer names match and a fresh ranking may name none left,
    # though the first one still ranks nodes whose error the labels need gone.
    first: list[str] | None = None
    while judged.unusable:
        fresh = [node for node, _ in rank(f32, path, feeds)]  # one ranking per file: each runs both sides
        first = fresh if first is None else first
        ranked = [node for node in fresh if node not in kept.nodes] or [node for node in first if node not in kept.nodes]
        why = None if ranked else "no quantized node adds error any more"
        if ranked:
            try:
                path = quantize(kept.nodes + ranked[:STEP])
            except PtxError:  # the quantizer would leave nothing in int8
                why = f"keeping {', '.join(ranked[:STEP])} too leaves nothing in int8"
        if why:
            log(f"onnx-int8   {len(kept.nodes)} in f32 still miss the gate ({judged.describe()}) and {why}: "
                "judging each node in int8 on its own instead")
            return release(quantize, judge, first + kept.nodes, quantizable, model, log, kept)
        kept.nodes += ranked[:STEP]
        judged = judge(path)
        kept.rounds.append(f"{len(kept.nodes)} in f32 ({', '.join(ranked[:STEP])} added): {judged.describe()}")
        log(f"onnx-int8   {kept.rounds[-1]}")
    return kept


def release(quantize: Callable[[list[str]], Path], judge: Judge, ranked: Sequence[str], quantizable: Sequence[str],
            model: str, log: Callable[[str], None], kept: Kept) -> Kept:
    """Every quantizable node in f32, then each released into int8 in turn, least error first (the
    ones no ranking named, then the ranking from its end), kept in int8 where the labels still pass
    with it. Leaves the int8 file written with the nodes that stay in f32; one line where no node
    can be int8 and keep the labels."""
    own = list(dict.fromkeys(quantizable))
    named = [node for node in dict.fromkeys(ranked) if node in own]
    order = named + [node for node in own if node not in named]  # worst first
    keep = list(order)
    passed, judged_nodes = None, 0
    for step, node in enumerate(reversed(order), 1):
        trial = [n for n in keep if n != node]
        try:
            path = quantize(trial)
        except PtxError:  # still nothing in int8 with it released: no label can move yet
            keep = trial
            log(f"onnx-int8   [{step}/{len(order)}] {node}: nothing in int8 with it alone (released, nothing to judge)")
            continue
        judged_nodes += 1
        judged = judge(path)
        verdict = "stays in int8" if not judged.unusable else "back to f32"
        log(f"onnx-int8   [{step}/{len(order)}] {node} in int8: {judged.describe()}: {verdict}")
        if not judged.unusable:
            keep, passed = trial, judged
    if passed is None:
        raise PtxError(f"--keep-f32 auto: {model}'s int8 labels miss the gate with any one of the {judged_nodes} "
                       f"nodes it judged in int8 (of {len(order)} quantizable; its scores sit too close for int8's "
                       "rounding): serve its f32 file")
    quantize(keep)  # the trials overwrote the file: write the one that passed again
    kept.nodes = keep
    kept.rounds.append(f"{len(keep)} in f32, {len(order) - len(keep)} of {len(order)} quantizable nodes in int8: "
                       f"{passed.describe()}")
    log(f"onnx-int8   {kept.rounds[-1]}")
    return kept


def revert(quantize: Callable[[list[str]], Path], judge: Judge, kept: Sequence[str],
           log: Callable[[str], None], fmt: str = "onnx-int8") -> list[str]:
    """The revert pass (Intel Neural Compressor's tuning ends with one): each node kept in f32
    returned to int8 in turn, the last kept first (the least needed by the ranking), and left there
    where the file still passes ``judge``. A node returned changes what the others' are judged
    against, so passes repeat until one returns none: every node left in f32 was then judged in
    int8 against the final file and failed. Leaves the file written with the nodes that stay."""
    kept = list(kept)
    returned = True
    while returned and kept:
        returned = False
        for node in reversed(list(kept)):
            trial = [n for n in kept if n != node]
            try:
                judged = judge(quantize(trial))
            except PtxError:  # the quantizer refuses that graph: the node stays in f32
                continue
            back = not judged.unusable
            log(f"{fmt:<11} revert pass: {node} in int8: {judged.describe()}: "
                f"{'back in int8' if back else 'stays in f32'}")
            if back:
                kept, returned = trial, True
    quantize(kept)  # the trials overwrote the file: write the one that passed again
    return kept
