"""`ptx serve` stopping and bounding its connections (issue 27): a SIGTERM under keep-alive load
loses no request that was written to a socket, and connections that send nothing or stop in the
middle of their headers cannot take the server's file descriptors. Real servers on loopback, every
wait bounded, each server stopped by its own pid whatever the outcome."""
from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import re
import resource
import select
import selectors
import signal
import socket
import threading
import time

import pytest

import serving

MODEL = "linreg"  # the smallest model: the server's work, not the model's, is under test
BODY = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["0.5"]}]}'
INFER = f"/v2/models/{MODEL}/infer"
DRAIN_S = 0.5
CLIENTS = 16


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


class KeepAliveClient(threading.Thread):
    """Infer requests over one persistent HTTP/1.1 connection at a time, reconnecting when an answer
    says Connection: close, until a connect is refused (the server has stopped accepting)."""

    def __init__(self, address: tuple[str, int]):
        super().__init__(daemon=True)
        self.address = address
        self.written = self.answered = self.told_to_close = 0
        self.lost: list[str] = []  # requests written to a socket and never answered

    def run(self) -> None:
        deadline = time.monotonic() + 60
        connection = None
        while time.monotonic() < deadline:
            if connection is not None and dropped(connection):
                connection.close()  # the server closed it while idle: what urllib3 checks before reuse
                connection = None
            if connection is None:
                connection = http.client.HTTPConnection(*self.address, timeout=20)
                try:
                    connection.connect()
                except (ConnectionRefusedError, TimeoutError, socket.timeout):
                    return  # not taken: the client knows it was not served
            try:
                connection.request("POST", INFER, BODY, {"Content-Type": "application/json"})
            except OSError as exc:  # the server closed this connection under the client's request
                self.written += 1
                self.lost.append(f"write: {type(exc).__name__}: {exc}")
                connection.close()
                connection = None
                continue
            self.written += 1
            try:
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.lost.append(f"read: {type(exc).__name__}: {exc}")
                connection.close()
                connection = None
                continue
            if response.status == 200:
                self.answered += 1
            else:
                self.lost.append(f"answered {response.status}")
            if (response.getheader("connection") or "").lower() == "close":
                self.told_to_close += 1
                connection.close()
                connection = None
        self.lost.append("still running after 60 s")


def dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection the server has closed (readable with nothing to read but EOF)."""
    return connection.sock is not None and bool(select.select([connection.sock], [], [], 0)[0])


def probe_ready(connection: http.client.HTTPConnection, statuses: list, until: threading.Event) -> None:
    """Readiness, first on a connection opened before the signal (so a slow machine still asks
    during the drain), then on new ones until they are refused."""
    while not until.is_set():
        try:
            connection.request("GET", "/v2/health/ready")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        except (OSError, http.client.HTTPException):
            return
        time.sleep(0.05)


def test_sigterm_under_keep_alive_load_answers_every_written_request_10_times(runs):
    root = runs.ready(MODEL)
    # The next server starts while one is under test: most of a round is a server's start-up.
    starting = concurrent.futures.ThreadPoolExecutor(1)
    start = lambda: starting.submit(serving.start, root, MODEL, args=("--drain-seconds", DRAIN_S))  # noqa: E731
    upcoming = start()
    try:
        for attempt in range(10):
            server, upcoming = upcoming.result(), (start() if attempt < 9 else None)
            run_once(server, attempt)
    finally:
        if upcoming is not None:  # stopped by its pid whatever happened to the others
            with contextlib.suppress(Exception):
                upcoming.result().stop(signal.SIGKILL)
        starting.shutdown()


def run_once(server: serving.Server, attempt: int) -> None:
    """16 keep-alive clients under load, SIGTERM, and what each client saw."""
    try:
        address = split(server.http)
        clients = [KeepAliveClient(address) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(0.4)
        statuses, done = [], threading.Event()
        probe = http.client.HTTPConnection(*address, timeout=5)
        probe.connect()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        prober = threading.Thread(target=probe_ready, args=(probe, statuses, done), daemon=True)
        prober.start()
        code = server.process.wait(30)
        took = time.monotonic() - signalled
        done.set()
        for client in clients:
            client.join(30)
        prober.join(10)
    finally:
        server.stop(signal.SIGKILL)
    bound = float(re.search(r"exit within ([\d.]+) s", "\n".join(server.lines)).group(1))
    lost = [f"client {i}: {e}" for i, c in enumerate(clients) for e in c.lost]
    written, answered = sum(c.written for c in clients), sum(c.answered for c in clients)
    context = f"attempt {attempt}: {written} written, {answered} answered, took {took:.2f} s"
    assert not lost, (context, lost[:5], server.lines[-3:])
    assert code == 0 and took < bound, (context, code, bound, server.lines[-3:])
    # Readiness turned 503 during the drain (a probe before the signal was handled may see 200).
    assert 503 in statuses and 200 not in statuses[statuses.index(503):], (context, statuses)
    # Every client was moved off its connection by an answer saying Connection: close.
    assert all(c.told_to_close for c in clients), (context, [c.told_to_close for c in clients])
    assert written > CLIENTS, context


# -- bounded connections ---------------------------------------------------------------------------

HEADER_TIMEOUT_S = 2.0
SILENT, STALLED = 1100, 300


def limit_files_to_1024() -> None:  # in the server's process, before ptx starts
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture
def many_files():
    """The test itself holds 1,400+ sockets: its own soft limit raised (the hard one permitting)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if hard != resource.RLIM_INFINITY and hard < SILENT + STALLED + 200:
        pytest.skip(f"this process may open {hard} files at most (hard limit); the test holds {SILENT + STALLED}+")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want if hard == resource.RLIM_INFINITY else min(want, hard)),
                                                hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def infer_once(address) -> tuple[int, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.request("POST", INFER, BODY, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def closed_by_server(sockets: list[socket.socket], deadline: float) -> int:
    """Waits until the server has closed every socket (EOF or reset) or the deadline; returns how many
    are still open."""
    selector = selectors.DefaultSelector()  # epoll: select() stops at 1,024 descriptors
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    open_ = len(sockets)
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                open_ -= 1
    selector.close()
    return open_


def test_silent_and_stalled_connections_cannot_take_the_server_at_1024_files(runs, many_files):
    root = runs.ready(MODEL)
    server = serving.start(root, MODEL, args=("--header-timeout", HEADER_TIMEOUT_S, "--keep-alive-seconds", 60, "--drain-seconds", 0),
                           preexec_fn=limit_files_to_1024)
    held: list[socket.socket] = []
    try:
        address = split(server.http)
        warning = next(line for line in server.lines if "does not fit under the file-descriptor limit" in line)
        cap = int(re.search(r"capped at (\d+)", warning).group(1))
        assert "hard 1024" in warning and 0 < cap < 1024, warning
        for _ in range(SILENT):
            held.append(socket.create_connection(address, timeout=10))
        for _ in range(STALLED):
            sock = socket.create_connection(address, timeout=10)
            held.append(sock)
            try:
                sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
            except OSError:  # already closed to make room for a newer one: also what the cap does
                pass
        opened = time.monotonic()
        status, took = infer_once(address)
        assert status == 200 and took < 1.0, (status, took)
        still_open = closed_by_server(held, opened + HEADER_TIMEOUT_S + 3.0)
        assert still_open == 0, f"{still_open} of {len(held)} stalled connections still open " \
                                f"{HEADER_TIMEOUT_S + 3.0} s after the last connect"
        for sock in held:
            sock.close()
        held.clear()
        # Connections kept alive between requests are not taken from their clients: when they fill
        # the cap, a newcomer is answered 503 with Connection: close and closed, never left hanging.
        idle = []
        for _ in range(cap):
            connection = http.client.HTTPConnection(*address, timeout=10)
            connection.request("GET", "/v2/health/live")
            assert connection.getresponse().read() == b'{"live":true}'
            idle.append(connection)
        extra = http.client.HTTPConnection(*address, timeout=5)
        extra.request("GET", "/v2/health/live")
        refused = extra.getresponse()
        assert refused.status == 503 and refused.getheader("connection") == "close", refused.status
        assert b"--max-connections" in refused.read()
        for connection in idle:
            connection.close()
        extra.close()
        time.sleep(0.2)
        assert infer_once(address)[0] == 200
        connection = http.client.HTTPConnection(*address, timeout=10)
        connection.request("POST", "/v2/models/no-such-model/infer", BODY)
        assert connection.getresponse().status == 404
        connection.close()
    finally:
        for sock in held:
            sock.close()
        code = server.stop()
    assert code == 0, server.lines[-3:]
    # Two inference requests were answered; the 404 is a refusal, not an answer (issue 30, point 7).
    assert server.lines[-1] == "stopped: answered 2 inference requests (REST 2, gRPC 0); 1 refused (4xx)", \
        server.lines[-3:]

