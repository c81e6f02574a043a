"""`ptx serve`: load the models, choose their backends, run the REST front (uvicorn + Starlette) and
the gRPC front (grpcio) in one asyncio event loop, and stop cleanly.

One process, one dynamic batcher per model: batches are largest when every request of a model goes
through one queue. More throughput than one machine gives comes from more replicas (KServe scales
the same container out), not from more processes here.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import signal
import socket
from dataclasses import replace
from typing import Callable

import uvicorn

from ptx.contract.names import FULL_PRECISION
from ptx.errors import PtxError
from ptx.infer.bench.choice import choose_backend, describe
from ptx.infer.runtime.ort_session import threads_spinning

from .bounds import Gate, connection_cap
from .grpc_service import build_server
from .listener import HANDSHAKE_S, QUEUE_WAIT_S, quiesce
from .rest import build_app
from .service import ServeOptions, Service

AUTO = "auto"
SHUTDOWN_GRACE_S = 8  # once the drain is over, requests in flight get this long to finish


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(options: ServeOptions, insecure: bool, log: Callable[[str], None]) -> None:
    """Loopback unless told otherwise; beyond it, a token, or an explicit --insecure with a warning."""
    if is_loopback(options.host) or options.token:
        return
    if not insecure:
        raise PtxError(f"--host {options.host} is reachable from other machines: give --token (or PTX_SERVE_TOKEN) "
                       "so that every request needs `Authorization: Bearer <token>`, or --insecure to serve "
                       "anyone who can reach it")
    log(f"warning: serving on {options.host} without a token (--insecure): anyone who can reach this port can "
        "use the models")


def load(service: Service, runs: list, *, backend: str, precision: str | None, device: str | None,
         log: Callable[[str], None]) -> None:
    """Open each tutorial model's run (a Target, ptx.infer.model.target) through its backend (chosen per
    model for auto) and serve it by its model's name."""
    # Refused, not ignored: auto picks the device with the backend. device="cpu" (what library callers
    # passed when it was the default) is let through.
    if backend == AUTO and device not in (None, "cpu"):
        raise PtxError(f"--device {device} picks the device of a --backend that runs on several (eager, torchscript, "
                       "aoti); --backend auto chooses the device itself: give --backend too, or drop --device")
    for target in runs:
        name = target.name
        target.run_dir  # a missing run is said first, before its backend or device is asked about
        if backend == AUTO:
            choice = choose_backend(name, target.run_dir, max_batch_size=service.options.max_batch_size,
                                    precision=precision, root=target.root)
            predictor = target.load(choice.backend, choice.device, choice.precision)
            log(f"backend {describe(name, choice)}")
        else:
            predictor = target.load(backend, device, precision or FULL_PRECISION)
            log(f"backend {name}: {predictor.backend} ({predictor.device}, {predictor.precision}), as --backend says")
        for why in filter(None, (predictor.stale, predictor.unusable)):
            log(f"warning: {why}")
        service.add(name, predictor)


def load_files(service: Service, files: list[tuple], *, backend: str, precision: str | None, device: str | None,
               log: Callable[[str], None]) -> None:
    """Open each of a user's own model files ((served name, its Target)) and serve it by its tensors:
    through --backend, or (auto) the file's own runtime (ort-cpu for ONNX). The Target's inputs
    (--input) declare the TorchScript and pt2 files' inputs; ONNX files read theirs from the graph."""
    for name, target in files:
        if target.kind == "onnx":
            # --input declares what a TorchScript or pt2 file takes; an ONNX file served beside one
            # describes its own inputs, but for one its graph gives no shape (not even a rank).
            from ptx.contract.onnx_wire import shapeless_inputs

            unranked = shapeless_inputs(target.path)
            declared = [t for t in target.options.get("inputs", ()) if t.name in unranked]
            target = replace(target, options={**target.options, "inputs": declared})
        # a decoder's step loop runs its steps back to back: its threads spin (ort_session.threads_spinning)
        with threads_spinning(target.generation is not None):
            model = target.load(None if backend == AUTO else backend, device, precision)
        batching = ("batched along each tensor's batch axis" if model.signature.batched
                    else "request by request (not every tensor has a batch axis)")
        on = model.device if model.precision == FULL_PRECISION else f"{model.device}, {model.precision}"
        runs = f"{model.path}" + (f" ({model.opened})" if model.opened else "")
        log(f"backend {name}: {model.backend} ({on}) for {runs}, {batching}")
        service.add(name, model)


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PtxError(f"HTTP port {port} on {host} is in use: pass another --http-port (0 picks a free one)") from None
        raise PtxError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host and --http-port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: `ptx serve` stops both fronts on one signal and exits 0
    (uvicorn re-raises the signal after shutting down, which would end the process by SIGTERM); and
    its listener stops without resetting the connections queued in it (listener.py)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def shutdown(self, sockets=None):
        if not self.force_exit:
            for sock in sockets or []:
                await quiesce(sock)
        await super().shutdown(sockets)


async def run(service: Service, http_socket: socket.socket, log: Callable[[str], None]) -> None:
    options = service.options
    grpc_server = build_server(service)
    grpc_target = f"[{options.host}]" if ":" in options.host else options.host
    grpc_port = 0  # also where grpcio raises RuntimeError instead of returning 0
    with contextlib.suppress(RuntimeError):
        grpc_port = grpc_server.add_insecure_port(f"{grpc_target}:{options.grpc_port}")
    if not grpc_port:
        raise PtxError(f"gRPC port {options.grpc_port} on {options.host} is in use or not available: pass another "
                       "--grpc-port (0 picks a free one)")
    await grpc_server.start()
    gate = Gate(header_timeout=options.header_timeout, max_connections=connection_cap(options.max_connections, log),
                drain_idle=min(1.0, options.keep_alive_seconds))
    # proxy_headers off: rewriting client addresses from X-Forwarded-* costs every request and ptx
    # serve does not use them. limit_concurrency stays off: the gate caps connections (bounds.py).
    config = uvicorn.Config(build_app(service), http=gate.protocol_class(), log_level="warning", access_log=False,
                            lifespan="off", proxy_headers=False, timeout_keep_alive=options.keep_alive_seconds,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, server_header=False)
    http = _Uvicorn(config)
    loop = asyncio.get_running_loop()
    stopping, forced = asyncio.Event(), asyncio.Event()

    def stop() -> None:
        if stopping.is_set():  # a second Ctrl-C: stop now
            http.force_exit = http.should_exit = True
            forced.set()
            return
        stopping.set()
        service.ready = False  # readiness answers 503 from now on, REST and gRPC
        gate.start_draining(http.server_state.connections)
        # at most from SIGTERM to exit: the drain, the listener's stop, then the requests in flight
        bound = options.drain_seconds + HANDSHAKE_S + QUEUE_WAIT_S + SHUTDOWN_GRACE_S
        log(f"stopping: not ready; answering {options.drain_seconds:g} s more with Connection: close, then finishing "
            f"those in flight (exit within {bound:g} s)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    http_task = asyncio.create_task(http.serve(sockets=[http_socket]))
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        http_task.result()  # uvicorn failed to start: its error
    service.ready = True
    host, http_port = http_socket.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log(f"REST  http://{shown}:{http_port}/v2  (page http://{shown}:{http_port}/, metrics http://{shown}:{http_port}/metrics)")
    log(f"gRPC  {shown}:{grpc_port}")
    talking = [name for name, model in service.models.items() if model.text is not None]
    embedding = [name for name, model in service.models.items() if model.embedder is not None]
    said = [f"{what}: {', '.join(names)}" for what, names in (("chat and completions", talking),
                                                               ("embeddings", embedding)) if names]
    if said:
        log(f"OpenAI  http://{shown}:{http_port}/v1  ({'; '.join(said)})")
    log(f"serving {', '.join(service.models)}; Ctrl-C or SIGTERM stops")
    await stopping.wait()
    # The drain: load balancers and KServe see readiness 503 and stop sending; keep-alive clients are
    # told Connection: close with each answer and reconnect elsewhere. Then the listener stops.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(forced.wait(), options.drain_seconds)
    http.should_exit = True
    # grpc.aio's stop sends GOAWAY, refuses new calls and cancels those still running after the grace.
    await asyncio.gather(http_task, grpc_server.stop(0 if forced.is_set() else SHUTDOWN_GRACE_S))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def serve(runs: list, *, options: ServeOptions, backend: str = AUTO, precision: str | None = None,
          device: str | None = None, insecure: bool = False, log: Callable[[str], None] = print,
          files: list[tuple] = ()) -> None:
    """Serve the tutorial models' ``runs`` and the user's model ``files`` ((served name, Target) pairs),
    each a Target (ptx.infer.model.target: ``Target.of(argument, root=..., options=...)``, as load()
    takes its options), until SIGINT or SIGTERM, then finish the requests in flight and return."""
    taken = [*(target.name for target in runs), *(name for name, _ in files)]
    twice = sorted({n for n in taken if taken.count(n) > 1})
    runs_of = [target.name for target in runs]
    if twice and runs_of.count(twice[0]) > 1:  # --name names files: two runs of one model cannot be told apart
        raise PtxError(f"two runs of {twice[0]} would be served as {twice[0]!r}: serve one run of a model (or "
                       "serve another's export by its file, with --name)")
    if twice:
        raise PtxError(f"two models would be served as {twice[0]!r}: give the files other names with --name")
    check_exposure(options, insecure, log)
    http_socket = bind_http(options.host, options.http_port)
    service = Service(options)
    # ONNX Runtime's intra-op threads spin between runs by default. In a server, the event loop, the
    # gRPC threads and the batcher share the cores with them, and spinning threads took the CPU the
    # front needed: on 2 cores, REST at 32 clients answered about a tenth more with spinning off
    # (docs/benchmarks/serving.md). A language model's sessions spin (load_files); PTX_ORT_SPINNING decides all.
    try:
        with threads_spinning(False):
            if runs:
                load(service, runs, backend=backend, precision=precision, device=device, log=log)
            load_files(service, list(files), backend=backend, precision=precision, device=device, log=log)
            _event_loop_run(run(service, http_socket, log))
    finally:
        service.close()
        http_socket.close()
    metrics = service.metrics
    answered = metrics.answered
    others = [f"{n} {what}" for n, what in ((metrics.refused, "refused (4xx)"), (metrics.failed, "failed (5xx)")) if n]
    openai = f", OpenAI {answered['openai']}" if answered["openai"] else ""
    log(f"stopped: answered {sum(answered.values())} inference requests (REST {answered['rest']}, "
        f"gRPC {answered['grpc']}{openai})" + (f"; {', '.join(others)}" if others else ""))


def _event_loop_run(coroutine) -> None:
    """uvloop when installed (uvicorn[standard] brings it: a faster loop), else asyncio's."""
    new_event_loop = None
    with contextlib.suppress(ImportError):
        from uvloop import new_event_loop
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(coroutine)
