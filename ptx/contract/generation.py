"""A generating model's contract, torch-free: which of a decoder file's tensors are the token ids, the
attention mask, the positions, the logits and the key/value cache (each past input and the present
output that feeds it on the next step), and the ids that end a sequence. Export writes it into the
file (``ptx.generation``); every runtime's loop (infer/model/generation.py) reads it, so a stranger
with onnxruntime and numpy can decode the file from it alone.

A decoder without that record (a user's file in Optimum's layout: past_key_values.N.key in,
present.N.key out) is read by its tensors' names (``of_layout``). The prompts a decoding is judged on
(``judging_prompts``) and the record of a greedy decoding (``Steps``, ``Parting``) are here too; the judge
of a decoding is ptx.contract.generation_judge.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import InputError

from .tensors import ContractError

GENERATION_KEY = "generation"  # ptx.generation in a file: the Generation below, as JSON


@dataclass(frozen=True)
class Generation:
    """Which tensors of a decoder file do what: ``cache`` pairs each past key/value input with the
    present output that is fed back as it on the next step; the past length is axis ``past_axis`` of
    each. ``eos``: the ids that end a sequence (empty: it runs max_new_tokens); ``pad``: the id put
    before shorter prompts in a batch (their attention mask says 0 there). ``max_positions``: the
    longest sequence the model's positions reach (None: no limit known). ``reference``: eager's own
    greedy decoding of a few prompts as export made it (prompts, tokens, top-2 margins, each step's
    largest logits: ptx.contract.generation_judge.ReferenceDecoding), which verify holds every runtime to;
    ``bounds``: what each reduced precision's decoding must hold (generation_judge.Bounds, by precision)."""

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
    bounds: dict = field(default_factory=dict, compare=False)  # {precision: what a reduced row must hold}

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
                       reference=dict(doc.get("reference") or {}), bounds=dict(doc.get("bounds") or {}))
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

    def with_reference(self, reference: dict, bounds: dict | None = None) -> "Generation":
        return Generation(**{**{k: getattr(self, k) for k in self.__dataclass_fields__}, "reference": reference,
                             **({"bounds": bounds} if bounds is not None else {})})

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


# Optimum's names for a decoder's cache: past_key_values.0.key in, present.0.key out (ORTModelForCausalLM,
# onnxruntime-genai and ptx's own export read and write them).
LAYOUT_PAST, LAYOUT_PRESENT = "past_key_values.{}.{}", "present.{}.{}"


def of_layout(inputs: Sequence[str], outputs: Sequence[str]) -> Generation | None:
    """The generation contract of a decoder file in Optimum's layout, read from its tensors' names alone
    (input_ids, attention_mask, position_ids where it takes them, past_key_values.N.key/value; logits and
    present.N.key/value), or None where the file is not one: a decoder without ptx's record is decoded by
    it (an empty past, then steps), never fed generated inputs. A merged decoder's extra inputs
    (use_cache_branch) are not this layout."""
    inputs, outputs = list(inputs), list(outputs)
    cache = []
    for layer in range(len(inputs)):
        pair = [(LAYOUT_PAST.format(layer, kind), LAYOUT_PRESENT.format(layer, kind)) for kind in ("key", "value")]
        if not all(p in inputs and q in outputs for p, q in pair):
            break
        cache.extend(pair)
    known = {"input_ids", "attention_mask", "position_ids", *(p for p, _ in cache)}
    if not cache or "input_ids" not in inputs or "attention_mask" not in inputs or "logits" not in outputs or \
            set(inputs) - known:
        return None
    return Generation(tuple(cache), position_ids="position_ids" if "position_ids" in inputs else None)


# The prompts a decoding is judged on: three short ones of different lengths, decoded in one left-padded
# batch (padding, the mask and positions exercised), and a long one, decoded alone, whose positions reach
# past 300 (rotary angles lose float32 precision there) where the model has that many.
SHORT_PROMPTS = (3, 7, 12)
LONG_PROMPT = 300
JUDGING_STEPS = 16
ONE_BATCH = 64  # prompts up to this length share a batch; a longer one is decoded alone (no padding to it)


def judging_prompts(vocab: int, max_positions: int | None, steps: int = JUDGING_STEPS, seed: int = 0,
                    long: bool = True) -> list[list[int]]:
    """Seeded prompts of SHORT_PROMPTS' lengths and, with ``long``, one of LONG_PROMPT tokens (fewer where the
    model's positions end sooner: its positions still reach its last), ids drawn across the vocabulary."""
    rng = np.random.default_rng(seed)
    lengths = list(SHORT_PROMPTS)
    if long:
        room = LONG_PROMPT if max_positions is None else min(LONG_PROMPT, max_positions - steps)
        if room > max(SHORT_PROMPTS):
            lengths.append(room)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


def batches(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    """The prompts' indices in the batches they are decoded in: the short ones (up to ONE_BATCH tokens)
    together, left-padded; each longer one alone, so that no short prompt is padded to its length."""
    short = [k for k, p in enumerate(prompts) if len(p) <= ONE_BATCH]
    return ([short] if short else []) + [[k] for k, p in enumerate(prompts) if len(p) > ONE_BATCH]


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
    margin: float  # the reference's top-2 margin there (``over``: its logit of ``want`` minus that of ``got``)
    tie: bool
    over: bool = False  # teacher-forced: the margin is the reference's over ``got``, not its top-2 margin

    def describe(self) -> str:
        what = ("a near-tie" if self.over else "a tie") if self.tie else "parts"
        margin = f"its margin over {self.got}" if self.over else "its top-2 margin"
        return (f"prompt {self.prompt + 1} step {self.step}: {what}: {self.got} where the reference chose {self.want} "
                f"({margin} {self.margin:.3g})")
