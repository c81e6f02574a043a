"""Greedy decoding over any runner of a decoder file, once for every backend: the prompt in one run
(prefill), then one token at a time, each step's present key/values fed back as the next step's past.

Several prompts of different lengths go in one batch, left-padded: their attention mask is 0 over the
padding and their positions count only the tokens they have, so each prompt's tokens are those it
would get alone (up to ties). The first step's past is empty (length 0). numpy only: the ONNX
Runtime and OpenVINO paths never import torch; eager (a module exported with its cache) is a runner
like the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.generation import Generation, Steps, check_prompts, left_padded, positions
from ptx.contract.tensors import Signature
from ptx.errors import PtxError

Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass
class Decoded:
    """A greedy decoding: each prompt's new tokens (up to and with the end-of-sequence id where one came),
    the record the judge compares (tokens and top-2 margins), and its time: the prompt's run and the
    steps after it (``decode_s`` over ``decode_steps`` runs of the whole batch)."""

    tokens: list[list[int]]
    steps: Steps
    prefill_s: float
    decode_s: float
    decode_steps: int
    logits: list = field(default_factory=list)  # each step's last logits [batch, vocab], where a caller kept them

    @property
    def decode_ms_per_token(self) -> float | None:
        return 1000 * self.decode_s / self.decode_steps if self.decode_steps else None


def empty_past(signature: Signature, generation: Generation, batch: int) -> dict[str, np.ndarray]:
    """Each past input with a past length of 0, the batch ``batch`` and its fixed sizes (heads, head size)."""
    feeds = {}
    for past, _ in generation.cache:
        sig = signature.input(past)
        shape = []
        for axis, dim in enumerate(sig.shape):
            if axis == generation.past_axis:
                shape.append(0)
            elif axis == sig.batch_axis or (axis == 0 and isinstance(dim, str)):
                shape.append(batch)
            elif isinstance(dim, str):
                raise PtxError(f"{past}: its axis {axis} ({dim}) is neither the batch nor the past length; ptx decodes a "
                               "cache of [batch, heads, past, head size]")
            else:
                shape.append(int(dim))
        feeds[past] = np.zeros(shape, dtype=sig.dtype)
    return feeds


def vocabulary(signature: Signature, generation: Generation) -> int | None:
    size = signature.output(generation.logits).shape[-1]
    return size if isinstance(size, int) else None


Choose = Callable[[np.ndarray, Sequence[Sequence[int]]], np.ndarray]


def greedy(run: Run, signature: Signature, generation: Generation, prompts: Sequence[Sequence[int]],
           max_new_tokens: int, eos: Sequence[int] | None = None, forced: Sequence[Sequence[int]] | None = None,
           on_step: Callable[[int, np.ndarray], None] | None = None, choose: Choose | None = None,
           until: Callable[[int, int], bool] | None = None) -> Decoded:
    """Greedy decoding of ``prompts`` (lists of token ids) for at most ``max_new_tokens`` each, through
    ``run`` (a runner's: {name: array} -> {name: array}) of a decoder whose tensors ``generation`` names.
    A prompt stops at an id of ``eos`` (default: the file's; ``()`` runs every step). ``forced``: the
    tokens fed back instead of the chosen ones (teacher forcing: export checks each step's logits against
    eager's on eager's own tokens); ``on_step(step, logits [batch, vocab])`` sees each step's last logits.
    ``choose(logits, history) -> ids [batch]``: the choice (default the argmax; a sampler,
    ptx.contract.sampling.Chooser), given each row's prompt and tokens so far. ``until(row, token)``: called
    for each new token of a prompt still running, in order; True ends the prompt there (a stop string)."""
    prompts = check_prompts(prompts, vocabulary(signature, generation), max_new_tokens, generation.max_positions)
    stops = set(generation.eos if eos is None else eos)
    ids, mask = left_padded(prompts, generation.pad)
    batch = len(prompts)
    feeds = {generation.input_ids: ids, generation.attention_mask: mask, **empty_past(signature, generation, batch)}
    position = positions(mask)
    if generation.position_ids:
        feeds[generation.position_ids] = position
    next_position = position[:, -1:] + 1
    tokens: list[list[int]] = [[] for _ in prompts]
    history = [list(p) for p in prompts]  # what ``choose`` sees: each prompt and its tokens so far
    margins: list[list[float]] = [[] for _ in prompts]
    tops: list[list[float]] = [[] for _ in prompts]
    done = np.zeros(batch, dtype=bool)
    prefill_s = decode_s = 0.0
    for step in range(max_new_tokens):
        start = time.perf_counter()
        out = run(feeds)
        spent = time.perf_counter() - start
        if step == 0:
            prefill_s = spent
        else:
            decode_s += spent
        logits = np.asarray(out[generation.logits])[:, -1, :]
        if on_step is not None:
            on_step(step, logits)
        chosen, top, second = _top_two(logits)
        if choose is not None:
            chosen = np.asarray(choose(logits, history), dtype=np.int64)
        for row in np.flatnonzero(~done):
            token = int(chosen[row])
            tokens[row].append(token)
            history[row].append(token)
            margins[row].append(float(top[row] - second[row]))
            tops[row].append(float(top[row]))
            if token in stops or (until is not None and until(int(row), token)):
                done[row] = True
        if done.all() or step == max_new_tokens - 1:
            break
        fed = chosen if forced is None else np.array([f[step] if step < len(f) else generation.pad for f in forced])
        fed = np.where(done, generation.pad, fed).astype(np.int64)[:, None]  # a finished prompt's row runs on, unread
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        feeds = {generation.input_ids: fed, generation.attention_mask: mask,
                 **{past: out[present] for past, present in generation.cache}}
        if generation.position_ids:
            feeds[generation.position_ids] = next_position
        next_position = next_position + 1
    runs = max(len(t) for t in tokens)  # the batch ran once per step of its longest answer
    return Decoded(tokens, Steps(tokens, margins, tops), prefill_s, decode_s, runs - 1)


def _top_two(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(argmax, its logit, the runner-up's logit) per row; the first of equal maxima, as torch.argmax."""
    chosen = np.argmax(logits, axis=-1)
    top = np.take_along_axis(logits, chosen[:, None], axis=-1)[:, 0]
    second = np.partition(logits, -2, axis=-1)[:, -2] if logits.shape[-1] > 1 else top
    return chosen, top.astype(np.float64), second.astype(np.float64)
