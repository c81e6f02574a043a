"""`ptx ...` as the tests run it: in the test's own process by default, in a fresh interpreter where the
test is about the process itself.

A fresh `python -m ptx` pays Python's start and, for every command that touches a model through torch,
some 3 seconds of `import torch` on the 2-core CI machine; the suite ran several hundred of them. In
process, `ptx()` runs the same entry point (ptx.cli.main: its one-line errors, its exit codes) with what
a new process would have: its own stdout, stderr and stdin, argv, working folder, environment, Python's
default warning filters, and `sys.path`/`sys.modules` as they were (a user's FILE.py imported by
`--module` and its sibling modules are forgotten afterwards). An exception that escapes the command
is written to its stderr as Python would, with exit status 1, so "no Traceback" assertions still see it.

`ptx_process()` is a real `python -m ptx` child: for what only a process shows (which modules the
command imports, interpreter flags, signals).
"""
from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

from click.testing import CliRunner

TIMEOUT = 600  # seconds: past it a hung command ends the worker (faulthandler) instead of blocking the suite
REPO = Path(__file__).resolve().parent.parent


def ptx(*args, cwd=None, env=None, input=None, timeout=TIMEOUT, merged=False) -> subprocess.CompletedProcess:
    """Run `ptx ARGS` in this process; ``env`` replaces the environment (as subprocess's does). ``merged``: stdout
    is what a terminal shows, stdout and stderr interleaved as they were written (stderr then empty)."""
    from ptx.cli import main

    argv = [str(arg) for arg in args]
    saved = (os.getcwd(), dict(os.environ), sys.argv, list(sys.path), set(sys.modules))
    code = 0
    with CliRunner().isolation(input=input) as (stdout, stderr, both), warnings.catch_warnings():
        _fresh_warning_filters()
        try:
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            if cwd is not None:
                os.chdir(cwd)
            sys.argv = ["ptx", *argv]
            faulthandler.dump_traceback_later(timeout, exit=True, file=sys.__stderr__)
            main()
        except SystemExit as exc:
            code = _exit_status(exc.code)
        except Exception:  # noqa: BLE001 - what `python -m ptx` prints for an uncaught error, then exit 1
            traceback.print_exc()
            code = 1
        finally:
            faulthandler.cancel_dump_traceback_later()
            sys.stdout.flush()
            sys.stderr.flush()
            _restore(*saved)
        out, err = (both.getvalue(), b"") if merged else (stdout.getvalue(), stderr.getvalue())
    return subprocess.CompletedProcess(["ptx", *argv], code, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def ptx_ok(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    """``ptx(*args)``, asserting exit 0 (its output shown where not) unless ``check`` is False."""
    done = ptx(*args, **kwargs)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def ptx_process(*args, cwd=None, env=None, timeout=TIMEOUT, python_flags=()) -> subprocess.CompletedProcess:
    """Run `python -m ptx ARGS` as a child process."""
    return subprocess.run([sys.executable, *python_flags, "-m", "ptx", *map(str, args)], capture_output=True,
                          text=True, errors="replace", cwd=cwd, env=env, timeout=timeout)


def _exit_status(code) -> int:
    """The status `python` exits with for sys.exit(code): a message (a string) is printed and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _fresh_warning_filters() -> None:
    """Python's filters in a new process (pytest's own would hide or repeat what a user sees)."""
    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def _restore(cwd: str, environ: dict, argv: list, path: list, modules: set) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    sys.argv = argv
    sys.path[:] = path
    # Modules the command imported from outside the installed packages and this repository (a user's
    # model file and its siblings, in a test's temporary folder) are dropped: another test's file of the
    # same name must be imported afresh, as it would be in a new process.
    installed = (sys.prefix, sys.base_prefix, str(REPO))
    for name in set(sys.modules) - modules:
        where = getattr(sys.modules[name], "__file__", None) or ""
        if where and not where.startswith(installed):
            del sys.modules[name]
