"""Stopping a listening socket without resetting a connection a client already has.

Closing a listening socket resets every connection in its accept queue: from the client's side
connect() had succeeded and its request was written, then it reads "connection reset". So on Linux
the stop goes in three steps: a socket filter makes the kernel drop new SYNs (a client's retry
finds the port closed: a refused connect, which a client knows was not taken); handshakes already
under way get HANDSHAKE_S to complete; the event loop accepts what the queue holds (the queue's
length is read from TCP_INFO); then the socket closes. Elsewhere the socket simply closes.
"""
from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import sys

HANDSHAKE_S = 0.25  # for handshakes under way when the filter went on (a round trip)
QUEUE_WAIT_S = 1.0  # at most, for the event loop to accept what is queued
SO_ATTACH_FILTER = 26

# Classic BPF, run on each packet the listening socket receives (data starts at the TCP header):
# drop a SYN without ACK (a new connection), let everything else through (handshakes completing).
_DROP_SYN = [(0x30, 0, 0, 13),          # ldb [13]        TCP flags
             (0x54, 0, 0, 0x12),        # and #0x12       SYN | ACK
             (0x15, 0, 1, 0x02),        # jeq #0x02       a bare SYN ...
             (0x06, 0, 0, 0),           # ret #0          ... dropped
             (0x06, 0, 0, 0xFFFFFFFF)]  # ret #-1         the rest kept


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make the kernel drop new connection attempts to ``sock``; False where this cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_SYN))
    fprog = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int | None:
    """Connections the kernel completed that nobody accepted yet (Linux: TCP_INFO's tcpi_unacked on a
    listening socket); None where unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    return struct.unpack_from("I", info, 24)[0]


async def quiesce(sock: socket.socket) -> None:
    """Before ``sock`` closes: refuse new connections and let the event loop accept the queued ones."""
    if not refuse_new_connections(sock):
        return
    await asyncio.sleep(HANDSHAKE_S)
    deadline = asyncio.get_running_loop().time() + QUEUE_WAIT_S
    while (accept_queue_length(sock) or 0) > 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
