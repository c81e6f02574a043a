"""The one judge of a decoding (torch-free): a row's decoding of the reference's prompts, held step by step
to the reference's, per prompt. Export's check of a decoder file, ``ptx verify`` of one, and a reduced
(weight-only) file's check all call ``judge`` (through ptx.infer.model.generation_check, which runs the
decoder).

Teacher-forced first: the row decodes the reference's own tokens (each step appends the reference's token,
not its own), so every step's logits answer the same prefix as the reference's and can be compared; a
near-tie cannot hide a difference in the steps after it. Then free-running: the row's own greedy tokens,
each prompt's first parting from the reference's said with the reference's top-2 margin there.

- A float32 row is held to the logits' tolerance at every step, the one comparison's row-scaled rule
  (ptx.contract.comparison.compare_outputs, docs/error-model.md): a step beyond it fails its prompt, named
  by prompt and step. Where the row's top token differs from the reference's within the tolerance, the step
  is a near-tie: said, not failed. A free-running parting beyond the tie width fails its prompt.
- A reduced row (bf16, an int8 or int4 file) cannot meet the f32 tolerance: it is held, per prompt, to the
  share of steps whose top token is the reference's (top-1 agreement) and the KL divergence of its
  distribution from the reference's (mean and 99th percentile over the prompt's steps), as llama.cpp's
  perplexity tool reports both for a quantized model. Each precision has its bounds (``Bounds``), which the
  file records and ``--min-agreement``/``--max-kl``/``--max-kl-p99`` set. A top token that differs where
  the reference's two logits lie within what the KL bound lets a logit move (``Bounds.tie_width``) is a
  near-tie, counted as agreeing and said.
- Per prompt, never pooled: one prompt beyond its bounds fails the row, whatever the others do.
- A NaN or an infinity in any step's logits fails the row, named by prompt and step.

What the reference keeps of each step's logits (``StepLogits``): export holds eager's whole rows in memory;
the file records, per prompt and step, the KEPT largest logits and their ids, the row's largest |logit|
(the tolerance's scale) and the logsumexp of the whole row. Whole rows would cost vocabulary x steps x
prompts floats (151,936 x 16 x 4 for a Qwen2: 39 MB of metadata); the kept ones are a few kB and hold what
the judge needs: a step's largest logits (where a fault that moves the row shows), its scale, and its
distribution as the kept tokens' probabilities plus the rest as one bucket (probability 1 - their sum,
exact from the logsumexp). KL over that bucketed distribution is a lower bound of the full one (the log-sum
inequality) and equals it where the kept tokens hold the mass, as a trained model's few top tokens do.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import PtxError

from .comparison import OutputAgreement, compare_outputs
from .error_model import SCALE_WORDS
from .generation import Parting, Steps, features_json, features_of
from .names import FULL_PRECISION
from .schema import Tolerance
from .tensors import Signature, TensorSig

KEPT = 32  # logits a file records per prompt and step (the largest; and the row's largest |logit|)


@dataclass(frozen=True)
class Bounds:
    """What a reduced precision's decoding must hold, per prompt: its top token the reference's on at least
    ``min_agreement`` of the steps (near-ties counted as agreeing), and the KL divergence of its distribution
    from the reference's (nats per step) at most ``max_kl`` on average and ``max_kl_p99`` at its 99th
    percentile."""

    min_agreement: float
    max_kl: float
    max_kl_p99: float

    @property
    def tie_width(self) -> float:
        """The top-2 margin within which a reduced row may choose the other token: KL of a small change d of
        the logits is about half d's variance under the reference's distribution, so the bound lets a logit
        move by about sqrt(2 max_kl), and two logits part by twice that."""
        return 2 * math.sqrt(2 * self.max_kl)

    def to_dict(self) -> dict:
        return {"min_agreement": self.min_agreement, "max_kl": self.max_kl, "max_kl_p99": self.max_kl_p99}

    @classmethod
    def from_dict(cls, doc: Mapping) -> "Bounds":
        return cls(float(doc["min_agreement"]), float(doc["max_kl"]), float(doc["max_kl_p99"]))


# The bounds of each reduced precision where the file records none and the user gives none. A 16-step
# prompt's figures vary more than a long text's: these sit a few times above what the precision gives a
# good model (docs/error-model.md says what was measured), far below a wrong file's (a prompt decoded on
# another prompt's past, a layer's cache lost: a KL of 1 nat or more, top tokens agreeing by chance).
# bf16, fp16 and tf32 keep 8 to 11 bits of each value; int8 and int4 weights (blocks sharing a scale) lose
# more, int4 the most.
DEFAULT_BOUNDS = {
    "bf16": Bounds(0.9, 0.02, 0.2),
    "fp16": Bounds(0.9, 0.02, 0.2),
    "tf32": Bounds(0.9, 0.02, 0.2),
    "int8": Bounds(0.85, 0.05, 0.5),
    "int4": Bounds(0.75, 0.15, 1.5),
}
LOOSEST = "int4"  # a precision ptx has no bounds for is held to the loosest it has
BOUND_OPTIONS = {"min_agreement": "--min-agreement", "max_kl": "--max-kl", "max_kl_p99": "--max-kl-p99"}


def bounds_for(precision: str, recorded: Mapping[str, Mapping] | None = None,
               given: Mapping[str, Mapping[str | None, float]] | None = None) -> Bounds:
    """The bounds ``precision`` is held to: the user's (``given``: {field: {precision or None: value}}, None
    for every precision), else what the file records (``recorded``: {precision: Bounds.to_dict()}), else
    DEFAULT_BOUNDS."""
    known = precision if precision in DEFAULT_BOUNDS or precision in (recorded or {}) else LOOSEST
    base = DEFAULT_BOUNDS.get(known, DEFAULT_BOUNDS[LOOSEST]).to_dict()
    try:
        base.update(Bounds.from_dict((recorded or {})[known]).to_dict())
    except (KeyError, TypeError, ValueError):
        pass  # none recorded for it, or an unreadable entry: the defaults
    for name, values in (given or {}).items():
        chosen = values.get(precision, values.get(None))
        if chosen is not None:
            base[name] = float(chosen)
    return Bounds.from_dict(base)


def recorded_bounds(given: Mapping[str, Mapping[str | None, float]] | None = None) -> dict[str, dict]:
    """What a file records (ptx.generation's bounds): every reduced precision's bounds, the user's where given."""
    return {precision: bounds_for(precision, None, given).to_dict() for precision in DEFAULT_BOUNDS}


def parse_bound(option: str, values: Sequence[str]) -> dict[str | None, float]:
    """``--max-kl 0.1`` (every reduced precision) or ``--max-kl int4=0.1`` (one), repeated: {precision or
    None: value}; a value that is no number >= 0 (a share above 1) refused in one line."""
    found: dict[str | None, float] = {}
    for text in values:
        precision, _, number = str(text).rpartition("=")
        if precision and precision not in DEFAULT_BOUNDS:
            raise PtxError(f"{option} {text}: {precision} is no reduced precision; give one of "
                           f"{', '.join(DEFAULT_BOUNDS)}, or the number alone for every one")
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (option == BOUND_OPTIONS["min_agreement"] and value > 1):
            raise PtxError(f"{option} {text}: give a number >= 0" + (" and <= 1 (a share of steps)" if option ==
                                                                      BOUND_OPTIONS["min_agreement"] else ""))
        found[precision or None] = value
    return found


@dataclass(frozen=True)
class StepLogits:
    """The reference's logits at one step of one prompt: ``values`` at the token ids ``ids`` (None: the whole
    row, in order) and the logsumexp of the whole row (its distribution's normaliser)."""

    ids: np.ndarray | None
    values: np.ndarray
    logsumexp: float

    @classmethod
    def of_row(cls, row: np.ndarray) -> "StepLogits":
        return cls(None, np.asarray(row), _logsumexp(np.asarray(row, np.float64)))

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

    def at(self, row: np.ndarray) -> np.ndarray:
        """``row``'s values at the ids kept here (the whole row where the reference keeps it whole)."""
        return row if self.ids is None else row[self.ids]

    @property
    def scale(self) -> float:
        """The row's largest finite |logit|: what the tolerance's rtol multiplies."""
        finite = np.abs(self.values[np.isfinite(self.values)])
        return float(finite.max()) if finite.size else 0.0

    def kl_from(self, row: np.ndarray) -> float:
        """KL(reference || ``row``'s distribution) in nats: over the kept tokens and the rest as one bucket
        where the reference keeps some (a lower bound of the full KL); exact where it keeps the whole row."""
        got = np.asarray(row, np.float64)
        log_q_all = got - _logsumexp(got)
        log_p = np.asarray(self.values, np.float64) - self.logsumexp
        log_q = self.at(log_q_all)
        p = np.exp(log_p)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = float(np.sum(np.where(p > 0, p * (log_p - log_q), 0.0)))
            if self.ids is not None:
                rest_p = 1.0 - float(p.sum())
                rest_q = 1.0 - float(np.exp(log_q).sum())
                if rest_p > 1e-12:  # below it, the rounding of the sum of the kept ones
                    kl += rest_p * (math.log(rest_p) - math.log(max(rest_q, 1e-300)))
        return max(kl, 0.0)


def _logsumexp(row: np.ndarray) -> float:
    top = float(np.max(row))
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(row - top).sum()))


def _float32_list(values: np.ndarray) -> list[float]:
    """As JSON holds float32 values: each the shortest decimal that reads back as the same float32 (``str`` of
    a numpy float32), so a file's record is exact and short."""
    return [float(str(v)) for v in np.asarray(values, np.float32)]


@dataclass
class ReferenceDecoding:
    """The decoding every row is held to: its ``prompts``, its greedy ``steps`` (each prompt's tokens, their
    top-2 margins and chosen logits), and each prompt's ``logits`` per step (StepLogits: whole rows where
    export holds them, the kept ones where a file records them; None where an older file records tokens
    only). ``by``: who decoded it; ``checked``: what else it was held to (transformers' generate()). An
    encoder-decoder's prompts are its encoder's sources: token ids, or an array of features (Whisper's)."""

    prompts: list[list[int]] | np.ndarray
    steps: Steps
    logits: list[list[StepLogits]] | None
    by: str
    checked: str = ""

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
        return ReferenceDecoding(self.prompts, cut, logits, self.by, self.checked)

    def to_record(self, count: int = KEPT) -> dict:
        """As ptx.generation's ``reference`` holds it (JSON): the prompts, the steps, each step's kept logits."""
        given = {"features": features_json(self.prompts)} if isinstance(self.prompts, np.ndarray) else \
            {"prompts": self.prompts}
        doc = {**given, **self.steps.to_dict(), "by": self.by}
        if self.checked:
            doc["checked"] = self.checked
        if self.logits is not None:
            kept = [[step.kept(count) for step in rows] for rows in self.logits]
            doc["logits"] = {"kept": count,
                             "ids": [[[int(i) for i in s.ids] if s.ids is not None else None for s in rows]
                                     for rows in kept],
                             "values": [[_float32_list(s.values) for s in rows] for rows in kept],
                             "logsumexp": [[round(s.logsumexp, 7) for s in rows] for rows in kept]}
        return doc

    @classmethod
    def from_record(cls, doc: Mapping) -> "ReferenceDecoding | None":
        """The reference a file records (ptx.generation's ``reference``), or None where it records none."""
        if not doc or ("prompts" not in doc and "features" not in doc):
            return None
        logits = None
        if doc.get("logits"):
            kept = doc["logits"]
            logits = [[StepLogits(None if ids is None else np.asarray(ids, np.int64), np.asarray(values, np.float32),
                                  float(lse)) for ids, values, lse in zip(*rows)]
                      for rows in zip(kept["ids"], kept["values"], kept["logsumexp"])]
        prompts = features_of(doc["features"]) if "features" in doc else [[int(t) for t in p] for p in doc["prompts"]]
        return cls(prompts, Steps.from_dict(doc), logits,
                   str(doc.get("by", "export")), str(doc.get("checked", "")))


@dataclass
class PromptJudgement:
    """One prompt's decoding against the reference's: how many steps, the worst step's agreement (float32
    rows: the one comparison's, merged over the steps) and the first step beyond the tolerance, the steps
    whose top token is the reference's, the near-ties (said), each step's KL divergence, the first step with
    a NaN or an infinity, and the free-running tokens' first parting."""

    prompt: int  # 0-based
    steps: int
    worst: OutputAgreement | None = None
    beyond: tuple[int, OutputAgreement] | None = None  # (1-based step, its agreement)
    same_top: int = 0
    ties: list[Parting] = field(default_factory=list)  # top tokens that differ at a near-tie: said
    flips: list[Parting] = field(default_factory=list)  # ... and beyond it
    kl: list[float] = field(default_factory=list)
    nonfinite: int | None = None  # 1-based step
    parting: Parting | None = None  # the free-running tokens' first parting

    @property
    def agreement(self) -> float:
        """The share of steps whose top token is the reference's, near-ties counted as agreeing."""
        return (self.same_top + len(self.ties)) / self.steps if self.steps else 1.0

    @property
    def kl_mean(self) -> float:
        return float(np.mean(self.kl)) if self.kl else 0.0

    @property
    def kl_p99(self) -> float:
        return float(np.percentile(self.kl, 99)) if self.kl else 0.0


@dataclass
class DecodingJudgement:
    """A row's decoding of the reference's prompts, judged (``judge``): ``precision`` f32 is held to
    ``tolerance``, a reduced one to ``bounds``; one PromptJudgement per prompt. ``failures()`` says, in
    words, each prompt that fails and where."""

    precision: str
    tolerance: Tolerance
    bounds: Bounds | None
    prompts: list[PromptJudgement]
    kept: bool = False  # the reference's logits are the kept ones (a file's record), not whole rows

    @property
    def reduced(self) -> bool:
        return self.bounds is not None

    @property
    def steps(self) -> int:
        return sum(p.steps for p in self.prompts)

    def label(self, prompt: PromptJudgement) -> str:
        return f"prompt {prompt.prompt + 1}"

    def prompt_failures(self, p: PromptJudgement) -> list[str]:
        """Why prompt ``p`` fails, in words naming its step (empty where it holds)."""
        name, found = self.label(p), []
        if p.nonfinite is not None:
            found.append(f"{name} step {p.nonfinite}: NaN or infinite logits")
        if self.bounds is None:
            if p.beyond is not None:
                step, agreement = p.beyond
                found.append(f"{name} step {step}: logits differ from the reference's by up to {agreement.max_abs:.3g} "
                             f"(atol {self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x {SCALE_WORDS} "
                             f"{agreement.magnitude:.3g}; needs atol {agreement.needed_atol:.3g})")
            if p.parting is not None and not p.parting.tie:
                found.append(f"{name}'s own tokens part at a clear margin: {p.parting.describe()}")
            return found
        b = self.bounds
        if p.agreement < b.min_agreement:
            first = p.flips[0] if p.flips else None
            found.append(f"{name}: top token the reference's on {p.agreement:.0%} of {p.steps} steps (at least "
                         f"{b.min_agreement:.0%})" + (f", first at step {first.step}: {first.got} where the reference's "
                                                       f"is {first.want} (margin {first.margin:.3g})" if first else ""))
        if p.kl_mean > b.max_kl or p.kl_p99 > b.max_kl_p99:
            worst = int(np.argmax(p.kl)) + 1
            found.append(f"{name}: KL divergence from the reference {p.kl_mean:.3g} on average, {p.kl_p99:.3g} at its "
                         f"99th percentile (at most {b.max_kl:g} and {b.max_kl_p99:g}), the most at step {worst}")
        return found

    def failures(self) -> list[str]:
        return [why for p in self.prompts for why in self.prompt_failures(p)]

    @property
    def passed(self) -> bool:
        return not self.failures()

    def describe(self) -> str:
        """The row in one line: what it was held to and how near it came; its first failure or parting."""
        count = f"{len(self.prompts)} prompt{'s' * (len(self.prompts) != 1)} x {self.prompts[0].steps if self.prompts else 0} steps"
        if self.bounds is None:
            worst = max((p.worst for p in self.prompts if p.worst is not None), key=lambda a: a.excess, default=None)
            text = (f"teacher-forced {count}, logits within atol {self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} "
                    f"x the row's largest" if not any(p.beyond for p in self.prompts) else f"teacher-forced {count}")
            if worst is not None:
                text += f" (worst |diff| {worst.max_abs:.2e}, max rel {worst.max_rel:.2e})"
        else:
            low = min(self.prompts, key=lambda p: p.agreement)
            high = max(self.prompts, key=lambda p: p.kl_mean)
            text = (f"teacher-forced {count}: top-1 at least {low.agreement:.0%} ({self.label(low)}), KL at most "
                    f"{high.kl_mean:.3g} mean, {high.kl_p99:.3g} p99 ({self.label(high)}); bounds "
                    f"{self.bounds.min_agreement:.0%}, {self.bounds.max_kl:g}, {self.bounds.max_kl_p99:g}")
        failures = self.failures()
        if failures:
            return f"{text}; {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
        ties = [t for p in self.prompts for t in p.ties]
        if ties:
            text += f"; {len(ties)} near-tie{'s' * (len(ties) != 1)} said (first: {ties[0].describe()})"
        partings = [p.parting for p in self.prompts if p.parting is not None]
        own = sum(p.steps if p.parting is None else p.parting.step - 1 for p in self.prompts)
        text += f"; own tokens: {own} of {self.steps} as the reference's"
        if partings:
            first = min(partings, key=lambda q: q.step)
            said = ties and (first.prompt, first.step) == (ties[0].prompt, ties[0].step)
            text += f", parting first at that near-tie" if said else f", {first.describe()}"
        return text

    def to_dict(self) -> dict:
        return {"precision": self.precision, "passed": self.passed, "tolerance": self.tolerance.to_dict(),
                "bounds": self.bounds.to_dict() if self.bounds else None, "kept_logits": self.kept,
                "failures": self.failures(),
                "prompts": [{"prompt": self.label(p), "steps": p.steps, "same_top": p.same_top,
                             "agreement": round(p.agreement, 4), "kl_mean": round(p.kl_mean, 6),
                             "kl_p99": round(p.kl_p99, 6), "near_ties": [t.describe() for t in p.ties],
                             "worst_abs": None if p.worst is None else p.worst.max_abs,
                             "beyond_step": p.beyond[0] if p.beyond else None, "nonfinite_step": p.nonfinite,
                             "parting": None if p.parting is None else p.parting.describe()}
                            for p in self.prompts]}


def judge(reference: ReferenceDecoding, forced: Sequence[Sequence[np.ndarray]], own: Steps, *,
          precision: str = FULL_PRECISION, tolerance: Tolerance, bounds: Bounds | None = None,
          name: str = "logits") -> DecodingJudgement:
    """``forced`` (each prompt's logits [vocab] at each step, teacher-forced on the reference's tokens) and
    ``own`` (the row's free-running greedy steps) against ``reference``: a float32 row (``precision`` f32)
    held to ``tolerance``, a reduced one to ``bounds`` (default: DEFAULT_BOUNDS[precision])."""
    if reference.logits is None:
        raise PtxError("the reference records no logits (an older file): re-export it to judge its decoding step by "
                       "step")
    reduced = precision != FULL_PRECISION
    if reduced and bounds is None:
        bounds = bounds_for(precision)
    judged = DecodingJudgement(precision, tolerance, bounds if reduced else None, [],
                               kept=any(s.ids is not None for rows in reference.logits for s in rows))
    for k, rows in enumerate(forced):
        judged.prompts.append(_prompt(k, reference, rows, own, tolerance, judged.bounds, name))
    return judged


def _prompt(k: int, reference: ReferenceDecoding, rows: Sequence[np.ndarray], own: Steps, tolerance: Tolerance,
            bounds: Bounds | None, name: str) -> PromptJudgement:
    """Prompt ``k``'s steps, teacher-forced (``rows``) and free-running (``own``), against the reference's."""
    want_tokens, margins = reference.steps.tokens[k], reference.steps.margins[k]
    kept = reference.logits[k]
    judged = PromptJudgement(k, len(want_tokens))
    for index, (row, want, token) in enumerate(zip(rows, kept, want_tokens)):
        row = np.asarray(row)
        if not np.isfinite(row).all():
            judged.nonfinite = judged.nonfinite or index + 1
            continue
        width = tie_width(tolerance, bounds, want.scale)
        top = int(np.argmax(row))
        if top == token:
            judged.same_top += 1
        else:
            margin, at_least = _margin(want, token, top)
            parted = Parting(k, index + 1, int(token), top, margin, margin <= width, over=True, at_least=at_least)
            (judged.ties if parted.tie else judged.flips).append(parted)
        if bounds is not None:
            judged.kl.append(want.kl_from(row))
            continue
        agreement = compare_outputs({name: want.at(row)[None]}, {name: want.values[None]}, _one_row(name),
                                    lambda _: tolerance)[name]
        judged.worst = copy.copy(agreement) if judged.worst is None else judged.worst.merge(agreement)
        if not agreement.ok and judged.beyond is None:
            judged.beyond = (index + 1, agreement)
    judged.parting = first_parting(k, want_tokens, margins, own.tokens[k] if k < len(own.tokens) else [],
                                    [tie_width(tolerance, bounds, s.scale) for s in kept])
    return judged


def _one_row(name: str) -> Signature:
    """What a step's compared logits are to the one comparison (compare_outputs): one row of ``name``, [1, the
    reference's kept tokens], its batch first (the row's largest |logit| is among them: its scale)."""
    return Signature((), (TensorSig(name, "float32", (1, "kept"), batch_axis=0),))


def _margin(want: StepLogits, token: int, top: int) -> tuple[float, bool]:
    """The reference's logit of its token minus its logit of the row's top token, and whether that is a lower
    bound: where the reference did not keep the row's top (it keeps its KEPT largest logits), that logit is at
    most the smallest of those, so the margin is at least the reference's token's over it. (A margin taken
    as infinite there called every such step a clear parting: a model whose distribution is flat, as random
    weights make it, failed int4 on a KL divergence a thousandth of its bound.)"""
    if want.ids is None:
        return float(want.values[token]) - float(want.values[top]), False
    kept = dict(zip(want.ids.tolist(), want.values.tolist()))
    mine = kept.get(int(token), float(want.values.max()))  # the reference's token is its top: always kept
    if int(top) in kept:
        return mine - kept[int(top)], False
    largest = np.sort(want.values)[::-1]
    return mine - float(largest[min(KEPT, largest.size) - 1]), True


def tie_width(tolerance: Tolerance, bounds: Bounds | None, scale: float) -> float:
    """The top-2 margin within which a row may choose the other token: twice what one logit may move (a
    float32 row: atol + rtol x the row's scale; a reduced row: what its KL bound lets a logit move)."""
    if bounds is not None:
        return bounds.tie_width
    return 2 * (tolerance.atol + tolerance.rtol * scale)


def first_parting(k: int, want: Sequence[int], margins: Sequence[float], got: Sequence[int],
                   widths: Sequence[float]) -> Parting | None:
    """Where the row's own greedy tokens first part from the reference's (the steps after follow another
    prefix and are not compared), with the reference's top-2 margin there; a tie where it is within width."""
    for step, (w, m, width) in enumerate(zip(want, margins, widths)):
        h = got[step] if step < len(got) else -1
        if h != w:
            return Parting(k, step + 1, int(w), int(h), float(m), bool(m <= width))
    return None


def recorded_reference(generation) -> ReferenceDecoding | None:
    """The reference decoding a generation contract records (ptx.generation's ``reference``), or None."""
    return ReferenceDecoding.from_record(generation.reference) if generation is not None else None
