"""A flag raised in one thread for the length of a block: how ptx's shims of torch.onnx and onnxscript
(translation_table.py, slice_pairs.py) act within ptx's own export calls alone, other callers in the process
getting the libraries' own behaviour."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ThreadFlag:
    def __init__(self):
        self._local = threading.local()

    def __bool__(self) -> bool:
        return getattr(self._local, "on", False)

    @contextmanager
    def raised(self) -> Iterator[None]:
        before = bool(self)
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = before
