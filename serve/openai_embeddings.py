"""OpenAI's ``/v1/embeddings`` as a protocol, for a model that embeds (ptx.contract.embedding): the request's JSON
parsed and checked as OpenAI checks it (``input`` a string, a list of strings, a list of token ids or a list of
such lists; ``encoding_format`` float or base64; ``dimensions``; ``user``; anything else refused by name), and the
answer shaped as OpenAI shapes it (a list of ``embedding`` objects and the ``usage``). No Starlette and no model
here: the route (openai_routes.py) joins this to a served model's batcher.

A ``dimensions`` other than the model's is refused: OpenAI's text-embedding-3 models are trained to be cut
short, and a sentence-transformers model is not, so a shortened vector would be no vector of the model.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import orjson

from .openai_api import OpenAIError, _json, about, request_document

FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # inputs in one request, as OpenAI takes at most


@dataclass
class EmbeddingRequest:
    """An embeddings request, checked: the served model's name, its inputs (texts or token-id lists, in order),
    how the vectors are written (float or base64) and the dimensions asked (None: the model's)."""

    model: str
    inputs: list
    encoding_format: str = "float"
    dimensions: int | None = None


def parse_embeddings(body: bytes) -> EmbeddingRequest:
    """The request's JSON, checked; else an OpenAIError naming the field."""
    doc, model = request_document(body, '{"model": ..., "input": ...}', FIELDS)
    with about(model):
        return _embedding_request(doc, model)


def _embedding_request(doc: dict, model: str) -> EmbeddingRequest:
    encoding = doc.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise OpenAIError(f"encoding_format {_json(encoding)}: give float or base64", param="encoding_format")
    dimensions = doc.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise OpenAIError(f"dimensions {_json(dimensions)}: give a whole number of at least 1", param="dimensions")
    if doc.get("user") is not None and not isinstance(doc["user"], str):
        raise OpenAIError(f"user {_json(doc['user'])}: give a string", param="user")
    return EmbeddingRequest(model, _inputs(doc.get("input")), encoding, dimensions)


def _inputs(value) -> list:
    """OpenAI's input: a string, a list of strings, a list of token ids, or a list of such lists (each an input)."""
    shape = "give a string, a list of strings, a list of token ids, or a list of such lists"

    def ids(item) -> bool:
        return isinstance(item, list) and bool(item) and all(isinstance(t, int) and not isinstance(t, bool) for t in item)

    if isinstance(value, str) or ids(value):
        inputs = [value]
    elif isinstance(value, list) and value and all(isinstance(i, str) or ids(i) for i in value):
        inputs = value
    else:
        raise OpenAIError(f"input {_json(value)}: {shape}", param="input")
    if len(inputs) > MAX_INPUTS:
        raise OpenAIError(f"input holds {len(inputs)} inputs: give at most {MAX_INPUTS} a request", param="input")
    return inputs


def check_dimensions(asked: EmbeddingRequest, name: str, dimensions: int) -> None:
    """``dimensions`` where the request gives it: the model's own, else OpenAI's 400 (the module's docstring)."""
    if asked.dimensions is not None and asked.dimensions != dimensions:
        raise OpenAIError(f"dimensions {asked.dimensions}: {name}'s vectors have {dimensions}, and it was not trained to "
                          f"give shorter ones: leave dimensions out (or give {dimensions})", param="dimensions")


def embeddings_reply(name: str, vectors: np.ndarray, encoding: str, tokens: int) -> bytes:
    """The answer's JSON: each vector as a list of numbers (float32's shortest decimal, as orjson writes it) or as
    base64 of its little-endian float32 bytes (what the openai client asks for by default and decodes itself)."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    data = [{"object": "embedding", "index": k,
             "embedding": base64.b64encode(row.tobytes()).decode("ascii") if encoding == "base64" else row}
            for k, row in enumerate(vectors)]
    doc = {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
