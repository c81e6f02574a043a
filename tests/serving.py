"""Starting `ptx serve` for a test: a real process on loopback, ports chosen by the kernel (0) and read
from its startup lines, every wait bounded, stopped by its own process id whatever the outcome."""
from __future__ import annotations

import contextlib
import os
import re
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

STARTUP_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15


@dataclass
class Server:
    process: subprocess.Popen
    http: str  # host:port
    grpc: str
    lines: list[str] = field(default_factory=list)  # everything it printed, kept up to date by a reader thread
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    def stop(self, sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Signal the server and wait for it; kill it if it does not stop in time. Returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.reader is not None:
            self.reader.join(5)
        return self.process.returncode


def start(root, *models: str, args: tuple = (), env: dict | None = None, preexec_fn=None,
          python: str = sys.executable) -> Server:
    """`ptx serve MODELS --root ROOT` on free loopback ports; returns once it says it is serving.
    ``preexec_fn`` runs in the child before ptx starts (to set its resource limits); ``python``: the
    interpreter whose ptx serves (another checkout's, for a before/after benchmark)."""
    # No drain unless a test asks for one (a later --drain-seconds in args wins): a test's server
    # has no load balancer to wait for, and the suite would wait out the default at every stop.
    cmd = [python, "-m", "ptx", "serve", *models, "--root", str(root), "--http-port", "0",
           "--grpc-port", "0", "--drain-seconds", "0", *map(str, args)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)
    lines: list[str] = []
    arrived: queue.Queue = queue.Queue()

    def read():  # drains the pipe for the server's whole life, so it never blocks on a full pipe
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            arrived.put(line)
        arrived.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            line = arrived.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                raise RuntimeError("ptx serve exited before serving:\n" + "\n".join(lines))
            if line.startswith("serving "):
                text = "\n".join(lines)
                http = re.search(r"REST  http://([^/]+)/v2", text).group(1)
                grpc = re.search(r"gRPC  (\S+)", text).group(1)
                return Server(process, http, grpc, lines, reader)
    except queue.Empty:
        process.kill()
        process.wait(5)
        raise RuntimeError(f"ptx serve did not start within {STARTUP_TIMEOUT_S} s:\n" + "\n".join(lines)) from None
    except BaseException:
        process.kill()
        process.wait(5)
        raise


@contextlib.contextmanager
def running(root, *models: str, args: tuple = (), env: dict | None = None):
    server = start(root, *models, args=args, env=env)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def named(root, models: dict, batch: int, announced: str | None = None):
    """`ptx serve` of ``models`` ({name: file}) with --max-batch-size ``batch``; ``announced``: the end of the
    startup's OpenAI line (what it serves, as it says it), checked before the server is handed over."""
    names = tuple(arg for name in models for arg in ("--name", name))
    with running(root, *(str(file) for file in models.values()), args=(*names, "--max-batch-size", batch)) as server:
        if announced is not None:
            assert any(line.startswith("OpenAI  http://") and line.endswith(announced)
                       for line in server.lines), server.lines
        yield server


def openai_client(server, timeout_s: float):
    """The real `openai` client against ``server``, no retries (a failure is seen as it is), every call bounded."""
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=timeout_s, max_retries=0)
