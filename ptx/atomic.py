"""Write files so that an interrupted run never leaves a half file under the final name."""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

from ptx.errors import PtxError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


TEMP_SUFFIX = ".tmp"
LOW_SPACE_BYTES = 1 << 16  # below this, a failed write is put down to a full disk
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _pid_alive(pid: int) -> bool:
    try:
        with contextlib.suppress(PermissionError):  # another user's process: alive
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _staging(final: Path, home: Path | None = None) -> Path:
    """The folder beside ``final`` (or in ``home``) where this process builds it (a file with its companions, or a
    folder), named after it and this process (``_stale`` finds a killed one's; ``final_of`` reads a path inside one
    back)."""
    return (final.parent if home is None else home) / f".{final.name}.{os.getpid()}{TEMP_SUFFIX}"


def _stale(final: Path, home: Path | None = None) -> Iterator[Path]:
    """The temporary files or folders of ``final`` (beside it, or in ``home``) left by a killed process (their names
    carry its PID); those of a process still writing are not."""
    for tmp in (final.parent if home is None else home).glob(f".{glob.escape(final.name)}.*{TEMP_SUFFIX}"):
        pid = tmp.name[len(final.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            yield tmp


def _write_error(final: Path, exc: BaseException) -> PtxError | None:
    """One line for a write that failed because of the disk, not the data."""
    if isinstance(exc, OSError) and exc.errno in NO_ROOM:
        return PtxError(f"cannot write {final}: {exc.strerror}; the previous file is kept")
    try:
        stats = os.statvfs(final.parent)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES:  # e.g. torch.save's "iostream error"
        return PtxError(f"no space left on device writing {final}; the previous file is kept")
    return None


def _not_a_folder(final: Path) -> None:
    """A folder where a file is to go, refused in one line (else the rename at the end fails with
    IsADirectoryError's traceback)."""
    if final.is_dir():
        raise PtxError(f"cannot write {final}: it is a folder; give a file name (e.g. {final / 'out'}{final.suffix})")


@contextlib.contextmanager
def _write_errors_said(final: Path) -> Iterator[None]:
    """A write's OSError (a full disk, no permission) said in one PtxError line naming ``final``."""
    try:
        yield
    except PtxError:
        raise
    except Exception as exc:
        error = _write_error(final, exc)
        if error is None:
            raise
        raise error from exc


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds.

    The temporary file sits in the same folder so that the rename is atomic on POSIX, and it is
    fsynced first so that a power cut cannot leave a renamed but empty file. Its name carries this
    process's PID, so that a later run can tell a killed writer's leftovers from a live one's.
    """
    final = Path(final)
    _not_a_folder(final)
    for tmp in _stale(final):
        tmp.unlink(missing_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=final.parent)
    except OSError as exc:
        raise PtxError(f"cannot write {final}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a model file should read like any other
    try:
        with _write_errors_said(final):
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_with_companions(final: str | os.PathLike, replaced: Iterable[str] = ()) -> Iterator[Path]:
    """``atomic_path`` for a file that a writer may give companions, files beside it that it names
    (an ONNX model's external data, model.onnx.data, which the graph names by its final name): yield
    ``final``'s name inside a staging folder beside ``final``, and when the block succeeds rename each
    companion written there into place, then the file, each fsynced first; then remove the
    ``replaced`` files (the previous file's companions, names beside ``final``) the new one did not
    bring. A failure leaves nothing behind and the previous files as they were."""
    final = Path(final)
    _not_a_folder(final)
    for tmp in _stale(final):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    staging = _staging(final)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise PtxError(f"cannot write {final}: {exc.strerror or exc}") from None
    try:
        with _write_errors_said(final):
            yield staging / final.name
            written = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
            for name in [n for n in written if n != Path(final.name)] + [Path(final.name)]:  # the file last
                with open(staging / name, "rb+") as fh:
                    os.fsync(fh.fileno())
                (final.parent / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, final.parent / name)
            for name in set(map(Path, replaced)) - set(written):
                (final.parent / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def final_of(path: str | os.PathLike) -> Path:
    """The path a file ``atomic_with_companions`` or ``atomic_folder`` staged will have once renamed into place
    (``path`` itself where it is not staged): what a message recorded in the file names, never the staging folder
    that goes."""
    parts, named = Path(path).parts, []
    for index, part in enumerate(parts):
        staged = re.fullmatch(rf"\.(.+)\.\d+{re.escape(TEMP_SUFFIX)}", part)
        if staged is None:
            named.append(part)
        elif named and named[-1] == staged.group(1):  # a folder staged inside itself (a mount point): it stays
            pass
        elif index != len(parts) - 2 or parts[-1] != staged.group(1):  # a folder staged whole (--module's --out)
            named.append(staged.group(1))
        # else a file staged beside its place (.model.int8.onnx.PID.tmp/model.int8.onnx): the folder goes
    return Path(*named)


def write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_json(final: str | os.PathLike, obj) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable, with an error that says what to do."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path, prefix=".ptx-write-probe.", delete=True).close()
    except OSError as exc:
        raise PtxError(f"cannot write to {path}: {exc.strerror or exc}; pass a writable folder with --out") from None
    return path


@contextlib.contextmanager
def writable_dir_for(path: str | os.PathLike) -> Iterator[Path]:
    """``ensure_writable_dir(path)`` for the length of a block; when the block fails, the folders it
    created are removed again while they are empty, so a failed command (data not found, a refused
    option, Ctrl-C) leaves no empty run folder behind. A folder holding anything is kept."""
    path = Path(path)
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        yield ensure_writable_dir(path)
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty (something was written), or gone: keep the rest
                break
        raise


@contextlib.contextmanager
def atomic_folder(final: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``final`` (yielded), renamed into place only
    when the block completes; a failure leaves no half folder and keeps an older ``final``.
    Temporary folders of killed processes (their names carry the PID) are removed first. A ``final`` that is a
    link is the folder it names; one that is a mount point, which cannot be renamed, is built inside itself and
    filled in place when the block completes (``_fill_in_place``)."""
    final = _where_it_lies(Path(final))
    in_place = os.path.ismount(final)  # a volume's mount point (docker run -v ...:/out): it cannot be renamed
    home = final if in_place else final.parent  # where the staging folder is made: on final's own file system
    for tmp in _stale(final, home):
        shutil.rmtree(tmp, ignore_errors=True)
    staging = _staging(final, home)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        _fill_in_place(staging, final) if in_place else _replace_folder(staging, final)
    except PtxError:
        raise
    except Exception as exc:  # a disk that filled while the folder was built: one line, as atomic_path says it
        error = _write_error(final, exc)
        if error is None:
            raise
        raise error from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _where_it_lies(final: Path) -> Path:
    """``final``, or where it is a symbolic link, the folder it names (built beside that folder and renamed there: the
    link is kept); a link to nothing, or to no folder, refused in one line."""
    if not final.is_symlink():
        return final
    target = final.resolve()
    if not target.is_dir():
        raise PtxError(f"{final} is a link to {target}, which is no folder: make that folder, or give another path")
    return target


def _fill_in_place(staging: Path, final: Path) -> None:
    """``staging``'s files (made inside ``final``) moved into ``final``, each renamed whole over the one of its name,
    then ``final``'s files the new ones do not replace removed: a folder that cannot be renamed (a mount point) is
    filled in place, each file old or new at every moment (not the folder as a whole, as _replace_folder keeps it)."""
    written = {p.name for p in staging.iterdir()}
    for name in written:
        os.replace(staging / name, final / name)
    for old in final.iterdir():
        staged = old.name.startswith(f".{final.name}.") and old.name.endswith(TEMP_SUFFIX)  # another export's, or ours
        if old.name not in written and not staged:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


def _replace_folder(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``; an old ``final`` is moved aside first and removed after, so
    at every moment ``final`` is either the old complete folder or the new one."""
    if not final.exists():
        staging.rename(final)
        return
    old = final.parent / f".{final.name}.{os.getpid()}.old{TEMP_SUFFIX}"
    shutil.rmtree(old, ignore_errors=True)
    final.rename(old)
    try:
        staging.rename(final)
    except OSError:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back for the block and acted on as it ends (in the main thread; elsewhere the block
    runs as it is): for the few steps between making something and registering its clean-up, where a signal would
    leave it behind. Python runs a signal's handler in the main thread at its next step whichever thread the signal
    reached, so the handlers themselves are swapped for ones that only note it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved = {s: handler for s, handler in saved.items() if handler is not None}  # None: not Python's to restore
    for s in saved:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        if caught:
            handler = saved[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


@contextlib.contextmanager
def scratch_folder(prefix: str, dir: str | os.PathLike | None = None) -> Iterator[str]:
    """A temporary folder (``tempfile.TemporaryDirectory``'s, its path yielded), removed when the block ends however
    it ends. Made with Ctrl-C and SIGTERM deferred until its removal is registered: a signal landing as the folder
    appeared (a job stopped just then) left it behind, with a copy of the model in it."""
    made = None
    try:
        with signals_deferred():
            made = tempfile.TemporaryDirectory(prefix=prefix, dir=dir)
    except BaseException:
        if made is not None:
            made.cleanup()
        raise
    with made as path:
        yield path

