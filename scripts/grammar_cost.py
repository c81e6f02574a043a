"""What masking tokens against a JSON schema costs per token, for each grammar library installed here
(llguidance, outlines-core, xgrammar), on a 32k-token byte-level BPE vocabulary: the figure ptx picked its
library by (infer/model/grammar.py, docs/openai.md#json-that-parses).

    python scripts/grammar_cost.py [--vocab 32000] [--tokens 400] [--out grammar-cost]

The tokenizer is trained here with the tokenizers library on the Python standard library's own sources (nothing
downloaded), to --vocab tokens, and kept in --out. For each library: the time to compile the schema for that
vocabulary (once per request), then a walk of --tokens steps where each step computes the mask of allowed
tokens, applies it to random logits (numpy), takes the best allowed token and advances the matcher: the
grammar's cost per token (the mask, as a boolean array over the vocabulary, and the advance; picking the token
is numpy's, the same for all), which is what constrained decoding adds to a token's time (the model's run is the
same). A walk that completes its JSON starts again. Prints one row per library; a library not installed is
said as such.
"""
from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import numpy as np

# A schema of what extraction code sends: nested objects, enums, arrays, required fields.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "kind": {"enum": ["person", "place", "thing"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "kind", "address"],
    "additionalProperties": False,
}


def tokenizer_file(out: Path, vocab: int) -> Path:
    """A byte-level BPE of ``vocab`` tokens trained on the standard library's sources (kept: trained once)."""
    path = out / f"tokenizer-{vocab}.json"
    if path.is_file():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    texts = (p.read_text(encoding="utf-8", errors="replace") for p in sources)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out.mkdir(parents=True, exist_ok=True)
    bpe.save(str(path))
    return path


class Llguidance:
    name = "llguidance"

    def __init__(self, path: Path, vocab: int, eos: int):
        import llguidance
        import llguidance.numpy as lln

        self.lln, self.llg = lln, llguidance
        self.tokenizer = llguidance.LLTokenizer(path.read_text(), n_vocab=vocab, eos_token=eos)
        self.bitmask = lln.allocate_token_bitmask(1, vocab)
        self.vocab = vocab

    def compile(self, schema: dict):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        self.grammar = grammar
        return self.llg.LLMatcher(self.tokenizer, grammar)

    def restart(self, matcher):
        return self.llg.LLMatcher(self.tokenizer, self.grammar)

    def allowed(self, matcher) -> np.ndarray:
        self.lln.fill_next_token_bitmask(matcher, self.bitmask, 0)
        return np.unpackbits(self.bitmask[0].view(np.uint8), bitorder="little")[:self.vocab].astype(bool)

    def advance(self, matcher, token: int) -> bool:
        matcher.consume_token(token)
        return matcher.is_stopped()


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, path: Path, vocab: int, eos: int):
        import outlines_core
        from tokenizers import Tokenizer

        from ptx.infer.model.text import _BYTE_OF

        self.oc = outlines_core
        words = Tokenizer.from_file(str(path))
        tokens = {}
        for piece, token in words.get_vocab().items():
            if token != eos:
                tokens.setdefault(bytes(_BYTE_OF[c] for c in piece), []).append(token)
        self.vocabulary = outlines_core.Vocabulary(eos, tokens)
        self.mask = np.zeros((vocab + 31) // 32, dtype=np.int32)
        self.vocab = vocab

    def compile(self, schema: dict):
        from outlines_core.json_schema import build_regex_from_schema

        self.index = self.oc.Index(build_regex_from_schema(json.dumps(schema)), self.vocabulary)
        return self.oc.Guide(self.index)

    def restart(self, guide):
        return self.oc.Guide(self.index)

    def allowed(self, guide) -> np.ndarray:
        self.mask[:] = 0
        guide.write_mask_into(self.mask.ctypes.data, self.mask.size, 4)
        return np.unpackbits(self.mask.view(np.uint8), bitorder="little")[:self.vocab].astype(bool)

    def advance(self, guide, token: int) -> bool:
        guide.advance(token)
        return guide.is_finished()


class Xgrammar:
    name = "xgrammar"

    def __init__(self, path: Path, vocab: int, eos: int):
        import xgrammar
        from transformers import PreTrainedTokenizerFast

        self.xgr = xgrammar
        words = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>")
        self.compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(words, vocab_size=vocab))
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab)
        self.vocab = vocab

    def compile(self, schema: dict):
        self.compiled = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        return self.xgr.GrammarMatcher(self.compiled)

    def restart(self, matcher):
        return self.xgr.GrammarMatcher(self.compiled)

    def allowed(self, matcher) -> np.ndarray:
        matcher.fill_next_token_bitmask(self.bitmask)
        return np.unpackbits(self.bitmask[0].numpy().view(np.uint8), bitorder="little")[:self.vocab].astype(bool)

    def advance(self, matcher, token: int) -> bool:
        matcher.accept_token(token)
        return matcher.is_terminated()


def walk(library, tokens: int, vocab: int, eos: int) -> tuple[float, np.ndarray, int]:
    """(compile seconds, each token's seconds of the library's mask (as a boolean array) and advance,
    answers completed). Picking the token (numpy, the same for every library) is left out."""
    start = time.perf_counter()
    matcher = library.compile(SCHEMA)
    compiled = time.perf_counter() - start
    rng = np.random.default_rng(0)
    spent, completed = [], 0
    for _ in range(tokens):
        logits = rng.standard_normal(vocab).astype(np.float32)
        start = time.perf_counter()
        allowed = library.allowed(matcher)
        masked = time.perf_counter() - start
        token = int(np.argmax(np.where(allowed, logits, -np.inf)))
        start = time.perf_counter()
        done = token == eos or library.advance(matcher, token)
        spent.append(masked + time.perf_counter() - start)
        if done:
            completed += 1
            matcher = library.restart(matcher)
    return compiled, np.array(spent), completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("grammar-cost"))
    args = parser.parse_args()
    path = tokenizer_file(args.out, args.vocab)
    from tokenizers import Tokenizer

    words = Tokenizer.from_file(str(path))
    vocab, eos = words.get_vocab_size(), words.token_to_id("<|endoftext|>")
    print(f"{vocab}-token byte-level BPE ({path}); {args.tokens} steps of a walk through the schema, random logits")
    print(f"{'library':14} {'compile ms':>11} {'us/token mean':>14} {'median':>7} {'p90':>7} {'answers':>8}")
    for kind in (Llguidance, OutlinesCore, Xgrammar):
        try:
            library = kind(path, vocab, eos)
        except ImportError as exc:
            print(f"{kind.name:14} not installed ({exc})")
            continue
        compiled, spent, completed = walk(library, args.tokens, vocab, eos)
        us = 1e6 * spent
        print(f"{kind.name:14} {1000 * compiled:11.1f} {us.mean():14.0f} {np.median(us):7.0f} "
              f"{np.percentile(us, 90):7.0f} {completed:8d}")


if __name__ == "__main__":
    main()
