"""The one judge of a decoding (torch-free): a row's decoding of the reference's prompts, held step by step
to the reference's, per prompt. Export's check of a decoder file, ``ptx verify`` of one, and a reduced
(weight-only) file's check all call ``judge`` (through ptx.infer.model.generation_check, which runs the
decoder).

Teacher-forced first: the row decodes the reference's own tokens (each step appends the reference's token,
not its own), so every step's logits answer the same prefix as the reference's and can be compared; a
near-tie cannot hide a difference in the steps after it. The prompt's own positions are teacher-forced too
(its pass computes the logits at every position, each answering the prompt so far, as llama.cpp's
perplexity tool reads a text): a prompt's judged positions are those of the prompt but its last, then its
steps (``ptx.contract.generation.JUDGED_POSITIONS`` in all, where the model has that many positions), so a
fault that shows only inside a long pass (a mask that lets a position see the ones after it) is caught, and
a reduced row's agreement and KL are read over hundreds of positions, not 64 steps. Then free-running: the
row's own greedy tokens, each prompt's first parting from the reference's said with the reference's top-2
margin there. Each prompt's perplexity ratio (the row's perplexity of the tokens that follow each position,
the prompt's and the reference's, over the reference's) is said beside a reduced row's KL.

- A float32 row is held to the logits' tolerance at every position, the one comparison's row-scaled rule
  (ptx.contract.comparison.compare_outputs, docs/error-model.md): a position beyond it fails its prompt,
  named by prompt and position or step. Where the row's top token differs from the reference's within the
  tolerance, the position is a near-tie: said, not failed. A free-running parting beyond the tie width fails its prompt.
- A reduced row (bf16, an int8 or int4 file) cannot meet the f32 tolerance: it is held, per prompt, to the
  share of positions whose top token is the reference's (top-1 agreement) and the KL divergence of its
  distribution from the reference's (mean and 99th percentile over the prompt's positions), as llama.cpp's
  perplexity tool reports both for a quantized model. Each precision has its bounds (``Bounds``), which the
  file records and ``--min-agreement``/``--max-kl``/``--max-kl-p99`` set. A top token that differs where
  the reference's two logits lie within what the KL bound lets a logit move (``Bounds.tie_width``) is a
  near-tie, counted as agreeing and said.
- Per prompt, never pooled: one prompt beyond its bounds fails the row, whatever the others do.
- A NaN or an infinity in any position's logits fails the row, named by prompt and position or step.

What the reference keeps of each step and position, and how a file records it: ptx.contract.reference_decoding.
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
from .generation import Parting, Steps
from .names import FULL_PRECISION
from .reference_decoding import KEPT, ReferenceDecoding, StepLogits, logsumexp
from .schema import Tolerance
from .tensors import Signature, TensorSig
from .verdict import in_one_line


@dataclass(frozen=True)
class Bounds:
    """What a reduced precision's decoding must hold, per prompt: its top token the reference's on at least
    ``min_agreement`` of the positions (near-ties counted as agreeing), and the KL divergence of its distribution
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


@dataclass
class PromptJudgement:
    """One prompt's decoding against the reference's: its judged positions (``prompt_positions`` of the prompt's
    own, then ``steps`` decoding steps, indexed 1-based over both: ``where`` names one), the worst position's
    agreement (float32 rows: the one comparison's, merged) and the first one beyond the tolerance, the positions
    whose top token is the reference's, the near-ties (said), each position's KL divergence and both sides'
    negative log-likelihood of the token that follows it, the first position with a NaN or an infinity, and
    the free-running tokens' first parting."""

    prompt: int  # 0-based
    steps: int
    prompt_positions: int = 0
    worst: OutputAgreement | None = None
    beyond: tuple[int, OutputAgreement] | None = None  # (1-based position, its agreement)
    same_top: int = 0
    ties: list[Parting] = field(default_factory=list)  # top tokens that differ at a near-tie: said
    flips: list[Parting] = field(default_factory=list)  # ... and beyond it
    kl: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)  # the row's -log p of the next token, per position
    nll_reference: list[float] = field(default_factory=list)  # the reference's
    nonfinite: int | None = None  # 1-based position
    parting: Parting | None = None  # the free-running tokens' first parting
    # the first step's logits as generation's prompt run asks them (the last position alone, where the file takes
    # logits_to_keep) against the same position asked with every one: the row's two ways of running one prefix,
    # a float32 row's by the tolerance, a reduced one's (whose kernels may round a lone row otherwise) by its KL
    alone: OutputAgreement | None = None
    alone_kl: float | None = None

    @property
    def positions(self) -> int:
        return self.prompt_positions + self.steps

    def where(self, index: int) -> str:
        """The 1-based judged position ``index`` in words: a position of the prompt, or a decoding step."""
        if index <= self.prompt_positions:
            return f"position {index}"
        return f"step {index - self.prompt_positions}"

    @property
    def agreement(self) -> float:
        """The share of positions whose top token is the reference's, near-ties counted as agreeing."""
        return (self.same_top + len(self.ties)) / self.positions if self.positions else 1.0

    @property
    def kl_mean(self) -> float:
        return float(np.mean(self.kl)) if self.kl else 0.0

    @property
    def kl_p99(self) -> float:
        return float(np.percentile(self.kl, 99)) if self.kl else 0.0

    @property
    def perplexity_ratio(self) -> float | None:
        """The row's perplexity of the tokens that follow each judged position over the reference's (1: the
        same), or None where no position was read."""
        if not self.nll or len(self.nll) != len(self.nll_reference):
            return None
        return math.exp(float(np.mean(self.nll)) - float(np.mean(self.nll_reference)))


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

    @property
    def positions(self) -> int:
        return sum(p.positions for p in self.prompts)

    @property
    def prompt_positions(self) -> int:
        """The judged positions of the prompts' own passes (0 where the reference records none)."""
        return sum(p.prompt_positions for p in self.prompts)

    def label(self, prompt: PromptJudgement) -> str:
        return f"prompt {prompt.prompt + 1}"

    def counted(self) -> str:
        """What was judged, in words: the prompts, their steps, and the prompts' own positions where read."""
        prompts = f"{len(self.prompts)} prompt{'s' * (len(self.prompts) != 1)}"
        steps = f"{self.prompts[0].steps if self.prompts else 0} steps"
        if not self.prompt_positions:
            return f"{prompts} x {steps}"
        return (f"{prompts}, {self.positions} positions ({self.prompt_positions} in the prompt"
                f"{'s' * (len(self.prompts) != 1)}, "
                f"{steps}{' each' * (len(self.prompts) != 1)})")

    def prompt_failures(self, p: PromptJudgement) -> list[str]:
        """Why prompt ``p`` fails, in words naming its position or step (empty where it holds): against the
        reference first, then its first step asked alone against itself."""
        found = self._against_reference(p)
        said = (f"{self.label(p)} step 1: its logits asked alone, as generation asks them, differ from the same "
                "position's asked with every position")
        if p.alone is not None and not p.alone.ok:
            found.append(f"{said} by up to {p.alone.max_abs:.3g} (atol {self.tolerance.atol:g} + rtol "
                         f"{self.tolerance.rtol:g} x {SCALE_WORDS} {p.alone.magnitude:.3g})")
        if p.alone_kl is not None and self.bounds is not None and p.alone_kl > self.bounds.max_kl_p99:
            found.append(f"{said}: KL divergence {p.alone_kl:.3g} (at most "
                         f"{self.bounds.max_kl_p99:g}, the bound of any one position)")
        return found

    def _against_reference(self, p: PromptJudgement) -> list[str]:
        name, found = self.label(p), []
        if p.nonfinite is not None:
            found.append(f"{name} {p.where(p.nonfinite)}: NaN or infinite logits")
        if self.bounds is None:
            if p.beyond is not None:
                index, agreement = p.beyond
                found.append(f"{name} {p.where(index)}: logits differ from the reference's by up to "
                             f"{agreement.max_abs:.3g} (atol {self.tolerance.atol:g} + rtol {self.tolerance.rtol:g} x "
                             f"{SCALE_WORDS} {agreement.magnitude:.3g}; needs atol {agreement.needed_atol:.3g})")
            if p.parting is not None and not p.parting.tie:
                found.append(f"{name}'s own tokens part at a clear margin: {p.parting.describe()}")
            return found
        b = self.bounds
        if p.agreement < b.min_agreement:
            first = p.flips[0] if p.flips else None
            found.append(f"{name}: top token the reference's on {p.agreement:.0%} of {p.positions} positions (at least "
                         f"{b.min_agreement:.0%})" + (f", first at {first.place}: {first.got} where the reference's "
                                                       f"is {first.want} (margin {first.margin:.3g})" if first else ""))
        if p.kl_mean > b.max_kl or p.kl_p99 > b.max_kl_p99:
            worst = int(np.argmax(p.kl)) + 1
            found.append(f"{name}: KL divergence from the reference {p.kl_mean:.3g} on average, {p.kl_p99:.3g} at its "
                         f"99th percentile (at most {b.max_kl:g} and {b.max_kl_p99:g}), the most at {p.where(worst)}")
        return found

    def failures(self) -> list[str]:
        """Why the row fails, the worst prompt first (the one line a verdict says is its first failure): at a
        reduced precision, a NaN or an infinity first, then the lowest top-1 agreement, then the largest mean KL;
        at f32, in the prompts' order."""
        ranked = self.prompts if self.bounds is None else sorted(
            self.prompts, key=lambda p: (p.nonfinite is None, p.agreement, -np.nan_to_num(p.kl_mean, nan=np.inf)))
        return [why for p in ranked for why in self.prompt_failures(p)]

    @property
    def passed(self) -> bool:
        return not self.failures()

    def describe(self) -> str:
        """The row in one line: what it was held to and how near it came; its first failure or parting."""
        failures = self.failures()
        return self.summary() + (f"; {in_one_line(failures)}" if failures else "")

    def summary(self) -> str:
        """What the row was held to and how near it came, its failures left to the caller (a verdict says them as
        its reasons); where it passed, its near-ties and its own tokens' first parting."""
        count = self.counted()
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
            ratios = [p for p in self.prompts if p.perplexity_ratio is not None]
            if ratios:
                most = max(ratios, key=lambda p: p.perplexity_ratio)
                text += f"; perplexity at most x{most.perplexity_ratio:.4f} the reference's ({self.label(most)})"
        if self.failures():
            return text
        ties = [t for p in self.prompts for t in p.ties]
        if ties:
            text += f"; {len(ties)} near-tie{'s' * (len(ties) != 1)} said (first: {ties[0].describe()})"
        partings = [p.parting for p in self.prompts if p.parting is not None]
        own = sum(p.steps if p.parting is None else p.parting.step - 1 for p in self.prompts)
        text += f"; own tokens: {own} of {self.steps} as the reference's"
        if partings:
            first = min(partings, key=lambda q: q.step)
            said = ties and (first.prompt, first.step, False) == (ties[0].prompt, ties[0].step, ties[0].position)
            text += ", parting first at that near-tie" if said else f", {first.describe()}"
        return text

    def to_dict(self) -> dict:
        return {"precision": self.precision, "passed": self.passed, "tolerance": self.tolerance.to_dict(),
                "bounds": self.bounds.to_dict() if self.bounds else None, "kept_logits": self.kept,
                "failures": self.failures(),
                "prompts": [{"prompt": self.label(p), "steps": p.steps, "prompt_positions": p.prompt_positions,
                             "positions": p.positions, "same_top": p.same_top,
                             "agreement": round(p.agreement, 4), "kl_mean": round(p.kl_mean, 6),
                             "kl_p99": round(p.kl_p99, 6), "perplexity_ratio": None if p.perplexity_ratio is None
                             else round(p.perplexity_ratio, 6), "near_ties": [t.describe() for t in p.ties],
                             "worst_abs": None if p.worst is None else p.worst.max_abs,
                             "alone_abs": None if p.alone is None else p.alone.max_abs,
                             "alone_kl": None if p.alone_kl is None else round(p.alone_kl, 9),
                             "beyond": p.where(p.beyond[0]) if p.beyond else None,
                             "nonfinite": None if p.nonfinite is None else p.where(p.nonfinite),
                             "parting": None if p.parting is None else p.parting.describe()}
                            for p in self.prompts]}


def judge(reference: ReferenceDecoding, forced: Sequence[Sequence[np.ndarray]], own: Steps, *,
          precision: str = FULL_PRECISION, tolerance: Tolerance, bounds: Bounds | None = None,
          name: str = "logits", forced_prompts: Sequence[np.ndarray | None] | None = None,
          alone: Sequence[np.ndarray | None] | None = None) -> DecodingJudgement:
    """``forced`` (each prompt's logits [vocab] at each step, teacher-forced on the reference's tokens) and
    ``own`` (the row's free-running greedy steps) against ``reference``: a float32 row (``precision`` f32)
    held to ``tolerance``, a reduced one to ``bounds`` (default: DEFAULT_BOUNDS[precision]). ``forced_prompts``:
    each prompt's logits at its own positions but the last [positions, vocab] (None for a prompt whose pass
    gave its last position's only), judged where the reference records them. ``alone``: each prompt's first step's
    logits [vocab] as the free-running decoding asked them (generation's way: the last position alone), against
    the teacher-forced first step's: a float32 row's held to ``tolerance``, a reduced one's KL to the bound of
    any one position (``bounds.max_kl_p99``)."""
    if reference.logits is None:
        raise PtxError("the reference records no logits (an older file): re-export it to judge its decoding step by "
                       "step")
    reduced = precision != FULL_PRECISION
    if reduced and bounds is None:
        bounds = bounds_for(precision)
    judged = DecodingJudgement(precision, tolerance, bounds if reduced else None, [],
                               kept=any(s.ids is not None for rows in reference.logits for s in rows))
    for k, rows in enumerate(forced):
        prompt_rows = forced_prompts[k] if forced_prompts is not None and k < len(forced_prompts) else None
        judged.prompts.append(_prompt(k, reference, rows, prompt_rows, own, tolerance, judged.bounds, name))
        first = alone[k] if alone is not None and k < len(alone) else None
        if first is not None and len(rows) and np.isfinite(first).all() and np.isfinite(rows[0]).all():
            if judged.bounds is None:
                judged.prompts[-1].alone = compare_outputs({name: np.asarray(first)[None]},
                                                           {name: np.asarray(rows[0])[None]}, _one_row(name),
                                                           lambda _: tolerance)[name]
            else:
                judged.prompts[-1].alone_kl = _kl(rows[0], first)
    return judged


def _kl(want: np.ndarray, got: np.ndarray) -> float:
    """KL(``want`` || ``got``) in nats, of two rows of logits."""
    p, q = np.asarray(want, np.float64), np.asarray(got, np.float64)
    log_p, log_q = p - logsumexp(p), q - logsumexp(q)
    return float(np.sum(np.exp(log_p) * (log_p - log_q)))


def _prompt(k: int, reference: ReferenceDecoding, rows: Sequence[np.ndarray], prompt_rows: np.ndarray | None,
            own: Steps, tolerance: Tolerance, bounds: Bounds | None, name: str) -> PromptJudgement:
    """Prompt ``k``'s positions, teacher-forced (``prompt_rows`` at the prompt's own, where the reference records
    them; ``rows`` at its steps) and its free-running steps (``own``), against the reference's."""
    want_tokens, margins = reference.steps.tokens[k], reference.steps.margins[k]
    kept = reference.logits[k]
    tops = reference.steps.tops[k] if k < len(reference.steps.tops) else []
    judged = PromptJudgement(k, len(want_tokens))
    recorded = reference.prompt_positions[k] if reference.prompt_positions and k < len(reference.prompt_positions) \
        else None
    if recorded is not None and prompt_rows is not None and len(prompt_rows) == len(recorded.logits):
        judged.prompt_positions = len(recorded.logits)
        for index, (row, want, token, logit) in enumerate(zip(prompt_rows, recorded.logits, reference.prompts[k][1:],
                                                               recorded.next_logits)):
            _position(judged, index + 1, row, want, want.top, int(token), logit, tolerance, bounds, name)
    for index, (row, want, token) in enumerate(zip(rows, kept, want_tokens)):
        logit = tops[index] if index < len(tops) else None
        _position(judged, judged.prompt_positions + index + 1, row, want, int(token), int(token), logit, tolerance,
                  bounds, name)
    judged.parting = first_parting(k, want_tokens, margins, own.tokens[k] if k < len(own.tokens) else [],
                                    [tie_width(tolerance, bounds, s.scale) for s in kept])
    return judged


def _position(judged: PromptJudgement, index: int, row: np.ndarray, want: StepLogits, token: int, following: int,
              reference_logit: float | None, tolerance: Tolerance, bounds: Bounds | None, name: str) -> None:
    """One judged position (1-based ``index`` over the prompt's positions then its steps): the row's logits
    there against the reference's ``want``, whose chosen token is ``token``; ``following`` is the token fed
    next (the prompt's next id, or the step's token) and ``reference_logit`` the reference's logit of it."""
    row = np.asarray(row)
    if not np.isfinite(row).all():
        judged.nonfinite = judged.nonfinite or index
        return
    width = tie_width(tolerance, bounds, want.scale)
    top = int(np.argmax(row))
    if top == token:
        judged.same_top += 1
    else:
        margin, at_least = _margin(want, token, top)
        in_prompt = index <= judged.prompt_positions
        step = index if in_prompt else index - judged.prompt_positions
        parted = Parting(judged.prompt, step, int(token), top, margin, margin <= width, over=True, at_least=at_least,
                         position=in_prompt)
        (judged.ties if parted.tie else judged.flips).append(parted)
    wide = np.asarray(row, np.float64)
    normaliser = logsumexp(wide)  # read by the perplexity and the KL alike: once per position
    if reference_logit is not None:
        judged.nll.append(normaliser - float(wide[following]))
        judged.nll_reference.append(want.logsumexp - float(reference_logit))
    if bounds is not None:
        judged.kl.append(want.kl_from(wide, normaliser))
        return
    agreement = compare_outputs({name: want.at(row)[None]}, {name: want.values[None]}, _one_row(name),
                                lambda _: tolerance)[name]
    judged.worst = copy.copy(agreement) if judged.worst is None else judged.worst.merge(agreement)
    if not agreement.ok and judged.beyond is None:
        judged.beyond = (index, agreement)


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
