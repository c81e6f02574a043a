"""The reference every file of a decoder is held to (export/decoder.py's DecoderSource): transformers' own
``generate(do_sample=False)`` of the judging prompts where the module generates, its tokens and each step's whole
logits kept. generate() makes its own cache, positions and mask, so the reference is independent of ptx's loop,
which decodes every file judged against it: a positions or mask bug in the loop fails every file rather than
sitting on both sides of every check. A module that does not generate is decoded by ptx's loop over the eager
decoder, its own reference.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
import torch

from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import Generation, Steps, batches, left_padded, logit_and_best_other
from ptx.contract.generation_judge import tie_width
from ptx.contract.reference_decoding import ReferenceDecoding, StepLogits
from ptx.contract.tensors import Signature
from ptx.errors import ValidationError
from ptx.infer.model.generation_check import decoding_groups, own_prompt_rows, prompt_positions, reference_decoding


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


@contextmanager
def _own_config_unread(module: torch.nn.Module):
    """``module``'s generation config set aside while it generates: generate() fills every setting its caller's
    config leaves unset from the model's own."""
    import transformers

    own, module.generation_config = module.generation_config, transformers.GenerationConfig()
    try:
        yield
    finally:
        module.generation_config = own


def generated_reference(module: torch.nn.Module, prompts: Sequence[Sequence[int]], steps: int, pad: int,
                        log: Callable[[str], None], groups: Sequence[Sequence[int]] | None = None
                        ) -> ReferenceDecoding | None:
    """transformers' own greedy decoding of ``prompts`` with its cache (``generate(do_sample=False)``, every step
    run: no end-of-sequence id), in the batches ptx decodes them in (``groups``: decoding_groups', each left-padded
    as transformers' users pad for generation; default ptx.contract.generation.batches'), as the reference: its
    tokens, each step's logits (``output_logits``: before any processor), and each prompt's logits at its own
    positions, from its prompt pass (the model's first forward, its logits at every position). Its cache, positions
    and mask are transformers' own, so ptx's loop sits on the judged side of every check alone. None where it
    refused (said in one line)."""
    import transformers

    # A config of greedy alone: the model's own (a chat model's repetition penalty, suppressed tokens, sampling
    # settings) would change the choice from the model's argmax, which every file's greedy decoding is judged by.
    config = transformers.GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=steps, eos_token_id=[], pad_token_id=pad, use_cache=True,
        return_dict_in_generate=True, output_logits=True,  # eos []: never ends
        cache_implementation=module.generation_config.cache_implementation,
        cache_config=getattr(module.generation_config, "cache_config", None))
    keeps = getattr(module, "_supports_logits_to_keep", lambda: False)()
    every = {"logits_to_keep": 0} if keeps else {}  # 0: the prompt pass's logits at every position
    tokens: list[list[int]] = [[] for _ in prompts]
    logits: list[list[np.ndarray]] = [[] for _ in prompts]
    own: list[np.ndarray | None] = [None for _ in prompts]
    for group in groups or batches(prompts):
        ids, mask = left_padded([prompts[k] for k in group], pad)
        passes: list[torch.Tensor] = []
        hook = module.register_forward_hook(lambda _m, _a, out: None if passes else passes.append(
            getattr(out, "logits", None)))  # the first forward of generate(): its prompt pass
        try:
            with torch.no_grad(), _own_config_unread(module):
                out = module.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                      generation_config=config, **every)
        except Exception as exc:  # noqa: BLE001 - the model's own generate(), said in one line
            log(f"generation: {type(module).__name__}.generate() refused the check's prompts ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): the reference is ptx's decoding of the module alone")
            return None
        finally:
            hook.remove()
        if passes and passes[0] is not None:
            own_prompt_rows(passes[0].float().numpy(), group, prompts, own)
        for row, k in enumerate(group):
            tokens[k] = [int(t) for t in out.sequences[row, ids.shape[1]:]]
            logits[k] = [step[row].float().numpy().copy() for step in out.logits]
    if any(len(t) != steps for t in tokens):
        log(f"generation: {type(module).__name__}.generate() gave {min(map(len, tokens))} tokens where {steps} were "
            "asked: the reference is ptx's decoding of the module alone")
        return None
    chosen = [logit_and_best_other(np.stack(rows), np.asarray(t)) for rows, t in zip(logits, tokens)]
    record = Steps(tokens, [(top - other).tolist() for top, other in chosen], [top.tolist() for top, _ in chosen])
    at = prompt_positions(own, prompts)
    if at is None:
        log(f"generation: {type(module).__name__}'s prompt pass gave no logits at every position: the files are "
            "held to the reference's steps alone, not to its prompts' own positions")
    by = (f"transformers {transformers.__version__} generate(do_sample=False) in eager PyTorch "
          f"(torch {torch.__version__})")
    return ReferenceDecoding([list(p) for p in prompts], record, [[StepLogits.of_row(r) for r in rows]
                                                                 for rows in logits], by,
                             prompt_positions=at)


def decoding_reference(decoder, module, signature: Signature, generation: Generation, prompts, steps: int,
                    log: Callable[[str], None], streamed=None) -> ReferenceDecoding:
    """The reference every file of ``module`` is held to: transformers' own generate() of the judging prompts
    (generated_reference: its tokens and whole logits at each step) where the module generates, so that ptx's loop
    is on the judged side alone (a positions or mask bug in it fails every file, named by prompt and step). A
    step where generate()'s own logits put another token above the one it chose, beyond a near-tie (a processor
    of its generation config at work), fails export in one line (ValidationError). Else (``module`` None: it does
    not generate, or generate() refused) ptx's own greedy decoding of the eager decoder. ``streamed``: the folder
    (export/folder_weights.FolderWeights) the module reads each module's weights from as it runs
    (export/streamed_module.py): ptx's greedy decoding alone, said so, since generate()'s own decoding would read
    the whole folder again at each of its steps."""
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
    reference = None if module is None else generated_reference(module, prompts, steps, generation.pad, log,
                                                                decoding_groups(generation, prompts))
    if reference is None:
        return reference_decoding(run, signature, generation, prompts, steps, by=f"{eager}, ptx's greedy decoding")
    held_to_its_choices(reference, module, signature.output(generation.logits).dtype)
    log(f"generation: the reference is {reference.by}: its tokens and logits, {len(prompts)} prompts "
        f"({', '.join(str(len(p)) for p in prompts)} tokens) x {steps} steps; every file is decoded by ptx's loop "
        "and held to it")
    return reference


def held_to_its_choices(reference: ReferenceDecoding, module: torch.nn.Module, dtype: str) -> None:
    """ValidationError where generate() chose a token its own logits (``dtype``'s) put another above, beyond a
    near-tie: a processor of ``module``'s generation config at work, which the reference's greedy must not run."""
    tolerance = default_tolerance(dtype)
    for k, (margins, rows) in enumerate(zip(reference.steps.margins, reference.logits)):
        for step, (margin, row) in enumerate(zip(margins, rows)):
            width = tie_width(tolerance, None, row.scale)
            if -margin > width:
                raise ValidationError(f"{reference.by}: prompt {k + 1} step {step + 1}: its logits put "
                                      f"{int(np.argmax(row.values))} above the {reference.steps.tokens[k][step]} it "
                                      f"chose by {-margin:.3g} (a near-tie is within {width:.3g}): a processor of "
                                      f"{type(module).__name__}'s generation config changes greedy's choice")
