"""Triton's generate extension on the REST front, for a model exported with its key/value cache:
``POST /v2/models/NAME[/versions/V]/generate`` answers one JSON object, ``.../generate_stream`` one
Server-Sent Event per step.

The extension leaves the request's fields to the model ("additional properties are passed as
parameters or tensors based on the model"). ptx has no tokenizer, so a request names the decoder's
``input_ids`` (one prompt, or a list of prompts of any lengths) and the answer is ``output_ids``:

    {"input_ids": [5, 17, 23], "max_tokens": 8}                        (max_tokens also in "parameters")
    {"model_name": "lm", "model_version": "1", "output_ids": [74, 180, ...]}

An encoder-decoder's request names its encoder's input: ``input_ids`` (T5, BART: the source ids) or
``input_features`` (Whisper: one item [mel bins, frames], or a list of them).

``parameters`` may say ``eos`` (the ids that end a sequence: replaces the file's; [] runs every step).
Decoding is greedy: the model's one decoding, as ``ptx.infer.load(FILE).generate`` runs it. Every bad
request is a 4xx with ``{"error": "one line"}``, found before any step runs; in a stream an error after
the first event is an event of its own (the extension's rule: the status was already sent).
"""
from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ptx.errors import first_line
from ptx.infer.model.generation import no_cache

from .body import json_object, read_body
from .model import VERSION
from .service import TOKEN_NEEDED
from .tensors import RequestError

FIELDS = ("input_ids", "input_features", "max_tokens", "parameters", "id")
PARAMETERS = ("max_tokens", "eos", "stream")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # routed, so that all but POST get the JSON 405


@dataclass
class GenerateRequest:
    prompts: list[list[int]] | np.ndarray  # an encoder's features: an array [prompts, ...]
    one: bool  # input_ids was one flat list: answered with one list, not a list of lists
    max_tokens: int
    eos: tuple[int, ...] | None  # None: the file's own
    id: str | None = None


def parse_generate_request(body: bytes, stream: bool) -> GenerateRequest:
    """A generate request's JSON, its types checked (ids within the vocabulary and max_tokens within the
    cap are the model's to check: Generator.start)."""
    doc = json_object(body, '{"input_ids": [ids], "max_tokens": N}')
    if "text_input" in doc:
        raise RequestError('ptx serves token ids and has no tokenizer: send "input_ids" (a list of token ids, or a list '
                           "of such lists), not text_input")
    unknown = [k for k in doc if k not in FIELDS]
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}: a generate request takes {', '.join(FIELDS)}")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError('"parameters" is an object: {"max_tokens": N, "eos": [ids]}')
    unknown = [k for k in parameters if k not in PARAMETERS]
    if unknown:
        raise RequestError(f"unknown parameter {unknown[0]!r}: ptx decodes greedily and takes {', '.join(PARAMETERS)}")
    if "stream" in parameters and parameters["stream"] is not stream:
        raise RequestError(f'"stream": {_json(parameters["stream"])} on '
                           f"{'generate_stream' if stream else 'generate'}: POST to "
                           f"{'generate' if stream else 'generate_stream'} for that")
    if "input_ids" in doc and "input_features" in doc:
        raise RequestError('give "input_ids" or "input_features" (an encoder of features), not both')
    if "input_features" in doc:
        prompts, one = _features(doc["input_features"])
    elif "input_ids" not in doc:
        raise RequestError('the request has no "input_ids": send a list of token ids (or a list of such lists)')
    else:
        prompts, one = _prompts(doc["input_ids"])
    given = [v for v in (doc.get("max_tokens"), parameters.get("max_tokens")) if v is not None]
    if not given:
        raise RequestError('the request has no "max_tokens": say how many new tokens to generate at most')
    if len(given) == 2 and given[0] != given[1]:
        raise RequestError(f"max_tokens is {_json(given[0])} at the top and {_json(given[1])} in parameters: give one")
    if not _is_int(given[0]):
        raise RequestError(f"max_tokens {_json(given[0])}: give a whole number of at least 1")
    eos = parameters.get("eos")
    if eos is not None:
        eos = [eos] if _is_int(eos) else eos
        if not isinstance(eos, list) or not all(_is_int(e) for e in eos):
            raise RequestError(f"eos {_json(parameters['eos'])}: give a token id or a list of token ids ([] runs every step)")
        eos = tuple(eos)
    request_id = doc.get("id")
    return GenerateRequest(prompts, one, given[0], eos, None if request_id is None else str(request_id))


def _json(value) -> str:
    """A value as the client wrote it (JSON's true, not Python's True)."""
    return orjson.dumps(value).decode()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is no token id


def _prompts(value) -> tuple[list[list[int]], bool]:
    """input_ids as prompts, and whether it was one flat list."""
    if isinstance(value, list) and value and all(isinstance(p, list) for p in value):
        prompts, one = value, False
    elif isinstance(value, list) and all(not isinstance(p, list) for p in value):
        prompts, one = [value], True
    else:
        raise RequestError("input_ids is a list of token ids, or a list of such lists (one per prompt)")
    for k, prompt in enumerate(prompts):
        bad = [t for t in prompt if not _is_int(t)]
        if bad:
            raise RequestError(f"input_ids{'' if one else f'[{k}]'}: {_json(bad[0])} is not a token id "
                               "(a whole number)")
    return prompts, one


def _features(value) -> tuple[np.ndarray, bool]:
    """input_features as an array [prompts, ...], and whether it was one item (its sizes are the model's to check)."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError("input_features is an array of numbers: one item [mel bins, frames], or a list of them") \
            from None
    if array.ndim not in (2, 3) or not array.size:
        raise RequestError(f"input_features of shape {list(array.shape)}: give one item [mel bins, frames], or a list "
                           "of them")
    return (array[None], True) if array.ndim == 2 else (array, False)


def generate_endpoint(service, stream: bool):
    """The Starlette endpoint of generate (``stream``: generate_stream) over ``service``'s models."""
    async def handle(request: Request) -> Response:
        name = request.path_params["name"]
        started = time.perf_counter()
        observer = service.metrics.observer(name if name in service.models else None, "rest")
        try:
            if request.method != "POST":
                raise RequestError(f"{'generate_stream' if stream else 'generate'} takes POST", 405)
            if not service.authorized(request.headers.get("authorization")):
                raise RequestError(TOKEN_NEEDED["rest"], 401)
            model = service.model(name, request.path_params.get("version"))
            generator = model.generator
            if generator is None:
                raise RequestError(str(no_cache(name)))
            body = await read_body(request.receive, service.options.max_request_bytes,
                                   request.headers.get("content-encoding", "identity").lower())
            asked = parse_generate_request(body, stream)
            decoding = generator.start(asked.prompts, asked.max_tokens, asked.eos, service.options.max_batch_size)
            head = {"model_name": model.name, "model_version": VERSION, **({"id": asked.id} if asked.id else {})}
            if stream:
                return StreamingResponse(_events(generator.stream(decoding), head, asked.one, observer, started),
                                         media_type="text/event-stream; charset=utf-8",
                                         headers={"cache-control": "no-cache"})
            tokens = await generator.generate(decoding)
        except RequestError as exc:
            observer.done(time.perf_counter() - started, exc.status)
            return JSONResponse({"error": str(exc)}, exc.status)
        except Exception as exc:  # noqa: BLE001 - the runtime failed on this request: a 500 for it alone
            observer.done(time.perf_counter() - started, 500)
            return JSONResponse({"error": f"generation failed: {first_line(exc)}"}, 500)
        observer.done(time.perf_counter() - started)
        return JSONResponse({**head, "output_ids": tokens[0] if asked.one else tokens})
    return handle


async def _events(steps, head: dict, one: bool, observer, started: float):
    """The stream's SSE bytes: one event per step, ``output_ids`` the step's token ([token]) for one
    prompt, or per prompt ([[token], [], ...]: [] for a prompt that has ended); an error as an event."""
    status = None
    try:
        async with aclosing(steps):  # a client gone: its rows leave the batch at the next step
            async for tokens in steps:
                ids = [[] if t is None else [t] for t in tokens]
                yield b"data: " + orjson.dumps({**head, "output_ids": ids[0] if one else ids}) + b"\n\n"
    except RequestError as exc:
        status = exc.status
        yield b"data: " + orjson.dumps({"error": str(exc)}) + b"\n\n"
    except Exception as exc:  # noqa: BLE001 - the runtime failed after the 200 was sent: said in the stream
        status = 500
        yield b"data: " + orjson.dumps({"error": f"generation failed: {first_line(exc)}"}) + b"\n\n"
    finally:
        observer.done(time.perf_counter() - started, status)
