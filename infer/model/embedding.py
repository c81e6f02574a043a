"""An embedding model's text side, torch-free: a text's token ids by the tokenizer kept beside the file (which
export wrote as sentence-transformers runs it: its special tokens added, lowercased where the model's config
says so, no padding or truncation of its own), checked against the model's longest input, and a batch of them
as the file's feeds (ptx.contract.embedding's ids and mask). The library's ``Model.embed`` and the server's
``/v1/embeddings`` both read texts here.

A text longer than the model takes is refused, as OpenAI's API refuses one, where sentence-transformers'
encode() cuts it at max_seq_length: a vector of a text's beginning, given as the text's, misleads a search.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ptx.contract.embedding import Embedding
from ptx.errors import InputError, PtxError

from .text import Text

# Texts run together by Model.embed (the server batches as its --max-batch-size says).
EMBED_BATCH = 32


class TooLongError(InputError):
    """A text longer than the model takes (OpenAI's context_length_exceeded)."""


class Embedder:
    """The texts of the embedding model ``name`` (its contract ``embedding``, its tokenizer ``text``, or None:
    token ids only) as ids and feeds."""

    def __init__(self, name: str, embedding: Embedding, text: Text | None):
        self.name, self.embedding, self.text = name, embedding, text

    def ids(self, item, where: str) -> list[int]:
        """``item``'s token ids (a text, or ids as they are), within the model's vocabulary and longest input;
        InputError naming ``where`` (``input[3]``) otherwise."""
        limit = self.embedding.max_tokens
        if isinstance(item, str):
            if not item:
                raise InputError(f"{where} is empty: give text")
            if self.text is None:
                raise InputError(f"{self.name} has no tokenizer beside its file, so it takes token ids, not text: "
                                 "export it from its sentence-transformers folder (ptx export DIR)")
            ids = self.text.encode(item)
        else:
            if not _ids(item):
                raise InputError(f"{where} is {str(item)[:40]!r}: give a text or a non-empty list of token ids")
            ids = [int(t) for t in item]
            outside = next((t for t in ids if not 0 <= t < self.embedding.vocab), None)
            if outside is not None:
                raise InputError(f"{where}: token id {outside} is outside {self.name}'s vocabulary (0 to "
                                 f"{self.embedding.vocab - 1})")
        if len(ids) > limit:
            raise TooLongError(f"{where} is {len(ids)} tokens and {self.name} takes at most {limit} (its max_seq_length):"
                             " shorten it")
        return ids

    def feeds(self, rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """The file's feeds for ``rows`` of ids: padded at the end to the longest, the mask 0 there. The padding's
        id is 0, whatever the tokenizer's pad token: the mask keeps every padded position out of the attention and
        the pooling, so no vector depends on it (the batch composition check holds each vector to its own alone)."""
        longest = max(map(len, rows))
        ids = np.zeros((len(rows), longest), np.int64)
        mask = np.zeros((len(rows), longest), np.int64)
        for k, row in enumerate(rows):
            ids[k, :len(row)], mask[k, :len(row)] = row, 1
        return {self.embedding.ids: ids, self.embedding.mask: mask}

    @property
    def pads(self) -> dict[str, tuple[int, int]]:
        """The inputs a server's batcher may pad to join requests of other lengths: (axis, value), as ``feeds``."""
        return {self.embedding.ids: (1, 0), self.embedding.mask: (1, 0)}


def embedder_of(model, tokenizer=None) -> Embedder:
    """The Embedder of ``model`` (a Model whose file records ptx.embedding), its tokenizer the one beside it or
    ``tokenizer``'s; one line for a file that embeds nothing."""
    embedding = model.embedding
    if embedding is None:
        raise PtxError(f"{model.name} records no embedding (ptx.embedding): export a sentence-transformers folder with "
                       "ptx export DIR --out OUT to embed texts")
    return Embedder(model.name, embedding, Text.beside(model.path, tokenizer))


def embed(model, inputs, tokenizer=None, batch: int = EMBED_BATCH) -> np.ndarray:
    """Model.embed: ``inputs``' vectors, [N, dimensions] float32, run ``batch`` at a time."""
    embedder = embedder_of(model, tokenizer)
    items = [inputs] if isinstance(inputs, str) or _ids(inputs) else list(inputs)
    if not items:
        raise InputError("nothing to embed: give a text, or a list of texts or of token-id lists")
    rows = [embedder.ids(item, f"input[{k}]") for k, item in enumerate(items)]
    out = embedder.embedding.output
    parts = [model.run(embedder.feeds(rows[k:k + batch]), [out])[out] for k in range(0, len(rows), batch)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _ids(value) -> bool:
    """One list of token ids (not a list of texts or of id lists)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value)
