"""A transformers model whose weights stay in its folder (DESIGN.md 19: a model larger than memory is never
whole): built with every parameter on the meta device, which holds no memory, and each module's own parameters
read from the folder's shards (export/folder_weights.py) just before the module runs and let go just after it.
A decoding of it holds one module's weights at a time (the largest, a 7B model's embedding, 2.2 GB in float32),
whatever the model's size, and computes what the whole model in float32 computes: a bfloat16 or float16 weight
is exact in float32, as transformers' ``from_pretrained(dtype=float32)`` widens it.

Why hooks around each module and not accelerate's offloading: accelerate is no dependency of ptx, and its disk
offload copies the weights to a folder of its own first (15 GB more on disk for a 7B model); a pre-hook that
reads the module's tensors from the shards, and a hook after that puts the meta parameter back, are the whole
mechanism. The buffers (rotary frequencies) are built for real on the CPU: they are small, and computed from
the config, never read from the folder.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from ptx.errors import PtxError

from .folder_weights import FolderWeights

WRAPPER = "model."  # export/cached_decoder.CachedDecoder holds the model as ``model``: its FQNs start so


@contextmanager
def parameters_on_meta():
    """Every parameter a module registers inside the block moved to the meta device as it is registered, so that
    a model's __init__ allocates no weights (its initialisers then run on meta tensors, which compute nothing);
    buffers stay where they are made (the CPU). accelerate's ``init_empty_weights(include_buffers=False)`` does
    the same; it is not a dependency of ptx."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=False)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def empty_model(cls, config) -> torch.nn.Module:
    """``cls`` built from ``config`` with its parameters on the meta device (no weights in memory), in eval mode,
    float32, its head tied to its embedding where the config ties them."""
    with parameters_on_meta():
        model = cls(config)
    model.eval()
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def folder_keys(module: torch.nn.Module, weights: FolderWeights, prefix: str = "") -> dict[str, str]:
    """{each name of each parameter of ``module``, as named_parameters gives it: the folder tensor it is}, a
    parameter two modules share (a tied head) read under whichever of its names the folder holds; ``prefix``: what
    the module's own names start with before the model's (a wrapper's attribute). PtxError in one line for a
    parameter the folder lacks or holds in another shape, naming the tensor and its shard: a folder whose tensors
    are named otherwise (a checkpoint converted from another layout) is opened whole by transformers, where it
    fits in memory."""
    names: dict[int, list[str]] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
        params[id(param)] = param
    inner = next((m for m in module.modules() if hasattr(m, "base_model_prefix") and hasattr(m, "config")), module)
    renamed = checkpoint_names(inner, weights)
    keys = {}
    for ident, aliases in names.items():
        bare = [a[len(prefix):] if a.startswith(prefix) else a for a in aliases]
        key = next((renamed[b] for b in bare if b in renamed), None)
        if key is None:
            raise PtxError(f"{weights.folder}: no tensor {bare[0]} in its safetensors files, which "
                           f"{type(module).__name__} holds (its names: {', '.join(sorted(weights.tensors)[:3])}, ...): "
                           "ptx reads a folder tensor by tensor only where its names are the model's")
        stored, want = weights.tensors[key], tuple(params[ident].shape)
        if stored.shape != want:
            raise PtxError(f"{stored.path.name}: {key} has shape {list(stored.shape)} where the model's config makes it "
                           f"{list(want)}: the folder's weights are not its config's model (or the file is damaged)")
        keys.update(dict.fromkeys(aliases, key))
    return keys


def checkpoint_names(model: torch.nn.Module, weights: FolderWeights) -> dict[str, str]:
    """{the model's name of each folder tensor: its name in the folder}, by transformers' own renaming of checkpoint
    keys as from_pretrained applies it (its conversion mapping: GPT-NeoX's ``embed_out`` is ``lm_head``; a base
    model's prefix added or dropped). A tensor one of its converters would change (experts stacked into one tensor,
    projections fused) is left out: no one tensor of the model is it, so such a folder is opened whole."""
    try:  # transformers' loading internals (5.x); without them a folder's names must be the model's own
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, rename_source_key

        transforms = get_model_conversion_mapping(model)
        meta = model.state_dict()  # references (meta tensors, or the loaded ones): nothing copied
    except Exception:  # noqa: BLE001 - another transformers, or a model that is not transformers'
        return {key: key for key in weights.tensors}
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    found = {}
    for key in weights.tensors:
        name, converted = rename_source_key(key, renamings, converters, getattr(model, "base_model_prefix", None), meta)
        if converted is None:
            found[name] = key
    return found


def read_f32(weights: FolderWeights, key: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Folder tensor ``key`` as a float32 torch tensor (into ``out`` where given: a buffer of its shape), widened
    by torch straight from the file's pages. The pages are mapped only while they are widened: mapped pages count
    in the process's resident memory until they are unmapped (folder_weights.py), so one tensor's worth at a time."""
    stored = weights.tensors[key]
    kind = {"BF16": (np.int16, torch.bfloat16), "F16": (np.float16, None), "F32": (np.float32, None)}.get(stored.dtype)
    if kind is None:
        values = torch.from_numpy(weights.read(key))
        return values if out is None else out.copy_(values)
    out = torch.empty(stored.shape, dtype=torch.float32) if out is None else out
    mapped = np.memmap(stored.path, dtype=kind[0], mode="r", offset=stored.offset,
                       shape=(stored.length // np.dtype(kind[0]).itemsize,))
    try:
        with warnings.catch_warnings():  # torch warns that the map is read-only: it is only read
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(mapped)
        out.view(-1).copy_(raw.view(kind[1]) if kind[1] is not None else raw)
        del raw
    finally:
        mapped._mmap.close()
    return out


class Streamed:
    """``model``'s modules reading their parameters from ``weights`` as they run (``stream``)."""

    def __init__(self, model: torch.nn.Module, weights: FolderWeights,
                 read: Callable[..., torch.Tensor] = read_f32):
        self.model, self.weights, self.read = model, weights, read
        # One float32 buffer per shape, reused by every module of that shape as it runs: a fresh one's pages are
        # first touched by the widening, which took 5 to 10 times the widening itself (a 2048 x 11008 weight:
        # 0.26 s fresh, 0.03 s reused, 2 cores); at most one buffer of each shape is held (a layer's worth, and
        # the embedding's).
        self.buffers: dict[tuple[int, ...], torch.Tensor] = {}
        by_name = folder_keys(model, weights)
        self.keys = {id(p): by_name[n] for n, p in model.named_parameters(remove_duplicate=False)}
        self.handles = []
        self.reads = 0  # tensors read so far: a streamed decoding's count says how often it went to the folder
        for module in model.modules():
            if any(p is not None for p in module._parameters.values()):
                self.handles.append(module.register_forward_pre_hook(self._load))
                self.handles.append(module.register_forward_hook(self._release, always_call=True))

    def _load(self, module, args) -> None:
        # a parameter not on the meta device is one the module holds already: a fake one while the graph is traced
        # without weights (export/weightless.py), which must not be read
        loaded = {}
        for name, param in module._parameters.items():
            if param is not None and param.device.type == "meta":
                loaded[name] = param
                values = self.read(self.weights, self.keys[id(param)], self.buffers.pop(tuple(param.shape), None))
                module._parameters[name] = torch.nn.Parameter(values, requires_grad=False)
                self.reads += 1
        if loaded:
            module._ptx_streamed = loaded

    def _release(self, module, args, output) -> None:
        for name, param in getattr(module, "_ptx_streamed", {}).items():
            self.buffers[tuple(param.shape)] = module._parameters[name].data
            module._parameters[name] = param
        module.__dict__.pop("_ptx_streamed", None)

    def let_go(self) -> None:
        """The reused buffers given back (a layer's weights and the embedding's, 2.8 GB for a 7B model), once the
        model's passes are done for now: the next pass makes them again."""
        self.buffers = {}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.buffers = [], {}


def stream(model: torch.nn.Module, weights: FolderWeights) -> torch.nn.Module:
    """``model`` (built by ``empty_model``) reading each module's parameters from ``weights`` as it runs; its
    ``ptx_streamed`` says so (and counts the reads)."""
    model.ptx_streamed = Streamed(model, weights)
    return model
