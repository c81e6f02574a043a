"""The dataset download code, run for real against a loopback HTTP server this file starts: small
files served whole, corrupted, cut short, with a 500 error, with and without Range support, or not
at all. Never the internet (conftest sets PTX_OFFLINE=1 for everything else)."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

from ptx.cli import cli
from ptx.contract.datasets import DATASETS
from ptx.errors import DataError
from ptx.trainers import download
from ptx.trainers.data import load_dataset
from ptx.trainers.download import PART_SUFFIX, Remote, RemoteFile, fetch

TIMEOUT = 2.0  # the client's per-request stall limit in these tests
rng = np.random.default_rng(7)
BIG = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()  # several read chunks
SMALL = rng.integers(0, 256, 3_000, dtype=np.uint8).tobytes()


class Handler(BaseHTTPRequestHandler):
    """GET /<mode>/<file>: mode says how this 'mirror' misbehaves."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        wanted = self.headers.get("Range")
        self.server.requests.append((mode, name, wanted))
        body = self.server.files.get(name)
        if body is None:
            return self.send_error(404)
        if mode == "error500":
            return self.send_error(500)
        if mode == "stall":  # says nothing until the test ends
            self.server.release.wait(10)
            return None
        if mode == "bad":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        start = 0
        if wanted and mode not in ("norange", "short"):
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(body):
                return self.send_error(416)
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if mode == "short":  # promises the whole file, sends half, hangs up
            self.wfile.write(body[:len(body) // 2])
            return None
        self.wfile.write(body[start:])
        return None


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.requests, httpd.release = {"a.gz": BIG, "b.gz": SMALL}, [], threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:  # whatever the test did: wake stalled handlers, stop, and wait a bounded time
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the loopback server did not stop"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote(server, *modes, name="toy", title="Toy", files=None) -> Remote:
    base = f"http://127.0.0.1:{server.server_port}"
    files = files or server.files
    return Remote(name, title, tuple(f"{base}/{m}/" if m != "refused" else f"http://127.0.0.1:{closed_port()}/x/"
                                     for m in modes),
                  tuple(RemoteFile(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items()))


def get(source, tmp_path, log=None, **kw):
    return fetch(source, root=tmp_path, timeout=TIMEOUT, log=(log if log is not None else []).append, **kw)


def assert_complete(folder):
    assert (folder / "a.gz").read_bytes() == BIG and (folder / "b.gz").read_bytes() == SMALL
    assert not list(folder.glob(f"*{PART_SUFFIX}"))


def test_fetch_places_verified_files_with_a_line_each_then_reads_the_cache(server, tmp_path):
    log = []
    folder = get(remote(server, "good"), tmp_path, log)
    assert folder == tmp_path / "toy"
    assert_complete(folder)
    assert log[0].startswith("downloading Toy: 2 file(s), 0.2 MB, into ") and "/good/" in log[0]
    assert len(log) == 3 and "a.gz" in log[1] and "sha256 ok" in log[1] and "b.gz" in log[2]
    served = len(server.requests)
    assert get(remote(server, "good"), tmp_path) == folder
    assert len(server.requests) == served  # verified in the cache: nothing fetched again


@pytest.mark.parametrize("first", ["bad", "short", "error500", "refused"])
def test_a_failing_mirror_is_followed_by_the_next(server, tmp_path, first):
    log = []
    assert_complete(get(remote(server, first, "good"), tmp_path, log))
    a_requests = [(mode, wanted) for mode, name, wanted in server.requests if name == "a.gz"]
    if first == "short":  # the half that arrived is kept and continued, not fetched again
        assert a_requests == [("short", None), ("good", f"bytes={len(BIG) // 2}-")]
        assert "continued from 0.1 MB" in log[1]
    elif first != "refused":
        assert a_requests == [(first, None), ("good", None)]


def test_every_mirror_failing_is_one_line_naming_each_and_keeps_the_part(server, tmp_path):
    source = remote(server, "error500", "short")
    with pytest.raises(DataError) as err:
        get(source, tmp_path)
    message = str(err.value)
    assert "\n" not in message and "Toy's a.gz" in message
    assert f"{source.mirrors[0]} (HTTP 500" in message
    assert f"{source.mirrors[1]} (the transfer stopped after 100,000 of 200,000 bytes)" in message
    part = tmp_path / "toy" / ("a.gz" + PART_SUFFIX)
    assert "to continue next time" in message and part.stat().st_size == len(BIG) // 2
    assert not (tmp_path / "toy" / "a.gz").exists()  # nothing under the final name until it is whole
    # The next run continues the partial file with a Range request.
    assert_complete(get(remote(server, "good"), tmp_path))
    assert server.requests[-2] == ("good", "a.gz", f"bytes={len(BIG) // 2}-")


def test_a_bad_checksum_everywhere_leaves_nothing(server, tmp_path):
    with pytest.raises(DataError, match="SHA-256 differs"):
        get(remote(server, "bad"), tmp_path)
    assert list((tmp_path / "toy").iterdir()) == [tmp_path / "toy" / ".lock"]


def test_resume_a_partial_file_with_range(server, tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / ("a.gz" + PART_SUFFIX)).write_bytes(BIG[:120_000])
    assert_complete(get(remote(server, "good"), tmp_path))
    assert server.requests[0] == ("good", "a.gz", "bytes=120000-")


@pytest.mark.parametrize("partial", ["corrupt", "too-long", "whole-but-wrong"])
def test_a_bad_partial_file_restarts_cleanly(server, tmp_path, partial):
    content = {"corrupt": b"x" * 120_000, "too-long": BIG + b"extra", "whole-but-wrong": b"y" * len(BIG)}[partial]
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / ("a.gz" + PART_SUFFIX)).write_bytes(content)
    assert_complete(get(remote(server, "good"), tmp_path))
    assert ("good", "a.gz", None) in server.requests  # fetched whole in the end


def test_a_server_that_ignores_range_sends_the_whole_file_and_it_is_not_appended(server, tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / ("a.gz" + PART_SUFFIX)).write_bytes(BIG[:120_000])
    assert_complete(get(remote(server, "norange"), tmp_path))
    assert server.requests[0] == ("norange", "a.gz", "bytes=120000-")  # asked, got a 200


def test_a_cached_file_that_is_not_the_published_one_is_fetched_again(server, tmp_path):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "a.gz").write_bytes(b"not it")
    log = []
    assert_complete(get(remote(server, "good"), tmp_path, log))
    assert "is not the published a.gz" in log[0]


def test_unreachable_and_silent_mirrors_fail_within_the_timeout(server, tmp_path):
    source = remote(server, "refused", "stall")
    started = time.monotonic()
    with pytest.raises(DataError) as err:
        fetch(source, root=tmp_path, timeout=0.5, log=lambda _: None)
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert "refused" in message.lower() and "no answer within 0.5 s" in message
    assert source.mirrors[0] in message and source.mirrors[1] in message


def test_cache_location_follows_ptx_cache_dir_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("PTX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.datasets_dir() == tmp_path / "xdg" / "ptx" / "datasets"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # as the XDG spec says
    assert download.datasets_dir() == download.Path.home() / ".cache" / "ptx" / "datasets"
    monkeypatch.setenv("PTX_CACHE_DIR", str(tmp_path / "mine"))
    assert download.datasets_dir() == tmp_path / "mine" / "datasets"


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def tiny_mnist(n_train=30, n_test=10) -> dict[str, bytes]:
    """Valid IDX files of the real names, 30 + 10 random 'digits'."""
    r = np.random.default_rng(0)
    return {"train-images-idx3-ubyte.gz": idx_gz(r.integers(0, 255, (n_train, 28, 28))),
            "train-labels-idx1-ubyte.gz": idx_gz(r.integers(0, 10, n_train)),
            "t10k-images-idx3-ubyte.gz": idx_gz(r.integers(0, 255, (n_test, 28, 28))),
            "t10k-labels-idx1-ubyte.gz": idx_gz(r.integers(0, 10, n_test))}


@pytest.fixture
def tiny_mnist_server(server, monkeypatch, tmp_path):
    """MNIST's name and files as the 'published' ones, served by the loopback server; an empty cache."""
    server.files = tiny_mnist()
    monkeypatch.setitem(download.REMOTES, "mnist", remote(server, "error500", "good", name="mnist", title="MNIST"))
    monkeypatch.setenv("PTX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PTX_DATA_DIR", raising=False)
    return server


def test_mnist_missing_everywhere_is_downloaded_by_load_dataset(tiny_mnist_server, tmp_path):
    notices = []
    ds = load_dataset("mnist", download=True, notice=notices.append)
    assert ds.name == "mnist" and ds.x_train.shape == (30, 28, 28)
    assert "downloaded into the ptx cache" in ds.source
    assert notices[0].startswith("downloading MNIST: 4 file(s)") and str(tmp_path / "cache") in notices[0]
    assert load_dataset("mnist", download=False).source.startswith("ptx download cache")  # then from the cache


def test_offline_default_mnist_falls_back_and_says_how_to_get_the_full_set(tiny_mnist_server):
    notices = []
    assert load_dataset("mnist", explicit=False, download=False, notice=notices.append).name == "mnist-sample"
    assert "PTX_OFFLINE=1" in notices[0] and "`ptx data fetch mnist`" in notices[0]
    assert not tiny_mnist_server.requests


def test_ptx_data_fetch_and_list(tiny_mnist_server, monkeypatch, tmp_path):
    monkeypatch.delenv("PTX_OFFLINE")
    runner = CliRunner()
    before = runner.invoke(cli, ["data", "list"])
    assert before.exit_code == 0 and re.search(r"mnist\s+not downloaded", before.output)
    result = runner.invoke(cli, ["data", "fetch", "mnist"])
    assert result.exit_code == 0, result.output
    assert f"mnist: 4 files verified in {tmp_path / 'cache' / 'datasets' / 'mnist'}" in result.output
    after = runner.invoke(cli, ["data", "list"])
    assert re.search(r"mnist\s+complete .*ptx download cache", after.output), after.output
    monkeypatch.setenv("PTX_OFFLINE", "1")
    refused = runner.invoke(cli, ["data", "fetch", "mnist"])
    assert refused.exit_code == 2 and "downloads are off (PTX_OFFLINE=1)" in refused.output
    every = json.loads(runner.invoke(cli, ["data", "list", "--json"]).output)
    assert [r["dataset"] for r in every] == list(DATASETS)  # each with what it gives (test_data_kinds)
    listed = [r for r in every if "cache" in r]  # the downloadable ones also say what is cached
    assert [r["dataset"] for r in listed] == list(download.REMOTES)  # `fetch` offers the same names
    assert listed[0]["files_cached"] == 4 and listed[0]["train_reads"]["how"] == "ptx download cache"
    from ptx.cli.data import data_fetch_cmd

    fetch_names = next(p for p in data_fetch_cmd.params if p.name == "names")
    assert list(fetch_names.type.choices) == list(download.REMOTES)


def test_train_dataset_mnist_uses_the_files_in_the_cache(tmp_path, monkeypatch):
    """`ptx train convnet --dataset mnist` on a machine with the files in the cache, and no network."""
    folder = tmp_path / "cache" / "datasets" / "mnist"
    folder.mkdir(parents=True)
    for name, body in tiny_mnist().items():
        (folder / name).write_bytes(body)
    monkeypatch.setenv("PTX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PTX_DATA_DIR", raising=False)
    r = CliRunner().invoke(cli, ["train", "convnet", "--dataset", "mnist", "--epochs", "1", "--offline",
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert f"data: mnist from ptx download cache ({folder})" in r.stdout
    assert "30 train / 10 test samples" in r.stdout


def test_progress_bar_on_stderr_only_when_asked_or_on_a_terminal(server, tmp_path, capfd):
    get(remote(server, "good"), tmp_path / "quiet")  # stderr is not a terminal here
    assert capfd.readouterr().err == ""
    get(remote(server, "good"), tmp_path / "bar", progress=True)
    err = capfd.readouterr().err
    assert "a.gz:" in err and "B/s" in err  # tqdm's bar, cleared when the file is done
