"""The Open Inference Protocol's gRPC binding: grpcio's asyncio server with the
GRPCInferenceService servicer that tritonclient ships (its generated code: no hand-copied proto).
Tensors travel as raw contents (what tritonclient sends), or typed contents; answers are raw.

Errors carry the status code that matches the REST status: INVALID_ARGUMENT (400), NOT_FOUND (404),
RESOURCE_EXHAUSTED (413), UNAUTHENTICATED (401), INTERNAL (500).
"""
from __future__ import annotations

import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc
from google.protobuf import text_format

from ptx.contract.protocol import BYTES, CONTENTS, V2_TYPES
from ptx.errors import first_line

from .model import InferRequest, RequestedOutput
from .service import Service
from .tensors import RequestError, Tensor, from_raw, to_raw

STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          415: grpc.StatusCode.INVALID_ARGUMENT, 500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}



def _param(p) -> object:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service):
        self.service = service
        self.observers: dict = {}

    async def _guard(self, context) -> None:
        authorization = dict(context.invocation_metadata()).get("authorization")
        if not self.service.authorized(authorization):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong bearer token: send metadata authorization: Bearer <token>")

    async def _model(self, name, version, context):
        try:
            return self.service.model(name, version)
        except RequestError as exc:
            await context.abort(STATUS[exc.status], str(exc))

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request, context):
        await self._model(request.name, request.version, context)
        return service_pb2.ModelReadyResponse(ready=self.service.ready)

    async def ServerMetadata(self, request, context):
        await self._guard(context)
        return service_pb2.ServerMetadataResponse(**self.service.server_metadata())

    async def ModelMetadata(self, request, context):
        await self._guard(context)
        doc = (await self._model(request.name, request.version, context)).metadata()
        tensors = lambda items: [service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in items]  # noqa: E731
        return service_pb2.ModelMetadataResponse(name=doc["name"], versions=doc["versions"], platform=doc["platform"],
                                                 inputs=tensors(doc["inputs"]), outputs=tensors(doc["outputs"]))

    async def ModelConfig(self, request, context):
        await self._guard(context)
        model = await self._model(request.name, request.version, context)
        response = service_pb2.ModelConfigResponse()
        text_format.Parse(model.config_text(), response.config)
        return response

    async def RepositoryIndex(self, request, context):
        await self._guard(context)
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(**m) for m in self.service.repository_index()])

    async def ModelInfer(self, request, context):
        started = time.perf_counter()
        name = request.model_name
        key = name if name in self.service.models else None  # unknown names do not become metric labels
        observer = self.observers.get(key) or self.observers.setdefault(key, self.service.metrics.observer(key, "grpc"))
        if not self.service.authorized(dict(context.invocation_metadata()).get("authorization")):
            observer.done(time.perf_counter() - started, 401)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong bearer token: send metadata authorization: Bearer <token>")
        try:
            model = self.service.model(name, request.model_version)
            infer_request = parse_infer_request(request)
            outputs = await model.infer(infer_request)
        except RequestError as exc:
            observer.done(time.perf_counter() - started, exc.status)
            await context.abort(STATUS[exc.status], str(exc))
        except Exception as exc:  # noqa: BLE001 - the runtime failed on this request alone
            observer.done(time.perf_counter() - started, 500)
            await context.abort(grpc.StatusCode.INTERNAL, f"inference failed: {first_line(exc)}")
        response = service_pb2.ModelInferResponse(model_name=model.name, model_version="1", id=request.id)
        for t in outputs:
            response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            response.raw_output_contents.append(to_raw(t))
        observer.done(time.perf_counter() - started)
        return response


def parse_infer_request(request) -> InferRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for i, item in enumerate(request.inputs):
        shape = list(item.shape)
        if raw:
            inputs.append(from_raw(item.name, item.datatype, shape, raw[i]))
        else:
            inputs.append(_from_contents(item, shape))
    outputs = []
    for item in request.outputs:
        classification = _param(item.parameters["classification"]) if "classification" in item.parameters else 0
        if not isinstance(classification, int) or classification < 0:
            raise RequestError(f"output {item.name!r}: classification must be a count >= 0")
        outputs.append(RequestedOutput(item.name, True, classification))
    return InferRequest(inputs, outputs, request.id or None, True)


def _from_contents(item, shape: list[int]) -> Tensor:
    field = CONTENTS.get(item.datatype)
    if field is None:
        raise RequestError(f"input {item.name!r}: unknown datatype {item.datatype!r}")
    values = list(getattr(item.contents, field))
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(values) != count:
        raise RequestError(f"input {item.name!r}: {len(values)} values in contents for shape {shape} ({count})")
    if item.datatype == BYTES:
        return Tensor(item.name, BYTES, shape, values)
    return Tensor(item.name, item.datatype, shape, np.asarray(values, dtype=V2_TYPES[item.datatype]).reshape(shape))


def build_server(service: Service) -> grpc.aio.Server:
    """A grpc.aio server holding the servicer (ports are added by the caller)."""
    limit = service.options.max_request_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", max(limit, 64 * 1024 * 1024))])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    return server
