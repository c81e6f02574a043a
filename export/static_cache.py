"""A decoder whose cache has a fixed length (``ptx export --static-cache``): each layer's past is a buffer of the
positions a decoding may reach, its present the same buffer with the run's new keys and values written at the slots
``cache_position`` names (one ScatterND a layer), and the attention reads the whole buffer under a mask that is 0
over the slots not filled. transformers' StaticCache computes so for torch.compile; here the buffer is an input
and an output of the file, so that a runner binds one buffer as both.

Why a layout of its own: a CUDA graph replays fixed shapes at fixed addresses (ONNX Runtime's enable_cuda_graph,
as onnxruntime-genai captures its decoding step over a past/present buffer shared at max_length). The plain file's
past grows by a position at every step and its present is a new Concat; the GroupQueryAttention file
(--ort-attention) keeps one buffer but ONNX Runtime's CUDA kernel of that operator takes float16 and bfloat16 only.
This file is plain ONNX operators in the model's own dtype: every runtime runs it, and with its sizes fixed
(ONNX Runtime's free-dimension overrides) no shape arithmetic is left for the CPU (infer/runtime/ort_graph_cache.py).

The eager decoder computes the same way (the model's own attention over the buffer, its own mask code), and export's
judge holds the file to transformers' own generate() as for the plain file.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch


@functools.cache
def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        """A layer's cache of fixed length: the run's keys and values written at ``slots`` (out of place, so that
        the exported present is the buffer with them: one ScatterND), the mask sized to the buffer, the queries'
        offset the first slot written."""

        def __init__(self, key: torch.Tensor, value: torch.Tensor, slots: torch.Tensor):
            super().__init__()
            self.lazy_initialization(key, value)
            self.keys, self.values, self.slots = key, value, slots

        def update(self, key_states, value_states, *args, **kwargs):
            self.keys, self.values = _written(self.keys, key_states, self.slots), \
                _written(self.values, value_states, self.slots)
            return self.keys, self.values

        def get_seq_length(self):
            return self.slots[0]  # the queries' first position on the buffer: transformers' causal mask offset

        def get_mask_sizes(self, query_length, *args, **kwargs):
            return self.keys.shape[2], 0

    return SlotLayer


def _written(buffer: torch.Tensor, new: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``buffer`` [batch, heads, capacity, size] with ``new`` [batch, heads, len(slots), size] at ``slots``, indexed on
    its three leading axes at once: the exporter writes that as one ScatterND on the buffer itself, which ONNX
    Runtime runs in place where the present is bound to the past's memory. (index_copy on axis 2 is exported as a
    Transpose of the whole buffer to put that axis first, the ScatterND, and a Transpose back: two copies of the
    cache a step, measured slower than the plain file's Concat.)"""
    batch, heads = buffer.shape[0], buffer.shape[1]
    rows = torch.arange(batch, device=buffer.device).view(batch, 1, 1)
    each = torch.arange(heads, device=buffer.device).view(1, heads, 1)
    return buffer.index_put((rows, each, slots.view(1, 1, -1)), new)


def slot_cache(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], slots: torch.Tensor):
    """A DynamicCache whose layers are the buffers ``pairs`` (each layer's key and value), written at ``slots``."""
    from transformers import DynamicCache

    layer = _layer_class()
    cache = DynamicCache()
    cache.layers = [layer(key, value, slots) for key, value in pairs]
    cache.layer_class_to_replicate = None
    return cache
