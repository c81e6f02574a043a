"""Tokens' log-probabilities, torch-free, read off the same logits a step's token is chosen from: the model's
own distribution (the log-softmax of its logits), before any bias, penalty, temperature or filter changes the
choice, as vLLM's default (``raw_logprobs``) and OpenAI's ``logprobs`` report it, so that an evaluation harness
reads the model and not the request's sampling. A prompt's own tokens (OpenAI's ``echo``, what
lm-evaluation-harness's loglikelihood tasks read) come from the prompt's run, teacher-forced: token i's
log-probability is read at position i - 1; the first token has none."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class TokenLogprob:
    """One token's log-probability and the ``top`` most probable tokens' at its step ((id, log-probability),
    most probable first, equal ones by id)."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities over the last axis (the vocabulary)."""
    scores = np.asarray(logits, dtype=np.float64)
    top = scores.max(axis=-1, keepdims=True)
    shifted = scores - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def most_probable(logprobs: np.ndarray, k: int) -> tuple[tuple[int, float], ...]:
    """The ``k`` largest of one row of log-probabilities as (id, value), largest first, equal ones by id."""
    if k <= 0:
        return ()
    k = min(k, len(logprobs))
    candidates = np.argpartition(-logprobs, k - 1)[:k]  # the k largest, unordered (ties at the k-th: any of them)
    kth = logprobs[candidates].min()
    candidates = np.flatnonzero(logprobs >= kth)  # every tie of the k-th, so that the lowest ids win below
    order = candidates[np.lexsort((candidates, -logprobs[candidates]))][:k]
    return tuple((int(i), float(logprobs[i])) for i in order)


def chosen_logprobs(logits: np.ndarray, chosen: Sequence[int], top: int) -> list[TokenLogprob]:
    """Each row's chosen token's log-probability under ``logits`` [batch, vocab], with its ``top`` most probable."""
    logprobs = log_softmax(logits)
    return [TokenLogprob(int(token), float(row[int(token)]), most_probable(row, top))
            for row, token in zip(logprobs, chosen)]


def prompt_logprobs(logits: np.ndarray, ids: Sequence[int], top: int) -> list[TokenLogprob | None]:
    """A prompt's own tokens' log-probabilities from its run's logits at every position [positions, vocab]
    (the prompt's last ``len(ids)`` positions: a left-padded row's padding before them): None for the first,
    which nothing before it predicts."""
    ids = [int(t) for t in ids]
    rows = np.asarray(logits)[-len(ids):]
    taken: list[TokenLogprob | None] = [None]
    for position in range(1, len(ids)):
        logprobs = log_softmax(rows[position - 1])
        taken.append(TokenLogprob(ids[position], float(logprobs[ids[position]]), most_probable(logprobs, top)))
    return taken


__all__ = ["TokenLogprob", "chosen_logprobs", "log_softmax", "most_probable", "prompt_logprobs"]
