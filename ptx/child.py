"""Run a step that may crash the process (a native loader) in a child, so that a segmentation
fault inside a runtime is one line, never the end of ptx (issue 26: torch 2.11's
aoti_load_package segfaulted on a CUDA package, and the user saw "Segmentation fault" only)."""
from __future__ import annotations

import signal
import subprocess
import sys

from ptx.errors import PtxError


class ChildCrashError(PtxError):
    """A runtime died in the child ptx ran it in: the message names the runtime and the signal."""


def run_child(code: str, *args: str, what: str, timeout: float = 900) -> None:
    """Run ``python -c code args...`` in a fresh interpreter; ChildCrashError in one line when it
    dies by a signal or fails, naming ``what`` (e.g. "torch 2.11.0's aoti_load_package")."""
    # `python -c` puts the working folder first on sys.path: a folder there named ptx (an export's --out)
    # would be imported instead of ptx itself
    safe = "import sys; sys.path[:] = [p for p in sys.path if p != '']\n" + code
    try:
        done = subprocess.run([sys.executable, "-c", safe, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildCrashError(f"{what} did not finish within {timeout:g} s") from None
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        raise ChildCrashError(f"{what} crashed ({name})")
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ChildCrashError(f"{what} failed ({lines[-1].strip() if lines else f'exit status {done.returncode}'})")
