"""An embedding model's contract, torch-free: the output its file answers sentence vectors in, how export built
them into the graph (the pooling over the tokens and, where the model normalises them, the L2 normalisation:
a sentence-transformers folder's modules.json says which), the inputs a text is fed as and the longest it takes.
Export writes it into the file (``ptx.embedding``); the server (its ``/v1/embeddings``) and verify read it.

An embedding is judged as people use one: by the angle between two vectors. A vector agrees with the
reference's when their cosine similarity is at least ``MIN_COSINE`` and its length is the reference's within
``MAX_LENGTH_ERROR`` (relative): the cosine alone would pass a vector its normalisation was dropped from, which
changes every dot-product score an index computes with it. Both hold with room to spare in float32: a MiniLM's
vectors on ONNX Runtime, OpenVINO and TorchScript part from eager PyTorch's by 1 - cosine of about 1e-14 and a
length of about 1e-7 (tests/test_embeddings.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from .comparison import Judge, OutputAgreement, compare_output
from .schema import Tolerance
from .tensors import ContractError, parse_json

EMBEDDING_KEY = "embedding"  # ptx.embedding in a file: the Embedding below, as JSON
# sentence-transformers' pooling modes that export builds into the graph; several are concatenated in the order
# given, as its Pooling module concatenates them.
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len_tokens")
MIN_COSINE = 0.99999
MAX_LENGTH_ERROR = 1e-5
RULE = f"cosine >= {MIN_COSINE:g}, length within {MAX_LENGTH_ERROR:g}"  # as verify's table states it


@dataclass(frozen=True)
class Embedding:
    """What an embedding file answers: ``output`` [batch, ``dimensions``] vectors of the texts fed as ``ids`` and
    ``mask`` [batch, seq] (token ids padded at the end, the mask 1 on the tokens, 0 on the padding), each at most
    ``max_tokens`` tokens with the special ones its tokenizer adds (sentence-transformers' max_seq_length), ids
    below ``vocab``; pooled by ``pooling`` (POOLING_MODES) and L2-normalised where ``normalized``."""

    dimensions: int
    pooling: tuple[str, ...]
    normalized: bool
    max_tokens: int
    vocab: int
    output: str = "sentence_embedding"
    ids: str = "input_ids"
    mask: str = "attention_mask"

    def __post_init__(self):
        for name in ("dimensions", "max_tokens", "vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ContractError(f"embedding: {name} {value!r} is not a whole number of at least 1")
        unknown = [m for m in self.pooling if m not in POOLING_MODES]
        if not self.pooling or unknown:
            raise ContractError(f"embedding: pooling {list(self.pooling)}: each one of {', '.join(POOLING_MODES)}")

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "pooling": list(self.pooling)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, where: str) -> "Embedding":
        doc = parse_json(text, where)
        if not isinstance(doc, dict):
            raise ContractError(f"{where}: not an embedding record (a JSON object)")
        known = {"dimensions", "pooling", "normalized", "max_tokens", "vocab", "output", "ids", "mask"}
        missing = sorted({"dimensions", "pooling", "normalized", "max_tokens", "vocab"} - set(doc))
        if missing or set(doc) - known:
            raise ContractError(f"{where}: " + (f"no {missing[0]}" if missing else
                                                f"unknown field {sorted(set(doc) - known)[0]!r}"))
        try:
            return cls(**{**doc, "pooling": tuple(doc["pooling"]), "normalized": bool(doc["normalized"])})
        except (TypeError, ContractError) as exc:
            raise ContractError(f"{where}: {exc}") from None

    def check(self, signature, where: str) -> None:
        """The file's tensors are the ones the record names: ids and mask in, [batch, dimensions] vectors out."""
        for name in (self.ids, self.mask):
            if name not in signature.input_names:
                raise ContractError(f"{where} feeds {name!r}, which the file does not take (it takes "
                                    f"{', '.join(signature.input_names)}): re-export it")
        if self.output not in signature.output_names:
            raise ContractError(f"{where} names the output {self.output!r}, which the file does not give: re-export it")
        shape = signature.output(self.output).shape
        if len(shape) != 2 or shape[-1] != self.dimensions:
            raise ContractError(f"{where}: {self.output} is {list(shape)}, not [batch, {self.dimensions}]: re-export it")


def of_metadata(metadata: Mapping[str, str], where: str) -> Embedding | None:
    """The embedding contract a file records (its ptx.* strings, prefix dropped), or None."""
    text = metadata.get(EMBEDDING_KEY)
    return Embedding.from_json(text, where) if text else None


def compare_embedding(name: str, got, want, tolerance: Tolerance) -> OutputAgreement:
    """Vectors ``got`` [rows, dimensions] against the reference's ``want``, each by its cosine similarity and its
    length (the module's docstring says why both): the one comparison's record (shapes, NaN, max abs, its
    histogram, as every output's), with ``cosine`` the least over the rows and ``beyond`` the vectors that depart
    (``differs`` says the first). ``tolerance`` is kept for the record: a vector is judged by the rule, not by it."""
    result = compare_output(name, got, want, tolerance)
    result.rule = RULE
    if result.problem is not None or np.asarray(want).size == 0:
        return result
    g = np.asarray(got, np.float64).reshape(-1, np.shape(want)[-1])
    w = np.asarray(want, np.float64).reshape(g.shape)
    got_length, want_length = np.linalg.norm(g, axis=-1), np.linalg.norm(w, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # two zero vectors agree; a zero beside another is no direction at all
        cosine = np.where((got_length == 0) & (want_length == 0), 1.0, (g * w).sum(-1) / (got_length * want_length))
        length = np.where(want_length > 0, np.abs(got_length / want_length - 1), np.where(got_length > 0, np.inf, 0))
    cosine = np.nan_to_num(cosine, nan=0.0)
    bad = (cosine < MIN_COSINE) | (length > MAX_LENGTH_ERROR)
    result.cosine, result.length_error = float(cosine.min()), float(length.max())
    result.beyond = int(bad.sum())
    result.excess = max(MIN_COSINE - result.cosine, result.length_error - MAX_LENGTH_ERROR)
    if result.beyond:
        k = int(np.argmax(bad))
        result.differs = (f"vector {k}: cosine {cosine[k]:.7f} with the reference's (at least {MIN_COSINE:g}), length "
                          f"{got_length[k]:.6g} where the reference's is {want_length[k]:.6g} (within "
                          f"{MAX_LENGTH_ERROR:g}); {result.beyond} of {len(bad)} vectors depart")
    return result


def embedding_judge(embedding: Embedding) -> Judge:
    """compare_outputs' judge for an embedding file: its vectors by compare_embedding, any other output by the one
    comparison."""
    def judge(name: str, got, want, tolerance: Tolerance) -> OutputAgreement:
        if name == embedding.output:
            return compare_embedding(name, got, want, tolerance)
        return compare_output(name, got, want, tolerance)
    return judge
