"""What holding an answer to a grammar costs a decoding (`ptx bench FILE --generate N --json-schema FILE`): the
same prompts decoded greedy again, each step's choice masked by the grammar as the one chooser masks a served
answer's (ptx.contract.sampling.Chooser with infer/model/grammar.py's constraints, the model's end ids allowed
where the grammar is complete), timed as the row's plain decoding is. The mask is the only difference, so the
two times per token give its cost; the answers are whatever the grammar lets greedy take (a grammar that
completes early decodes fewer tokens: the tokens are said beside the time).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

from ptx.contract.grammar import Grammar
from ptx.contract.sampling import Sampling
from ptx.errors import PtxError

from ..model.decoding_memory import vocabulary
from ..model.generation import chooser_of


@dataclass
class Masked:
    ms_per_token: float  # the median over the decodings of each one's steps' time over the tokens they gave
    tokens: int  # the tokens the longest answer gave after the prompt's run, in the last decoding
    answers: list[list[int]]  # the last decoding's tokens, each prompt's (its end id last where the grammar completed)


def check_grammar(grammar: Grammar, target, generation) -> None:
    """``grammar`` compiled for the tokenizer beside ``target``'s file, over its logits' vocabulary (_logits_width),
    and its end ids (``generation``'s and the tokenizer's generation config's, as a decoding ends), as
    time_masked compiles it (kept: compiled once): a GrammarError (one line) where it cannot hold an answer, a
    PtxError where there is no tokenizer to mask."""
    from ..model import grammar as grammars
    from ..model.text import Text

    text = Text.beside(target.path)
    if text is None:
        raise PtxError(f"--json-schema masks the tokenizer's tokens, and there is no tokenizer.json beside "
                       f"{target.path}: export the model with its tokenizer")
    eos = sorted(set(generation.eos) | set(text.eos))
    grammars.check(grammar, text, _logits_width(target, generation) or text.vocab_size, eos)


def _logits_width(target, generation) -> int | None:
    """The vocabulary of the file's logits, before any runtime opens it: its recorded signature's, else (a file
    without ptx's record) the signature its ONNX graph gives, as ONNX Runtime would; None where neither says a
    number."""
    from ..formats.onnx_files import load_structure
    from ..formats.onnx_graph import graph_signature
    from ..formats.signature import recorded_signature

    signature = recorded_signature(target.found.metadata, target.path) if target.found is not None else None
    if signature is None and target.kind == "onnx":
        signature = graph_signature(load_structure(target.path), target.path)
    return vocabulary(signature, generation) if signature is not None else None


def time_masked(model, prompts: list[list[int]], new_tokens: int, repeats: int, grammar: Grammar,
                progress: Callable[[str], None], label: str) -> Masked:
    """``repeats`` greedy decodings of ``prompts`` held to ``grammar`` after one untimed; a model without a
    tokenizer beside it, or a grammar that lets no token after the prompt's, is a PtxError."""
    from ..model.grammar import constraints
    from ..model.text_generation import end_ids

    text = model.text
    if text is None:
        raise PtxError(f"{label}: a grammar masks the tokenizer's tokens, and there is none beside the file")
    eos = end_ids(model, text)
    vocab = vocabulary(model.signature, model.generation) or text.vocab_size
    sampling = Sampling(grammar=grammar, max_new_tokens=new_tokens)
    per_token, decoded = [], None
    for k in range(repeats + 1):
        progress(f"{label}: {'warm-up ' if k == 0 else ''}decoding held to {grammar.describe()}"
                 + (f" {k} of {repeats}" if k else ""))
        decoding = model.decoding(prompts, new_tokens, eos, sampling)
        # constraints hold each row's place in the grammar: new ones for each decoding
        choose = chooser_of(sampling, None, constraints(grammar, text, vocab, sorted(decoding.eos), len(prompts)))
        decoded = decoding.to_end(choose)
        if decoded.decode_tokens < 1:
            raise PtxError(f"{label}: held to {grammar.describe()}, the answer ended at its first token: nothing "
                           "after the prompt's run to time")
        if k:
            per_token.append(decoded.decode_s / decoded.decode_tokens)
    return Masked(1000 * statistics.median(per_token), decoded.decode_tokens, decoded.tokens)
