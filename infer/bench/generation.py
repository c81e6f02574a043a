"""``ptx bench FILE --generate N``: how fast a decoder file exported with its key/value cache generates on
each backend that opens it: the prompt's run (prefill, ms) and the steps after it (ms per step and new
tokens per second), timed through the one decoding (infer/model/generation.py), greedy with no end-of-sequence
id, so every step runs, on the same seeded prompts for every backend. An encoder-decoder's prompts are its
encoder's sources (seeded ids, or seeded features of the encoder's frames); its encoder's run is timed apart
(encoder ms), once per decoding, before the prompt's run.

One backend is opened at a time (its memory planned, and closed before the next opens: an LM's
runtimes do not fit beside each other where the model is big), torch-free runtimes first (torch's idle
OpenMP threads slow ONNX Runtime after it has run). Each backend decodes once untimed, then ``repeats``
times; each number is the median of those. The ratio ("x the fastest") is within this one run.

Eager ``generate()`` has no module to run for a file alone: a TorchScript file beside an ONNX one that
carries the cache is one more row (it is the traced module), and scripts/bench_generate.py times
transformers' own ``generate()`` beside ptx's rows for a factory.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ptx.contract.generation import Generation, of_metadata
from ptx.errors import PtxError

from ..model.decoding_memory import cache_bytes_per_position, decoding_need, vocabulary
from ..model.generation import no_cache
from ..model.speculative import NGRAM, drafter_of, speculate_label
from ..verify.tables import markdown_table, text_table
from .wall import Bandwidth, bytes_per_token, device_bandwidth

if TYPE_CHECKING:
    from ..model.target import Target, Variant

DEFAULT_PROMPT_LENGTH = 32
DEFAULT_REPEATS = 3
TORCHSCRIPT_BESIDE = "model.torchscript.pt"  # what ptx export writes beside model.onnx with --format torchscript
NO_EAGER = ("eager: not run (an ONNX file carries no module; scripts/bench_generate.py compares with transformers' "
            "generate())")


@dataclass
class DecodingSpeed:
    """One backend's decoding speed: medians over ``repeats`` decodings of ``batch`` prompts of
    ``prompt_length`` tokens, ``new_tokens`` each."""

    runner: str
    device: str
    precision: str
    file: str
    prefill_ms: float  # the prompt's run: the first new token of every prompt
    decode_ms_per_token: float  # one step after the prompt: one more token of every prompt
    tokens_per_s: float  # new tokens of all prompts per second of decoding (the prompt's run apart)
    repeats: int
    spread: float = 1.0  # the slowest repetition's decode time over the fastest's
    vs_fastest: float | None = None  # tokens/s over the fastest row's
    encoder_ms: float | None = None  # an encoder-decoder's encoder run, once per decoding (None: no encoder)
    prefill_tokens_per_s: float | None = None  # the prompts' tokens over the prompt's run
    bytes_per_token: int | None = None  # what one step reads: the weights (wall.bytes_per_token) and the cache
    wall_ms: float | None = None  # bytes_per_token over the bandwidth measured in the run: no step is faster
    of_wall: float | None = None  # wall_ms over decode_ms_per_token: the share of the read-bandwidth limit reached
    cache_bytes: int = 0  # of bytes_per_token, the cache's (at its mean length over the steps)
    tokens_per_step: float | None = None  # with a drafter (--speculate): the tokens a step gave, its guesses kept
    masked_ms_per_token: float | None = None  # with a grammar (--json-schema): decode ms/token with each choice masked
    masked_tokens: int | None = None  # the tokens that masked decoding gave (a grammar may complete early)

    @property
    def mask_cost(self) -> float | None:
        """The grammar's mask as a share of the row's token: masked ms/token over decode ms/token, less one."""
        if self.masked_ms_per_token is None or not self.decode_ms_per_token:
            return None
        return self.masked_ms_per_token / self.decode_ms_per_token - 1


@dataclass
class GenerationBench:
    """``bench_generation``'s answer: a row per backend, what was not timed and why, and notes."""

    name: str
    new_tokens: int
    prompt_length: int
    batch: int
    repeats: int
    seed: int
    rows: list[DecodingSpeed] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    eager: str | None = None  # why eager generate() has no row, where it has none
    prompt: str | None = None  # what each prompt is, where it is no seeded ids (an encoder's features)
    # the read bandwidth of each device's memory, measured in this run (wall.device_bandwidth), or why not
    walls: dict[str, Bandwidth | str] = field(default_factory=dict)
    speculate: str | None = None  # the drafter timed beside plain greedy (--speculate), where one was
    grammar: object = None  # the grammar each row was decoded again held to (ptx.contract.grammar.Grammar)

    def heading(self) -> str:
        prompt = self.prompt or f"a seeded prompt of {self.prompt_length} tokens"
        return (f"ptx bench {self.name} --generate {self.new_tokens}: batch {self.batch}, {prompt} (seed {self.seed}), "
                f"greedy with no end-of-sequence id; median of {self.repeats} decodings after one warm-up")

    def text(self, markdown: bool = False) -> str:
        from ..model.target import group_reasons

        encoder = any(r.encoder_ms is not None for r in self.rows)
        masked = any(r.masked_ms_per_token is not None for r in self.rows)
        head = ["runner", "device", "MB/token", *(["encoder ms"] if encoder else []), "prefill ms", "prefill tok/s",
                "decode ms/token", *(["masked ms/token", "mask cost"] if masked else []), "tokens/s", "of the wall",
                "x the fastest"]
        cells = [[r.runner, r.device, f"{r.bytes_per_token / 1e6:,.1f}" if r.bytes_per_token else "",
                  *([f"{r.encoder_ms or 0:,.2f}"] if encoder else []),
                  f"{r.prefill_ms:,.2f}", f"{r.prefill_tokens_per_s:,.0f}" if r.prefill_tokens_per_s else "",
                  f"{r.decode_ms_per_token:,.3f}",
                  *([f"{r.masked_ms_per_token:,.3f}" if r.masked_ms_per_token is not None else "",
                     f"{100 * r.mask_cost:+.1f}%" if r.mask_cost is not None else ""] if masked else []),
                  f"{r.tokens_per_s:,.1f}",
                  f"{100 * r.of_wall:.0f}%" if r.of_wall is not None else "",
                  f"{r.vs_fastest:.2f}x" if r.vs_fastest is not None else ""]
                 for r in self.rows]
        lines = [*self.notes, self.heading()]
        if markdown:
            lines += ["", *markdown_table([head] + cells, range(2, len(head))), ""]
        else:
            lines += text_table([head] + cells, range(2, len(head)))
        lines += [f"skipped {line}" for line in group_reasons(self.skipped)]
        if self.eager:
            lines.append(self.eager)
        if self.batch > 1:
            lines.append(f"tokens/s counts the new tokens of all {self.batch} prompts; ms/token is one step of the "
                         "batch")
        for row in (r for r in self.rows if r.tokens_per_step is not None):
            lines.append(f"{row.runner}: the drafter's guesses that greedy confirms kept, {row.tokens_per_step:.2f} "
                         "tokens a step (the same tokens as greedy's row)")
        if masked:
            tokens = sorted({r.masked_tokens for r in self.rows if r.masked_tokens is not None})
            lines.append(f"masked: each row decoded again, greedy held to {self.grammar.describe()} (each step's "
                         f"choice masked by llguidance, as a served answer's is; {'/'.join(map(str, tokens))} tokens "
                         "after the prompt's run); mask cost: masked ms/token over decode ms/token, less one")
        if encoder:
            lines.append("encoder ms: the encoder's run, once per decoding, apart from the decoder's prompt run (prefill) "
                         "and its steps")
        for device, wall in self.walls.items():
            if isinstance(wall, str):
                lines.append(f"no wall for the {device} rows: {wall}")
            else:
                lines.append(f"the wall on {device}: a step reads MB/token (the weights but the rows an embedding gives, "
                             f"and the cache at its mean length) at {wall.bytes_per_s / 1e9:.1f} GB/s ({wall.how}); of "
                             "the wall = that time over decode ms/token")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"model": self.name, "generate": {"new_tokens": self.new_tokens, "prompt_length": self.prompt_length,
                                                  "batch": self.batch, "repeats": self.repeats, "seed": self.seed,
                                                  "eos": [], **({"speculate": self.speculate} if self.speculate else {}),
                                                  **({"grammar": self.grammar.describe()} if self.grammar else {})},
                "rows": [asdict(r) for r in self.rows], "skipped": self.skipped, "notes": self.notes,
                "eager": self.eager,
                "walls": {device: {"not_measured": wall} if isinstance(wall, str) else asdict(wall)
                          for device, wall in self.walls.items()}}


def file_generation(target: Target) -> Generation:
    """The generation contract ``target``'s file records (else the one its names say: Optimum's layout, a file
    read as your own), or one line saying how to export it with one."""
    generation = target.generation
    if generation is None:
        raise no_cache(target.name if target.is_run else target.path.name)
    return generation


def prompt_length_for(generation: Generation, new_tokens: int, asked: int | None) -> tuple[int, str | None]:
    """(the prompt length to time, a note where the default was clipped): ``asked`` tokens (default
    DEFAULT_PROMPT_LENGTH) and ``new_tokens`` more must fit the model's positions; an asked length that
    does not is refused in one line, the default is clipped to what fits. An encoder-decoder's prompt is
    its encoder's source (bounded by the encoder's positions); its new tokens follow its decoder's start."""
    if new_tokens < 2:
        raise PtxError(f"--generate {new_tokens}: give at least 2 new tokens (the first comes from the prompt's run; "
                       "decode speed is timed on the steps after it)")
    if generation.encoder is not None:
        return _source_length_for(generation, new_tokens, asked)
    limit = generation.max_positions
    length = DEFAULT_PROMPT_LENGTH if asked is None else asked
    if limit is None or length + new_tokens <= limit:
        return length, None
    room = limit - new_tokens
    if asked is not None or room < 1:
        most = f"--prompt-length {room} at most" if room >= 1 else f"--generate {limit - 1} at most"
        raise PtxError(f"a prompt of {length} tokens and {new_tokens} new ones need {length + new_tokens} positions; the "
                       f"model has {limit}: give {most}")
    return room, f"prompt clipped to {room} tokens: {room} and {new_tokens} new ones fill the model's {limit} positions"


def _source_length_for(generation: Generation, new_tokens: int, asked: int | None) -> tuple[int, str | None]:
    part, limit = generation.encoder, generation.max_positions
    if limit is not None and len(part.start) + new_tokens > limit:
        raise PtxError(f"--generate {new_tokens}: the decoder starts from {len(part.start)} token(s) and has {limit} "
                       f"positions: give --generate {limit - len(part.start)} at most")
    length = DEFAULT_PROMPT_LENGTH if asked is None else asked
    if part.max_positions is None or length <= part.max_positions:
        return length, None
    if asked is not None:
        raise PtxError(f"--prompt-length {asked}: the encoder has {part.max_positions} positions: give "
                       f"--prompt-length {part.max_positions} at most")
    return part.max_positions, f"source clipped to the encoder's {part.max_positions} positions"


def seeded_inputs(model, generation: Generation, batch: int, length: int, seed: int):
    """What ``batch`` prompts are for ``model``: seeded token ids (seeded_prompts), or for an encoder of features
    ``batch`` seeded items of its fixed sizes."""
    part = generation.encoder
    if part is not None and part.features:
        shape = [d if isinstance(d, int) else 1 for d in model.encoder.signature.input(part.source).shape[1:]]
        return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
    return seeded_prompts(generation, vocabulary(model.signature, generation), batch, length, seed)


def seeded_prompts(generation: Generation, vocab: int | None, batch: int, length: int, seed: int) -> list[list[int]]:
    """``batch`` prompts of ``length`` token ids, seeded, inside the vocabulary (the pad id left out)."""
    high = vocab or 1000
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, high - 1, (batch, length))
    return (ids + (ids >= generation.pad)).tolist() if high > 1 else ids.tolist()


def generation_variants(target: Target, backends: Sequence[str] | None) -> list[tuple[Target, Variant]]:
    """(the target that opens it, variant) for every backend that opens ``target``'s file and, beside an
    ONNX file, the TorchScript file export wrote with it where that one carries the cache too; torch-free
    runtimes first. ``backends`` picks, by name or label, as bench's --backends does."""
    targets = [target]
    beside = target.path.parent / TORCHSCRIPT_BESIDE
    if target.kind == "onnx" and beside.is_file():
        other = target.beside(beside)
        if other.found is not None and of_metadata(other.found.metadata, beside.name) is not None:
            targets.append(other)
    every = [(t, v) for t in targets for v in t.variants() if not v.backend.third_opinion]
    if backends:
        known = {n for _, v in every for n in (v.backend.name, v.backend.label(v.device), v.label)}
        unknown = [n for n in backends if n not in known]
        if unknown:
            raise PtxError(f"backend {unknown[0]} does not open {target.path.name} with its cache here; these do: "
                           f"{', '.join(dict.fromkeys(v.label for _, v in every))}")
        every = [(t, v) for t, v in every if {v.backend.name, v.backend.label(v.device), v.label} & set(backends)]
    return sorted(every, key=lambda tv: tv[1].backend.needs_torch)  # stable: the registry's order within each


@dataclass
class Timed:
    """``time_decoding``'s medians: the prompt's run (ms), a token of every prompt after it (ms, and such tokens per
    second), the slowest decoding over the fastest, the encoder's run (ms); the last decoding's tokens, and the
    tokens a step gave (more than 1 where it kept a drafter's guesses)."""

    prefill_ms: float
    token_ms: float
    tokens_per_s: float
    spread: float
    encoder_ms: float
    tokens: list
    per_step: float


def time_decoding(model, prompts: list[list[int]], new_tokens: int, repeats: int,
                  progress: Callable[[str], None], label: str, speculate=None) -> Timed:
    """Medians over ``repeats`` greedy decodings of ``prompts`` after one untimed, every step run (eos=()), with
    ``speculate``'s guesses kept where greedy confirms them (a step then gives more than one token)."""
    progress(f"{label}: warm-up decoding of {new_tokens} tokens")
    model.decode(prompts, new_tokens, eos=(), speculate=speculate)
    prefill, per_token, encode, steps = [], [], [], 0
    for k in range(repeats):
        progress(f"{label}: decoding {k + 1} of {repeats}")
        decoded = model.decode(prompts, new_tokens, eos=(), speculate=speculate)
        if decoded.decode_steps < 1:
            raise PtxError(f"{label} decoded {len(decoded.tokens[0])} token(s) where {new_tokens} were asked")
        prefill.append(decoded.prefill_s)
        per_token.append(decoded.decode_s / decoded.decode_tokens)
        encode.append(decoded.encode_s)
        steps = decoded.decode_steps
    token = statistics.median(per_token)
    return Timed(1000 * statistics.median(prefill), 1000 * token, 1 / token, max(per_token) / min(per_token),
                 1000 * statistics.median(encode), decoded.tokens, decoded.decode_tokens / steps)


def weights_read(target: Target, variant_target: Target, variant: Variant) -> int | None:
    """The bytes of weights one step of ``variant``'s file reads (wall.bytes_per_token); a TorchScript file
    beside an f32 ONNX one holds the same weights, read from the ONNX graph."""
    try:
        path = variant_target.file_for(variant)
    except PtxError:
        return None
    if variant_target.kind != "onnx" and target.kind == "onnx" and target.precision == "f32":
        path = target.path
    return bytes_per_token(path, 2 if variant.precision == "bf16" else 4)  # OpenVINO's bf16 keeps its weights so


def against_wall(row: DecodingSpeed, wall: Bandwidth | str | None) -> None:
    """The time ``row``'s bytes per step take at its device's read bandwidth, against its decode time (none
    where its bytes or that bandwidth are not known)."""
    if row.bytes_per_token is None or not isinstance(wall, Bandwidth):
        return
    row.wall_ms = round(1000 * row.bytes_per_token / wall.bytes_per_s, 4)
    row.of_wall = round(row.wall_ms / row.decode_ms_per_token, 3)


def _prompts(result: GenerationBench, model, generation: Generation):
    """The prompts every row decodes (seeded_inputs), said in ``result``, and the memory they need planned."""
    from ..runtime.memory_plan import shortfall

    batch, length, new_tokens = result.batch, result.prompt_length, result.new_tokens
    prompts = seeded_inputs(model, generation, batch, length, result.seed)
    if isinstance(prompts, np.ndarray):
        result.prompt = f"seeded features {'x'.join(map(str, prompts.shape[1:]))}"
    elif generation.encoder is not None:
        result.prompt = f"a seeded source of {length} tokens"
    why = shortfall(f"decoding {batch} prompt{'s' * (batch != 1)} of {length} tokens and {new_tokens} new ones",
                    decoding_need(model.signature, generation, batch, length, new_tokens))
    if why:
        raise PtxError(f"{why}: give a smaller --batch, --prompt-length or --generate")
    return prompts


def _time_rows(result: GenerationBench, target: Target, variant_target: Target, variant: Variant, model, prompts,
               speculate: str | None, progress: Callable[[str], None]) -> None:
    """``variant``'s row (greedy), and where ``speculate`` names a drafter, a second row with its guesses: its
    tokens held to greedy's (a row that gave others is said in a note). A failure skips that row alone."""
    own, batch, greedy, masked = model.generation, result.batch, None, None
    for guessing in (False, *([True] if speculate else [])):
        label = variant.label + (f" --speculate {speculate_label(speculate)}" if guessing else "")
        try:
            drafter = drafter_of(speculate, target=model) if guessing else None  # a draft model: on this backend
            try:
                timed = time_decoding(model, prompts, result.new_tokens, result.repeats, progress,
                                      f"{label} on {variant_target.path.name}", drafter)
            finally:
                if hasattr(drafter, "close"):
                    drafter.close()
        except PtxError as exc:  # that row only: the others are timed
            result.skipped[label] = str(exc)
            continue
        if not guessing:
            greedy = timed.tokens
            masked = _time_masked(result, model, prompts, label, variant_target.path.name, progress)
        elif greedy is not None and timed.tokens != greedy:
            result.notes.append(f"{label}: its tokens differ from greedy's (a guess kept where greedy parts from it)")
        # an encoder-decoder's decoder runs its start ids first (its source is the encoder's, run apart)
        decoded = len(own.encoder.start) if own.encoder is not None else result.prompt_length
        row = DecodingSpeed(label, variant.device, variant.precision, variant_target.path.name,
                            round(timed.prefill_ms, 3), round(timed.token_ms, 4), round(batch * timed.tokens_per_s, 1),
                            result.repeats, round(timed.spread, 2),
                            prefill_tokens_per_s=round(1000 * batch * decoded / timed.prefill_ms, 1),
                            encoder_ms=round(timed.encoder_ms, 3) if own.encoder is not None else None,
                            tokens_per_step=round(timed.per_step, 2) if guessing else None)
        if not guessing and masked is not None:
            row.masked_ms_per_token, row.masked_tokens = round(masked.ms_per_token, 4), masked.tokens
        weights = weights_read(target, variant_target, variant)
        if weights is not None:  # what a step reads: the weights, and the cache at its mean length
            cache = cache_bytes_per_position(model.signature, own) * batch * (decoded + result.new_tokens / 2)
            row.bytes_per_token, row.cache_bytes = int(weights + cache), int(cache)
        result.rows.append(row)


def _time_masked(result: GenerationBench, model, prompts, label: str, file: str, progress):
    """The row decoded again held to the bench's grammar (infer/bench/masked.py), or None: no grammar asked, or
    one this row cannot be held to (said in a note)."""
    if result.grammar is None:
        return None
    from .masked import time_masked

    try:
        return time_masked(model, prompts, result.new_tokens, result.repeats, result.grammar, progress,
                           f"{label} on {file}")
    except PtxError as exc:
        result.notes.append(f"not masked: {exc}")
        return None


def bench_generation(target: Target, new_tokens: int, *, prompt_length: int | None = None, batch: int = 1,
                     repeats: int = DEFAULT_REPEATS, backends: Sequence[str] | None = None, seed: int = 0,
                     progress: Callable[[str], None] = lambda _: None, speculate: str | None = None,
                     grammar=None) -> GenerationBench:
    """Time greedy decoding of ``new_tokens`` on every backend ``backends`` pick (default: all that open
    ``target``'s file, and the TorchScript file with its cache beside an ONNX one), one backend open at a
    time: ``bench_generation(Target.of("lm/model.onnx"), 128)``. ``speculate`` (``ngram``): each backend timed
    again with that drafter's guesses, a row of its own beside plain greedy's. ``grammar`` (a Grammar): each row's
    greedy decoding timed again held to it (its masked ms/token and mask cost). A file without a cache, or a prompt
    that with ``new_tokens`` passes the model's positions, is one PtxError."""
    from ..model.target import Skip, require_targets

    generation = file_generation(target)  # a tutorial model's name is refused before its run is looked for
    require_targets("bench", target)
    if batch < 1 or repeats < 1 or (prompt_length is not None and prompt_length < 1):
        raise PtxError("--batch, --prompt-length and --rounds are whole numbers of at least 1")
    length, clipped = prompt_length_for(generation, new_tokens, prompt_length)
    result = GenerationBench(target.path.name, new_tokens, length, batch, repeats, seed,
                             notes=[clipped] if clipped else [], speculate=speculate, grammar=grammar)
    if speculate is not None and speculate != NGRAM and not Path(speculate).is_file():
        drafter_of(speculate)  # its one line, before any backend opens
    if grammar is not None:
        from .masked import check_grammar

        check_grammar(grammar, target, generation)  # its one line (a GrammarError), before any backend opens
    chosen = generation_variants(target, backends)
    traced = next((v.label for t, v in chosen if t.kind == "torchscript" and not v.unavailable()), None)
    result.eager = (f"eager: the traced module with its cache is the {traced} row; transformers' generate() itself: "
                    "scripts/bench_generate.py" if traced else NO_EAGER if target.kind == "onnx" else
                    f"eager: not run (a {target.kind} file carries no module to call generate() on; "
                    "scripts/bench_generate.py compares with transformers' generate())")
    # in this run, before any runtime holds memory or threads: the memory of each device a row runs on
    devices = dict.fromkeys(v.device for _, v in chosen if not v.unavailable())
    result.walls = {device: device_bandwidth(device) for device in devices}
    prompts = None

    def skipped(skip: Skip) -> None:  # does not fit now, not exported (an int8 twin), not on this CPU: as it says
        if skip.missing and skip.variant.precision != "f32" and not (backends and skip.variant.asked_by(backends)):
            return  # a reduced file comes along where it was exported (verify's rule), unsaid where it was not
        result.skipped[skip.variant.label] = skip.why if skip.unavailable or skip.missing else \
            f"cannot open it: {skip.why}"

    for variant_target, variant in chosen:
        why = variant.unavailable() or variant_target.refuses(variant)
        if why:
            result.skipped[variant.label] = why
            continue
        for variant, model in variant_target.each_opened([variant], skipped=skipped):  # closed before the next opens
            label = variant.label
            own = model.generation
            if own is None:  # a file that changed since export says so where it opens; this is the rest
                result.skipped[label] = f"{variant_target.path.name} carries no cache"
                continue
            if prompts is None:  # the same prompts for every row, made once the vocabulary is known
                prompts = _prompts(result, model, own)
            _time_rows(result, target, variant_target, variant, model, prompts, speculate, progress)
    for device, before in result.walls.items():  # a device's limit is the higher of two: a busy machine lowers either
        if isinstance(before, Bandwidth):
            after = device_bandwidth(device)
            best = after if isinstance(after, Bandwidth) and after.bytes_per_s > before.bytes_per_s else before
            result.walls[device] = Bandwidth(best.bytes_per_s, best.how + ", before and after the rows: the higher")
    for row in result.rows:
        against_wall(row, result.walls.get(row.device))
    if not result.rows:
        from ..model.target import group_reasons

        reasons = "; ".join(group_reasons(result.skipped)) or "no backend was picked"
        raise PtxError(f"no backend could decode {result.name} here: {reasons}")
    best = max(r.tokens_per_s for r in result.rows)
    for row in result.rows:
        row.vs_fastest = round(row.tokens_per_s / best, 3)
    return result
