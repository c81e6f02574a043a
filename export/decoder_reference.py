"""The reference every file of a decoder is held to (export/decoder.py's DecoderSource): eager's decoding of
the judging prompts, each step's whole logits kept, teacher-forced on transformers' own
``generate(do_sample=False)`` tokens where the module generates. transformers' generate() makes its own
cache, positions and mask, so it is a reference independent of ptx's loop: ptx's decoding of the eager
module must put its tokens first at every step, or a positions or mask bug in the loop would sit on both
sides of every check and no run could see it.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
import torch

from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import Generation, batches, left_padded
from ptx.contract.generation_judge import tie_width
from ptx.contract.reference_decoding import ReferenceDecoding
from ptx.contract.tensors import Signature
from ptx.errors import ValidationError
from ptx.infer.model.generation_check import reference_decoding


def eager_run(decoder: torch.nn.Module, signature: Signature):
    """The decoder as a runner's run(): numpy in, numpy out, by name."""
    def run(feeds):
        with torch.no_grad():
            out = decoder(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in signature.input_names))
        return {n: t.detach().numpy() for n, t in zip(signature.output_names, out)}
    return run


@contextmanager
def passes_shown(total: int, what: str):
    """A progress bar on the terminal (stderr) counting the model's passes (``total``), each of which takes seconds
    to minutes when the model is read from its folder as it runs; nothing where stderr is no terminal. Yields a
    function that counts one pass and hands its answer on."""
    import sys

    if not sys.stderr.isatty():
        yield lambda answer: answer
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=what, unit="pass", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        def counted(answer):
            bar.update(1)
            return answer
        yield counted


def transformers_tokens(module: torch.nn.Module, prompts: Sequence[Sequence[int]], steps: int, pad: int,
                        log: Callable[[str], None]) -> list[list[int]] | None:
    """transformers' own greedy decoding of ``prompts`` with its cache (``generate(do_sample=False)``, every step
    run: no end-of-sequence id), in the batches ptx decodes them in (left-padded, as transformers' users pad
    for generation): a reference independent of ptx's loop, whose positions and mask are transformers' own.
    None where it refused (said in one line)."""
    config = copy.deepcopy(module.generation_config)
    config.do_sample, config.num_beams, config.max_new_tokens, config.min_new_tokens = False, 1, steps, None
    config.eos_token_id, config.pad_token_id, config.use_cache = [], pad, True  # []: never ends (None: the model's)
    for unused in ("temperature", "top_k", "top_p"):  # a sampling model's defaults, which greedy ignores (warned)
        setattr(config, unused, None)
    tokens: list[list[int]] = [[] for _ in prompts]
    for group in batches(prompts):
        ids, mask = left_padded([prompts[k] for k in group], pad)
        try:
            with torch.no_grad():
                out = module.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                      generation_config=config)
        except Exception as exc:  # noqa: BLE001 - the model's own generate(), said in one line
            log(f"generation: {type(module).__name__}.generate() refused the check's prompts ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): the reference is ptx's decoding of the module alone")
            return None
        for row, k in enumerate(group):
            tokens[k] = [int(t) for t in out[row, ids.shape[1]:]]
    if any(len(t) != steps for t in tokens):
        log(f"generation: {type(module).__name__}.generate() gave {min(map(len, tokens))} tokens where {steps} were "
            "asked: the reference is ptx's decoding of the module alone")
        return None
    return tokens


def decoding_reference(decoder, module, signature: Signature, generation: Generation, prompts, steps: int,
                    log: Callable[[str], None], streamed=None) -> ReferenceDecoding:
    """The reference every file of ``module`` is held to: ptx's decoding of the eager decoder (whole logits at
    each step), teacher-forced on transformers' own generate() tokens where the module generates, which ptx's
    loop must then give: a step where eager's logits put another token above generate()'s beyond a near-tie
    (a positions or mask bug in the loop, or a model whose forward is not its generate()'s) fails export in
    one line (ValidationError). Else (``module`` None: it does not generate) ptx's own greedy decoding of the
    eager module. ``streamed``: the folder (export/folder_weights.FolderWeights) the module reads each module's
    weights from as it runs (export/streamed_module.py): ptx's greedy decoding alone, said so, since generate()'s
    own decoding would read the whole folder again at each of its steps."""
    run = eager_run(decoder, signature)
    eager = f"eager PyTorch (torch {torch.__version__})"
    if streamed is not None:
        eager += (f", float32 from {streamed.folder.name}'s {streamed.dtype} tensors, each module's read from the "
                  "folder as it runs")
        log(f"generation: the reference is {eager}: ptx's greedy decoding (transformers' generate() is not run: each "
            "of its steps would read the folder again)")
        with passes_shown(len(batches(prompts)) * steps, f"reference: each pass reads {streamed.folder.name}") as shown:
            return reference_decoding(lambda feeds: shown(run(feeds)), signature, generation, prompts, steps,
                                      by=f"{eager}, ptx's greedy decoding")
    tokens = None if module is None else transformers_tokens(module, prompts, steps, generation.pad, log)
    if tokens is None:
        return reference_decoding(run, signature, generation, prompts, steps, by=f"{eager}, ptx's greedy decoding")
    import transformers

    by = f"transformers {transformers.__version__} generate(do_sample=False)"
    reference = reference_decoding(run, signature, generation, prompts, steps, by=f"{eager}, on {by}'s tokens",
                                   tokens=tokens)
    tolerance = default_tolerance(signature.output(generation.logits).dtype)
    ties = []
    for k, (margins, rows) in enumerate(zip(reference.steps.margins, reference.logits)):
        for step, (margin, row) in enumerate(zip(margins, rows)):
            width = tie_width(tolerance, None, row.scale)
            if margin >= 0:
                continue
            if -margin > width:
                other = int(np.argmax(row.values))
                raise ValidationError(f"ptx's decoding of the eager module parts from {by}: prompt {k + 1} step "
                                      f"{step + 1}: eager's logits put {other} above generate()'s {tokens[k][step]} "
                                      f"by {-margin:.3g} (a near-tie is within {width:.3g}): the positions or mask "
                                      "ptx feeds are not the ones generate() makes")
            ties.append(f"prompt {k + 1} step {step + 1}")
    reference.checked = f"{by}: the same tokens" + (f" but at near-ties ({', '.join(ties)})" if ties else "")
    log(f"generation: ptx's decoding of the eager module gives {reference.checked}, "
        f"{len(prompts)} prompts ({', '.join(str(len(p)) for p in prompts)} tokens) x {steps} steps")
    return reference
