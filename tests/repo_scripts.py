"""A script of scripts/ imported by the tests as a module (the tests hold what a script's run records, built as
the script builds it): loaded once per process, and registered in sys.modules, as dataclasses look their module
up while a class is made."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def script(name: str):
    """scripts/NAME.py as a module (another module of that name, a package's, is not taken for it)."""
    path = SCRIPTS / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is None or Path(getattr(loaded, "__file__", None) or "") != path:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]  # not left half-made for the next test that asks
            raise
    return sys.modules[name]
