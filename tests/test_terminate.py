"""SIGTERM ends a ptx command as Ctrl-C does (ptx/cli/__init__.py): one line, exit status 143, the command's
clean-up run; and the process ends even where a library left a thread that Python's exit would wait for
forever (a probe saw `ptx verify` alive 15 minutes after its `terminated:` line, joining an idle executor
worker started as the signal landed). Proven both ways in a child process: with such a thread the process ends
within the grace; without one it ends at once. The int4 export's own case (scratch folder removed, no file):
tests/test_weight_only.py."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ptx.cli import TERMINATED_GRACE_S

CHILD = """
import os, signal, sys, threading, time
from ptx.cli import _interrupted, _terminating
from ptx.errors import Terminated
if sys.argv[1] == "stuck":  # what an executor's worker does when nobody tells it to stop
    threading.Thread(target=threading.Event().wait, daemon=False).start()
with _terminating():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    except Terminated as exc:
        _interrupted(exc)
"""


@pytest.mark.parametrize("thread", ["stuck", "none"])
def test_sigterm_ends_the_process_with_143_even_past_a_thread_that_never_ends(thread):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHILD, thread], capture_output=True, text=True,
                          timeout=TERMINATED_GRACE_S + 60)
    took = time.monotonic() - started
    assert done.returncode == 143 and done.stderr.strip().startswith("terminated: "), (done.returncode, done.stderr)
    if thread == "stuck":
        assert took >= TERMINATED_GRACE_S, took  # Python's exit waited for the thread until the grace ended it
    else:
        assert took < TERMINATED_GRACE_S, took  # nothing to wait for: no grace spent


LANDING = """
import contextlib, os, signal, sys, tempfile
from ptx import atomic
from ptx.cli import _terminating
from ptx.errors import Terminated
made = tempfile.mkdtemp
def landing(*args, **kwargs):  # SIGTERM as the folder appears: before TemporaryDirectory registers its removal
    path = made(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(100000))  # steps at which Python runs the handler, where nothing defers it
    return path
tempfile.mkdtemp = landing
if sys.argv[2] == "undeferred":  # the planted fault: the folder made as tempfile makes it
    atomic.signals_deferred = contextlib.nullcontext
with _terminating():
    try:
        with atomic.scratch_folder("ptx-int4-", dir=sys.argv[1]):
            pass
    except Terminated:
        print("terminated")
"""


@pytest.mark.parametrize("deferred", ["deferred", "undeferred"])
def test_a_scratch_folder_made_as_sigterm_lands_is_removed(tmp_path, deferred):
    """A job stopped just as an int4 export's scratch folder (a copy of the model) appeared: the folder is still
    removed, since SIGTERM waits until its removal is registered (ptx.atomic.scratch_folder). The planted fault,
    tempfile's folder as it comes, leaves it behind: the test sees that window."""
    done = subprocess.run([sys.executable, "-c", LANDING, str(tmp_path), deferred], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "terminated", done.stdout + done.stderr
    left = [p.name for p in tmp_path.iterdir()]
    assert (left == []) == (deferred == "deferred"), left
