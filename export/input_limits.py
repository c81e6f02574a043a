"""What a module's integer inputs may hold, as its graph says it: token ids index an embedding of N
rows, so generated ids stay below N (ids of 10 into a vocabulary of 8 are an index error in eager
and garbage or a crash in a runtime, neither of which says anything about the export)."""
from __future__ import annotations

from typing import Sequence

import torch

from ptx.contract.tensors import TensorSig


def probe(module: torch.nn.Module, sigs: Sequence[TensorSig], args: Sequence[torch.Tensor],
          named: torch.nn.Module | None = None) -> tuple[object | None, dict[str, tuple[int, str]]]:
    """The module run once on ``args``: (its answer, or None where it raised; {input name: (rows,
    why)} for each integer input that reaches an ``nn.Embedding`` as it is, or as a view of it
    sharing its storage: GPT-2's ``input_ids.view(-1, seq)``). A hook on every embedding sees the
    ids; the smallest embedding wins. One run tells both what the module answers (export/as_it_comes
    unwraps a ModelOutput by it) and what its ids may hold. An embedding is named by its path in
    ``named`` (the user's own module, where ``module`` wraps it: export/as_it_comes)."""
    storage = {t.untyped_storage().data_ptr(): sig.name for sig, t in zip(sigs, args)
               if not t.is_floating_point() and t.dtype != torch.bool and t.numel()}
    found: dict[str, tuple[int, str]] = {}
    names = {m: n for n, m in (named or module).named_modules()}

    def hook(embedding, inputs):
        ids = inputs[0] if inputs else None
        if isinstance(ids, torch.Tensor) and ids.numel():
            name = storage.get(ids.untyped_storage().data_ptr())
            if name is not None and (name not in found or embedding.num_embeddings < found[name][0]):
                found[name] = (embedding.num_embeddings, f"rows of the embedding {names.get(embedding) or 'embedding'}")

    handles = [m.register_forward_pre_hook(hook) for m in module.modules()
               if storage and isinstance(m, torch.nn.Embedding)]
    try:
        with torch.inference_mode():
            out = module(*args)
    except Exception:  # noqa: BLE001 - ids the embedding refuses (generated past its rows) are what this finds
        out = None  # the hook ran before the embedding refused them; the eager run that follows says any other failure
    finally:
        for handle in handles:
            handle.remove()
    return out, found
