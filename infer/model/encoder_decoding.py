"""An encoder-decoder's decoding (T5, BART, Whisper, exported as an encoder file and a decoder file with its
cache): the one decoding (infer/model/generation.py's Decoding), its encoder run once, where the first step
runs, and what it answers fed to every step after.

    decoding = EncoderDecoding(encoder.run, encoder.signature, decoder.run, decoder.signature, generation,
                               sources, max_new_tokens=32)
    decoding.to_end(GREEDY)                # or pulled step by step, as any Decoding

``sources`` are what the encoder reads: token ids of any lengths (one batch, right-padded with a mask of 0
there, as transformers' tokenizers pad them for these models: an encoder's learned positions then stay each
source's own), or features (an array [batch, ...] of the encoder's fixed sizes: Whisper's log-mel frames).
Every decoder prompt starts from the contract's start ids (decoder_start_token_id and a prefix generate()
forces), one length for the batch: the decoder file takes no mask of its own. The encoder's answers (each
decoder layer's cross-attention key and value) are the cross-attention past of every step; its time is
the decoding's ``encode_s``, apart from the prompt's run and the steps after it.
"""
from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import numpy as np

from ptx.contract.generation import Encoder, Generation, check_prompts
from ptx.contract.tensors import Signature
from ptx.errors import InputError, PtxError

from .decoding_memory import vocabulary
from .generation import Decoding, Run, Step, no_cache


class EncoderRunner(NamedTuple):
    """What a decoding needs of an encoder: its run and its tensors (an opened encoder file's runner has both;
    export's eager encoder is one of these)."""

    run: Run
    signature: Signature


def encoder_not_open(generation: Generation, whose: str = "its") -> PtxError:
    """The one line for an encoder-decoder's decoder opened without its encoder beside it (``whose``: the
    model's name and 's, where it has one)."""
    return PtxError(f"{whose} encoder ({generation.encoder.file or 'the encoder file'}) is not open beside it: open "
                    "the decoder file with ptx.infer.load, which opens its encoder too")


class EncoderDecoding(Decoding):
    """The decoding of ``sources`` through an encoder (``encode``: its runner's run; ``encoder_signature``:
    its tensors) and a decoder with its cache (``run``, ``signature``), as ``generation`` names their tensors;
    ``starts``: each decoder prompt (default the contract's start ids, one length for all). The rest is
    Decoding's."""

    def __init__(self, encode: Run, encoder_signature: Signature, run: Run, signature: Signature,
                 generation: Generation | None, sources, max_new_tokens: int, eos: Sequence[int] | None = None, *,
                 starts: Sequence[Sequence[int]] | None = None, name: str = "the model"):
        if generation is None:
            raise no_cache(name)
        part = generation.encoder
        if part is None:
            raise PtxError(f"{name} is a causal LM (its decoder takes no encoder's answers): decode it with Decoding")
        self.encoder = part
        self._encode = encode
        self._encoder_feeds = encoder_feeds(part, encoder_signature, sources, vocabulary(signature, generation),
                                            generation.pad)
        batch = len(next(iter(self._encoder_feeds.values())))
        starts = [list(part.start)] * batch if starts is None else [list(s) for s in starts]
        if len(starts) != batch:
            raise InputError(f"{len(starts)} decoder prompts for {batch} sources: give one per source")
        if len({len(s) for s in starts}) > 1:
            raise InputError(f"decoder prompts of {', '.join(str(len(s)) for s in starts)} tokens: an encoder-decoder's "
                             "prompts in one batch have one length (its decoder takes no mask of its own)")
        self._cross: dict[str, np.ndarray] | None = None  # the encoder's answers, once it has run
        super().__init__(run, signature, generation, starts, max_new_tokens, eos, name=name)

    def step(self) -> Step:
        """The encoder's run first (once, timed apart as ``encode_s``), then the decoder's, as Decoding's."""
        if self._cross is None and self._ahead is None and not self.finished:
            start = time.perf_counter()
            out = self._encode(self._encoder_feeds)
            self._cross = {fed: out[answered] for answered, fed in self.encoder.cross}
            if self.encoder.decoder_mask:
                self._cross[self.encoder.decoder_mask] = self._encoder_feeds[self.encoder.source_mask]
            self.encode_s = time.perf_counter() - start
        return super().step()

    def _run(self, cache, feeds: dict[str, np.ndarray]):
        return super()._run(cache, {**feeds, **self._cross})

    def _release(self) -> None:
        super()._release()
        self._cross = {}  # the cross-attention past goes with the cache


def encoder_feeds(part: Encoder, signature: Signature, sources, vocab: int | None, pad: int) -> dict[str, np.ndarray]:
    """The encoder file's inputs for ``sources``: features checked against its sizes (one item may come
    without its batch axis), or token ids right-padded with ``pad`` and their mask; else one line."""
    if part.features:
        return {part.source: _features(part, signature, sources)}
    if isinstance(sources, np.ndarray) and np.issubdtype(sources.dtype, np.floating):
        raise InputError(f"the encoder takes token ids ({part.source}), not a float array: give lists of token ids")
    ids = check_prompts(sources, vocab, 1, None)
    longest = max(map(len, ids))
    if part.max_positions is not None and longest > part.max_positions:
        raise InputError(f"a source of {longest} tokens: the encoder has {part.max_positions} positions; shorten it")
    batch = np.full((len(ids), longest), pad, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for row, one in enumerate(ids):
        batch[row, :len(one)] = one
        mask[row, :len(one)] = 1
    return {part.source: batch, **({part.source_mask: mask} if part.source_mask else {})}


def _features(part: Encoder, signature: Signature, sources) -> np.ndarray:
    sig = signature.input(part.source)
    try:
        array = np.asarray(sources, dtype=np.dtype(sig.dtype))
    except (TypeError, ValueError):
        raise InputError(f"the encoder takes {part.source} (an array of {_shape(sig.shape)} numbers), not "
                         f"{type(sources).__name__}") from None
    if array.ndim == len(sig.shape) - 1:  # one item, without its batch axis
        array = array[None]
    fixed = [(axis, d) for axis, d in enumerate(sig.shape) if isinstance(d, int)]
    if array.ndim != len(sig.shape) or any(array.shape[axis] != d for axis, d in fixed) or not array.shape[0]:
        raise InputError(f"{part.source} of shape {list(np.shape(sources))}: the encoder takes {_shape(sig.shape)}"
                         + (" (an audio model's features: pad or cut each to its frames)" if len(sig.shape) == 3 else ""))
    if not np.isfinite(array).all():
        raise InputError(f"{part.source} holds NaN or infinite values")
    return np.ascontiguousarray(array)


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def take(sources, rows: Sequence[int]):
    """Rows ``rows`` of ``sources`` (lists of ids, or an array of features)."""
    if isinstance(sources, np.ndarray):
        return sources[list(rows)]
    return [sources[r] for r in rows]
