"""torch's notices meant for PyTorch's developers, silenced around ptx's own torch.jit and Inductor
calls, and other libraries' loggers around the calls that log for their own developers (quiet_logs): the
writers (export) and the loaders (infer) both call them, so both stages reach them here. Errors still
arrive as exceptions; torch is never imported by this module."""
from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager

# What these helpers change is the process's, not the thread's: warnings.filters (catch_warnings restores
# the list it saved on entry) and descriptors 1 and 2 (export's ONNX writer, the shape certificate's held
# stderr). Export checks one file on a second thread while the next is written (export/pipeline.py), and
# two such save-and-restore blocks interleaved restore each other's state: warnings ignored, or descriptor
# 2 on /dev/null, for the rest of the process. One holder at a time; a writer waits for it
# (``process_output(wait=True)``), a check's short block goes without where it is held (``wait=False``).
PROCESS_OUTPUT = threading.RLock()


@contextmanager
def process_output(wait: bool):
    """Yields whether this thread holds PROCESS_OUTPUT, and may change warnings.filters and descriptors
    1 and 2 for the block: taken where ``wait``; else only where no other thread holds it."""
    held = PROCESS_OUTPUT.acquire(blocking=wait)
    try:
        yield held
    finally:
        if held:
            PROCESS_OUTPUT.release()


@contextmanager
def quiet_jit():
    """torch.jit is deprecated in PyTorch 2.13 and warns on every call; the warning is for us (the
    maintainers), not for users (docs/export.md). Where another thread holds the process's warnings
    (process_output), the block runs as it is: that thread's filters stay its own to restore."""
    with process_output(wait=False) as held:
        if not held:
            yield
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit.*")
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated.*")
            yield


@contextmanager
def quiet_inductor():
    """Inductor logs autotuning and deprecation notices while it compiles or loads a package."""
    loggers = [logging.getLogger(n) for n in ("torch._inductor", "torch._dynamo", "torch.export", "torch.fx")]
    with process_output(wait=True):
        with _inductor_quiet(loggers):
            yield


@contextmanager
def _inductor_quiet(loggers):
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


@contextmanager
def quiet_logs(*names: str):
    """The loggers ``names`` at ERROR for the block: what a library logs for its own developers (onnxruntime's
    quantizers every node they visit, transformers' generate() how it was called), not for a ptx user, who
    reads one line per file."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
