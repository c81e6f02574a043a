"""A decoder whose attention is ONNX Runtime's GroupQueryAttention (com.microsoft, the operator
onnxruntime-genai's model builder writes), so that its cache can stay in place: a runner that binds a layer's
past and present to one buffer of the positions a decoding reaches has the operator write each step's new keys
and values after the past, where the decoder of plain ONNX operators concatenates the past and the new
positions into a new tensor, a copy of the whole cache at every step.

Measured before building it, one layer of SmolLM2-135M's shape (9 query heads over 3 key/value heads of 64),
ONNX Runtime 1.31 on the CPU, 2 threads, AMD EPYC Zen 4, 2026-11-27: at 2,048 positions of past a step took
0.158 ms through the shared buffer against 0.410 with the past given apart (the operator copies it into its
present); the decoder of plain operators spent 9.8 ms of a 48 ms step of its 30 layers in the Concat nodes
alone. A sequence-first past read in place by MatMuls over transposed batch axes (FusedMatMul transBatchB) was
tried first and cost as much as the copy (10.9 ms). End to end (docs/benchmarks/generation.md, "The cache kept
in place"): SmolLM2's token at 2,048 positions 0.72x to 0.89x of the plain file's time in three runs, Qwen2-0.5B's
f32 0.89x (int4 within that machine's noise), and every prompt's run 0.71x to 0.88x.

The file keeps the usual layout of its inputs and outputs (Optimum's: each past [batch, kv heads, past, head
size] in, each present with the new positions after it out), so a caller that feeds the past apart (a batch of
decodings, a stranger's loop) runs it as any decoder. The operator is ONNX Runtime's alone: OpenVINO and the
other runtimes do not run the file.

Only the file computes so, and only through transformers' attention interface (eager or sdpa) in the plain
form: a layer that asks for more (dropout, a soft cap, sinks) or a model of its own attention code is refused
in one line; export's judge holds the file to the model's own attention run eagerly.
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from ptx.errors import PtxError

from .grouped_attention import own_attention, register_attention

ORT_ATTENTION = "ptx_ort_attention"
PLAIN_ONLY = ("softcap", "s_aux", "sinks")  # what the plain attention does not do
_TRACED = threading.local()  # the cache of the forward being exported, which the attention function reads


@functools.cache
def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class PlacedLayer(DynamicLayer):
        """A layer's cache that knows its past's length from the mask (a runner's shared buffer is longer than
        the past), and keeps the new keys and values, and the present the operator answers, apart."""

        def __init__(self, key: torch.Tensor, value: torch.Tensor, past_length):
            super().__init__()
            self.lazy_initialization(key, value)
            self.keys, self.values, self.past = key, value, (key, value)
            self.past_length = past_length
            self.new: tuple[torch.Tensor, torch.Tensor] | None = None
            self.present: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states, value_states, *args, **kwargs):
            self.new = (key_states, value_states)
            return super().update(key_states, value_states, *args, **kwargs)  # unread where the operator runs

        def get_seq_length(self):
            return self.past_length + (self.new[0].shape[2] if self.new is not None else 0)

        def get_mask_sizes(self, query_length, *args, **kwargs):
            length = query_length.shape[0] if isinstance(query_length, torch.Tensor) else query_length
            return self.past_length + length, 0

    return PlacedLayer


def placed_cache(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], past_length):
    """A DynamicCache whose layers hold ``pairs`` (each layer's past key and value), ``past_length`` long."""
    from transformers import DynamicCache

    layer = _layer_class()
    cache = DynamicCache()
    cache.layers = [layer(key, value, past_length) for key, value in pairs]
    cache.layer_class_to_replicate = None
    return cache


def presents(cache, model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's present, the operator's: a layer whose attention did not come through transformers' interface
    (a model's own code) refused in one line, as a runner binding its buffer as that present would fail."""
    unplaced = [k for k, layer in enumerate(cache.layers) if layer.present is None]
    if unplaced:
        raise PtxError(f"--ort-attention: layer {unplaced[0]} of {type(model).__name__} computes its attention in its "
                       "own code, not through transformers' attention interface that ptx replaces with ONNX Runtime's "
                       "operator: export it without --ort-attention")
    return [layer.present for layer in cache.layers]


def _attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention as ONNX Runtime's GroupQueryAttention over the layer's past and new keys."""
    cache = getattr(_TRACED, "cache", None)
    layer = cache.layers[module.layer_idx] if cache is not None and module.layer_idx < len(cache.layers) else None
    batch, heads, new, size = query.shape
    kv_heads = key.shape[1]
    if layer is None or layer.new is None:  # not ptx's export: the model's own attention
        return own_attention(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                     **kwargs)
    asked = [k for k in PLAIN_ONLY if kwargs.get(k) is not None] + ["dropout"] * bool(dropout)
    if asked or heads % kv_heads:
        raise PtxError(f"--ort-attention: layer {module.layer_idx}'s attention asks for "
                       f"{asked[0] if asked else f'{heads} heads over {kv_heads}'}, which ptx does not give ONNX "
                       "Runtime's operator: export it without --ort-attention")
    (past_key, past_value), (new_key, new_value) = layer.past, layer.new
    # the past's length is the mask's (a shared buffer is longer): nothing here reads the past's shape
    total, positions = _TRACED.lengths, _TRACED.positions  # int32 [batch], every row alike; and that length
    bias = query.new_zeros((1, 1, new, positions)) if attention_mask is None else attention_mask.to(query.dtype)
    out, present_key, present_value = torch.onnx.ops.symbolic_multi_out(
        "com.microsoft::GroupQueryAttention",
        [query.transpose(1, 2).reshape(batch, new, heads * size),
         new_key.transpose(1, 2).reshape(batch, new, kv_heads * size),
         new_value.transpose(1, 2).reshape(batch, new, kv_heads * size),
         past_key, past_value, total - 1, total.max(), None, None, None, bias],  # no rotary caches, no positions
        {"num_heads": heads, "kv_num_heads": kv_heads, "scale": float(scaling)},
        dtypes=(query.dtype, past_key.dtype, past_value.dtype),
        shapes=((batch, new, heads * size), (batch, kv_heads, positions, size), (batch, kv_heads, positions, size)),
        version=1)
    layer.present = (present_key, present_value)
    return out.reshape(batch, new, heads, size), None


def can_place(model) -> bool:
    """Whether ``model`` computes its attention through transformers' interface (eager or sdpa), which this
    module replaces where the file is exported."""
    config = getattr(model, "config", None)
    return (callable(getattr(model, "set_attn_implementation", None))
            and getattr(config, "_attn_implementation", None) in ("eager", "sdpa")
            and register_attention(ORT_ATTENTION, _attention))


@contextmanager
def ort_attention(model, cache, attention_mask: torch.Tensor) -> Iterator[None]:
    """``model`` attending through ONNX Runtime's operator over ``cache`` (placed_cache's) for the block, its
    mask ``attention_mask`` [batch, past + new] giving each row's length; its own attention restored after."""
    before = model.config._attn_implementation
    model.set_attn_implementation(ORT_ATTENTION)
    _TRACED.cache = cache
    _TRACED.lengths = torch.ones_like(attention_mask, dtype=torch.int32).sum(dim=1, dtype=torch.int32)
    _TRACED.positions = attention_mask.shape[1]
    try:
        yield
    finally:
        _TRACED.cache = _TRACED.lengths = _TRACED.positions = None
        model.set_attn_implementation(before)
