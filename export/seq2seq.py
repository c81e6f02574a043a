"""An encoder-decoder (T5, BART, Whisper) exported for generation with its cache, as Optimum lays it out:
``ptx export --module FILE.py:FACTORY --task text2text-generation`` (and by itself where its class
generates: export/decoder.py's chosen_task).

Two files per format, written and checked together by the one export driver (export/pipeline.py):

- the encoder file (encoder.onnx): the source ids and their attention mask (Whisper: its log-mel
  features) in; the encoder's states (``last_hidden_state``) and every decoder layer's cross-attention
  key and value (``present.{i}.encoder.key``: [batch, heads, source, head size]) out. Those projections of
  the encoder's states are the same at every step, so they are computed once, here: they are traced as
  the model computes them, by one decoder call on an empty EncoderDecoderCache whose cross-attention half
  it fills (the rest of that call is not an output, and the exporters drop it);
- the decoder file (model.onnx): ``decoder_input_ids``, ``encoder_attention_mask`` (not Whisper's: its
  decoder attends to every frame), each layer's own past (``past_key_values.{i}.decoder.key``, length 0
  at the first step) and its cross-attention past (``past_key_values.{i}.encoder.key``) in; the logits and
  each layer's present (``present.{i}.decoder.key``) out. The model's EncoderDecoderCache is rebuilt inside
  from the flat tensors with its cross-attention half already filled, so transformers' first-step branch
  (which projects the encoder's states) is never traced: two graphs, no If.

The decoder file's generation contract (ptx.contract.generation's Encoder) names the encoder file and which
of its outputs feeds which decoder input; ptx.infer.load opens the two together. Each decoding starts from
decoder_start_token_id and the prefix the model's generate() forces (Whisper's task tokens, BART's forced
first token). Before any file is written, the traced decoding (the wrappers, eager: the reference, each step's
whole logits kept) is held to transformers' own generate(do_sample=False) on the judging sources; each file is
then judged against that reference by the one judge of a decoding, teacher-forced then free-running, as a
causal LM's files are (ptx.contract.generation_judge, through infer/model/generation_check.py's
judge_decoding, which runs an encoder-decoder's EncoderDecoding).
"""
from __future__ import annotations

import dataclasses
import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import (GENERATION_KEY, JUDGING_STEPS, SHORT_PROMPTS, Encoder, Generation,
                                     encoder_file_name, half_exact)
from ptx.contract.generation_judge import recorded_bounds, tie_width
from ptx.contract.reference_decoding import ReferenceDecoding
from ptx.contract.schema import Tolerance
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError, first_line
from ptx.infer.model.encoder_decoding import EncoderRunner, encoder_feeds
from ptx.infer.model.generation_check import reference_decoding
from ptx.torch_quiet import quiet_logs

from .decoder import chosen_task as decoder_chosen_task
from .cached_decoder import (BATCH, CACHE_NAMES, PAST, SEQ, TOTAL, _cache_pairs, _config_int, _ids, _logits_and_cache,
                             _new_cache, named)
from .decoder import SEQ2SEQ, DecoderSource, check_tokenizer, generates, judged_line
from .decoder_reference import eager_run
from .formats import Written

SOURCE = "source"  # the symbol of the source's length (the encoder's sequence)
FEATURES = "input_features"
# generate()'s processors that ptx's decoding does not apply, switched off where export compares with it:
# beams, n-gram blocking, a minimum length and a repetition penalty from the config (ptx samples with its own).
PLAIN_GREEDY = dict(do_sample=False, num_beams=1, no_repeat_ngram_size=0, min_new_tokens=0, repetition_penalty=1.0,
                    forced_eos_token_id=None)  # the decoding export checks runs every step (eos=()): none is forced


def seq2seq_refusal(module: torch.nn.Module) -> str | None:
    """Why ptx cannot export the encoder-decoder ``module`` with its cache, from its class and config, or None
    for the kinds it can: a transformers encoder-decoder whose forward takes decoder_input_ids, encoder_outputs,
    a cache and use_cache, and whose encoder reads token ids, or Whisper's fixed frames of features."""
    kind = type(module).__name__
    params = inspect.signature(module.forward).parameters
    missing = [p for p in ("decoder_input_ids", "encoder_outputs", "use_cache") if p not in params] + \
        ([] if any(k in params for k in CACHE_NAMES) else [" or ".join(CACHE_NAMES)])
    if missing or not callable(getattr(module, "get_encoder", None)):
        return (f"{kind} is an encoder-decoder whose forward takes no {', '.join(missing) or 'get_encoder()'}: ptx "
                "exports the cache of encoder-decoders that take decoder_input_ids, encoder_outputs, a cache and "
                "use_cache, as transformers makes them (T5, BART, Whisper)")
    if "input_ids" not in params and not _frames(module):
        return (f"{kind} is an encoder-decoder whose encoder reads neither token ids nor features of sizes its config "
                "gives (num_mel_bins and max_source_positions, as Whisper's): ptx cannot make its encoder's inputs")
    return None


def chosen_task(module, task: str, log: Callable[[str], None]) -> str:
    """export/decoder.py's chosen_task, an encoder-decoder's own task taken here: text2text-generation (its
    cache export, where seq2seq_refusal has nothing to say) for auto where its class generates and for
    text2text-generation, forward otherwise; --task text-generation of one is refused in one line."""
    if not getattr(getattr(module, "config", None), "is_encoder_decoder", False) or task not in ("auto", SEQ2SEQ):
        return decoder_chosen_task(module, task, log)
    if task == "auto" and not generates(module):
        return "forward"
    refusal = seq2seq_refusal(module)
    if refusal and task == SEQ2SEQ:
        raise PtxError(f"--task {task}: {refusal}; give --task forward to export its forward pass")
    if refusal:
        log(f"task: forward ({refusal}): its forward pass is exported, without a cache")
    return "forward" if refusal else SEQ2SEQ


def _frames(module) -> tuple[int, int] | None:
    """(mel bins, frames) of a Whisper-like encoder's features (it takes exactly 2 x max_source_positions
    frames), or None."""
    if FEATURES not in inspect.signature(module.forward).parameters:
        return None
    bins, positions = _config_int(module, "num_mel_bins"), _config_int(module, "max_source_positions")
    return (bins, 2 * positions) if bins and positions else None


class CrossEncoder(torch.nn.Module):
    """``model``'s encoder and every decoder layer's cross-attention key and value of its states: the source
    (ids and mask, or features) in; the states then each layer's key and value out."""

    def __init__(self, model: torch.nn.Module, features: bool, cache_keyword: str):
        super().__init__()
        self.model, self.features, self.cache_keyword = model, features, cache_keyword

    def forward(self, source, mask=None):
        from transformers import DynamicCache, EncoderDecoderCache

        given = {FEATURES: source} if self.features else {"input_ids": source, "attention_mask": mask}
        states = self.model.get_encoder()(**given)[0]
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        start = torch.zeros((states.shape[0], 1), dtype=torch.int64)  # any id: only the cross-attention half is kept
        self.model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=start, use_cache=True,
                   **{self.cache_keyword: cache})
        return (states, *(t for pair in _cache_pairs(cache.cross_attention_cache) for t in pair))


class CachedSeq2SeqDecoder(torch.nn.Module):
    """``model``'s decoder on flat tensors: the decoder's ids, the encoder's mask (where it takes one) and each
    layer's own past key and value then its cross-attention key and value in; the logits and each layer's
    present key and value out."""

    def __init__(self, model: torch.nn.Module, layers: int, takes_mask: bool, cache_keyword: str, width: int):
        super().__init__()
        self.model, self.layers, self.takes_mask = model, layers, takes_mask
        self.cache_keyword, self.width = cache_keyword, width

    def forward(self, decoder_input_ids, *rest):
        from transformers import EncoderDecoderCache

        mask, past = (rest[0], rest[1:]) if self.takes_mask else (None, rest)
        own = _new_cache([(past[4 * i], past[4 * i + 1]) for i in range(self.layers)])
        cross = _new_cache([(past[4 * i + 2], past[4 * i + 3]) for i in range(self.layers)])
        cache = EncoderDecoderCache(own, cross)  # its cross-attention half filled: marked updated, never projected
        # The encoder's states are read only by the cross-attention projections the cache already holds: a
        # broadcast zero of their shape stands in (the check against generate() proves the model reads no more).
        key = past[2]
        states = key.new_zeros(()).expand(key.shape[0], key.shape[2], self.width)
        out = self.model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=decoder_input_ids,
                         use_cache=True, **{self.cache_keyword: cache})
        logits, present = _logits_and_cache(out)
        return (logits, *(t for pair in _cache_pairs(present.self_attention_cache) for t in pair))


def decoder_prompt(module) -> tuple[list[int], str]:
    """(the ids each decoding starts from, how they were found): decoder_start_token_id, then what the model's
    generate() forces after it (the generation config's forced_decoder_ids from position 1 on, Whisper's
    no-timestamps id, forced_bos_token_id)."""
    config = getattr(module, "generation_config", None)
    model_config = getattr(module, "config", None)

    def value(name):
        found = getattr(config, name, None)
        return found if found is not None else getattr(model_config, name, None)

    start = value("decoder_start_token_id")
    if not isinstance(start, int):
        raise PtxError(f"--task text2text-generation: {type(module).__name__}'s config has no decoder_start_token_id: "
                       "ptx cannot tell where its decoder starts; set it in the config")
    ids, said = [start], ["decoder_start_token_id"]
    position = 1
    for at, token in sorted(value("forced_decoder_ids") or []):
        if at != position or token is None:
            break
        ids.append(int(token))
        position += 1
    if len(ids) > 1:
        said.append("forced_decoder_ids")
    no_timestamps = getattr(config, "no_timestamps_token_id", None)
    if isinstance(no_timestamps, int) and not getattr(config, "return_timestamps", False) and ids[-1] != no_timestamps:
        ids.append(no_timestamps)
        said.append("no_timestamps_token_id")
    bos = value("forced_bos_token_id")
    if isinstance(bos, int):
        ids.append(bos)
        said.append("forced_bos_token_id")
    return ids, ", ".join(said)


def seq2seq_of(module: torch.nn.Module, log: Callable[[str], None]):
    """(encoder wrapper, its signature, decoder wrapper, its signature, the generation contract without the
    encoder file's name or the reference) of the encoder-decoder ``module``: the layout learned by one eager
    run of the encoder and one first step of the decoder."""
    refusal = seq2seq_refusal(module)
    if refusal:
        raise PtxError(f"--task text2text-generation: {refusal}; give --task forward to export its forward pass")
    params = inspect.signature(module.forward).parameters
    cache_keyword = next(k for k in CACHE_NAMES if k in params)
    frames = _frames(module) if "input_ids" not in params else None
    encoder = CrossEncoder(module, frames is not None, cache_keyword)
    example = _example_source(frames, _vocab_guess(module))
    try:
        with torch.no_grad():
            answered = encoder(*example)
    except Exception as exc:  # noqa: BLE001 - the model's own refusal, in one line
        raise PtxError(f"--task text2text-generation: {type(module).__name__}'s encoder and cross-attention refused "
                       f"{_described(example)} ({type(exc).__name__}: {first_line(exc)})") from None
    states, cross = answered[0], [(answered[1 + 2 * i], answered[2 + 2 * i]) for i in range((len(answered) - 1) // 2)]
    if not cross:
        raise PtxError(f"--task text2text-generation: {type(module).__name__} filled no cross-attention cache: ptx "
                       "exports encoder-decoders whose decoder keeps an EncoderDecoderCache; give --task forward")
    width, layers = int(states.shape[-1]), len(cross)
    takes_mask = frames is None
    decoder = CachedSeq2SeqDecoder(module, layers, takes_mask, cache_keyword, width)
    start, started_by = decoder_prompt(module)
    first = torch.tensor([start, start])
    empty = [t.new_zeros((2, t.shape[1], 0, t.shape[3])) for pair in cross for t in pair]
    flat = [t for i in range(layers) for t in (empty[2 * i], empty[2 * i + 1], *cross[i])]
    with torch.no_grad():
        try:
            out = decoder(first, *([example[1]] if takes_mask else []), *flat)
        except Exception as exc:  # noqa: BLE001 - the model's own refusal, in one line
            raise PtxError(f"--task text2text-generation: {type(module).__name__}'s decoder refused a first step from "
                           f"its cache ({type(exc).__name__}: {first_line(exc)})") from None
    logits, own = out[0], out[1:]
    vocab = int(logits.shape[-1])
    enc_sig, dec_sig, cache_names, cross_names = _signatures(frames, example, states, logits, own, cross, takes_mask)
    config = getattr(module, "generation_config", None) or getattr(module, "config", None)
    eos = [e for e in _ids(getattr(config, "eos_token_id", None)) if 0 <= e < vocab]
    pad = next((p for p in (*_ids(getattr(config, "pad_token_id", None)), *eos) if 0 <= p < vocab), 0)
    inside = lambda name: tuple(i for i in _ids(getattr(config, name, None)) if 0 <= i < vocab)  # noqa: E731
    part = Encoder("", tuple(cross_names), source=FEATURES if frames else "input_ids", features=bool(frames),
                   source_mask=None if frames else "attention_mask",
                   decoder_mask="encoder_attention_mask" if takes_mask else None, start=tuple(start),
                   max_positions=None if frames or _is_t5(module) else _config_int(module, "max_position_embeddings"))
    generation = Generation(tuple(cache_names), input_ids="decoder_input_ids", attention_mask=None,
                            position_ids=None, eos=tuple(eos), pad=pad,
                            max_positions=_config_int(module, "max_target_positions", "max_position_embeddings")
                            if not _is_t5(module) else None,
                            suppress=inside("suppress_tokens"), begin_suppress=inside("begin_suppress_tokens"),
                            forced_eos=next(iter(inside("forced_eos_token_id")), None), encoder=part)
    log(f"generation: an encoder of {'features ' + 'x'.join(map(str, frames)) if frames else 'token ids'} and "
        f"{layers} decoder layers, a cache of {int(own[0].shape[1])} key/value heads of {int(own[0].shape[3])} and the "
        f"cross-attention past computed once; the decoder starts from {', '.join(map(str, start))} ({started_by}); "
        + (f"end-of-sequence {', '.join(map(str, eos))}" if eos else "no end-of-sequence id")
        + (f"; {generation.max_positions} positions" if generation.max_positions else ""))
    return (named(encoder, enc_sig.input_names), enc_sig, named(decoder, dec_sig.input_names), dec_sig, generation)


def _signatures(frames, example, states, logits, own, cross, takes_mask: bool):
    """(the encoder file's signature, the decoder file's, the decoder's (past, present) cache pairs, and each
    cross-attention (encoder output, decoder input) pair) from one eager run of the encoder (``states``,
    ``cross``) and the decoder's first step (``logits``, ``own``: its present key/values)."""
    width, layers = int(states.shape[-1]), len(cross)
    vocab, dtype = int(logits.shape[-1]), _dtype(logits)
    source_len = SOURCE if frames is None else int(cross[0][0].shape[2])  # Whisper's frames fix its length
    enc_inputs = ([TensorSig(FEATURES, _dtype(example[0]), (BATCH, *frames), 0)] if frames else
                  [TensorSig("input_ids", "int64", (BATCH, SOURCE), 0, (0, vocab - 1)),
                   TensorSig("attention_mask", "int64", (BATCH, SOURCE), 0, (0, 1))])
    enc_outputs = [TensorSig("last_hidden_state", _dtype(states), (BATCH, states.shape[1] if frames else SOURCE,
                                                                    width), 0)]
    dec_inputs = [TensorSig("decoder_input_ids", "int64", (BATCH, SEQ), 0, (0, vocab - 1))]
    if takes_mask:
        dec_inputs.append(TensorSig("encoder_attention_mask", "int64", (BATCH, SOURCE), 0, (0, 1)))
    dec_outputs = [TensorSig("logits", dtype, (BATCH, SEQ, vocab), 0)]
    cache_names, cross_names = [], []
    for layer in range(layers):
        for kind, mine, theirs in zip(("key", "value"), own[2 * layer:2 * layer + 2], cross[layer]):
            heads, size = int(mine.shape[1]), int(mine.shape[3])
            past, present = f"past_key_values.{layer}.decoder.{kind}", f"present.{layer}.decoder.{kind}"
            dec_inputs.append(TensorSig(past, _dtype(mine), (BATCH, heads, PAST, size), 0))
            dec_outputs.append(TensorSig(present, _dtype(mine), (BATCH, heads, TOTAL, size), 0))
            cache_names.append((past, present))
        for kind, theirs in zip(("key", "value"), cross[layer]):
            fed, answered_as = f"past_key_values.{layer}.encoder.{kind}", f"present.{layer}.encoder.{kind}"
            shape = (BATCH, int(theirs.shape[1]), source_len, int(theirs.shape[3]))
            dec_inputs.append(TensorSig(fed, _dtype(theirs), shape, 0))
            enc_outputs.append(TensorSig(answered_as, _dtype(theirs), shape, 0))
            cross_names.append((answered_as, fed))
    return (Signature(tuple(enc_inputs), tuple(enc_outputs)), Signature(tuple(dec_inputs), tuple(dec_outputs)),
            cache_names, cross_names)


def _is_t5(module) -> bool:
    """T5's positions are relative (its config's n_positions is no limit)."""
    return getattr(getattr(module, "config", None), "model_type", "") in ("t5", "mt5", "umt5", "longt5")


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _vocab_guess(module) -> int:
    return _config_int(module, "vocab_size") or 2


def _example_source(frames, vocab: int, batch: int = 2, length: int = 5) -> tuple[torch.Tensor, ...]:
    """What the encoder is first run and traced on: seeded ids and a mask of ones (every size 2 or more:
    torch.export specializes 0 and 1), or features of the fixed frames."""
    rng = np.random.default_rng(0)
    if frames:
        return (torch.from_numpy(half_exact(rng.standard_normal((batch, *frames)))),)
    ids = torch.from_numpy(rng.integers(0, vocab, (batch, length)).astype(np.int64))
    return ids, torch.ones_like(ids)


def _described(example) -> str:
    return f"{'features' if example[0].is_floating_point() else 'ids'} of shape {list(example[0].shape)}"


def validation_sources(part: Encoder, signature: Signature, vocab: int, seed: int = 0):
    """What export decodes to check the files: sources of the judging prompts' short lengths (3, 7 and 12 ids:
    one right-padded batch), or as many items of features (seeded, exactly what float16 holds, so the file
    records them as decoded)."""
    rng = np.random.default_rng(seed)
    if part.features:
        shape = [d for d in signature.input(part.source).shape[1:]]
        return half_exact(rng.standard_normal((len(SHORT_PROMPTS), *shape)))
    return [rng.integers(0, vocab, n).tolist() for n in SHORT_PROMPTS]


def decoder_example(signature: Signature, generation: Generation, sources: dict[str, np.ndarray],
                    cross: Mapping[str, np.ndarray], vocab: int, seq: int = 3, past: int = 4) -> tuple:
    """The decoder's tracing inputs: every dynamic size 2 or more (torch.export specializes 0 and 1), the cross
    past the eager encoder's answers to ``sources`` (batch 2)."""
    rng = np.random.default_rng(1)
    batch = len(next(iter(sources.values())))
    feeds = {generation.input_ids: rng.integers(0, vocab, (batch, seq)).astype(np.int64), **cross}
    part = generation.encoder
    if part.decoder_mask:
        feeds[part.decoder_mask] = sources[part.source_mask]
    for name, _ in generation.cache:
        sig = signature.input(name)
        shape = [batch if d == BATCH else past if d == PAST else d for d in sig.shape]
        feeds[name] = rng.standard_normal(shape).astype(sig.dtype)
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in signature.input_names)


def generate_tokens(module, signature: Signature, part: Encoder, sources, steps: int, pad: int) -> list[list[int]]:
    """transformers' own generate(do_sample=False) of ``sources`` (the encoder's inputs are ``signature``'s), its
    processors that ptx does not apply switched off (PLAIN_GREEDY): each source's new tokens, up to and with an
    end-of-sequence id."""
    feeds = encoder_feeds(part, signature, sources, None, pad)
    given = {FEATURES if part.features else "input_ids": torch.from_numpy(feeds[part.source])}
    if part.source_mask:
        given["attention_mask"] = torch.from_numpy(feeds[part.source_mask])
    with quiet_logs("transformers"), torch.no_grad():  # its notices on how generate() was called
        out = module.generate(**given, max_new_tokens=steps, return_dict_in_generate=True, output_logits=True,
                              **PLAIN_GREEDY)
    made = len(out.logits)
    eos = set(_ids(getattr(module.generation_config, "eos_token_id", None)))
    tokens = []
    for row in out.sequences[:, out.sequences.shape[1] - made:].tolist():
        end = next((k + 1 for k, t in enumerate(row) if t in eos), len(row))
        tokens.append(row[:end])
    return tokens


def check_against_generate(module, signature: Signature, part: Encoder, sources, reference: ReferenceDecoding,
                           pad: int, tolerance: Tolerance, log: Callable[[str], None]) -> None:
    """The traced decoding (eager's, through the wrappers: ``reference``, each step's whole logits kept) held to
    transformers' generate(do_sample=False) on the same sources, each source's tokens up to where generate()
    ends it: where the two part, eager's logits must hold generate()'s token within a near-tie of its own
    (generation_judge.tie_width of the logits' ``tolerance``), said, not failed; else the export stops, since
    the wrappers would not be the model. What it was held to is kept in the reference (``checked``)."""
    import transformers

    steps = reference.step_count
    wanted = generate_tokens(module, signature, part, sources, steps, pad)
    ties = []
    for k, (mine, theirs) in enumerate(zip(reference.steps.tokens, wanted)):
        for step, (own, given) in enumerate(zip(mine, theirs)):
            if own == given:
                continue
            row = reference.logits[k][step]
            margin, width = float(row.values[own] - row.values[given]), tie_width(tolerance, None, row.scale)
            if margin > width:
                raise PtxError(f"--task text2text-generation: {type(module).__name__}'s decoder with its cache does not "
                               f"decode as its generate(do_sample=False) does: source {k + 1} step {step + 1}: eager's "
                               f"logits put {own} above generate()'s {given} by {margin:.3g} (a near-tie is within "
                               f"{width:.3g}); give --task forward")
            ties.append(f"source {k + 1} step {step + 1}")
            break  # the steps after follow another prefix
    by = f"transformers {transformers.__version__} generate(do_sample=False)"
    reference.checked = f"{by}: the same tokens" + (f" but at near-ties ({', '.join(ties)})" if ties else "")
    log(f"generate(): greedy, {len(wanted)} sources, up to {steps} tokens each: eager's decoder with its cache gives "
        f"{reference.checked}")


@contextmanager
def eager_attention(module):
    """``module`` traced with transformers' eager attention, its own restored after: the reference implementation,
    which every exporter traces (T5's sdpa path fails torch.export's reshape of its attention's output)."""
    before = getattr(getattr(module, "config", None), "_attn_implementation", None)
    switch = getattr(module, "set_attn_implementation", None)
    if not callable(switch) or before in (None, "eager"):
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(before)


class Seq2SeqSource(DecoderSource):
    """An encoder-decoder (in eval mode) as the one driver writes it: per format, the encoder file beside the
    decoder file (``beside``), both written by the format's one writer; the decoder's generation contract names
    the encoder file. Checked as a causal LM's files are (DecoderSource.check: judge_decoding of the file
    opened by ptx.infer.load, which opens the two together) against eager's decoding of the judging sources
    (the reference, recorded with the bounds a reduced precision is held to), itself held to transformers'
    generate() first."""
    TASK, ALONE = SEQ2SEQ, "forward pass"
    EXPORTED = "the encoder and the decoder are exported, the decoder with its key/value cache"

    def __init__(self, module: torch.nn.Module, name: str, *, strings_of: Callable[[Signature], dict[str, str]],
                 options: dict[str, dict], log: Callable[[str], None], steps: int = JUDGING_STEPS,
                 declared: Sequence[str] = (), tolerance: Callable | None = None,
                 text: Mapping[str, bytes] | None = None, bounds: Mapping[str, Mapping] | None = None):
        encoder, enc_sig, decoder, signature, generation = seq2seq_of(module, log)
        takes = [*enc_sig.input_names, *signature.input_names]
        foreign = [n for n in declared if n not in takes]
        if foreign:
            raise PtxError(f"--input {foreign[0]}: an encoder-decoder exported with its cache takes "
                           f"{', '.join(enc_sig.input_names)} (its encoder) and decoder_input_ids with the past "
                           "key/values (its decoder); leave --input out, or give --task forward to export one forward "
                           "pass of the inputs you declare")
        vocab = int(signature.output(generation.logits).shape[-1])
        check_tokenizer(text or {}, vocab)
        self.text, self.generation = dict(text or {}), generation
        part = generation.encoder
        self.prompts = validation_sources(part, enc_sig, vocab)
        if generation.max_positions is not None:
            steps = max(1, min(steps, generation.max_positions - len(part.start)))
        run_encoder, run_decoder = eager_run(encoder, enc_sig), eager_run(decoder, signature)
        self.steps, self._bounds = steps, recorded_bounds(bounds)
        self.reference = reference_decoding(run_decoder, signature, generation, self.prompts, steps,
                                            by=f"eager PyTorch (torch {torch.__version__}), ptx's greedy decoding",
                                            encoder=EncoderRunner(run_encoder, enc_sig))
        check_against_generate(module, enc_sig, part, self.prompts, self.reference, generation.pad,
                               default_tolerance(signature.output(generation.logits).dtype), log)
        traced_with = _example_source(enc_sig.input(part.source).shape[1:] if part.features else None, vocab)
        example_sources = {n: t.numpy() for n, t in zip(enc_sig.input_names, traced_with)}
        answered = run_encoder(example_sources)
        cross = {fed: answered[out] for out, fed in part.cross}
        self.encoder_module, self.encoder_signature = encoder, enc_sig
        self.encoder_example = traced_with
        self.encoder_strings = {**strings_of(enc_sig), "model": f"{name} encoder"}
        super(DecoderSource, self).__init__(name, decoder, decoder_example(signature, generation, example_sources, cross,
                                                                           vocab), signature, strings_of(signature))
        self._options, self._tolerance = options, tolerance
        log(f"module: {name} ({type(module).__name__}, {sum(p.numel() for p in module.parameters()):,} parameters), "
            f"exported with its cache: an encoder ({', '.join(enc_sig.input_names)} in; the cross-attention past of "
            f"{len(part.cross) // 2} layers out) and a decoder ({', '.join(signature.input_names[:2 if part.decoder_mask else 1])} and the past "
            "in; logits and the present out)")

    def judged_line(self, judged) -> str:
        how = (f"{len(self.prompts)} inputs of features in one batch" if self.generation.encoder.features else
               f"{len(self.prompts)} sources of {', '.join(str(len(p)) for p in self.prompts)} tokens in one "
               "right-padded batch")
        return judged_line(judged, how, len(self.generation.encoder.start) + self.steps - 1)

    def beside(self, fmt, path: Path) -> list[Path]:
        return [path.with_name(encoder_file_name(path.name))]

    def write(self, fmt, path: Path, options: dict) -> Written:
        """The encoder file (beside), then the decoder file whose contract names it, by ``fmt``'s one writer."""
        encoder_path = self.beside(fmt, path)[0]
        first = fmt.write(self.encoder_module, self.encoder_example, encoder_path, self.encoder_signature,
                          self.encoder_strings, **options)
        part = self.generation.encoder
        generation = dataclasses.replace(self.generation, encoder=dataclasses.replace(part, file=encoder_path.name))
        recorded = generation.with_reference(self.reference.to_record(), self._bounds)
        decoder_strings = {**self.strings, GENERATION_KEY: recorded.to_json()}
        made = fmt.write(self.subject, self.example, path, self.signature, decoder_strings, **options)
        notes = [n for n in (first.note and f"encoder: {first.note}", made.note) if n]
        return Written(made.method, "; ".join(notes) or None, "; ".join(h for h in (first.hint, made.hint) if h))
