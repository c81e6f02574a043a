"""Bounds on the REST front's connections, and its drain, as a small subclass of uvicorn's
httptools protocol.

What uvicorn (0.54) gives and what it lacks, read in its source (protocols/http/httptools_impl.py,
server.py):
- `timeout_keep_alive` closes a connection idle between requests: used as it is.
- Nothing bounds how long a connection may take to send its request header: a connection that sends
  nothing, or stops in the middle of its header, is kept forever (a slow-loris client).
- `limit_concurrency` is checked only once a request header is complete, so silent connections are
  never counted nor answered; it is not used.
- On shutdown it closes every connection that is between requests at once, so a request a client
  wrote just then is reset unanswered, and a response finishing then closes without `Connection:
  close`, so the client's next request meets a closed socket.

So, per connection:
- a header timer, as nginx's client_header_timeout: from the connect, and from the first byte of
  each later request, to the end of that request's header; when it runs out the connection is closed;
- a cap on open connections: over it, the oldest connection still waiting for its header (a silent or
  stalled client: a real one sends its header within milliseconds) is closed to make room; when no
  connection is waiting, the newcomer is answered 503 with `Connection: close` and closed;
- the drain: once `Gate.draining` is set, every response not yet started says `Connection: close`,
  and a connection without a request is closed after `drain_idle` seconds without one (never under
  a request).
"""
from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass, field
from typing import Callable

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ptx.errors import PtxError

REFUSED_LINGER_S = 1.0  # a refused connection is closed this long after its 503, once the client has read it
FD_RESERVE = 64  # file descriptors kept beyond the connections and what the server held at startup (gRPC, logs)


_REFUSED = orjson.dumps({"error": "too many open connections: try again shortly (--max-connections)"})
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: "
           + str(len(_REFUSED)).encode() + b"\r\nconnection: close\r\nretry-after: 1\r\n\r\n" + _REFUSED)


@dataclass
class Gate:
    """What every connection of one server shares: its bounds and whether it drains."""

    header_timeout: float
    max_connections: int
    drain_idle: float = 1.0
    draining: bool = False
    waiting: dict = field(default_factory=dict)  # connections waiting for a request header, oldest first

    def protocol_class(self) -> type:
        """The protocol class uvicorn instantiates per connection (`Config(http=...)`), bound to this gate."""
        return type("PtxHttpProtocol", (BoundedProtocol,), {"gate": self})

    def start_draining(self, connections) -> None:
        self.draining = True
        for connection in list(connections):
            connection.drain()


class BoundedProtocol(HttpToolsProtocol):
    gate: Gate
    header_timer = None  # per connection once set (an asyncio TimerHandle while a request header is awaited)
    refused = False

    # -- the connection's life -------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.gate.max_connections and not self._make_room():
            self._refuse()
            return
        self._await_header(self.gate.header_timeout)
        if self.gate.draining:
            self.drain()

    def connection_lost(self, exc) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.refused:  # a refused connection's request is read and dropped
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.header_timer is None:  # a later request on a kept-alive connection: its header is timed too
            self._await_header(self.gate.header_timeout)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()
        if self.gate.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    # -- drain ------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Move this connection's client off: the response to come says Connection: close; without a
        request, the connection is closed after `drain_idle` seconds unless one starts."""
        idle = self.gate.drain_idle
        self.timeout_keep_alive = min(self.timeout_keep_alive, idle)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.response_started:  # a response already under way is finished as it began
                cycle.keep_alive = False
            return
        if self.header_timer is not None:  # no request yet, or one whose header is still coming
            if self.header_timer.when() - self.loop.time() > idle:
                self._stop_waiting()
                self._await_header(idle)
        elif self.timeout_keep_alive_task is not None:  # between requests: its keep-alive timer, shortened
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(idle, self.timeout_keep_alive_handler)

    def shutdown(self) -> None:
        """uvicorn's stop: it closes a connection between requests at once, where a request may be on
        its way; here such a connection gets `drain_idle` seconds for it (uvicorn waits for every
        connection, up to its timeout_graceful_shutdown)."""
        self.drain()

    # -- bounds -----------------------------------------------------------------------------------

    def _await_header(self, seconds: float) -> None:
        self.header_timer = self.loop.call_later(seconds, self.drop)  # late: closed
        self.gate.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.gate.waiting.pop(self, None)

    def drop(self) -> None:
        """Close a connection that holds no request; it no longer counts against the cap."""
        self._stop_waiting()
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> bool:
        for oldest in self.gate.waiting:
            if oldest is not self:
                oldest.drop()
                return True
        return False

    def _refuse(self) -> None:
        """Answer 503 before any request (the client reads it once it has sent one), half-close, and
        close after REFUSED_LINGER_S: closing at once with the client's request unread would reset the
        connection before the client read its 503."""
        self.refused = True
        self.connections.discard(self)
        self.transport.write(REFUSAL)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_S, self.transport.close)


def connection_cap(wanted: int, log: Callable[[str], None]) -> int:
    """--max-connections, lowered to what fits under the soft file-descriptor limit (raised to the
    hard limit first) with what is open now and a reserve, saying so when it had to be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) cannot be the soft one: the kernel's per-process ceiling is.
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if want > soft:
        with contextlib.suppress(ValueError, OSError):  # refused: the cap is fitted under the limit as it is
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = open_fds()
    cap = wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - in_use - FD_RESERVE)
    if cap < 1:
        raise PtxError(f"the file-descriptor limit ({soft}, hard {hard}) leaves no room for connections beside the "
                       f"{in_use} files open: raise it (ulimit -n) and start again")
    if cap < wanted:
        log(f"warning: --max-connections {wanted} does not fit under the file-descriptor limit "
            f"(soft {soft}, hard {hard}; {in_use} in use): REST connections capped at {cap}; raise the hard limit "
            "(ulimit -Hn, LimitNOFILE=, or the container's nofile ulimit) to allow more")
    return cap


def open_fds() -> int:
    """File descriptors this process holds now (Linux, macOS); the reserve's guess elsewhere."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return FD_RESERVE
