"""The Open Inference Protocol's REST binding on Starlette (served by uvicorn): health, server and
model metadata, Triton's model configuration, infer with the binary tensor data extension, and
Prometheus metrics; Triton's generate extension for a model exported with its cache (generate.py), and
OpenAI's API for one with its tokenizer beside it (openai_routes.py); the drawing page at `/`.

Errors are the protocol's `{"error": "..."}` with a 4xx naming what was wrong (a 500 when the
runtime itself fails); the server stays ready.
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Callable

import orjson
from google.protobuf import json_format, text_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .body import read_body
from .generate import METHODS as GENERATE_METHODS, generate_endpoint
from .model import VERSION, InferRequest, RequestedOutput, ServedModel
from .openai_routes import openai_routes
from .service import TOKEN_NEEDED, Service
from .tensors import RequestError, Tensor, from_json_data, from_raw, to_json_data, to_raw

HEADER_LENGTH = b"inference-header-content-length"
WANTED_HEADERS = {HEADER_LENGTH, b"authorization", b"content-encoding"}
INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
JSON_TYPE, OCTET_TYPE = b"application/json", b"application/octet-stream"


@functools.cache
def page_html() -> str:
    """The page at `/`: plain HTML and JavaScript in one file served by ptx (no build step, nothing
    fetched from the internet). It calls the same v2 endpoints as any client."""
    return resources.files("ptx.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def build_app(service: Service) -> Starlette:
    """The REST app over ``service``'s models."""

    def endpoint(answer: Callable[[Request], Response], token: bool = True):
        """A GET (health and the page need no token): its answer, or the 401/404 that stops it."""
        async def handle(request: Request) -> Response:
            if token and not service.authorized(request.headers.get("authorization")):
                return JSONResponse({"error": TOKEN_NEEDED["rest"]}, 401)
            try:
                return answer(request)
            except RequestError as exc:
                return JSONResponse({"error": str(exc)}, exc.status)
        return handle

    def model(request: Request) -> ServedModel:
        return service.model(request.path_params["name"], request.path_params.get("version"))

    def ready(doc: dict) -> Response:
        return JSONResponse(doc, 200 if service.ready else 503)

    model_metadata = endpoint(lambda request: JSONResponse(model(request).metadata()))
    model_ready = endpoint(lambda request: ready({"name": model(request).name, "ready": service.ready}), token=False)
    model_config = endpoint(lambda request: JSONResponse(config_json(model(request).config_text())))
    routes = [
        Route("/", endpoint(lambda request: HTMLResponse(page_html()), token=False)),
        Route("/v2", endpoint(lambda request: JSONResponse(service.server_metadata()))),
        Route("/v2/health/live", endpoint(lambda request: JSONResponse({"live": True}), token=False)),
        Route("/v2/health/ready", endpoint(lambda request: ready({"ready": service.ready}), token=False)),
        Route("/v2/repository/index", endpoint(lambda request: JSONResponse(service.repository_index())),
              methods=["POST", "GET"]),
        Route("/metrics", endpoint(lambda request: Response(service.metrics.render(),
                                                            media_type=service.metrics.content_type))),
    ]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(base, model_metadata), Route(f"{base}/ready", model_ready),
                   Route(f"{base}/config", model_config),
                   Route(f"{base}/generate", generate_endpoint(service, stream=False), methods=GENERATE_METHODS),
                   Route(f"{base}/generate_stream", generate_endpoint(service, stream=True), methods=GENERATE_METHODS)]
    routes += openai_routes(service)
    return InferRoute(service, Starlette(routes=routes))


class InferRoute:
    """The infer endpoint as a bare ASGI handler in front of the Starlette app, which serves every
    other path. Inference is the one hot path: Starlette's routing, middleware and Request/Response
    objects cost more per request there than the batcher and the model together (measured with
    py-spy under load); everything else keeps Starlette."""

    def __init__(self, service: Service, other):
        self.service, self.other = service, other

    async def __call__(self, scope, receive, send) -> None:
        match = INFER_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.other(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in WANTED_HEADERS}

        async def read() -> InferRequest:
            encoding = headers.get(b"content-encoding", "identity").lower()
            body = await read_body(receive, self.service.options.max_request_bytes, encoding)
            return parse_infer_request(body, headers.get(HEADER_LENGTH))

        status = 200
        try:
            body, content_type, extra = await self.service.infer(
                "rest", match["name"], match["version"], headers.get(b"authorization"), read, infer_response,
                None if scope["method"] == "POST" else RequestError("infer takes POST", 405))
        except RequestError as exc:
            status, body, content_type, extra = exc.status, orjson.dumps({"error": str(exc)}), JSON_TYPE, []
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                                *extra]})
        await send({"type": "http.response.body", "body": body})


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request: JSON, or JSON followed by binary tensor data (its length in the
    Inference-Header-Content-Length header)."""
    cut = len(body) if header_length is None else (int(header_length) if header_length.isdigit() else -1)
    if not 0 <= cut <= len(body):
        raise RequestError(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body")
    binary = memoryview(body)[cut:]
    try:
        doc = orjson.loads(body[:cut])
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise RequestError('the request JSON needs "inputs": a list of tensors')
    inputs, offset = [], 0
    for i, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(f"inputs[{i}] needs a name, a datatype, a shape and data")
        name, datatype, shape = item["name"], item.get("datatype"), item.get("shape")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError(f"input {name!r}: parameters must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise RequestError(f"input {name!r}: binary_data_size {size!r} runs past the "
                                   f"{len(binary)} bytes of binary data (truncated body?)")
            inputs.append(from_raw(name, datatype, shape, binary[offset:offset + size]))
            offset += size
        elif "data" in item:
            inputs.append(from_json_data(name, datatype, shape, item["data"], parameters.get("content_type")))
        else:
            raise RequestError(f"input {name!r} has neither data nor binary_data_size")
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data that no input claims")
    outputs = []
    for i, item in enumerate(doc.get("outputs") or []):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(f"outputs[{i}] needs a name")
        p = item.get("parameters") or {}
        outputs.append(RequestedOutput(item["name"], p.get("binary_data"), p.get("classification", 0)))
    request_id = doc.get("id")
    return InferRequest(inputs, outputs, None if request_id is None else str(request_id),
                        bool((doc.get("parameters") or {}).get("binary_data_output", False)))


def infer_response(model: ServedModel, request: InferRequest, outputs: list[Tensor]) -> tuple[bytes, bytes, list]:
    """The response body, its content type and extra headers (the binary extension's)."""
    doc = {"model_name": model.name, "model_version": VERSION, "outputs": []}
    if request.id is not None:
        doc["id"] = request.id
    binary = []
    for t in outputs:
        entry = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        wants_binary = t.parameters.get("binary")
        if wants_binary if wants_binary is not None else request.binary_output:
            raw = to_raw(t)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = to_json_data(t)
        doc["outputs"].append(entry)
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return header, JSON_TYPE, []
    return b"".join([header, *binary]), OCTET_TYPE, [(HEADER_LENGTH, str(len(header)).encode())]


def config_json(config_text: str) -> dict:
    """Triton's ModelConfig as JSON (what Triton's config endpoint returns), from the config.pbtxt
    text, through Triton's own message (tritonclient ships it). Integers stay numbers: protobuf's
    JSON mapping writes 64-bit ones as strings, Triton writes them as numbers."""
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    return _int64_as_numbers(message, json_format.MessageToDict(message, preserving_proto_field_name=True))


def _int64_as_numbers(message, doc: dict) -> dict:
    from google.protobuf.descriptor import FieldDescriptor

    wide = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64)
    for field, value in message.ListFields():
        if field.name not in doc:
            continue
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
        if field.type in wide:
            doc[field.name] = [int(v) for v in doc[field.name]] if repeated else int(doc[field.name])
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            items = value if repeated else [value]
            docs = doc[field.name] if repeated else [doc[field.name]]
            for item, sub in zip(items, docs):
                _int64_as_numbers(item, sub)
    return doc
