"""A causal LM as the decoder the exporters trace: its forward called on flat tensors (the ids, the mask, the
positions, logits_to_keep and each layer's past key and value in; the logits and each layer's present out:
CachedDecoder), and that decoder's tensors and generation contract, learned from one eager run of the module
(decoder_of), with the inputs it is traced at (example_feeds). export/decoder.py writes and judges its files;
export/seq2seq.py builds an encoder-decoder's decoder from the same parts."""
from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Callable, Sequence

import numpy as np
import torch

from ptx.contract.generation import KEEP, Generation
from ptx.contract.tensors import Signature, TensorSig
from ptx.errors import PtxError

from .grouped_attention import exporting, grouped_attention, tracing
from .ort_attention import can_place, ort_attention, placed_cache, presents
from .static_cache import slot_cache

BATCH, SEQ, PAST, TOTAL = "batch", "seq", "past", "total"
CAPACITY = "capacity"  # a fixed-length cache's slots (--static-cache): its past, its present and its mask
SLOTS = "cache_position"  # the input naming the slots a run of a fixed-length cache writes
KEPT = "kept"  # the positions whose logits a run computes (logits_to_keep's length)


def _cache_pairs(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A model's cache as (key, value) per layer: a transformers Cache (its ``layers``, or the older
    key_cache / value_cache lists) or the legacy tuple of tuples."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    if isinstance(cache, (tuple, list)) and all(isinstance(p, (tuple, list)) and len(p) >= 2 for p in cache):
        return [(p[0], p[1]) for p in cache]
    raise PtxError(f"the model's cache is a {type(cache).__name__}, which ptx cannot read as keys and values per layer")


def _new_cache(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """A DynamicCache holding ``pairs`` (the layers' past keys and values), as generate() builds one."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (key, value) in enumerate(pairs):
        cache.update(key, value, layer)
    return cache


class CachedDecoder(torch.nn.Module):
    """``model`` called on flat tensors: the ids, mask, positions (where it reads them) and each layer's
    past key and value in; the logits and each layer's present key and value out (a tuple, in the order
    of ``output_names``)."""

    def __init__(self, model: torch.nn.Module, layers: int, takes_positions: bool, cache_keyword: str,
                 keeps_logits: bool = False, placed: bool = False, static: bool = False):
        super().__init__()
        self.model, self.layers, self.takes_positions = model, layers, takes_positions
        self.cache_keyword, self.keeps_logits, self.placed, self.static = cache_keyword, keeps_logits, placed, static
        # ONNX Runtime's operator is written by the torch.export-based exporter alone (export/formats/onnx.py)
        self.onnx_operators = "ONNX Runtime's GroupQueryAttention" if placed else None
        self.folder_prefix = "model."  # the model's parameters' names, as a transformers folder names its tensors, follow

    def forward(self, input_ids, attention_mask, *rest):
        position_ids, rest = (rest[0], rest[1:]) if self.takes_positions else (None, rest)
        slots, rest = (rest[0], rest[1:]) if self.static else (None, rest)
        keep, past = (rest[0], rest[1:]) if self.keeps_logits else (None, rest)
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.layers)]
        extra = {"position_ids": position_ids} if self.takes_positions else {}
        if self.keeps_logits:  # the positions whose logits are computed: the head runs on those alone
            extra["logits_to_keep"] = keep
        if self.placed and exporting():  # ONNX Runtime's operator; run eagerly (the reference): the model's own
            return self._placed(input_ids, attention_mask, pairs, extra)
        # a fixed-length cache computes so eagerly too: the model's own attention over the buffer, under its own mask
        cache = slot_cache(pairs, slots) if self.static else _new_cache(pairs)
        # traced per key/value group (no copy of the cache for every query head: grouped_attention.py); run
        # eagerly (the reference every file is held to) with the model's own attention
        with grouped_attention(self.model) if tracing() else nullcontext():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                             **{self.cache_keyword: cache}, **extra)
        logits, present = _logits_and_cache(out)
        return (logits, *(t for pair in _cache_pairs(cache if self.static else present) for t in pair))

    def _placed(self, input_ids, attention_mask, pairs, extra):
        """The forward of a decoder whose attention is ONNX Runtime's GroupQueryAttention (export/ort_attention.py),
        exported: the past's length read from the mask (a runner's shared buffer is longer), each present the
        operator's."""
        cache = placed_cache(pairs, attention_mask.shape[1] - input_ids.shape[1])
        with ort_attention(self.model, cache, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                             **{self.cache_keyword: cache}, **extra)
        return (_logits_and_cache(out)[0], *(t for pair in presents(cache, self.model) for t in pair))


# The names a model's answer holds its cache under: transformers 5 says ``cache``, earlier ``past_key_values``.
CACHE_NAMES = ("cache", "past_key_values")


def _logits_and_cache(out):
    """(logits, cache) of a causal LM's answer (a ModelOutput, or a tuple of logits then cache)."""
    if hasattr(out, "keys"):
        return out["logits"], next((out[k] for k in CACHE_NAMES if k in out.keys() and out[k] is not None), None)
    return out[0], out[1] if len(out) > 1 else None


def named(module: torch.nn.Module, names: Sequence[str]) -> torch.nn.Module:
    """``module`` (a wrapper made for the export) whose forward() shows ``names`` as its parameters: the
    exporters name the graph's inputs by them and torch.export binds the example to them."""
    base = type(module)
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  *(inspect.Parameter(n.replace(".", "_"), inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names)]

    def forward(self, *args):
        return base.forward(self, *args)

    forward.__signature__ = inspect.Signature(parameters)
    inner = getattr(module, "model", module)
    module.__class__ = type(type(inner).__name__, (base,), {"forward": forward, "__module__": base.__module__})
    return module


def _config_int(module, *names) -> int | None:
    config = getattr(module, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _keeps_logits(module: torch.nn.Module, params, ids: torch.Tensor, logits: torch.Tensor,
                  log: Callable[[str], None]) -> bool:
    """Whether ``module``'s forward takes logits_to_keep as transformers' causal LMs do (a tensor of positions
    picks the rows the head computes): asked for the first step's positions last to first, it must answer
    their logits in that order, as the whole run gave them. A forward that names it and reads it otherwise (an
    int's slice in a model's own code, which a one-position tensor would pass) is exported computing every
    position's logits, and said so."""
    if KEEP not in params:
        return False
    backwards = torch.arange(ids.shape[1] - 1, -1, -1)
    with torch.no_grad():
        try:
            kept, _ = _logits_and_cache(module(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                                               **{KEEP: backwards}))
        except Exception:  # noqa: BLE001 - any refusal: the tensor is not what it takes
            kept = None
    want = logits[:, backwards]
    if kept is not None and kept.shape == want.shape and torch.allclose(
            kept, want, rtol=1e-3, atol=1e-4 * (1 + float(want.abs().max()))):
        return True
    log(f"generation: {type(module).__name__}'s forward names {KEEP} but does not take a tensor of positions for "
        "it as transformers' models do: every position's logits are computed")
    return False


def decoder_of(module: torch.nn.Module, log: Callable[[str], None], all_logits: bool = False,
               placed: bool = False, static: bool = False) -> tuple[CachedDecoder, Signature, Generation]:
    """(the decoder to export, its signature, its generation contract without the reference) of a causal
    LM ``module``: the cache's layout learned by one eager run with use_cache=True; logits_to_keep taken where
    the module takes it as transformers' models do, unless ``all_logits``; its attention ONNX Runtime's
    GroupQueryAttention where ``placed``, so that a runner keeps its cache in place (export/ort_attention.py); its
    cache of fixed length where ``static`` (export/static_cache.py)."""
    params = inspect.signature(module.forward).parameters
    cache_keyword = next(k for k in CACHE_NAMES if k in params)
    takes_positions = "position_ids" in params
    ids = torch.tensor([[1, 2]])
    with torch.no_grad():
        try:
            out = module(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        except Exception as exc:  # noqa: BLE001 - the model's own refusal, in one line
            raise PtxError(f"--task text-generation: {type(module).__name__} refused a first step of 2 tokens "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    logits, cache = _logits_and_cache(out)
    if cache is None:
        raise PtxError(f"--task text-generation: {type(module).__name__} returned no cache with use_cache=True: "
                       "export it with --task forward (its logits alone)")
    pairs = _cache_pairs(cache)
    if placed and not can_place(module):
        raise PtxError(f"--ort-attention: {type(module).__name__} does not compute its attention through "
                       "transformers' attention interface, which ptx replaces with ONNX Runtime's operator: export it "
                       "without --ort-attention")
    if placed and static:
        raise PtxError("--ort-attention and --static-cache are two layouts of the cache: give one")
    if static:
        _check_static(module, takes_positions, cache_keyword, pairs, ids, logits)
    keeps_logits = not all_logits and _keeps_logits(module, params, ids, logits, log)
    vocab, dtype = int(logits.shape[-1]), str(logits.dtype).replace("torch.", "")
    past_dim, total_dim = (CAPACITY, CAPACITY) if static else (PAST, TOTAL)
    inputs = [TensorSig("input_ids", "int64", (BATCH, SEQ), 0, (0, vocab - 1)),
              TensorSig("attention_mask", "int64", (BATCH, total_dim), 0, (0, 1))]
    if takes_positions:
        inputs.append(TensorSig("position_ids", "int64", (BATCH, SEQ), 0))
    if static:
        inputs.append(TensorSig(SLOTS, "int64", (SEQ,), None))
    if keeps_logits:
        inputs.append(TensorSig(KEEP, "int64", (KEPT,), None))
    outputs = [TensorSig("logits", dtype, (BATCH, KEPT if keeps_logits else SEQ, vocab), 0)]
    cache_names = []
    for layer, pair in enumerate(pairs):
        for kind, tensor in zip(("key", "value"), pair):
            if tensor.dim() != 4:
                raise PtxError(f"--task text-generation: layer {layer}'s cached {kind} has shape {list(tensor.shape)}; "
                               "ptx decodes a cache of [batch, heads, past, head size]")
            heads, size = int(tensor.shape[1]), int(tensor.shape[3])
            kv_dtype = str(tensor.dtype).replace("torch.", "")
            past, present = f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"
            inputs.append(TensorSig(past, kv_dtype, (BATCH, heads, past_dim, size), 0))
            outputs.append(TensorSig(present, kv_dtype, (BATCH, heads, total_dim, size), 0))
            cache_names.append((past, present))
    config = getattr(module, "generation_config", None) or getattr(module, "config", None)
    eos = _ids(getattr(config, "eos_token_id", None))
    outside = [e for e in eos if not 0 <= e < vocab]
    if outside:
        log(f"generation: end-of-sequence id {', '.join(map(str, outside))} is outside the vocabulary of {vocab}: "
            "left out (give --eos to ptx generate)")
        eos = [e for e in eos if 0 <= e < vocab]
    pad = next((p for p in (*_ids(getattr(config, "pad_token_id", None)), *eos) if 0 <= p < vocab), 0)
    generation = Generation(tuple(cache_names), position_ids="position_ids" if takes_positions else None,
                            logits_to_keep=KEEP if keeps_logits else None, eos=tuple(eos), pad=pad,
                            max_positions=_config_int(module, "max_position_embeddings", "n_positions"),
                            in_place=placed, cache_position=SLOTS if static else None)
    heads = {int(p[0].shape[1]) for p in pairs}
    log(f"generation: {len(pairs)} layers, a cache of {'/'.join(map(str, sorted(heads)))} key/value heads of "
        f"{int(pairs[0][0].shape[3])}; "
        + (f"end-of-sequence {', '.join(map(str, eos))}" if eos else "no end-of-sequence id")
        + f"; padding {pad}" + (f"; {generation.max_positions} positions" if generation.max_positions else ""))
    decoder = named(CachedDecoder(module, len(pairs), takes_positions, cache_keyword, keeps_logits, placed, static),
                    [t.name for t in inputs])
    return decoder, Signature(tuple(inputs), tuple(outputs)), generation


def _check_static(module, takes_positions: bool, cache_keyword: str, pairs, ids: torch.Tensor,
                  logits: torch.Tensor) -> None:
    """``module``'s first step over a fixed-length cache of 4 slots (its 2 tokens in the first two) gives the logits
    of its run over its own cache, and writes its keys there: else refused in one line, as a model whose own code
    keeps its cache otherwise would export a file that ignores the buffer."""
    decoder = CachedDecoder(module, len(pairs), takes_positions, cache_keyword, static=True)
    buffers = [torch.zeros((1, k.shape[1], 4, k.shape[3]), dtype=k.dtype) for pair in pairs for k in pair]
    extra = [torch.tensor([[0, 1]])] if takes_positions else []
    with torch.no_grad():
        try:
            out = decoder(ids, torch.tensor([[1, 1, 0, 0]]), *extra, torch.tensor([0, 1]), *buffers)
            why = None
        except Exception as exc:  # noqa: BLE001 - the model's own refusal, in one line
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if why is None:
        written = all(float(t[:, :, :2].abs().max()) > 0 for t in out[1:])
        gap = float((out[0] - logits).abs().max())
        if not written or gap > 1e-3 * (1 + float(logits.abs().max())):
            why = "its keys were not written to the buffer" if not written else f"its logits differ by {gap:.3g}"
    if why is not None:
        raise PtxError(f"--static-cache: {type(module).__name__} does not compute over a fixed-length cache as over its "
                       f"own ({why}): export it without --static-cache")


def example_feeds(signature: Signature, generation: Generation, vocab: int, batch: int = 2, seq: int = 3,
                  past: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs the exporters trace with: every dynamic size at least 2 (torch.export specializes 0 and 1),
    the mask covering past and new tokens, positions following the past."""
    rng = np.random.default_rng(seed)
    capacity = past + seq + 2 if generation.cache_position else None  # slots beyond the filled ones, masked
    feeds = {generation.input_ids: rng.integers(0, vocab, (batch, seq)).astype(np.int64),
             generation.attention_mask: np.ones((batch, past + seq), dtype=np.int64)}
    if capacity:
        feeds[generation.attention_mask] = np.pad(feeds[generation.attention_mask], [(0, 0), (0, capacity - past - seq)])
        feeds[generation.cache_position] = np.arange(past, past + seq, dtype=np.int64)
    if generation.position_ids:
        feeds[generation.position_ids] = np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))
    if generation.logits_to_keep:  # two of the positions: a dynamic size of 1 would be specialized
        feeds[generation.logits_to_keep] = np.arange(seq - 2, seq, dtype=np.int64)
    for name, _ in generation.cache:
        sig = signature.input(name)
        shape = [batch if isinstance(d, str) and d == BATCH else past if d == PAST else capacity if d == CAPACITY else d
                 for d in sig.shape]
        feeds[name] = rng.standard_normal(shape).astype(sig.dtype)
    return feeds
