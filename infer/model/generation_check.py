"""A decoder run to be judged (ptx.contract.generation_judge), on any runner: the reference's own decoding
with each step's whole logits kept (``reference_decoding``), and a row's decoding of the reference's prompts,
teacher-forced on its tokens then free-running, judged (``judge_decoding``). Export's check of a decoder file
(export/decoder.py), a weight-only file's, and ``ptx verify`` of a decoder all call these, so that one file
gets one verdict wherever it is judged. numpy only: the ONNX Runtime and OpenVINO paths never import torch.

The prompts are decoded in the batches ptx.contract.generation.batches makes (the short ones in one
left-padded batch, a long one alone), every step run (no end-of-sequence stop), each through the one
Decoding (infer/model/generation.py): teacher-forcing is appending the reference's token instead of the
row's own.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ptx.contract.generation import Generation, Steps, batches
from ptx.contract.generation_judge import Bounds, DecodingJudgement, ReferenceDecoding, StepLogits, judge
from ptx.contract.names import FULL_PRECISION
from ptx.contract.schema import Tolerance
from ptx.contract.tensors import Signature

from .generation import GREEDY, Decoding, Run


def _decoded(run: Run, signature: Signature, generation: Generation, prompts: Sequence[Sequence[int]], steps: int,
             tokens: Sequence[Sequence[int]] | None, keep: bool) -> tuple[Steps, list[list[np.ndarray]], float, int]:
    """Each prompt decoded for ``steps`` steps, batch by batch: appending ``tokens`` (teacher-forced) or its own
    greedy ones. (the steps' record, each prompt's logits per step where ``keep``, the decoding steps' seconds,
    and how many runs they were)."""
    record = Steps([[] for _ in prompts], [[] for _ in prompts], [[] for _ in prompts])
    logits: list[list[np.ndarray]] = [[] for _ in prompts]
    seconds, runs = 0.0, 0
    for group in batches(prompts):
        decoding = Decoding(run, signature, generation, [prompts[k] for k in group], steps, eos=())
        for step in decoding:
            if keep:
                for row, k in enumerate(group):
                    logits[k].append(step.logits[row].copy())
            chosen = GREEDY(step.logits, decoding.history) if tokens is None else [tokens[k][step.index] for k in group]
            decoding.append(np.asarray(chosen, dtype=np.int64))
        done = decoding.decoded()
        for row, k in enumerate(group):
            record.tokens[k], record.margins[k], record.tops[k] = (done.steps.tokens[row], done.steps.margins[row],
                                                                   done.steps.tops[row])
        seconds, runs = seconds + done.decode_s, runs + done.decode_steps
    return record, logits, seconds, runs


def reference_decoding(run: Run, signature: Signature, generation: Generation, prompts: Sequence[Sequence[int]],
                       steps: int, by: str, tokens: Sequence[Sequence[int]] | None = None) -> ReferenceDecoding:
    """``run``'s decoding of ``prompts`` as the reference every row is held to: greedy, or teacher-forced on
    ``tokens`` (another decoder's: transformers' generate()), each step's whole logits kept. Where forced,
    a step whose token is not ``run``'s own top has a margin below 0 in the record."""
    record, logits, _, _ = _decoded(run, signature, generation, prompts, steps, tokens, keep=True)
    return ReferenceDecoding([list(p) for p in prompts], record, [[StepLogits.of_row(r) for r in rows]
                                                                   for rows in logits], by)


def judge_decoding(run: Run, signature: Signature, generation: Generation, reference: ReferenceDecoding, *,
                   precision: str = FULL_PRECISION, tolerance: Tolerance, bounds: Bounds | None = None,
                   steps: int | None = None) -> tuple[DecodingJudgement, float | None]:
    """``run``'s decoding of the reference's prompts, teacher-forced on its tokens then free-running, judged
    against it (ptx.contract.generation_judge.judge: f32 by ``tolerance``, a reduced ``precision`` by
    ``bounds``), for its first ``steps`` steps (default all); and the free-running steps' milliseconds per
    decoding step (None where there was one step)."""
    if steps is not None and steps < reference.step_count:
        reference = reference.truncated(steps)
    count = reference.step_count
    _, forced, _, _ = _decoded(run, signature, generation, reference.prompts, count, reference.steps.tokens, keep=True)
    own, _, seconds, runs = _decoded(run, signature, generation, reference.prompts, count, None, keep=False)
    judged = judge(reference, forced, own, precision=precision, tolerance=tolerance, bounds=bounds,
                   name=generation.logits)
    return judged, (1000 * seconds / runs if runs else None)
