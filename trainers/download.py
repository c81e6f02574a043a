"""Download MNIST and Fashion-MNIST's IDX files into ptx's cache: checksummed, resumable, atomic,
from mirrors tried in order.

Written on urllib (no torch, no torchvision) because no well-kept library fits: pooch, the usual
choice, checks hashes and shows tqdm bars but has one URL per file and no resume, and needs
requests; torchvision's download has neither SHA-256 nor resume and does not import with the CPU
build of torch.

A file is written to ``NAME.part`` beside its final name, continued with an HTTP Range request
when a download stopped part-way, and renamed to ``NAME`` only once its size and SHA-256 match:
a file under its final name in the cache is always whole and verified.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from ptx.errors import DataError

OFFLINE_ENV = "PTX_OFFLINE"
CACHE_ENV = "PTX_CACHE_DIR"
PART_SUFFIX = ".part"
TIMEOUT = 15.0  # seconds a connect or a read may stall before a mirror counts as failed
CHUNK = 1 << 16
USER_AGENT = "ptx-dataset-download"  # some servers refuse the default Python-urllib agent


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Remote:
    """A dataset that ptx can download: its files, and the mirrors that serve them, in order."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


# SHA-256 and sizes: TensorFlow Datasets' url_checksums/mnist.txt and fashion_mnist.txt (it downloads
# the same files). Cross-checked against the MD5s that torchvision's datasets/mnist.py and
# Fashion-MNIST's README publish, on copies of the very bytes: both hashes match for MNIST's t10k
# images, t10k labels and train labels (found in a public repository) and for all four Fashion-MNIST
# files (the labels from its repository; the images rebuilt from the Debian package's, which differ
# only in the gzip header). MNIST's train images were not at hand: their SHA-256 is TFDS's alone.
MNIST = Remote(
    "mnist", "MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's copy, torchvision's mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow Datasets' source
        "http://yann.lecun.com/exdb/mnist/",  # the original; 403 since 2024 (pytorch/vision#8568)
    ),
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", 9912422,
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        RemoteFile("train-labels-idx1-ubyte.gz", 28881,
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 1648877,
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 4542,
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
)
FASHION_MNIST = Remote(
    "fashion-mnist", "Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # the README's links (and torchvision's)
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",  # the repo's copy
    ),
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", 26421880,
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        RemoteFile("train-labels-idx1-ubyte.gz", 29515,
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 4422102,
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 5148,
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ),
)
REMOTES = {r.name: r for r in (MNIST, FASHION_MNIST)}


def offline_requested() -> bool:
    """PTX_OFFLINE=1 (or true/yes/on) turns every download off, as HF_HUB_OFFLINE does for the Hub."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cache_root() -> Path:
    """ptx's cache: $PTX_CACHE_DIR, else $XDG_CACHE_HOME/ptx, else ~/.cache/ptx. The XDG spec says
    to ignore a relative XDG_CACHE_HOME."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "ptx"


def datasets_dir() -> Path:
    return cache_root() / "datasets"


def size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


@dataclass
class CacheState:
    """What one dataset's cache folder holds, judged by names and sizes (fetch checks the hashes)."""

    remote: Remote
    folder: Path
    complete: tuple[str, ...]
    partial_bytes: int

    @property
    def cached_bytes(self) -> int:
        return sum(f.size for f in self.remote.files if f.name in self.complete)

    def describe(self) -> str:
        if len(self.complete) == len(self.remote.files):
            return f"complete ({size_text(self.remote.size)})"
        if not self.complete and not self.partial_bytes:
            return f"not downloaded ({size_text(self.remote.size)})"
        part = f" + {size_text(self.partial_bytes)} partial" if self.partial_bytes else ""
        return f"{len(self.complete)} of {len(self.remote.files)} files{part} (`ptx data fetch {self.remote.name}` completes it)"


def cache_state(remote: Remote, root: Path | None = None) -> CacheState:
    folder = (root or datasets_dir()) / remote.name
    complete = tuple(f.name for f in remote.files if _size(folder / f.name) == f.size)
    partial = sum(_size(folder / (f.name + PART_SUFFIX)) or 0 for f in remote.files)
    return CacheState(remote, folder, complete, partial)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _unwritable(folder: Path, exc: OSError) -> DataError:
    return DataError(f"cannot write to the dataset cache {folder}: {exc.strerror or exc}; "
                     f"set {CACHE_ENV} to a writable folder")


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch(remote: Remote | str, *, root: Path | None = None, mirrors: Sequence[str] = (),
          timeout: float = TIMEOUT, log: Callable[[str], None] = _stderr_line,
          progress: bool | None = None) -> Path:
    """Make sure every file of ``remote`` is in ``root/<name>`` (default: the ptx cache), whole and
    verified, downloading what is missing; return the folder. ``mirrors`` are tried before the
    built-in ones. ``progress``: a tqdm bar on stderr (default: when stderr is a terminal); ``log``
    gets one line before the download and one per file either way.

    Raises DataError naming every mirror tried and why each failed. Files already verified stay,
    and a partial file stays to be continued next time."""
    remote = REMOTES[remote] if isinstance(remote, str) else remote
    folder = (root or datasets_dir()) / remote.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(folder, exc) from None
    sources = tuple(dict.fromkeys((*mirrors, *remote.mirrors)))
    show_bar = sys.stderr.isatty() if progress is None else progress
    with _folder_lock(folder, log):
        missing = [f for f in remote.files if not _whole(folder / f.name, f, log)]
        if not missing:
            return folder
        others = len(sources) - 1
        log(f"downloading {remote.title}: {len(missing)} file(s), {size_text(sum(f.size for f in missing))}, "
            f"into {folder} from {sources[0]}" + (f" ({others} more mirror(s) if it fails)" if others else ""))
        for file in missing:
            _fetch_file(remote, file, folder, sources, timeout, log, show_bar)
    return folder


@contextlib.contextmanager
def _folder_lock(folder: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Two ptx processes fetching into one folder would append to the same .part file: the second
    waits for the first (which leaves it nothing to do). No lock where fcntl is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        lock = open(folder / ".lock", "a")
    except OSError as exc:
        raise _unwritable(folder, exc) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another ptx process that is downloading into {folder}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _whole(path: Path, file: RemoteFile, log: Callable[[str], None]) -> bool:
    """True when ``path`` is ``file``, whole; a cached copy that fails its checksum is removed."""
    if _size(path) is None:
        return False
    if _size(path) == file.size and _sha256(path) == file.sha256:
        return True
    log(f"{path} is not the published {file.name} (size or SHA-256 differs): downloading it again")
    path.unlink()
    return False


class _MirrorFailed(Exception):
    """This mirror could not give this file; the next one is tried."""


class _StartOver(Exception):
    """The partial file cannot be continued: it was removed, and the same mirror is asked again."""


def _fetch_file(remote: Remote, file: RemoteFile, folder: Path, sources: Sequence[str], timeout: float,
                log: Callable[[str], None], show_bar: bool) -> None:
    final, part = folder / file.name, folder / (file.name + PART_SUFFIX)
    failures: list[tuple[str, str]] = []
    for mirror in sources:
        url = mirror.rstrip("/") + "/" + file.name
        for _attempt in range(2):  # the second only after a bad partial file was removed
            try:
                resumed_at = _download(url, part, file, timeout, show_bar)
                _check(part, file, resumed_at)
            except _StartOver:
                continue
            except _MirrorFailed as exc:
                failures.append((mirror, str(exc)))
                break
            except KeyboardInterrupt:
                if _size(part):
                    log(f"stopped: {part} keeps {size_text(_size(part))}; the next fetch continues from there")
                raise
            _place(part, final)
            resumed = f", continued from {size_text(resumed_at)}" if 0 < resumed_at < file.size else ""
            log(f"  {file.name:<26}  {size_text(file.size):>8}  sha256 ok  from {urlparse(mirror).netloc}{resumed}")
            return
        else:
            failures.append((mirror, "the partial file was bad twice"))
    raise DataError(f"could not download {remote.title}'s {file.name}: {_summarize(failures)}"
                    + (f"; {size_text(_size(part))} kept in {part} to continue next time" if _size(part) else ""))


def _summarize(failures: list[tuple[str, str]]) -> str:
    """One line: 'from A, B: the same reason' or 'from A (reason); B (reason)'."""
    reasons = {reason for _, reason in failures}
    if len(reasons) == 1:
        return f"from {', '.join(m for m, _ in failures)}: {reasons.pop()}"
    return "from " + "; ".join(f"{m} ({reason})" for m, reason in failures)


def _network_reason(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed mid-transfer"
    return str(getattr(reason, "strerror", None) or reason) or type(reason).__name__


def _content_range(value: str | None) -> tuple[int, int | None]:
    """'bytes 100-999/1000' -> (100, 1000); total None when the server gives '*'."""
    try:
        _unit, rest = value.split(" ", 1)
        span, total = rest.split("/", 1)
        return int(span.split("-", 1)[0]), None if total.strip() == "*" else int(total)
    except (AttributeError, ValueError):
        return -1, None


def _download(url: str, part: Path, file: RemoteFile, timeout: float, show_bar: bool) -> int:
    """Fetch ``url`` into ``part``, continuing what is there; return the byte it continued from."""
    offset = _size(part) or 0
    if offset > file.size:  # longer than the file can be: not a beginning of it
        part.unlink()
        offset = 0
    if offset == file.size:
        return offset  # a whole file left by a run stopped before the rename: _check decides
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset:  # the server says our partial file cannot be continued
            part.unlink()
            raise _StartOver() from None
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as exc:
        raise _MirrorFailed(_network_reason(exc, timeout)) from None
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if total is not None and total != file.size:
                raise _MirrorFailed(f"serves {total:,} bytes, expected {file.size:,}")
            if start != offset:
                part.unlink()
                raise _StartOver()
            mode = "ab"
        elif response.status == 200:
            offset, mode = 0, "wb"  # the server ignored Range and sent the whole file: start over
        else:
            raise _MirrorFailed(f"HTTP {response.status} {response.reason}")
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and offset + int(length) != file.size:
            raise _MirrorFailed(f"serves {offset + int(length):,} bytes, expected {file.size:,}")
        _receive(response, part, mode, offset, file, timeout, show_bar)
    return offset


def _receive(response, part: Path, mode: str, offset: int, file: RemoteFile, timeout: float, show_bar: bool) -> None:
    from tqdm import tqdm

    written = offset
    try:
        out = open(part, mode)
    except OSError as exc:
        raise DataError(f"cannot write {part}: {exc.strerror or exc}") from None
    with out, tqdm(total=file.size, initial=offset, desc=file.name, unit="B", unit_scale=True, leave=False,
                   file=sys.stderr, disable=not show_bar, dynamic_ncols=True) as bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise _MirrorFailed(f"{_network_reason(exc, timeout)} after {written:,} of {file.size:,} bytes") from None
            if not chunk:
                break
            if written + len(chunk) > file.size:
                out.close()
                part.unlink()
                raise _MirrorFailed(f"sent more than the {file.size:,} bytes the file has")
            try:
                out.write(chunk)
            except OSError as exc:
                raise DataError(f"cannot write {part}: {exc.strerror or exc}") from None
            written += len(chunk)
            bar.update(len(chunk))
    if written < file.size:
        raise _MirrorFailed(f"the transfer stopped after {written:,} of {file.size:,} bytes")


def _check(part: Path, file: RemoteFile, resumed_at: int) -> None:
    if _size(part) == file.size and _sha256(part) == file.sha256:
        return
    part.unlink()
    if resumed_at:  # the bytes kept from before may be the bad ones: once more, from the start
        raise _StartOver()
    raise _MirrorFailed("SHA-256 differs from the published one (file discarded)")


def _place(part: Path, final: Path) -> None:
    """fsync, then rename: the final name appears only complete, even across a power cut."""
    try:
        with open(part, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(part, final)
    except OSError as exc:
        raise DataError(f"cannot write {final}: {exc.strerror or exc}") from None
