"""Prometheus metrics of one server (prometheus_client, a registry per server so that tests and
several servers in one process do not share counters): requests, errors, latency, batch sizes."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        # Said at shutdown: inference requests answered (with outputs), refused (4xx) and failed (5xx).
        self.answered = {"rest": 0, "grpc": 0, "openai": 0}  # openai: REST's OpenAI API (openai_routes.py)
        self.refused = 0
        self.failed = 0
        self.registry = CollectorRegistry()
        self.requests = Counter("ptx_inference_requests", "Inference requests received", ["model", "protocol"],
                                registry=self.registry)
        self.errors = Counter("ptx_inference_errors", "Inference requests answered with an error",
                              ["model", "protocol", "code"], registry=self.registry)
        self.latency = Histogram("ptx_inference_request_duration_seconds", "Time from request to answer",
                                 ["model", "protocol"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("ptx_batch_size", "Rows per batch the dynamic batcher ran", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        # A name this server does not serve is no model label (a client could make labels without end).
        self.unknown_model = Counter("ptx_inference_unknown_model_requests",
                                     "Inference requests for a model this server does not serve", ["protocol"],
                                     registry=self.registry)
        self.observers: dict[tuple[str | None, str], RequestObserver] = {}

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observer(self, model: str | None, protocol: str) -> "RequestObserver":
        """Pre-bound children for one model (None: a name not served) and protocol, made once: the
        per-request cost is two increments."""
        observer = self.observers.get((model, protocol))
        if observer is None:
            observer = self.observers[model, protocol] = RequestObserver(self, model, protocol)
        return observer


class RequestObserver:
    def __init__(self, metrics: Metrics, model: str | None, protocol: str):
        self.metrics, self.model, self.protocol = metrics, model, protocol
        known = model is not None
        self.requests = metrics.requests.labels(model, protocol) if known else metrics.unknown_model.labels(protocol)
        self.latency = metrics.latency.labels(model, protocol) if known else None

    def done(self, seconds: float, error_code: int | None = None) -> None:
        if error_code is None:
            self.metrics.answered[self.protocol] += 1  # one event loop: no lock needed
        elif error_code < 500:
            self.metrics.refused += 1
        else:
            self.metrics.failed += 1
        self.requests.inc()
        if self.latency is not None:  # a name not served is counted, nothing more
            self.latency.observe(seconds)
            if error_code is not None:
                self.metrics.errors.labels(self.model, self.protocol, str(error_code)).inc()
