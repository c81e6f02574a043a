"""Where a served model answers over the Open Inference Protocol, and how to reach it: an endpoint's URL
(REST's ``http(s)://HOST:PORT/v2/models/NAME[/versions/V]``, gRPC's ``grpc(s)://HOST:PORT/NAME[/V]``) and
a Connection (auth, TLS, timeout, concurrency, binary or JSON). Apart from oip_transport, which talks
over them, so that parsing an address never reads the transports. Standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import quote, urlsplit

from ptx.errors import PtxError

URL_SCHEMES = ("http://", "https://", "grpc://", "grpcs://")
REST_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?$")


def is_url(text) -> bool:
    return isinstance(text, str) and text.lower().startswith(URL_SCHEMES)


@dataclass(frozen=True)
class Endpoint:
    """Where a served model answers: ``http(s)://HOST:PORT/v2/models/NAME[/versions/V]`` or
    ``grpc(s)://HOST:PORT/NAME[/V]``."""

    scheme: str  # http, https, grpc, grpcs
    host: str
    port: int
    model: str
    version: str | None = None

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        rest_form = "http://HOST:PORT/v2/models/NAME[/versions/V]"
        grpc_form = "grpc://HOST:PORT/NAME[/V]"
        form = grpc_form if scheme.startswith("grpc") else rest_form
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise PtxError(f"{url}: give the host and its port, as {form}")
        if scheme.startswith("grpc"):
            pieces = [p for p in parts.path.split("/") if p]
            if not 1 <= len(pieces) <= 2:
                raise PtxError(f"{url}: a gRPC endpoint names one model (and a version): {grpc_form}")
            return cls(scheme, parts.hostname, port, pieces[0], pieces[1] if len(pieces) == 2 else None)
        match = REST_PATH.match(parts.path)
        if match is None:
            raise PtxError(f"{url}: a REST endpoint is a model's address on the protocol: {rest_form}")
        return cls(scheme, parts.hostname, port, match["name"], match["version"])

    @property
    def is_grpc(self) -> bool:
        return self.scheme.startswith("grpc")

    @property
    def tls(self) -> bool:
        return self.scheme in ("https", "grpcs")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def model_path(self) -> str:
        return f"/v2/models/{quote(self.model)}" + (f"/versions/{quote(self.version)}" if self.version else "")

    @property
    def url(self) -> str:
        if self.is_grpc:
            return f"{self.scheme}://{self.address}/{self.model}" + (f"/{self.version}" if self.version else "")
        return f"{self.scheme}://{self.address}{self.model_path}"

    @property
    def what(self) -> str:
        return f"model {self.model!r}" + (f" version {self.version!r}" if self.version else "")


@dataclass(frozen=True)
class Connection:
    """How to reach a server: auth, TLS, the timeout of one call, and how hard to push it."""

    token: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    insecure: bool = False  # TLS without checking the server's certificate (REST only)
    ca_file: str | None = None
    concurrency: int = 4  # requests in flight at once
    binary: bool = True  # REST: the binary tensor extension where the server lists it; False: JSON always
    max_batch: int | None = None  # the largest batch one request carries (default: the server's max_batch_size)

    def all_headers(self) -> dict[str, str]:
        found = dict(self.headers)
        if self.token:
            found["Authorization"] = f"Bearer {self.token}"
        return found


def parse_header(text: str) -> tuple[str, str]:
    """``--header "K: V"`` -> (K, V), or a one-line error."""
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise PtxError(f"--header {text!r}: give it as NAME:VALUE (X-Api-Key:abc)")
    return key.strip(), value.strip()
