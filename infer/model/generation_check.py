"""A decoder run to be judged (ptx.contract.generation_judge), on any runner: the reference's own decoding
with each step's whole logits kept (``reference_decoding``), and a row's decoding of the reference's prompts,
teacher-forced on its tokens (the prompt's own positions too, read from its pass) then free-running, judged
(``judge_decoding``). Export's check of a decoder file (export/decoder.py), a weight-only file's, and ``ptx
verify`` of a decoder all call these, so that one file gets one verdict wherever it is judged. numpy only: the ONNX Runtime and OpenVINO paths never import torch.

The prompts are decoded in the batches ptx.contract.generation.batches makes (the short ones in one
left-padded batch, a long one alone), every step run (no end-of-sequence stop), each through the one
Decoding (infer/model/generation.py): teacher-forcing is appending the reference's token instead of the
row's own. An encoder-decoder's prompts are its encoder's sources (token ids, or an array of features),
decoded in one batch through its EncoderDecoding (``encoder``: its encoder file's runner).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ptx.contract.generation import Generation, Steps, batches
from ptx.contract.generation_judge import Bounds, DecodingJudgement, judge
from ptx.contract.reference_decoding import PromptPositions, ReferenceDecoding, StepLogits
from ptx.contract.names import FULL_PRECISION
from ptx.contract.schema import Tolerance
from ptx.contract.tensors import Signature

from .encoder_decoding import EncoderDecoding, encoder_not_open, take
from ..runtime.cache import Cache
from ..runtime.memory_plan import OutOfMemoryPlan
from .decoding_memory import DecodingOutOfMemory
from .generation import GREEDY, Decoding, Run


def _decoded(run: Run, signature: Signature, generation: Generation, prompts, steps: int,
             tokens: Sequence[Sequence[int]] | None, keep: bool, encoder=None, cache: Cache | None = None,
             first: bool = False, what: str = "the judge's decoding"
             ) -> tuple[Steps, list[list[np.ndarray]], list[np.ndarray | None], float, int]:
    """Each prompt decoded for ``steps`` steps, batch by batch: appending ``tokens`` (teacher-forced) or its own
    greedy ones. (the steps' record, each prompt's logits per step where ``keep``, each prompt's logits at its
    own positions but the last where ``keep`` and the file's prompt pass gives them (a causal LM's; else None),
    the decoding steps' seconds, and how many runs they were)."""
    record = Steps([[] for _ in prompts], [[] for _ in prompts], [[] for _ in prompts])
    logits: list[list[np.ndarray]] = [[] for _ in prompts]
    own_positions: list[np.ndarray | None] = [None for _ in prompts]
    seconds, runs = 0.0, 0
    for group in decoding_groups(generation, prompts):
        try:
            decoding = _decoding(run, signature, generation, take(prompts, group), steps, encoder, keep, cache)
        except DecodingOutOfMemory as exc:  # the judge's prompts: fewer is not the user's to ask
            raise OutOfMemoryPlan(f"{what}: {exc.shortfall}: free memory, or run it on a larger machine") from None
        for step in decoding:
            if decoding.prompt_logits is not None:
                _prompt_rows(decoding, group, prompts, own_positions)
            if keep or (first and step.index == 0):  # ``first``: the first step's alone, as generation asked it
                for row, k in enumerate(group):
                    logits[k].append(step.logits[row].copy())
            chosen = GREEDY(step.logits, decoding.history) if tokens is None else [tokens[k][step.index] for k in group]
            decoding.append(np.asarray(chosen, dtype=np.int64))
        done = decoding.decoded()
        for row, k in enumerate(group):
            record.tokens[k], record.margins[k], record.tops[k] = (done.steps.tokens[row], done.steps.margins[row],
                                                                   done.steps.tops[row])
        seconds, runs = seconds + done.decode_s, runs + done.decode_steps
    return record, logits, own_positions, seconds, runs


def _prompt_rows(decoding: Decoding, group: Sequence[int], prompts, into: list[np.ndarray | None]) -> None:
    """own_prompt_rows of the decoding's prompt pass, which the decoding then lets go (the rows hold it)."""
    every, decoding.prompt_logits = decoding.prompt_logits, None
    own_prompt_rows(every, group, prompts, into)


def own_prompt_rows(every: np.ndarray, group: Sequence[int], prompts, into: list[np.ndarray | None]) -> None:
    """Each prompt of ``group`` its logits at its own positions but the last, out of its batch's left-padded prompt
    pass ``every``, into ``into`` by prompt; a pass that gave fewer positions than the batch's ids (its last only)
    gives none. Views of ``every``, which nothing writes again (a runner's outputs are its own: a graph's reused
    buffers are copied out by its runner): a copy of a 448-token pass over a vocabulary of 151,936 is 272 MB, which
    took 0.3-0.6 s a pass in a 0.5B export, where the views hold no more than the pass, its padding included."""
    width = max(len(prompts[k]) for k in group)  # the prompt pass's: its prompts left-padded to the longest
    if every.ndim != 3 or every.shape[1] != width:
        return
    for row, k in enumerate(group):
        length = len(prompts[k])
        if length > 1:
            into[k] = every[row, width - length:width - 1]


def decoding_groups(generation: Generation, prompts) -> list[list[int]]:
    """The prompts' indices in the batches they are decoded in: an encoder-decoder's sources in one batch
    (right-padded ids, or features of one shape), a causal LM's as ptx.contract.generation.batches says (each
    alone where the file takes no positions)."""
    if generation.encoder is not None:
        return [list(range(len(prompts)))]
    return batches(prompts, positions=generation.position_ids is not None)


def _decoding(run: Run, signature: Signature, generation: Generation, prompts, steps: int, encoder,
              keep: bool, cache: Cache | None = None) -> Decoding:
    """A fresh decoding of ``prompts`` for ``steps`` steps, every step run (eos=()): an encoder-decoder's through
    ``encoder`` (its encoder's runner: ``run`` and ``signature``); a causal LM's keeping its prompt's logits at
    every position where ``keep``, its cache ``cache`` (the runner's new_cache(), default numpy arrays through
    ``run``), which one decoding after another uses (each lets it go at its end)."""
    if generation.encoder is None:
        return Decoding(run, signature, generation, prompts, steps, eos=(), keep_prompt_logits=keep, cache=cache)
    if encoder is None:
        raise encoder_not_open(generation)
    return EncoderDecoding(encoder.run, encoder.signature, run, signature, generation, prompts, steps, eos=())


def reference_decoding(run: Run, signature: Signature, generation: Generation, prompts, steps: int, by: str,
                       encoder=None) -> ReferenceDecoding:
    """``run``'s greedy decoding of ``prompts`` as the reference every row is held to, each step's whole logits
    kept. An encoder-decoder's ``prompts`` are its sources (lists of ids, or an array of features) and ``encoder``
    its encoder's runner."""
    record, logits, own_positions, _, _ = _decoded(run, signature, generation, prompts, steps, None, keep=True,
                                                   encoder=encoder, what="the reference's decoding")
    kept = prompts if isinstance(prompts, np.ndarray) else [list(p) for p in prompts]
    positions = None if isinstance(prompts, np.ndarray) else prompt_positions(own_positions, kept)
    return ReferenceDecoding(kept, record, [[StepLogits.of_row(r) for r in rows] for rows in logits], by,
                             prompt_positions=positions)


def prompt_positions(own: Sequence[np.ndarray | None], prompts) -> list[PromptPositions] | None:
    """Each prompt's own positions (own_prompt_rows' logits), or None where a prompt of two tokens or more has
    none (its pass gave its last position's logits only)."""
    if all(rows is not None or len(p) < 2 for rows, p in zip(own, prompts)):
        return [PromptPositions.of_rows(rows, p) for rows, p in zip(own, prompts)]
    return None


def judge_decoding(run: Run, signature: Signature, generation: Generation, reference: ReferenceDecoding, *,
                   precision: str = FULL_PRECISION, tolerance: Tolerance, bounds: Bounds | None = None,
                   steps: int | None = None, encoder=None, cache: Cache | None = None
                   ) -> tuple[DecodingJudgement, float | None]:
    """``run``'s decoding of the reference's prompts, teacher-forced on its tokens then free-running, judged
    against it (ptx.contract.generation_judge.judge: f32 by ``tolerance``, a reduced ``precision`` by
    ``bounds``), for its first ``steps`` steps (default all); and the free-running steps' milliseconds per
    decoding step (None where there was one step). ``encoder``: an encoder-decoder's encoder runner; ``cache``:
    the row's runner's new_cache(), which its free-running decoding runs through as generation does (its
    cache held in the runtime), where the teacher-forced one reads ``run``'s arrays."""
    reference = reference.truncated(steps)
    count = reference.step_count
    _, forced, forced_prompts, _, _ = _decoded(run, signature, generation, reference.prompts, count,
                                               reference.steps.tokens, keep=True, encoder=encoder)
    own, firsts, _, seconds, runs = _decoded(run, signature, generation, reference.prompts, count, None, keep=False,
                                             encoder=encoder, cache=cache, first=True)
    judged = judge(reference, forced, own, precision=precision, tolerance=tolerance, bounds=bounds,
                   name=generation.logits, forced_prompts=forced_prompts,
                   alone=[rows[0] if rows else None for rows in firsts])
    return judged, (1000 * seconds / runs if runs else None)
