"""A function of the user's own, named FILE.py:NAME on the command line (``--module net.py:build``,
``--metric metric.py:accuracy``): the file imported as ``python FILE.py`` would run it, the name
looked up in it. Every failure is one PtxError that names the option, the file and, where there is
one, the line. Torch-free: ``--metric`` runs on a user's ONNX file without torch.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable

from ptx.errors import PtxError

from .refusal import raised


def import_callable(spec: str, option: str, example: str) -> tuple[Callable, Path, str]:
    """(the callable NAME in FILE.py, the file, NAME) for ``spec`` = FILE.py:NAME, given as
    ``option`` (``--module``); ``example`` is how a correct one reads, said where ``spec`` is not."""
    text, sep, name = str(spec).rpartition(":")
    if not sep or not text or not name:
        raise PtxError(f"{option} {spec}: write {example}")
    path = Path(text)
    if not path.is_file():
        raise PtxError(f"{option} {spec}: no such file {path}")
    if not name.isidentifier():
        raise PtxError(f"{option} {spec}: {name!r} is not a Python name")
    module_name = f"ptx_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise PtxError(f"{option} {spec}: {path} is not a Python file")
    namespace = importlib.util.module_from_spec(loader)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its sibling modules import as they do under `python FILE.py`
    # torch.jit.script and inspect read the classes' source through the module: it must be registered.
    sys.modules[module_name] = namespace
    try:
        loader.loader.exec_module(namespace)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(module_name, None)
        if isinstance(exc, SyntaxError):
            raise PtxError(f"{option} {spec}: {Path(exc.filename or path).name}:{exc.lineno}: syntax error: "
                           f"{exc.msg}") from None
        raise PtxError(f"{option} {spec}: importing {path.name} {raised(exc, path)}") from None
    target = getattr(namespace, name, None)
    if target is None:
        defined = [k for k, v in vars(namespace).items() if callable(v) and not k.startswith("_")
                   and getattr(v, "__module__", None) == module_name]
        # Functions first (a factory is one), and the count of the rest: the first 8 names alone, in
        # file order, read as the whole list and hid the factory the user meant.
        defined.sort(key=lambda k: isinstance(vars(namespace)[k], type))
        close = difflib.get_close_matches(name, defined, 1)
        raise PtxError(f"{option} {spec}: {path.name} defines no {name}"
                       + (f" (did you mean {close[0]}?)" if close else "")
                       + (f"; it defines {', '.join(defined[:8])}" if defined else "")
                       + (f" and {len(defined) - 8} more" if len(defined) > 8 else ""))
    if not callable(target):
        raise PtxError(f"{option} {spec}: {name} is a {type(target).__name__}, not a function or class")
    return target, path, name
