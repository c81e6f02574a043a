"""Talking to a served model over the Open Inference Protocol (KServe v2, as Triton, KServe and
`ptx serve` speak it): an endpoint's URL, then three calls (model metadata, model config, infer)
through REST (JSON, or the binary tensor extension) or gRPC (the protocol's GRPCInferenceService, the
stubs tritonclient ships). numpy, the standard library and grpcio only: no torch.

Every failure is one PtxError that names the endpoint and what to do, and every call ends within the
timeout it is given: a server that drains (503, or gRPC UNAVAILABLE once it was reached) is asked
again with a growing pause while the timeout allows. A request the server refuses (a 4xx, gRPC's
INVALID_ARGUMENT and the like) is a ServerRefusedError: the server's words, not a disagreement.

REST tensors travel as binary data only where the server lists the binary tensor data extension in
its server metadata (``GET /v2``: Triton and ptx serve list ``binary_tensor_data``; KServe's Python
server lists none, though it reads it), read once per endpoint; JSON otherwise, as the protocol's
core asks of every server. A server that lists it and still answers a binary request with 400 is
asked again in JSON, once, said in one line, and in JSON from then on.
"""
from __future__ import annotations

import base64
import html
import http.client
import json
import re
import socket
import ssl
import struct
import threading
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from ptx.contract.protocol import BYTES, CONTENTS, V2_OF, V2_TYPES
from ptx.errors import PtxError

# where a served model answers and how to reach it: its own module; said again here for the callers
from .oip_endpoint import URL_SCHEMES, Connection, Endpoint, is_url, parse_header  # noqa: F401

HEADER_LENGTH = "Inference-Header-Content-Length"
FIRST_PAUSE_S = 0.05  # a draining server is asked again after this, doubling, while the timeout allows
BINARY_EXTENSION = "binary_tensor_data"  # its name in a server's metadata (Triton's, KServe's docs, ptx serve)
# A binary request's refusals that a server without the extension gives: 400, and a web framework's
# 415 (the content type) or 422 (a body it could not parse): asked again in JSON
BINARY_REFUSED = (400, 415, 422)


def open_transport(endpoint: Endpoint, connection: Connection, say: Callable[[str], None] | None = None):
    """The endpoint's transport; ``say``: where a line about how it talks goes (the fallback to JSON)."""
    return (GrpcTransport if endpoint.is_grpc else RestTransport)(endpoint, connection, say)


class ServerRefusedError(PtxError):
    """The server refused a request (a 4xx after any fallback, gRPC INVALID_ARGUMENT, UNAUTHENTICATED,
    NOT_FOUND...): its own outcome, in the server's words, never a disagreement about the model (verify
    stops with it: exit 2)."""


class _Transport:
    def __init__(self, endpoint: Endpoint, connection: Connection, say: Callable[[str], None] | None = None):
        self.endpoint, self.connection = endpoint, connection
        self.notes: list[str] = []  # what was said about how it talks (verify keeps them in its report)
        self._say = say

    def say(self, line: str) -> None:
        self.notes.append(line)
        if self._say is not None:
            self._say(line)

    def _retrying(self, call, what: str):
        """``call()`` again while the server says it is draining, within one timeout."""
        deadline = time.monotonic() + self.connection.timeout_s
        pause = FIRST_PAUSE_S
        while True:
            try:
                return call(max(deadline - time.monotonic(), 0.001))
            except Draining as exc:
                if time.monotonic() + pause >= deadline:
                    raise PtxError(f"{self.endpoint.url}: {what}: the server is not ready (draining or starting: "
                                   f"{exc}) and stayed so for the {self.connection.timeout_s:g} s of --timeout") from None
                time.sleep(pause)
                pause *= 2

    def _auth_hint(self) -> str:
        """What to do about a refused authorization: give a token, or check the one given."""
        return "the --token given was refused: check it" if self.connection.token else \
            "give --token (or --header NAME:VALUE)"


class Draining(Exception):
    """A 503 (or gRPC UNAVAILABLE from a server that answered before): ask again shortly."""


class RestTransport(_Transport):
    """The protocol's REST binding over http.client: one kept-alive connection per thread."""

    def __init__(self, endpoint: Endpoint, connection: Connection, say: Callable[[str], None] | None = None):
        super().__init__(endpoint, connection, say)
        self._local = threading.local()
        self._lock = threading.RLock()  # the server's metadata read, and binary decided, once
        self._server: dict | None | bool = False  # the server's metadata once read (False: not yet)
        self._binary: bool | None = None if connection.binary else False  # None: not yet decided
        self._headers = connection.all_headers()  # the same on every request: built once, as gRPC's are
        self._context = None
        if endpoint.tls:
            self._context = ssl.create_default_context(cafile=connection.ca_file)
            if connection.insecure:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    def _connection(self, timeout: float):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            e = self.endpoint
            conn = (http.client.HTTPSConnection(e.host, e.port, timeout=timeout, context=self._context) if e.tls
                    else http.client.HTTPConnection(e.host, e.port, timeout=timeout))
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], what: str):
        """(status, headers, body) of one call, a dropped kept-alive connection opened again once."""
        def once(timeout: float):
            for attempt in (0, 1):
                conn = self._connection(timeout)
                try:
                    conn.request(method, path, body=body, headers={**self._headers, **headers})
                    response = conn.getresponse()
                    data = response.read()
                except BaseException as exc:
                    conn.close()
                    self._local.conn = None
                    if not isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                        raise self._network_error(exc, what) from None
                    if attempt:
                        raise PtxError(f"{self.endpoint.url}: {what}: the server closed the connection ({exc})") \
                            from None
                    continue
                if response.status == 503:
                    raise Draining(_said(data) or "503")
                return response.status, response.headers, data
        return self._retrying(once, what)

    def _network_error(self, exc: BaseException, what: str) -> BaseException:
        url, timeout = self.endpoint.url, self.connection.timeout_s
        if isinstance(exc, ConnectionRefusedError):
            return PtxError(f"{url}: nothing is listening at {self.endpoint.address} (connection refused): start "
                            "the server, or check the URL's host and port")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PtxError(f"{url}: the server's TLS certificate is not trusted ({exc.verify_message}): give "
                            "--ca-file CA.pem, or --insecure to skip the check")
        if isinstance(exc, ssl.SSLError):
            return PtxError(f"{url}: TLS failed ({exc.reason or exc}): is the server speaking TLS on this port "
                            "(https://) or plain HTTP (http://)?")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return PtxError(f"{url}: {what}: no answer within {timeout:g} s (--timeout)")
        if isinstance(exc, socket.gaierror):
            return PtxError(f"{url}: host {self.endpoint.host!r} is not known ({exc.strerror})")
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return PtxError(f"{url}: {what}: {type(exc).__name__}: {exc}")
        return exc

    def _refused(self, status: int, data: bytes, what: str) -> PtxError:
        said = _said(data)
        url = self.endpoint.url
        if status in (401, 403):
            return ServerRefusedError(f"{url}: {what}: {status} {'unauthorized' if status == 401 else 'forbidden'} "
                                      f"({said}): {self._auth_hint()}")
        if status == 404:
            return ServerRefusedError(f"{url}: {what}: the server has no {self.endpoint.what} (404: {said})"
                                      + ("" if "serves" in said else self._serves()))
        if status == 413:  # a size the user can lower (--max-batch): the row's failure, as before
            return PtxError(f"{url}: {what}: the request body is over the server's limit (413: {said}): give "
                            "--max-batch N to send smaller batches")
        if 400 <= status < 500:
            return ServerRefusedError(f"{url}: {what}: the server refused the request ({status}: {said})")
        return PtxError(f"{url}: {what}: the server failed ({status}: {said})")

    def _serves(self) -> str:
        """``: it serves a, b`` from the repository index, where the server has one."""
        try:
            status, _, data = self._request("POST", "/v2/repository/index", b"{}", {"Content-Type": "application/json"},
                                            "listing")
            names = sorted({m.get("name") for m in json.loads(data) if isinstance(m, dict)} - {None}) \
                if status == 200 else []
        except Exception:  # noqa: BLE001 - the listing is a courtesy: its failure hides nothing
            return ""
        return f"; it serves {', '.join(names)}" if names else ""

    def metadata(self) -> dict:
        status, _, data = self._request("GET", self.endpoint.model_path, None, {}, "model metadata")
        if status != 200:
            raise self._refused(status, data, "model metadata")
        try:
            return json.loads(data)
        except ValueError:
            raise PtxError(f"{self.endpoint.url}: model metadata: the answer is not JSON ({data[:80]!r})") from None

    def server_metadata(self) -> dict | None:
        """The server's own metadata (its name: "ptx" for ptx serve; its extensions), None where it
        gives none; asked once per endpoint."""
        with self._lock:
            if self._server is False:
                try:
                    status, _, data = self._request("GET", "/v2", None, {}, "server metadata")
                except PtxError as exc:  # optional to the protocol's clients (gRPC's too): no answer, no metadata
                    self.say(f"{exc}: its extensions unknown, tensors are sent as JSON")
                    status, data = None, b""
                doc = _json(data) if status == 200 else None
                self._server = doc if isinstance(doc, dict) else None
            return self._server

    def speaks_binary(self) -> bool:
        """Whether infer sends binary tensor data: where --json-data is not given and the server lists
        the extension (a server that says nothing, or answers GET /v2 with an error, is sent JSON)."""
        with self._lock:
            if self._binary is None:
                extensions = (self.server_metadata() or {}).get("extensions")
                self._binary = isinstance(extensions, (list, tuple)) and BINARY_EXTENSION in extensions
            return self._binary

    def config(self) -> dict | None:
        """Triton's model configuration (max_batch_size), where the server has that extension (a
        server without it, KServe's, answers 404 or the like: None)."""
        status, _, data = self._request("GET", self.endpoint.model_path + "/config", None, {}, "model config")
        if status in (400, 404, 405, 501):
            return None
        if status != 200:
            raise self._refused(status, data, "model config")
        doc = _json(data)
        return doc.get("config", doc) if isinstance(doc, dict) else None

    def infer(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        binary = self.speaks_binary()
        status, got_headers, data = self._post_infer(feeds, outputs, binary)
        if status in BINARY_REFUSED and binary:  # it lists the extension and refuses a binary request: JSON, once
            first, data_first = status, data
            status, got_headers, data = self._post_infer(feeds, outputs, False)
            if status != 200:  # refused in JSON too: the request, not its binary form (binary stays)
                raise self._refused(status, data, "infer (asked in binary, then again in JSON)")
            self._no_binary(first, data_first)
        if status != 200:
            raise self._refused(status, data, "infer")
        return self._outputs(data, got_headers.get(HEADER_LENGTH), outputs)

    def _no_binary(self, status: int, data: bytes) -> None:
        """Infer in JSON from now on, where a binary request was refused and the same in JSON answered;
        said once (requests in flight together may each have been refused)."""
        with self._lock:
            said, self._binary = self._binary is False, False
        if not said:
            self.say(f"{self.endpoint.url}: the server refused binary tensor data ({status}: {_said(data)}) though "
                     f"it lists {BINARY_EXTENSION}: asked again in JSON, and in JSON from now on")

    def _post_infer(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], binary: bool):
        """(status, headers, body) of one infer request, its tensors binary or JSON."""
        doc = {"inputs": [], "outputs": [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]}
        raw = []
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            entry = {"name": name, "datatype": _v2(array.dtype, name), "shape": list(array.shape)}
            if binary:
                contents = _raw(array)
                entry["parameters"] = {"binary_data_size": len(contents)}
                raw.append(contents)
            elif array.dtype == object:  # files in JSON: base64 strings, as the protocol's servers read them
                entry["data"] = [base64.b64encode(e).decode("ascii") for e in array.reshape(-1)]
                entry["parameters"] = {"content_type": "base64"}
            else:
                entry["data"] = array.reshape(-1).tolist()
            doc["inputs"].append(entry)
        header = json.dumps(doc).encode()
        headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
        if binary:
            headers[HEADER_LENGTH] = str(len(header))
        return self._request("POST", self.endpoint.model_path + "/infer", b"".join([header, *raw]), headers, "infer")

    def _outputs(self, data: bytes, header_length: str | None, wanted: Sequence[str]) -> dict[str, np.ndarray]:
        cut = int(header_length) if header_length else len(data)
        try:
            doc = json.loads(data[:cut])
        except ValueError:
            raise PtxError(f"{self.endpoint.url}: infer: the answer is not the protocol's JSON ({data[:80]!r})") from None
        found, offset = {}, cut
        for item in doc.get("outputs", []):
            dtype = _numpy_type(item.get("datatype"), item.get("name"), self.endpoint)
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                array = np.frombuffer(data[offset:offset + size], dtype=dtype)
                offset += size
            else:
                array = np.asarray(item.get("data", []), dtype=dtype)
            found[item["name"]] = array.reshape(item.get("shape", array.shape))
        return _wanted(found, wanted, self.endpoint)


class GrpcTransport(_Transport):
    """The protocol's gRPC binding (GRPCInferenceService), tensors as raw contents."""

    def __init__(self, endpoint: Endpoint, connection: Connection, say: Callable[[str], None] | None = None):
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        super().__init__(endpoint, connection, say)
        self.grpc, self.pb = grpc, service_pb2
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        if endpoint.tls:
            if connection.insecure:
                raise PtxError(f"{endpoint.url}: --insecure is REST's; for gRPC over TLS give --ca-file CA.pem")
            root = open(connection.ca_file, "rb").read() if connection.ca_file else None
            self.channel = grpc.secure_channel(endpoint.address, grpc.ssl_channel_credentials(root), options)
        else:
            self.channel = grpc.insecure_channel(endpoint.address, options)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.metadata_pairs = [(k.lower(), v) for k, v in connection.all_headers().items()]
        self._reached = False

    def _call(self, method: str, request, what: str):
        def once(timeout: float):
            try:
                answer = getattr(self.stub, method)(request, timeout=timeout, metadata=self.metadata_pairs)
                self._reached = True
                return answer
            except self.grpc.RpcError as exc:
                code, said = exc.code(), exc.details()
                if code == self.grpc.StatusCode.UNAVAILABLE and self._reached:
                    raise Draining(said) from None
                raise self._refused(code, said, what) from None
        return self._retrying(once, what)

    def _refused(self, code, said: str, what: str) -> PtxError:
        url, codes = self.endpoint.url, self.grpc.StatusCode
        if code == codes.UNAVAILABLE:
            return PtxError(f"{url}: nothing answers gRPC at {self.endpoint.address} ({said}): start the server, or "
                            "check the URL's host and port")
        auth = f"{code.name.lower()} ({said}): {self._auth_hint()}"
        refused = {codes.UNAUTHENTICATED: auth, codes.PERMISSION_DENIED: auth,
                   codes.NOT_FOUND: f"the server has no {self.endpoint.what} ({said})",
                   codes.INVALID_ARGUMENT: f"the server refused the request ({said})"}
        if code in refused:  # REST's 4xx: the server's words, its own outcome
            return ServerRefusedError(f"{url}: {what}: {refused[code]}")
        why = {codes.DEADLINE_EXCEEDED: f"no answer within {self.connection.timeout_s:g} s (--timeout)",
               codes.RESOURCE_EXHAUSTED: f"the request is over the server's limit ({said}): give --max-batch N to "
                                         "send smaller batches"}
        return PtxError(f"{url}: {what}: {why.get(code, f'{code.name} ({said})')}")

    def metadata(self) -> dict:
        from google.protobuf import json_format

        e = self.endpoint
        answer = self._call("ModelMetadata", self.pb.ModelMetadataRequest(name=e.model, version=e.version or ""),
                            "model metadata")
        doc = json_format.MessageToDict(answer, preserving_proto_field_name=True)
        for t in doc.get("inputs", []) + doc.get("outputs", []):
            t["shape"] = [int(d) for d in t.get("shape", [])]
        return doc

    def server_metadata(self) -> dict | None:
        try:
            answer = self._call("ServerMetadata", self.pb.ServerMetadataRequest(), "server metadata")
        except PtxError:
            return None
        return {"name": answer.name, "version": answer.version, "extensions": list(answer.extensions)}

    def config(self) -> dict | None:
        e = self.endpoint
        try:
            answer = self._call("ModelConfig", self.pb.ModelConfigRequest(name=e.model, version=e.version or ""),
                                "model config")
        except PtxError as exc:
            if "UNIMPLEMENTED" in str(exc):
                return None
            raise
        return {"max_batch_size": int(answer.config.max_batch_size)}

    def infer(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        e = self.endpoint
        request = self.pb.ModelInferRequest(model_name=e.model, model_version=e.version or "")
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            tensor = request.inputs.add(name=name, datatype=_v2(array.dtype, name))
            tensor.shape.extend(array.shape)
            request.raw_input_contents.append(_raw(array))
        for name in outputs:
            request.outputs.add(name=name)
        answer = self._call("ModelInfer", request, "infer")
        found = {}
        for k, item in enumerate(answer.outputs):
            dtype = _numpy_type(item.datatype, item.name, e)
            if k < len(answer.raw_output_contents):
                array = np.frombuffer(answer.raw_output_contents[k], dtype=dtype)
            elif item.datatype in CONTENTS:  # a server that answers with typed contents instead of raw bytes
                array = np.asarray(list(getattr(item.contents, CONTENTS[item.datatype])), dtype=dtype)
            else:  # FP16 has no typed field in the protocol: it travels as raw bytes only
                raise PtxError(f"{e.url}: infer: output {item.name!r} is {item.datatype} without raw contents")
            found[item.name] = array.reshape(list(item.shape))
        return _wanted(found, outputs, e)


def _wanted(found: Mapping[str, np.ndarray], wanted: Sequence[str], endpoint: Endpoint) -> dict[str, np.ndarray]:
    missing = [n for n in wanted if n not in found]
    if missing:
        raise PtxError(f"{endpoint.url}: infer: the answer has no output {missing[0]!r} (it has "
                       f"{', '.join(found) or 'none'})")
    return {n: found[n] for n in wanted}


def _raw(array: np.ndarray) -> bytes:
    """A tensor's binary contents: its bytes, or for BYTES each element after its length (4 bytes, little-endian)."""
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(e)) + bytes(e) for e in array.reshape(-1))
    return array.tobytes()


def _v2(dtype, name: str) -> str:
    if np.dtype(dtype) == object:
        return BYTES
    found = V2_OF.get(np.dtype(dtype).name)
    if found is None:
        raise PtxError(f"input {name!r}: {np.dtype(dtype).name} has no Open Inference Protocol datatype")
    return found


def _numpy_type(datatype, name, endpoint: Endpoint):
    if datatype not in V2_TYPES:
        raise PtxError(f"{endpoint.url}: output {name!r} is {datatype}, which ptx does not compare (numbers only)")
    return np.dtype(V2_TYPES[datatype])


def _said(data: bytes) -> str:
    """The protocol's {"error": "..."} message, else an HTML page's text (a proxy's or a web
    framework's error page), else the body's first line."""
    doc = _json(data)
    if isinstance(doc, dict) and doc.get("error"):
        return " ".join(str(doc["error"]).split())[:200]
    text = data[:65536].decode("utf-8", "replace").strip()
    if text[:1] == "<" and re.search(r"<(!doctype|html|body|head|title|h1|p)\b", text, re.I):
        text = re.sub(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", " ", text, flags=re.I | re.S)
        text = " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split())
    lines = text.splitlines()
    return lines[0][:200] if lines else "no body"


def _json(data: bytes):
    """``data`` as JSON, None where it is not JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return None
