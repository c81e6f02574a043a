"""A module as it comes (a Hugging Face transformers model above all): inputs declared by forward()'s
keyword, and outputs that are a ModelOutput (a dict-like or dataclass of tensors and other things).

The exporters call forward() by position and want tensors back; a transformers model takes
``input_ids, attention_mask, token_type_ids`` with other parameters between them (``past_key_values``,
``cache_position``...) and returns a ModelOutput that may hold a cache (a DynamicCache object, not a
tensor). Rather than refuse either, the module is wrapped in ``AsItComes``: a forward() whose
parameters are exactly the declared inputs, in forward()'s order, passed on as keywords (the others
left at their defaults), and whose answer is the module's tensors by their own names (``logits``,
``last_hidden_state``; a tuple of tensors as ``hidden_states_0``...), the cache dropped and said so.
An answer of tuples, lists and dicts nested (ultralytics' ``(predictions, [p3, p4, p5])``) is
flattened the same way, by each tensor's path (``output_0``, ``output_1_0``...: ptx.contract.structure).
A module that needs neither is exported as it is.
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Sequence

import torch

from ptx.contract.structure import OutputStructure, flatten
from ptx.contract.tensors import TensorSig, as_declarations

from .detections import detection_outputs, is_detections

# Output entries that are a generation cache by name (a legacy cache is a tuple of tuples of tensors).
CACHE_KEYS = ("past_key_values", "cache", "present_key_values", "mems")


class AsItComes(torch.nn.Module):
    """``module`` called with its inputs by keyword (``keywords``) or by position, plus the fixed
    keyword arguments ``fixed`` (``use_cache=False``), its answer reduced to a dict of its tensors
    (``unwrap``) or returned as it is."""

    def __init__(self, module: torch.nn.Module, names: Sequence[str], keywords: bool,
                 fixed: Mapping[str, object] | None = None, unwrap: bool = False):
        super().__init__()
        self.module, self.names, self.keywords = module, list(names), keywords
        self.fixed, self.unwrap = dict(fixed or {}), unwrap

    def forward(self, *args):
        if self.keywords:
            out = self.module(**dict(zip(self.names, args)), **self.fixed)
        else:
            out = self.module(*args, **self.fixed)
        return tensors_of(out)[0] if self.unwrap else out


def _wrapped(module: torch.nn.Module, names: Sequence[str], keywords: bool, fixed=None, unwrap=False) -> AsItComes:
    """An AsItComes whose forward() shows the declared names as its parameters: torch.export binds
    the example to them, and ptx matches ``--input`` to them by name. Its class is named after the
    module's, so that messages name the user's model."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                  *(inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names)]

    def forward(self, *args):
        return AsItComes.forward(self, *args)

    forward.__signature__ = inspect.Signature(parameters)
    cls = type(type(module).__name__, (AsItComes,), {"forward": forward, "__module__": AsItComes.__module__})
    return cls(module, names, keywords, fixed, unwrap)


def forward_parameters(module: torch.nn.Module) -> list[inspect.Parameter] | None:
    """forward()'s parameters, or None where Python cannot say them (a builtin): the one place
    export reads them."""
    try:
        return list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None


def keyword_inputs(module: torch.nn.Module, example_inputs, inputs, log: Callable[[str], None]):
    """(the module to export, its example inputs): ``module`` wrapped where its inputs are declared
    (``--input`` names, or an example dict's keys) by forward()'s keyword with parameters left out
    before the last of them, each left-out one having a default (a ``use_cache`` among them is
    passed False: ptx exports tensors, and a cache is none). Otherwise both as given, and
    example_signature refuses what it cannot take (a left-out parameter without a default)."""
    declared = as_declarations(inputs) if inputs else ()
    names = [t.name for t in declared] or (
        [str(k) for k in example_inputs] if isinstance(example_inputs, Mapping) else [])
    params = forward_parameters(module)
    if not names or params is None or any(p.kind is p.VAR_POSITIONAL for p in params):
        return module, example_inputs
    by_name = {p.name: p for p in params if p.kind is not p.VAR_KEYWORD}
    if any(n not in by_name for n in names) or len(set(names)) != len(names):
        return module, example_inputs  # example_signature names what is wrong
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    ordered = [p.name for p in params if p.name in names]
    if ordered == positional[:len(ordered)]:
        return module, example_inputs  # a prefix of forward()'s parameters: called by position as it is
    positional_only = [n for n in names if by_name[n].kind is inspect.Parameter.POSITIONAL_ONLY]
    needed = [p.name for p in params[:max(params.index(by_name[n]) for n in names)]
              if p.name not in names and p.default is inspect.Parameter.empty
              and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if needed or positional_only:
        return module, example_inputs  # a parameter without a default is left out: example_signature names it
    where = f"{type(module).__name__}.forward"
    fixed = {"use_cache": False} if "use_cache" in by_name and "use_cache" not in names else {}
    left = [p.name for p in params[:params.index(by_name[ordered[-1]])] if p.name not in names]
    log(f"inputs: {', '.join(ordered)} passed to {where} by keyword; {', '.join(left)} left at "
        f"{'its default' if len(left) == 1 else 'their defaults'}"
        + (" (use_cache=False: ptx exports tensors, not a cache)" if fixed else ""))
    if isinstance(example_inputs, Mapping):
        example_inputs = {n: example_inputs[n] for n in ordered}
    return _wrapped(module, ordered, True, fixed), example_inputs


def _is_cache(key: str | None, value) -> bool:
    return key in CACHE_KEYS or any(c.__name__.endswith("Cache") for c in type(value).__mro__)


def _is_tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


def tensors_of(out) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """(a module's answer's tensors by name, in its order; [(name, type name)] of the caches left out),
    by the one walk (ptx.contract.structure.flatten): a tuple or list of tensors becomes ``key_0``,
    ``key_1``... (``output_0``... returned alone); a ModelOutput inside one (CLIP's text_model_output)
    ``key_name``...; nested as deep as it comes; None entries are absent."""
    flat = flatten(out, _is_tensor, _is_cache)
    return flat.tensors, flat.dropped


def output_structure(out) -> OutputStructure | None:
    """The structure of a module's answer ``out``, its leaves the outputs' names (None where the
    probe raised: the eager run that follows says what failed)."""
    return None if out is None else flatten(out, _is_tensor, _is_cache).structure


def _plain(out) -> bool:
    """Whether the exporters and the runners take ``out`` as it is: a tensor, or a tuple, list or
    dict (a ModelOutput too) of tensors."""
    if isinstance(out, torch.Tensor):
        return True
    values = list(out.values()) if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else None
    return values is not None and bool(values) and all(isinstance(v, torch.Tensor) for v in values)


def tensor_outputs(module: torch.nn.Module, sigs: Sequence[TensorSig], out, log: Callable[[str], None]
                   ) -> torch.nn.Module:
    """``module``, wrapped where its answer ``out`` (export/examples.probe's; None where it
    raised, and the eager run that follows says what failed) is not plain tensors: a ModelOutput or
    dataclass holding a cache or other non-tensors, or tuples, lists and dicts nested (ultralytics'
    ``(predictions, [p3, p4, p5])``), becomes a flat dict of its tensors named by their path
    (``output_1_0``), the cache dropped (and, where forward() takes ``use_cache``, not computed: it is
    called with use_cache=False). The structure itself is export's to record (``output_structure``).
    One dict of detections per image is export/detections.py's."""
    if out is not None and is_detections(out, sigs):
        return detection_outputs(module, sigs, out, log)
    if out is None or _plain(out):
        return module
    flat = flatten(out, _is_tensor, _is_cache)
    named, dropped = flat.tensors, flat.dropped
    wrapped = isinstance(module, AsItComes)
    inner, fixed = (module.module, dict(module.fixed)) if wrapped else (module, {})
    if dropped and "use_cache" in {p.name for p in forward_parameters(inner) or ()} \
            and "use_cache" not in {t.name for t in sigs}:
        fixed["use_cache"] = False
    if dropped:
        log(f"outputs: {', '.join(f'{k} (a {t})' for k, t in dropped)} left out: ptx exports tensors, not a cache"
            + ("; forward() is called with use_cache=False, so it is not computed either" if "use_cache" in fixed
               else "; build the model with use_cache=False to skip computing it"))
    if isinstance(out, (tuple, list)):  # named by their place: the structure says which is which
        log(f"outputs: the {type(out).__name__}'s tensors by their place in it: {flat.structure.describe()}")
    else:
        log(f"outputs: the {type(out).__name__}'s tensors by name: {', '.join(named)}")
    names, keywords = (module.names, module.keywords) if wrapped else ([t.name for t in sigs], False)
    return _wrapped(inner, names, keywords, fixed, unwrap=True)
