"""A REST request's body as the server reads it: bounded as it streams in and once decompressed.
Its own module so that infer (rest.py), generate (generate.py) and OpenAI's API (openai_routes.py) read
bodies alike."""
from __future__ import annotations

import zlib

import orjson

from .tensors import RequestError

DRAIN_BYTES = 64 * 1024 * 1024  # an oversized body is read and dropped up to this, so its client sees the 413


async def read_body(receive, limit: int, encoding: str = "identity") -> bytes:
    """The request body, refused past ``limit`` bytes (as streamed, and after gzip/deflate
    decompression: a small body that inflates without end is refused too)."""
    too_big = f"request body over the server's limit of {limit:,} bytes (--max-request-bytes)"
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError("the client went away before the request was complete", 400)
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            if more:
                await _discard_rest(receive, size, limit)
            raise RequestError(too_big, 413)
        chunks.append(chunk)
    body = b"".join(chunks)  # one chunk: that chunk itself, not a copy
    if encoding in ("gzip", "deflate"):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        try:
            body = decompressor.decompress(body, limit + 1)
        except zlib.error as exc:
            raise RequestError(f"the {encoding} body does not decompress ({exc})") from None
        if len(body) > limit or decompressor.unconsumed_tail:
            raise RequestError(too_big + " once decompressed", 413)
    elif encoding != "identity":
        raise RequestError(f"content-encoding {encoding!r} is not supported; send gzip, deflate or none", 415)
    if not body:
        raise RequestError("empty request body: send the inference request JSON")
    return body


async def _discard_rest(receive, size: int, limit: int) -> None:
    """Read (and drop) the rest of an oversized body, up to a bound, so that the client gets its 413
    instead of a broken pipe while it is still sending; a body beyond the bound is cut off."""
    bound = max(4 * limit, DRAIN_BYTES)
    while size <= bound:
        message = await receive()
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def json_object(body: bytes, shape: str) -> dict:
    """The body's JSON object, else a RequestError (400) saying what to send (``shape``)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RequestError(f"the request JSON is an object: {shape}")
    return doc
