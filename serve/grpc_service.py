"""The Open Inference Protocol's gRPC binding: grpcio's asyncio server with the
GRPCInferenceService servicer that tritonclient ships (its generated code: no hand-copied proto).
Tensors travel as raw contents (what tritonclient sends), or typed contents; answers are raw.

Errors carry the status code that matches the REST status: INVALID_ARGUMENT (400), NOT_FOUND (404),
RESOURCE_EXHAUSTED (413), UNAUTHENTICATED (401), INTERNAL (500).
"""
from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from google.protobuf import json_format, text_format

from ptx.contract.protocol import CONTENTS

from .model import VERSION, InferRequest, RequestedOutput, ServedModel
from .service import TOKEN_NEEDED, Service
from .tensors import RequestError, Tensor, from_json_data, from_raw, to_raw

STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          415: grpc.StatusCode.INVALID_ARGUMENT, 500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}


def _param(p) -> object:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service):
        self.service = service

    async def _guard(self, context) -> None:
        if not self.service.authorized(_authorization(context)):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, TOKEN_NEEDED["grpc"])

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
        model = await self._model(request.name, request.version, context)
        # The REST metadata's "generate" entry has no field in gRPC's message: left out there.
        return json_format.ParseDict(model.metadata(), service_pb2.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request, context):
        await self._guard(context)
        model = await self._model(request.name, request.version, context)
        response = service_pb2.ModelConfigResponse()
        text_format.Parse(model.config_text(), response.config)
        return response

    async def RepositoryIndex(self, request, context):
        await self._guard(context)
        return json_format.ParseDict({"models": self.service.repository_index()}, service_pb2.RepositoryIndexResponse())

    async def ModelInfer(self, request, context):
        async def read() -> InferRequest:
            return parse_infer_request(request)

        try:
            return await self.service.infer("grpc", request.model_name, request.model_version,
                                            _authorization(context), read, infer_response)
        except RequestError as exc:
            await context.abort(STATUS[exc.status], str(exc))


def _authorization(context) -> str | None:
    return dict(context.invocation_metadata()).get("authorization")


def infer_response(model: ServedModel, request: InferRequest, outputs: list[Tensor]):
    response = service_pb2.ModelInferResponse(model_name=model.name, model_version=VERSION, id=request.id)
    for t in outputs:
        response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        response.raw_output_contents.append(to_raw(t))
    return response


def parse_infer_request(request) -> InferRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = [from_raw(item.name, item.datatype, list(item.shape), raw[i]) if raw else _from_contents(item)
              for i, item in enumerate(request.inputs)]
    outputs = [RequestedOutput(item.name, True, _param(item.parameters["classification"])
                               if "classification" in item.parameters else 0) for item in request.outputs]
    return InferRequest(inputs, outputs, request.id or None, True)


def _from_contents(item) -> Tensor:
    """A tensor from its typed contents, checked as a REST request's JSON data is."""
    field = CONTENTS.get(item.datatype)
    if field is None:
        raise RequestError(f"input {item.name!r}: unknown datatype {item.datatype!r}")
    return from_json_data(item.name, item.datatype, list(item.shape), list(getattr(item.contents, field)))


def build_server(service: Service) -> grpc.aio.Server:
    """A grpc.aio server holding the servicer (ports are added by the caller)."""
    limit = service.options.max_request_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", max(limit, 64 * 1024 * 1024))])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    return server
