"""Grouped-query attention as the decoder file computes it: each query head against its group's key and value
head, never a copy of the cache for every query head.

transformers' attention functions (eager and sdpa alike, as torch.onnx decomposes them) expand each layer's
keys and values from their key/value heads to every query head before the two MatMuls (``repeat_kv``): traced
into the decoder file, that is a copy of the whole cache, times the group size, at every step. SmolLM2-135M's
config (9 query heads over 3 key/value heads) took 123.2 ms a token at 2,048 positions of past through ort-cpu
with that copy and 54.5 without it (2026-11-27, 2 cores; docs/benchmarks/generation.md). Here the queries of a
group are laid side by side instead ([batch, kv heads, group x new, head size]), so each MatMul reads the cached
keys and values as they are; the arithmetic is the same dot products. Only the traced file computes so: the
eager reference export's judge holds the file to runs the model's own attention (export/cached_decoder.py).

Only a layer of grouped heads (fewer key/value heads than query heads) is traced so, and only through the
plain attention every transformers model of that kind shares: a layer that asks for more (dropout, a logit
soft cap, attention sinks) is computed by the model's own function.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

GROUPED = "ptx_grouped"
PLAIN_ONLY = ("softcap", "s_aux", "sinks")  # what the plain attention does not do


def _grouped(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention (softmax(q k^T x scaling + mask) v, in float32), per key/value group."""
    batch, heads, new, size = query.shape
    kv_heads, past = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    if groups == 1 or heads % kv_heads or dropout or any(kwargs.get(k) is not None for k in PLAIN_ONLY):
        return own_attention(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                     **kwargs)
    side_by_side = query.reshape(batch, kv_heads, groups * new, size)
    weights = torch.matmul(side_by_side, key.transpose(2, 3)).reshape(batch, heads, new, past) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, :past]
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights.reshape(batch, kv_heads, groups * new, past), value)
    return out.reshape(batch, heads, new, size).transpose(1, 2).contiguous(), weights


def own_attention(module):
    """The model's own eager attention function (where its module defines one), else transformers' sdpa."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    own = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return own if callable(own) else ALL_ATTENTION_FUNCTIONS["sdpa"]


def register_attention(name: str, attention) -> bool:
    """``attention`` registered as ``name`` with transformers' attention and mask interfaces (an additive float
    mask, as eager attention takes); False where this transformers has no such interfaces."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask
    except ImportError:
        return False
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, eager_mask)
    return True


def _register() -> bool:
    return register_attention(GROUPED, _grouped)


def exporting() -> bool:
    """Whether torch.export is tracing the model (the ONNX exporter's way), not TorchScript's trace or a run."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(exporting and exporting())


def tracing() -> bool:
    """Whether torch is tracing the model into a file (torch.export, TorchScript's trace), not running it."""
    return exporting() or torch.jit.is_tracing()


@contextmanager
def grouped_attention(model):
    """``model`` computing its attention per key/value group for the block (its own implementation restored
    after); as it is where it has no grouped heads or cannot switch (a model of its own, not transformers')."""
    config = getattr(model, "config", None)
    switch = getattr(model, "set_attn_implementation", None)
    heads, kv_heads = getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None)
    before = getattr(config, "_attn_implementation", None)
    if not (callable(switch) and isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads < heads
            and before in ("eager", "sdpa") and _register()):
        yield
        return
    switch(GROUPED)
    try:
        yield
    finally:
        switch(before)
