"""onnxruntime-genai's model builder leaves a decoder's cache sizes symbolic in the graph (its past is
[batch_size, 2, past_sequence_length, kv_cache_dim]) and writes them in the genai_config.json it keeps
beside the file (decoder.head_size, decoder.num_key_value_heads), which its own runtime reads. ptx reads
them there too, so that the builder's file decodes as it comes: an empty past needs its fixed sizes.
Standard library only."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ptx.contract.generation import LAYOUT_PAST
from ptx.contract.tensors import Signature

GENAI_CONFIG = "genai_config.json"
PAST_PREFIX = LAYOUT_PAST.split("{")[0]  # past_key_values.
# A past's axes in the builder's layout: [batch, key/value heads, past, head size].
CONFIG_AXES = {1: "num_key_value_heads", 3: "head_size"}


def with_cache_sizes(signature: Signature, path: Path) -> Signature:
    """``signature`` with each past input's symbolic heads and head size replaced by the sizes the
    genai_config.json beside ``path`` gives (the same signature where there is none, or it says nothing)."""
    decoder = _decoder_config(path)
    sizes = {axis: decoder[key] for axis, key in CONFIG_AXES.items() if isinstance(decoder.get(key), int)}
    if not sizes:
        return signature
    inputs = tuple(replace(t, shape=tuple(sizes[axis] if isinstance(dim, str) and axis in sizes else dim
                                          for axis, dim in enumerate(t.shape)))
                   if t.name.startswith(PAST_PREFIX) and len(t.shape) == 4 else t for t in signature.inputs)
    return replace(signature, inputs=inputs)


def _decoder_config(path: Path) -> dict:
    """genai_config.json's model.decoder beside ``path``, or {} where there is none or it cannot be read."""
    try:
        decoder = json.loads((Path(path).parent / GENAI_CONFIG).read_text())["model"]["decoder"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return decoder if isinstance(decoder, dict) else {}
