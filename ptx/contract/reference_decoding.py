"""What a decoder's file records of its reference decoding (torch-free): the prompts, the reference's greedy
steps, and its logits at each step and at each prompt's own positions, as the one judge of a decoding
(ptx.contract.generation_judge) reads them. The file carries it in its generation contract (ptx.generation's
``reference``), so a stranger's file is judged against eager's decoding without eager.

What the reference keeps of each step's logits (``StepLogits``): export holds eager's whole rows in memory;
the file records, per prompt and step, the KEPT largest logits and their ids, the row's largest |logit|
(the tolerance's scale) and the logsumexp of the whole row. Whole rows would cost vocabulary x steps x
prompts floats (151,936 x 16 x 4 for a Qwen2: 39 MB of metadata); the kept ones are about 440 bytes a
position (some 230 kB for 530) and hold what the judge needs: a step's largest logits (where a fault that
moves the row shows), its scale, and its distribution as the kept tokens' probabilities plus the rest as one
bucket (probability 1 - their sum, exact from the logsumexp). A prompt's own positions are recorded the same
way (``PromptPositions``), with the reference's logit of the prompt's next id (what the perplexity reads).
KL over that bucketed distribution is a lower bound of the full one (the log-sum inequality) and equals it
where the kept tokens hold the mass, as a trained model's few top tokens do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .generation import Steps, features_json, features_of

KEPT = 32  # logits a file records per prompt and step (the largest; and the row's largest |logit|)


@dataclass(frozen=True)
class StepLogits:
    """The reference's logits at one step of one prompt: ``values`` at the token ids ``ids`` (None: the whole
    row, in order) and the logsumexp of the whole row (its distribution's normaliser)."""

    ids: np.ndarray | None
    values: np.ndarray
    logsumexp: float

    @classmethod
    def of_row(cls, row: np.ndarray) -> "StepLogits":
        return cls(None, np.asarray(row), logsumexp(np.asarray(row, np.float64)))

    def kept(self, count: int = KEPT) -> "StepLogits":
        """The ``count`` largest logits and the row's largest |logit| (the tolerance's scale: a row's most
        negative logit may be its largest in size), with the whole row's logsumexp."""
        if self.ids is not None or self.values.size <= count:
            return self
        row = self.values
        finite = np.where(np.isfinite(row), row, -np.inf)
        ids = np.argpartition(-finite, count - 1)[:count]
        widest = int(np.argmax(np.where(np.isfinite(row), np.abs(row), -1)))
        if widest not in ids:
            ids = np.append(ids, widest)
        ids = ids[np.argsort(-finite[ids], kind="stable")]
        return StepLogits(ids.astype(np.int64), row[ids], self.logsumexp)

    @property
    def top(self) -> int:
        """The token of the largest logit (the first of equal ones, as argmax)."""
        best = int(np.argmax(np.where(np.isfinite(self.values), self.values, -np.inf)))
        return best if self.ids is None else int(self.ids[best])

    def at(self, row: np.ndarray) -> np.ndarray:
        """``row``'s values at the ids kept here (the whole row where the reference keeps it whole)."""
        return row if self.ids is None else row[self.ids]

    @property
    def scale(self) -> float:
        """The row's largest finite |logit|: what the tolerance's rtol multiplies."""
        finite = np.abs(self.values[np.isfinite(self.values)])
        return float(finite.max()) if finite.size else 0.0

    def kl_from(self, row: np.ndarray, normaliser: float | None = None) -> float:
        """KL(reference || ``row``'s distribution) in nats: over the kept tokens and the rest as one bucket
        where the reference keeps some (a lower bound of the full KL); exact where it keeps the whole row.
        ``normaliser``: the row's logsumexp where the caller has it (the judge reads it for the perplexity too)."""
        got = np.asarray(row, np.float64)
        log_p = np.asarray(self.values, np.float64) - self.logsumexp
        log_q = self.at(got) - (logsumexp(got) if normaliser is None else normaliser)
        p = np.exp(log_p)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = float(np.sum(np.where(p > 0, p * (log_p - log_q), 0.0)))
            if self.ids is not None:
                rest_p = 1.0 - float(p.sum())
                rest_q = 1.0 - float(np.exp(log_q).sum())
                if rest_p > 1e-12:  # below it, the rounding of the sum of the kept ones
                    kl += rest_p * (math.log(rest_p) - math.log(max(rest_q, 1e-300)))
        return max(kl, 0.0)


def logsumexp(row: np.ndarray) -> float:
    top = float(np.max(row))
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(row - top).sum()))


def _float32_list(values: np.ndarray) -> list[float]:
    """As JSON holds float32 values: each the shortest decimal that reads back as the same float32 (``str`` of
    a numpy float32), so a file's record is exact and short."""
    return [float(str(v)) for v in np.asarray(values, np.float32)]


@dataclass(frozen=True)
class PromptPositions:
    """The reference at one prompt's own positions but its last (whose logits are the first step's), teacher-
    forced on the prompt: each position's logits (kept: StepLogits.kept) and its logit of the prompt's next id."""

    logits: list[StepLogits]
    next_logits: list[float]

    @classmethod
    def of_rows(cls, rows: np.ndarray | None, prompt: Sequence[int]) -> "PromptPositions":
        """Of a decoder's logits [positions, vocab] at a prompt's positions but its last (None: a prompt of one
        token, which has no position of its own)."""
        rows = () if rows is None else rows
        return cls([StepLogits.of_row(row).kept() for row in rows],
                   [float(row[token]) for row, token in zip(rows, prompt[1:])])


def _kept_json(rows: Sequence[StepLogits], count: int) -> dict:
    kept = [step.kept(count) for step in rows]
    return {"ids": [[int(i) for i in s.ids] if s.ids is not None else None for s in kept],
            "values": [_float32_list(s.values) for s in kept],
            "logsumexp": [round(s.logsumexp, 7) for s in kept]}


def _kept_of(doc: Mapping) -> list[StepLogits]:
    return [StepLogits(None if ids is None else np.asarray(ids, np.int64), np.asarray(values, np.float32), float(lse))
            for ids, values, lse in zip(doc["ids"], doc["values"], doc["logsumexp"])]


@dataclass
class ReferenceDecoding:
    """The decoding every row is held to: its ``prompts``, its greedy ``steps`` (each prompt's tokens, their
    top-2 margins and chosen logits), and each prompt's ``logits`` per step (StepLogits: whole rows where
    export holds them, the kept ones where a file records them; None where an older file records tokens
    only). ``by``: who decoded it; ``checked``: what else it was held to (transformers' generate(), which an
    encoder-decoder's eager decoding is held to; a causal LM's reference is generate() itself). An
    encoder-decoder's prompts are its encoder's sources: token ids, or an array of features (Whisper's).
    ``prompt_positions``: each prompt's own positions (None where a file records none: an older file, an
    encoder-decoder, whose decoder's prompt is its start ids)."""

    prompts: list[list[int]] | np.ndarray
    steps: Steps
    logits: list[list[StepLogits]] | None
    by: str
    checked: str = ""
    prompt_positions: list[PromptPositions] | None = None

    @property
    def step_count(self) -> int:
        return len(self.steps.tokens[0]) if self.steps.tokens else 0

    def truncated(self, steps: int | None) -> "ReferenceDecoding":
        """The first ``steps`` steps of every prompt (itself where ``steps`` is None or no fewer than it has)."""
        if steps is None or steps >= self.step_count:
            return self
        cut = Steps([t[:steps] for t in self.steps.tokens], [m[:steps] for m in self.steps.margins],
                    [t[:steps] for t in self.steps.tops])
        logits = None if self.logits is None else [rows[:steps] for rows in self.logits]
        return ReferenceDecoding(self.prompts, cut, logits, self.by, self.checked, self.prompt_positions)

    def to_record(self, count: int = KEPT) -> dict:
        """As ptx.generation's ``reference`` holds it (JSON): the prompts, the steps, each step's kept logits."""
        given = {"features": features_json(self.prompts)} if isinstance(self.prompts, np.ndarray) else \
            {"prompts": self.prompts}
        doc = {**given, **self.steps.to_dict(), "by": self.by}
        if self.checked:
            doc["checked"] = self.checked
        if self.logits is not None:
            per_prompt = [_kept_json(rows, count) for rows in self.logits]
            doc["logits"] = {"kept": count, **{key: [p[key] for p in per_prompt] for key in ("ids", "values",
                                                                                           "logsumexp")}}
        if self.prompt_positions is not None:
            doc["prompt_positions"] = [{**_kept_json(p.logits, count), "next": _float32_list(p.next_logits)}
                                       for p in self.prompt_positions]
        return doc

    @classmethod
    def from_record(cls, doc: Mapping) -> "ReferenceDecoding | None":
        """The reference a file records (ptx.generation's ``reference``), or None where it records none."""
        if not doc or ("prompts" not in doc and "features" not in doc):
            return None
        logits = None
        if doc.get("logits"):
            kept = doc["logits"]
            logits = [_kept_of({"ids": ids, "values": values, "logsumexp": lse})
                      for ids, values, lse in zip(kept["ids"], kept["values"], kept["logsumexp"])]
        positions = None
        if doc.get("prompt_positions"):
            positions = [PromptPositions(_kept_of(p), [float(v) for v in p["next"]]) for p in doc["prompt_positions"]]
        prompts = features_of(doc["features"]) if "features" in doc else [[int(t) for t in p] for p in doc["prompts"]]
        return cls(prompts, Steps.from_dict(doc), logits,
                   str(doc.get("by", "export")), str(doc.get("checked", "")), positions)


def recorded_reference(generation) -> ReferenceDecoding | None:
    """The reference decoding a generation contract records (ptx.generation's ``reference``), or None."""
    return ReferenceDecoding.from_record(generation.reference) if generation is not None else None
