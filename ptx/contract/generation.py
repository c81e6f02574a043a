"""A generating model's contract, torch-free: which of a decoder file's tensors are the token ids, the
attention mask, the positions, the logits and the key/value cache (each past input and the present
output that feeds it on the next step), and the ids that end a sequence. Export writes it into the
file (``ptx.generation``); every runtime's loop (infer/model/generation.py) reads it, so a stranger
with onnxruntime and numpy can decode the file from it alone.

Also the one judge of generated tokens (``judge_tokens``), used by export and verify alike: two greedy
decodings of the same prompts agree where every step chose the same token; where they part, the step
is named with both tokens and the reference's top-2 margin, and a step whose margin lies within the
tolerance is a tie (the two may part there, said, not failed: greedy decoding cannot tell near-equal
logits apart, and the steps after a tie follow different prefixes).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import InputError

from .schema import Tolerance
from .tensors import ContractError

GENERATION_KEY = "generation"  # ptx.generation in a file: the Generation below, as JSON
# The share of steps a reduced precision (int8, bf16) must choose as the reference did, up to the first
# parting of each prompt counted as steps lost: a reduced file parts somewhere, and where matters less
# than how soon.
REDUCED_AGREEMENT = 0.5


@dataclass(frozen=True)
class Generation:
    """Which tensors of a decoder file do what: ``cache`` pairs each past key/value input with the
    present output that is fed back as it on the next step; the past length is axis ``past_axis`` of
    each. ``eos``: the ids that end a sequence (empty: it runs max_new_tokens); ``pad``: the id put
    before shorter prompts in a batch (their attention mask says 0 there). ``max_positions``: the
    longest sequence the model's positions reach (None: no limit known). ``reference``: eager's own
    greedy decoding of a few prompts as export made it (prompts, tokens, top-2 margins), which verify
    holds every runtime to."""

    cache: tuple[tuple[str, str], ...]
    input_ids: str = "input_ids"
    attention_mask: str = "attention_mask"
    position_ids: str | None = "position_ids"
    logits: str = "logits"
    past_axis: int = 2
    eos: tuple[int, ...] = ()
    pad: int = 0
    max_positions: int | None = None
    reference: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        doc = asdict(self)
        doc["cache"] = [list(p) for p in self.cache]
        doc["eos"] = list(self.eos)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str) -> "Generation":
        try:
            doc = json.loads(text)
            cache = tuple((str(a), str(b)) for a, b in doc["cache"])
            made = cls(cache=cache, input_ids=str(doc.get("input_ids", "input_ids")),
                       attention_mask=str(doc.get("attention_mask", "attention_mask")),
                       position_ids=None if doc.get("position_ids") is None else str(doc["position_ids"]),
                       logits=str(doc.get("logits", "logits")), past_axis=int(doc.get("past_axis", 2)),
                       eos=tuple(int(e) for e in doc.get("eos") or ()), pad=int(doc.get("pad", 0)),
                       max_positions=None if doc.get("max_positions") is None else int(doc["max_positions"]),
                       reference=dict(doc.get("reference") or {}))
        except (ValueError, TypeError, KeyError) as exc:
            raise ContractError(f"{where}: not a generation contract ({type(exc).__name__}: {exc}): re-export the "
                                "model with --task text-generation") from None
        if not cache:
            raise ContractError(f"{where}: a generation contract without a cache: re-export the model")
        return made

    def check(self, inputs: Sequence[str], outputs: Sequence[str], where: str) -> None:
        """Every tensor it names is the file's: else one error that says to re-export."""
        wanted_in = [self.input_ids, self.attention_mask, *([self.position_ids] if self.position_ids else []),
                     *(p for p, _ in self.cache)]
        wanted_out = [self.logits, *(q for _, q in self.cache)]
        missing = [n for n in wanted_in if n not in inputs] + [n for n in wanted_out if n not in outputs]
        if missing:
            raise ContractError(f"{where}: its generation contract names {', '.join(missing)}, which the file does not "
                                "have: re-export the model with --task text-generation")

    def with_reference(self, reference: dict) -> "Generation":
        return Generation(**{**{k: getattr(self, k) for k in self.__dataclass_fields__}, "reference": reference})

    def recorded(self) -> "tuple[list[list[int]], Steps, str] | None":
        """(the prompts, the reference's greedy steps on them, who decoded them) the file records, or None."""
        ref = self.reference
        if not ref or "prompts" not in ref:
            return None
        return [[int(t) for t in p] for p in ref["prompts"]], Steps.from_dict(ref), str(ref.get("by", "export"))


def of_metadata(metadata: Mapping[str, str], where: str) -> Generation | None:
    """The generation contract a file records (its ptx.* strings, prefix dropped), or None."""
    text = metadata.get(GENERATION_KEY)
    return Generation.from_json(text, where) if text else None


def check_prompts(prompts: Sequence[Sequence[int]], vocab: int | None, max_new_tokens: int,
                  max_positions: int | None) -> list[list[int]]:
    """The prompts as lists of ints, each within the vocabulary and long enough to start from, and short
    enough that max_new_tokens more still have positions: else one line that says what to give."""
    if isinstance(prompts, np.ndarray):
        prompts = prompts.tolist()
    if isinstance(prompts, (str, bytes)):
        raise InputError(f"{prompts[:40]!r} is text: give token ids (a list of integers), or encode the text with its "
                         "tokenizer first")
    if not prompts:
        raise InputError("no prompt: give at least one list of token ids")
    if all(isinstance(p, (int, np.integer)) for p in prompts):  # one prompt given flat
        prompts = [prompts]
    out = []
    for k, prompt in enumerate(prompts):
        if isinstance(prompt, np.ndarray):
            prompt = prompt.tolist()
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence) or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in prompt):
            raise InputError(f"prompt {k + 1}: {str(prompt)[:60]} is not a list of token ids (integers)")
        ids = [int(t) for t in prompt]
        if not ids:
            raise InputError(f"prompt {k + 1} is empty: give at least one token id")
        bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
        if bad:
            raise InputError(f"prompt {k + 1}: token id {bad[0]} is outside the vocabulary (0 to {vocab - 1 if vocab else '...'})")
        out.append(ids)
    if not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens {max_new_tokens!r}: give a whole number of at least 1")
    longest = max(len(p) for p in out)
    if max_positions is not None and longest >= max_positions:
        raise InputError(f"a prompt of {longest} tokens leaves no room for new ones: the model has {max_positions} "
                         "positions; shorten it")
    if max_positions is not None and longest + max_new_tokens > max_positions:
        raise InputError(f"a prompt of {longest} tokens and {max_new_tokens} new ones need {longest + max_new_tokens} "
                            f"positions; the model has {max_positions}: ask for at most "
                            f"{max(max_positions - longest, 0)} new tokens")
    return out


def left_padded(prompts: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [batch, longest], mask [batch, longest]) with each prompt at the right end, the pad id and a
    mask of 0 before it: every prompt's next token then sits in the last column."""
    longest = max(len(p) for p in prompts)
    ids = np.full((len(prompts), longest), pad, dtype=np.int64)
    mask = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = prompt
        mask[row, longest - len(prompt):] = 1
    return ids, mask


def positions(mask: np.ndarray) -> np.ndarray:
    """Each token's position counted over the tokens its mask keeps (transformers' cumsum - 1), padding
    at 0: a left-padded prompt's positions are those it has alone."""
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)


@dataclass
class Steps:
    """A greedy decoding's record: per prompt, the token chosen at each step and its top-2 margin (the
    chosen logit minus the runner-up's), up to the step that ended it."""

    tokens: list[list[int]]
    margins: list[list[float]]
    tops: list[list[float]]  # the chosen logit: a tie's width grows with it (the tolerance's rtol)

    def to_dict(self) -> dict:
        def rounded(rows):
            return [[round(float(v), 6) for v in row] for row in rows]
        return {"tokens": self.tokens, "margins": rounded(self.margins), "tops": rounded(self.tops)}

    @classmethod
    def from_dict(cls, doc: Mapping) -> "Steps":
        def floats(rows):
            return [[float(v) for v in row] for row in rows]
        return cls([[int(t) for t in ts] for ts in doc["tokens"]], floats(doc["margins"]), floats(doc["tops"]))


@dataclass
class Parting:
    """Where one prompt's tokens part from the reference's: the step (1-based), both tokens, and the
    reference's top-2 margin there; ``tie`` where that margin is within the tolerance."""

    prompt: int
    step: int
    want: int
    got: int
    margin: float
    tie: bool

    def describe(self) -> str:
        what = "a tie" if self.tie else "parts"
        return (f"prompt {self.prompt + 1} step {self.step}: {what}: {self.got} where the reference chose {self.want} "
                f"(its top-2 margin {self.margin:.3g})")


@dataclass
class TokenJudgement:
    """How a row's greedy tokens compare with the reference's: steps compared, steps agreeing (up to each
    prompt's first parting), the partings, and the verdict (PASS where no prompt parts but at a tie;
    for reduced precision, PASS where the agreeing share is at least REDUCED_AGREEMENT)."""

    steps: int
    agreeing: int
    partings: list[Parting]
    reduced: bool
    tolerance: Tolerance

    @property
    def share(self) -> float:
        return self.agreeing / self.steps if self.steps else 1.0

    @property
    def passed(self) -> bool:
        if self.reduced:
            return self.share >= REDUCED_AGREEMENT
        return all(p.tie for p in self.partings)

    def describe(self) -> str:
        first = min(self.partings, key=lambda p: p.step) if self.partings else None
        text = f"{self.agreeing} of {self.steps} greedy steps as the reference's"
        if self.reduced:
            text += f" ({self.share:.0%}; at least {REDUCED_AGREEMENT:.0%} held)"
        if first is not None:
            ties = sum(p.tie for p in self.partings)
            text += f"; {first.describe()}"
            if ties and not self.reduced:
                text += (f"; {ties} prompt{'s' * (ties != 1)} part{'s' * (ties == 1)} at a tie (a top-2 margin within "
                         f"twice atol {self.tolerance.atol:g} + rtol {self.tolerance.rtol:g}: said, not failed)")
        return text

    def to_dict(self) -> dict:
        return {"steps": self.steps, "agreeing": self.agreeing, "share": round(self.share, 4), "passed": self.passed,
                "reduced": self.reduced, "tolerance": self.tolerance.to_dict(),
                "partings": [asdict(p) for p in self.partings]}


def tie_width(tolerance: Tolerance, top: float) -> float:
    """The top-2 margin within which two runtimes held to ``tolerance`` may choose either token: each
    side's logits may be off by atol + rtol * |logit|."""
    return 2 * (tolerance.atol + tolerance.rtol * abs(top))


def judge_tokens(reference: Steps, got: Steps, tolerance: Tolerance, reduced: bool = False) -> TokenJudgement:
    """The one comparison of two greedy decodings of the same prompts: each prompt's tokens step by step
    until they part (the steps after follow another prefix and are not compared). A parting where the
    reference's top-2 margin is within ``tie_width`` is a tie."""
    steps = agreeing = 0
    partings = []
    for k, (want, margins, tops, have) in enumerate(zip(reference.tokens, reference.margins, reference.tops,
                                                          got.tokens)):
        steps += len(want)
        for step, (w, m, top) in enumerate(zip(want, margins, tops)):
            h = have[step] if step < len(have) else -1
            if h != w:
                partings.append(Parting(k, step + 1, int(w), int(h), float(m), bool(m <= tie_width(tolerance, top))))
                break
            agreeing += 1
    return TokenJudgement(steps, agreeing, partings, reduced, tolerance)
