"""torch's notices meant for PyTorch's developers, silenced around ptx's own torch.jit and Inductor
calls: the writers (export) and the loaders (infer) both call them, so both stages reach them here.
Errors still arrive as exceptions; torch is never imported by this module."""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager


@contextmanager
def quiet_jit():
    """torch.jit is deprecated in PyTorch 2.13 and warns on every call; the warning is for us (the
    maintainers), not for users (docs/export.md)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
        yield


@contextmanager
def quiet_inductor():
    """Inductor logs autotuning and deprecation notices while it compiles or loads a package."""
    loggers = [logging.getLogger(n) for n in ("torch._inductor", "torch._dynamo", "torch.export", "torch.fx")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
