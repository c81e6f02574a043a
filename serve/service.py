"""What the REST and gRPC fronts share: the served models, who may call, and the metrics."""
from __future__ import annotations

import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable

from ptx import __version__
from ptx.contract.protocol import SERVER_NAME
from ptx.errors import first_line

from .metrics import Metrics
from .generator import DEFAULT_MAX_TOKENS
from .model import VERSION, InferRequest, ServedModel
from .tensors import RequestError, Tensor

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration"]
GENERATE = "generate"  # listed where a served model generates (generate.py), so a client can tell before it asks
TOKEN_NEEDED = {"rest": "missing or wrong bearer token: send `Authorization: Bearer <token>`",
                "grpc": "missing or wrong bearer token: send metadata authorization: Bearer <token>"}


@dataclass
class ServeOptions:
    """How ``ptx serve`` runs; the CLI's options, defaults included."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    max_batch_size: int = 64
    max_delay_ms: float = 2.0
    workers: int = 1
    token: str | None = None
    max_request_bytes: int = 16 * 1024 * 1024
    drain_seconds: float = 5.0  # after SIGTERM: readiness 503, answers say Connection: close, then stop
    header_timeout: float = 10.0  # a connection must send a complete request header within this
    keep_alive_seconds: float = 5.0  # an idle kept-alive connection is closed after this
    max_connections: int = 2000  # open REST connections at most (lowered to fit the file limit)
    max_tokens: int = DEFAULT_MAX_TOKENS  # new tokens a generate request may ask for (and the model's positions allow)
    speculate: str | None = None  # a drafter whose guesses requests keep where their choice confirms them (ngram)


class Service:
    def __init__(self, options: ServeOptions):
        self.options = options
        self.metrics = Metrics()
        self.models: dict[str, ServedModel] = {}
        # Decoding pictures is CPU work: off the event loop, beside (not inside) the runtimes' threads.
        self.prepare_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ptx-prepare")
        self.ready = False
        self._token = options.token.encode() if options.token else None

    def add(self, name: str, model) -> ServedModel:
        """Serve ``model`` (ptx.infer.load's) as ``name``: its named tensors, and its head's pictures
        and words where it has one."""
        options = dict(max_batch_size=self.options.max_batch_size, max_delay_s=self.options.max_delay_ms / 1000,
                       workers=self.options.workers)
        served = ServedModel(name, model, options, self.prepare_pool,
                             on_batch=self.metrics.batch_size.labels(name).observe, max_tokens=self.options.max_tokens,
                             speculate=self.options.speculate)
        self.models[name] = served
        return served

    def model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise RequestError(f"unknown model {name!r}; this server serves {', '.join(self.models)}", 404)
        if version not in (None, "", VERSION):
            raise RequestError(f"model {name!r} has no version {version!r}; it has version {VERSION}", 404)
        return model

    def authorized(self, authorization: str | None) -> bool:
        """With a token set, every call but health needs `Authorization: Bearer <token>`."""
        if self._token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def infer(self, protocol: str, name: str, version: str | None, authorization: str | None,
                    read: Callable[[], Awaitable[InferRequest]],
                    answer: Callable[[ServedModel, InferRequest, list[Tensor]], object],
                    refusal: RequestError | None = None):
        """One inference request of either front, counted in the metrics: who may call, the model,
        the request ``read()`` gives, the model's outputs, and the front's ``answer`` of them. Every
        error is a RequestError for the client: a 500 where the runtime itself failed."""
        started = time.perf_counter()
        observer = self.metrics.observer(name if name in self.models else None, protocol)  # unknown: no label
        try:
            if refusal is not None:
                raise refusal
            if not self.authorized(authorization):
                raise RequestError(TOKEN_NEEDED[protocol], 401)
            model = self.model(name, version)
            request = await read()
            answered = answer(model, request, await model.infer(request))
        except RequestError as exc:
            observer.done(time.perf_counter() - started, exc.status)
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime failed on this request: a 500 for it alone
            observer.done(time.perf_counter() - started, 500)
            raise RequestError(f"inference failed: {first_line(exc)}", 500) from None
        observer.done(time.perf_counter() - started)
        return answered

    def server_metadata(self) -> dict:
        generates = any(model.generator is not None for model in self.models.values())
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS + [GENERATE] * generates}

    def repository_index(self) -> list[dict]:
        return [{"name": name, "version": VERSION, "state": "READY" if self.ready else "LOADING", "reason": ""}
                for name in self.models]

    def close(self) -> None:
        for model in self.models.values():
            model.close()
        self.prepare_pool.shutdown(wait=False, cancel_futures=True)
