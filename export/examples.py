"""A user's module's inputs: the example tensors the exporters are called with and the signature
(named tensors, dtypes, symbolic sizes, batch axes) every file of its export carries. From
``--input`` declarations, example inputs, or both; matched to forward()'s parameters by name. And
what its integer inputs may hold (``probe``: the rows of the embedding they index)."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import torch

from ptx.contract.tensor_inputs import check_feeds, make_feeds, plan_inputs
from ptx.contract.tensors import Signature, TensorSig, as_declarations, dtype_info
from ptx.errors import InputError, PtxError

from .as_it_comes import forward_parameters

EXAMPLE_MIN = 2  # torch.export specializes a dynamic size of 0 or 1: examples are at least this


def _forward_parameters(module: torch.nn.Module) -> list[str] | None:
    """forward()'s positional parameter names, or None where it takes *args."""
    params = forward_parameters(module)
    if params is None or any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _as_examples(module: torch.nn.Module, example_inputs) -> tuple[list[str] | None, tuple[torch.Tensor, ...]]:
    """(names from a dict's keys or None, the tensors in forward()'s order)."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        names = [str(k) for k in example_inputs]
        params = _forward_parameters(module)
        if params is not None:
            unknown = [n for n in names if n not in params]
            if unknown:
                raise PtxError(f"example input {unknown[0]!r} is no parameter of {type(module).__name__}.forward"
                               f"({', '.join(params)})")
            if sorted(names, key=params.index) != params[:len(names)]:
                raise PtxError(f"example inputs {names} leave out a parameter before the last one of "
                               f"{type(module).__name__}.forward({', '.join(params)}): give the leading ones")
            names = params[:len(names)]  # passed positionally, in forward()'s order
        values = [example_inputs[n] for n in names]
    elif isinstance(example_inputs, (tuple, list)):
        names, values = None, list(example_inputs)
    else:
        raise PtxError(f"example inputs are a tensor, a tuple or list of tensors or a dict of them, not "
                       f"{type(example_inputs).__name__}")
    bad = [i for i, v in enumerate(values) if not isinstance(v, torch.Tensor)]
    if bad:
        raise PtxError(f"example input {bad[0]} is {type(values[bad[0]]).__name__}, not a tensor: ptx exports modules "
                       "whose inputs are tensors (a Python number that picks a branch can be a 0-d tensor)")
    if not values:
        raise PtxError("no example inputs: give at least one tensor, or declare the inputs")
    return names, tuple(v.detach().cpu().contiguous() for v in values)


def _dtype_name(tensor: torch.Tensor, where: str) -> str:
    try:
        return dtype_info(str(tensor.dtype), where).name
    except PtxError as exc:
        raise PtxError(str(exc)) from None


def example_signature(module: torch.nn.Module, example_inputs, inputs, input_names, dynamic: bool,
                      log: Callable[[str], None] = print, plan_of: Callable | None = None
                      ) -> tuple[tuple[TensorSig, ...], tuple[torch.Tensor, ...]]:
    """The inputs' signature and the example tensors the exporters are called with (see
    export_module: declarations, examples, or both; ``plan_of``: the InputPlan examples made from
    declarations follow, from their signatures: the user's --shape, --min-shape and --range)."""
    declared = _in_forward_order(module, as_declarations(inputs), log)
    if example_inputs is None:
        if not declared:
            raise PtxError("the module comes without example inputs: declare each input in forward()'s order with "
                           "--input NAME=SHAPE[:DTYPE] (library: inputs=[...]), or return (module, example inputs) "
                           "from FACTORY")
        if input_names and list(input_names) != [t.name for t in declared]:
            raise PtxError(f"input names {list(input_names)} and --input's {[t.name for t in declared]} disagree")
        return declared, generated_examples(declared, plan_of(declared) if plan_of else None)
    dict_names, tensors = _as_examples(module, example_inputs)
    if declared:
        if len(declared) != len(tensors):
            raise PtxError(f"--input declares {len(declared)} inputs ({', '.join(t.name for t in declared)}) and the "
                           f"example has {len(tensors)}: declare one per example tensor, in forward()'s order")
        _check_declared(declared, tensors)
        sigs = declared
    else:
        names = list(input_names or dict_names or [])
        if not names:
            params = _forward_parameters(module) or []
            names = params[:len(tensors)] if len(params) >= len(tensors) else []
        names = names or [f"input_{i}" for i in range(len(tensors))]
        if len(names) != len(tensors):
            raise PtxError(f"input names {names} name {len(names)} inputs; the example has {len(tensors)}")
        sigs = tuple(TensorSig(n, _dtype_name(t, f"example input {n!r}"),
                               tuple(("batch" if dynamic and axis == 0 else d) for axis, d in enumerate(t.shape)),
                               0 if dynamic and t.dim() else None)
                     for n, t in zip(names, tensors))
    return sigs, _at_least_two(sigs, tensors, log)


def _in_forward_order(module: torch.nn.Module, declared: tuple[TensorSig, ...],
                      log: Callable[[str], None]) -> tuple[TensorSig, ...]:
    """The declarations matched to forward()'s parameters by name and put in its order, since the
    exporters call forward() by position: ``--input attention_mask=... --input input_ids=...``
    would otherwise export a module that takes the mask as its ids, and pass every check. A name
    that is no parameter is refused naming forward()'s; a forward(*args) can only be matched by
    position, so there --input's order is kept, and said. A forward() of one parameter takes one
    input of any name (``--input image=...`` for ``forward(self, x)``): the name is the file's."""
    if not declared:
        return declared
    positional = _forward_parameters(module)
    where = f"{type(module).__name__}.forward"
    if positional is None:  # forward(*args), or parameters Python cannot say (then nothing is logged)
        if forward_parameters(module) is not None:
            log(f"inputs: {where} takes *args, so --input's order is forward()'s: "
                f"{', '.join(t.name for t in declared)} go in by position")
        return declared
    if len(positional) == 1 and len(declared) == 1:
        return declared  # one input into forward(x): its name is the file's, nothing to match
    takes = f"{where}({', '.join(positional)})"
    twice = next((t.name for i, t in enumerate(declared) if t.name in [d.name for d in declared[:i]]), None)
    if twice is not None:  # else the position check below says "add --input for " and names nothing
        raise PtxError(f"--input {twice} is given twice: declare each of {takes}'s inputs once")
    for sig in declared:
        if sig.name not in positional:
            raise PtxError(f"--input {sig.name}: {takes} has no parameter {sig.name!r}: name each --input as one of "
                           f"forward()'s parameters ({', '.join(positional) or 'it takes none by position'})")
    ordered = tuple(sorted(declared, key=lambda t: positional.index(t.name)))
    names = [t.name for t in ordered]
    if names != positional[:len(names)]:
        skipped = [n for n in positional[:positional.index(names[-1])] if n not in names]
        raise PtxError(f"--input {', '.join(names)}: {takes} takes its inputs by position, so the parameters before "
                       f"{names[-1]} need declaring too: add --input for {', '.join(skipped)}")
    if ordered != declared:
        log(f"inputs: in {where}'s order: {', '.join(names)}")
    return ordered


def _check_declared(declared: Sequence[TensorSig], tensors: Sequence[torch.Tensor]) -> None:
    """The example tensors fit the declarations: dtypes exactly (the example's dtype becomes the
    graph's), then ranks, fixed sizes and one size per symbol, as run() checks a caller's inputs."""
    for sig, tensor in zip(declared, tensors):
        dtype = _dtype_name(tensor, f"the example for --input {sig.name}")
        if dtype != sig.dtype:
            raise PtxError(f"--input {sig.name} declares {sig.dtype}; the example tensor is {dtype}")
    try:
        check_feeds(Signature(tuple(declared), ()), {s.name: t.numpy() for s, t in zip(declared, tensors)},
                    "the example")
    except InputError as exc:
        raise PtxError(f"--input and the example inputs disagree: {exc}") from None


def generated_examples(sigs: Sequence[TensorSig], plan=None) -> tuple[torch.Tensor, ...]:
    """Seeded examples from declarations: the batch 2, other symbols as verify chooses them
    (``plan``: as the caller shaped them, ids below an embedding's rows)."""
    only = Signature(tuple(sigs), ())
    feeds = make_feeds(only, plan or plan_inputs(only), EXAMPLE_MIN, seed=0)
    return tuple(torch.from_numpy(feeds[t.name]) for t in sigs)


def _at_least_two(sigs: Sequence[TensorSig], tensors: Sequence[torch.Tensor], log) -> tuple[torch.Tensor, ...]:
    """The examples with every dynamic size of 0 or 1 raised to 2 by repeating the example (rows
    are independent of one another in a batch; torch.export specializes sizes 0 and 1), after
    checking that each symbol has one size across the inputs."""
    sizes: dict[str, tuple[int, str]] = {}
    for sig, tensor in zip(sigs, tensors):
        for axis, d in enumerate(sig.shape):
            if isinstance(d, str):
                seen = sizes.setdefault(d, (tensor.shape[axis], sig.name))
                if seen[0] != tensor.shape[axis]:
                    raise PtxError(f"example inputs {seen[1]!r} and {sig.name!r} disagree on {d}: "
                                   f"{seen[0]} and {tensor.shape[axis]}")
    small = {d: n for d, (n, _) in sizes.items() if n < EXAMPLE_MIN}
    if any(n == 0 for n in small.values()):
        raise PtxError(f"the example inputs are empty along {', '.join(d for d, n in small.items() if n == 0)}: give "
                       "examples with real rows")
    if not small:
        return tuple(tensors)
    # each small axis repeated (torch.tile: a copy after the other along it; a 0-d tensor has no axis to repeat)
    out = tuple(torch.tile(t, [EXAMPLE_MIN if d in small else 1 for d in sig.shape]) for sig, t in zip(sigs, tensors))
    log(f"examples: {', '.join(f'{d} of 1' for d in small)} repeated to {EXAMPLE_MIN} (torch.export fixes a dynamic "
        "size of 0 or 1 to that size)")
    return out


def named_outputs(probed: Sequence[TensorSig], names: Sequence[str] | None) -> tuple[TensorSig, ...]:
    """The outputs the eager module was seen to return, renamed by ``--output`` in forward()'s order."""
    if names is None:
        return tuple(probed)
    names = list(names)
    if len(names) != len(probed):
        raise PtxError(f"output names {names} name {len(names)} outputs; the module returns {len(probed)} "
                       f"({', '.join(t.name for t in probed)})")
    return tuple(replace(t, name=n) for t, n in zip(probed, names))


def describe(tensors: Sequence[TensorSig]) -> str:
    """``image float32 [batch, 3, 64, 64], ...``: tensors as the first line of an export names them."""
    return ", ".join(f"{t.name} {t.dtype} {t.dims_text()}" for t in tensors)


# -- what a module's integer inputs may hold, as its graph says it ---------------------------------
# Token ids index an embedding of N rows, so generated ids stay below N (ids of 10 into a vocabulary
# of 8 are an index error in eager and garbage or a crash in a runtime, neither of which says
# anything about the export).


def probe(module: torch.nn.Module, sigs: Sequence[TensorSig], args: Sequence[torch.Tensor],
          named: torch.nn.Module | None = None) -> tuple[object | None, dict[str, tuple[int, str]]]:
    """The module run once on ``args``: (its answer, or None where it raised; {input name: (rows,
    why)} for each integer input that indexes an embedding's table as it is, or as a view of it
    sharing its storage: GPT-2's ``input_ids.view(-1, seq)``). The table lookup itself
    (``F.embedding``, ``torch.embedding``, seen by a TorchFunctionMode for this one run: no global patch
    another thread could see) is watched, not the embedding module's call: BART's learned positions take the
    ids only for their shape and look up positions, while its scaled word embedding looks the ids up
    through its parent's forward. The smallest table wins. One run tells both what the module answers
    (export/as_it_comes unwraps a ModelOutput by it) and what its ids may hold. A table is named by its
    module's path in ``named`` (the user's own module, where ``module`` wraps it: export/as_it_comes)."""
    from torch.overrides import TorchFunctionMode

    storage = {t.untyped_storage().data_ptr(): sig.name for sig, t in zip(sigs, args)
               if not t.is_floating_point() and t.dtype != torch.bool and t.numel()}
    found: dict[str, tuple[int, str]] = {}
    tables: dict[int, str] = {}
    for path, m in (named or module).named_modules():  # a table shared by several modules: by the first path
        if isinstance(m, torch.nn.Embedding):
            tables.setdefault(id(m.weight), path)
    for path, weight in (named or module).named_parameters():  # a table held as a bare parameter: by its own path
        tables.setdefault(id(weight), path)

    class Lookups(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.embedding or func is torch.embedding:
                # F.embedding(ids, weight, ...); torch.embedding(weight, ids, ...)
                ids, weight = (args[0], args[1]) if func is torch.nn.functional.embedding else (args[1], args[0])
                name = storage.get(ids.untyped_storage().data_ptr()) if isinstance(ids, torch.Tensor) and \
                    ids.numel() else None
                if name is not None and (name not in found or weight.shape[0] < found[name][0]):
                    found[name] = (int(weight.shape[0]), f"rows of the embedding {tables.get(id(weight)) or 'embedding'}")
            return func(*args, **(kwargs or {}))

    try:
        with torch.inference_mode(), (Lookups() if storage else contextlib.nullcontext()):
            out = module(*args)
    except Exception:  # noqa: BLE001 - ids the embedding refuses (generated past its rows) are what this finds
        out = None  # the lookup was seen before the table refused them; the eager run that follows says any other
    return out, found
