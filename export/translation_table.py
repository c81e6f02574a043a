"""The torch.export-based ONNX exporter's table of translations (ATen op -> onnxscript function), built once
per opset in a process instead of once per export.

torch.onnx.export(dynamo=True) builds that table anew on every call (torch 2.13's
``_compat.export_compat`` calls ``ONNXRegistry.from_torchlib``, which parses the source of some thousands of
onnxscript functions): 0.6 s of a tiny model's 0.9 s export in a fresh process on a 2-core Xeon, 1.5 s a call
in a long-lived one. The export reads the table and never changes it unless a caller gives
``custom_translation_table`` (ptx gives none), so within ptx's own call each export is handed a copy of the
one table built for its opset and the operators torch knows: a library that registers more (torchvision,
torch.ao.quantization, a user's torch.library ops, when imported) makes the next export build it anew. A
copy, not the table (a dict of lists, made in milliseconds), so that a table another caller extends is
never ours. torch offers no public way to pass a table, hence this shim; where torch's internals are not
the ones it was written for, the export builds its own table as before.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from .thread_flag import ThreadFlag

_LOCK = threading.Lock()  # installing the wrapper, once
_IN_PTX = ThreadFlag()  # set within ptx's own export call: other callers of torch.onnx get torch's own
_BUILT: dict[int, tuple[frozenset, object]] = {}  # opset -> (the operators it was built with, table)


@contextmanager
def one_table_per_opset() -> Iterator[None]:
    """Within the block (this thread's), torch.onnx's ``ONNXRegistry.from_torchlib`` hands out copies of one
    table per opset."""
    _install()
    with _IN_PTX.raised():
        yield


def _install() -> None:
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:  # another torch: its own table, as it builds it
        return
    registry = _registration.ONNXRegistry
    with _LOCK:
        build = registry.__dict__.get("from_torchlib")
        if not isinstance(build, classmethod) or getattr(build.__func__, "_ptx_reused", False):
            return

        def reused(cls, *args, **kwargs):
            opset = kwargs.get("opset_version", args[0] if args else None)
            if not _IN_PTX or cls is not registry or len(args) + len(kwargs) > 1 or (
                    kwargs and "opset_version" not in kwargs) or opset is None:
                return build.__func__(cls, *args, **kwargs)  # a call this shim was not written for
            operators = _operators()
            if operators is None:
                return build.__func__(cls, *args, **kwargs)
            with _LOCK:
                if _BUILT.get(opset, (None,))[0] != operators:  # a library registered operators since: built anew
                    _BUILT[opset] = (operators, build.__func__(cls, opset_version=opset))
                return _copy(registry, _BUILT[opset][1])

        reused._ptx_reused = True
        registry.from_torchlib = classmethod(reused)


def _operators() -> frozenset | None:
    """The operators torch's dispatcher knows now (3,600 names, 4 ms): the table translates those that exist
    when it is built, so a library that registers operators later (torch.ao's quantized_decomposed, a
    user's torch.library ops, torchvision's) makes a table built before it stale."""
    import torch

    names = getattr(torch._C, "_dispatch_get_all_op_names", None)
    return frozenset(names()) if callable(names) else None


def _copy(registry, built):
    """A registry holding the same translations as ``built``, in lists of its own."""
    table = registry()
    table.__dict__.update(built.__dict__)
    table.functions = {target: list(decompositions) for target, decompositions in built.functions.items()}
    return table
