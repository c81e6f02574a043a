"""A decoder exported with its key/value cache, its weights reduced: ``ptx export lm/model.onnx --format
onnx-int4`` (and onnx-int8w, openvino-int4, openvino-int8w), or the same formats named with ``ptx export
--module``, made from the f32 model.onnx that export writes first.

The format's one writer quantizes the f32 file (export/formats/onnx_weights.py, openvino_weights.py);
NNCF's reads its activations on the prompts the file records, run as the first step (data-aware). The
written file is then judged on every runtime that reads it, as verify judges a reduced precision of a
decoder (infer/verify/generation.py): the prompts the f32 file records, decoded greedily, their tokens
against eager's recorded ones by the one judge of tokens (ptx.contract.generation.judge_tokens, reduced:
the share of steps agreeing). Each verdict is recorded in the file (ptx.verdict), so that verify, generate
and serve read it; a file that misses it is still written, said NOT USABLE in one line, as an int8 file is.

Shown beside the verdict, not counted: each prompt teacher-forced on eager's tokens through the f32 file
and the reduced one, the share of positions whose top token is the f32 file's and the mean KL divergence
of the reduced distribution from f32's. Greedy agreement says little of a model with random weights,
whose top-2 margins are a hundredth of a logit; a distribution-level bound per prompt (llama.cpp's KL and
"same top token") is the judge this calls for.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.atomic import ensure_writable_dir
from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import REDUCED_AGREEMENT, Generation, judge_tokens, left_padded, of_metadata, positions
from ptx.contract.names import twin_name
from ptx.contract.verdict import Evidence, verdict_strings
from ptx.errors import PtxError
from ptx.files import file_sha256
from ptx.infer.formats import onnx_files
from ptx.infer.formats.model_files import check_weights, read_model_file
from ptx.infer.formats.signature import recorded_signature
from ptx.infer.model.generation import Decoding, empty_past
from ptx.infer.model.target import load
from ptx.infer.runtime.memory_plan import give_back_freed
from ptx.machine import describe_cpu

from . import formats
from .pipeline import atomic_file, guard, judge_on_runtimes
from .validate import ExportResult, open_checked


def export_weight_only_decoder(path: Path, fmt, *, out=None, options: dict | None = None, force: bool = False,
                               foreign: Callable[[Path], str | None] | None = None,
                               log: Callable[[str], None] = print) -> ExportResult:
    """``fmt`` (a weight-only format) of the f32 decoder file at ``path``, written beside it (or in
    ``out``), judged by its decoding on every runtime that reads it, the verdicts recorded in it."""
    path = Path(path)
    # what the file is, read from its metadata (its weights digest checked): no runtime holds the f32 weights
    # while the quantizer does
    found = read_model_file(path)
    check_weights(found)
    metadata = dict(found.metadata)
    if found.precision != "f32":
        raise PtxError(f"{path} is already {found.precision}: quantize the f32 file it was made from")
    generation = of_metadata(metadata, f"{path.name}: ptx.generation")
    recorded = generation.recorded() if generation else None
    signature = recorded_signature(metadata, path)
    if recorded is None or signature is None:
        raise PtxError(f"{path.name} records no reference decoding to judge {fmt.name} by: re-export it with `ptx "
                       "export --module FILE.py:FACTORY --task text-generation`")
    prompts, reference, by = recorded
    final = Path(out or path.parent) / twin_name(path, fmt.name)
    guard(final, force, foreign or (lambda _: None))
    ensure_writable_dir(final.parent)
    strings = {**metadata, "source": path.name, "source_sha256": file_sha256(path)}
    options = dict(options or {})
    data_aware = options.pop("data_aware", False)
    options = options_for(fmt, options)
    if data_aware and "calibration" in _parameters(fmt):  # NNCF reads the recorded prompts' first step's activations
        options["calibration"] = first_steps(signature, generation, prompts)
    if fmt.progress:
        log(f"{fmt.name:<11} {fmt.progress} ...")
    f32_logits = forced_logits(path, "ort-cpu", generation, prompts, reference.tokens)
    give_back_freed()  # the f32 session's memory, before the quantizer reads the weights
    with atomic_file(final) as (tmp, final):
        made = fmt.write(path, None, tmp, signature, strings, log=log, **options)
        steps = len(reference.tokens[0])

        def evidence(backend: str) -> list:
            with closing(open_checked(tmp, fmt, backend=backend)) as model:
                decoded = model.decode(prompts, steps, eos=())
                tolerance = default_tolerance(model.signature.output(generation.logits).dtype, model.device)
                judged = judge_tokens(reference, decoded.steps, tolerance, reduced=True)
                forced = forced_logits(model, backend, generation, prompts, reference.tokens)
            shown = teacher_forced(f32_logits, forced)
            why = f"greedy tokens agree on {judged.share:.0%} of the steps (< {REDUCED_AGREEMENT:.0%})"
            return [Evidence("generated", f"{len(prompts)} recorded prompts x {steps} steps against {by}: "
                                          f"{judged.describe()}; {shown}", [] if judged.passed else [why])]

        verdicts = judge_on_runtimes(fmt, evidence, log)
        fmt.add_metadata(tmp, verdict_strings(verdicts))
        size = _size(tmp)
    log(f"{fmt.name:<11} {final}  {size / 1e6:.1f} MB ({size / _size(path):.2f}x {path.name})  {made.method}")
    for verdict in verdicts:  # as export/pipeline.py says a reduced file's verdicts
        advice = (f": {'; '.join(verdict.reasons)}: do not use {fmt.precision} for {metadata.get('model', path.stem)} "
                  f"(serve {path.name})")
        log(f"{'':<11} {verdict.label} on {describe_cpu()}, {verdict.measured}: {verdict.status}"
            f"{advice if verdict.reasons else ''}")
    result = ExportResult(fmt.name, final, size, made.method, (), {}, False)
    result.judgement, result.judged_by, result.verdicts = verdicts[0], verdicts[0].label, verdicts
    return result


def _parameters(fmt) -> set[str]:
    import inspect

    return set(inspect.signature(fmt.write).parameters)


def options_for(fmt, given: dict) -> dict:
    """The options of ``given`` that ``fmt``'s writer takes and that are set (--ratio is NNCF's, --accuracy-level
    onnxruntime's: the CLI refuses one given for no format named)."""
    takes = _parameters(fmt)
    return {k: v for k, v in given.items() if k in takes and v is not None}


def _size(path: Path) -> int:
    """An ONNX file's bytes with its external data's."""
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in onnx_files.companions(path))


def first_steps(signature, generation: Generation, prompts) -> list[dict[str, np.ndarray]]:
    """Each prompt's first step as the decoder runs it (the ids, a mask of ones, positions from 0, an
    empty past): what NNCF reads the MatMuls' activations on."""
    cases = []
    for prompt in prompts:
        ids, mask = left_padded([prompt], generation.pad)
        feeds = {generation.input_ids: ids, generation.attention_mask: mask, **empty_past(signature, generation, 1)}
        if generation.position_ids:
            feeds[generation.position_ids] = positions(mask)
        cases.append(feeds)
    return cases


def forced_logits(model, backend: str, generation: Generation, prompts, tokens) -> list[list[np.ndarray]]:
    """Each prompt's last-position logits at every step, teacher-forced on ``tokens`` (the reference's), one
    prompt at a time; ``model`` an opened model or a file's path (opened on ``backend`` and closed)."""
    if isinstance(model, (str, Path)):
        with closing(load(model, backend, "cpu")) as opened:
            return forced_logits(opened, backend, generation, prompts, tokens)
    out = []
    for prompt, forced in zip(prompts, tokens):
        kept: list[np.ndarray] = []
        decoding = Decoding(model.run, model.signature, generation, [prompt], len(forced), eos=())
        for step in decoding:
            kept.append(step.logits[0].astype(np.float64))
            decoding.append([forced[step.index]])
        out.append(kept)
    return out


def teacher_forced(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> str:
    """The share of teacher-forced positions whose top token is the reference's, and the mean and worst
    prompt's KL divergence of ``got``'s distribution from the reference's, in words."""
    same, kls = [], []
    for want, have in zip(reference, got):
        w, h = np.stack(want), np.stack(have)
        same.append(float((w.argmax(-1) == h.argmax(-1)).mean()))
        kls.append(float(_kl(w, h).mean()))
    worst = int(np.argmax(kls))
    return (f"teacher-forced on the reference's tokens (shown, not counted): top token as the f32 file's on "
            f"{100 * float(np.mean(same)):.1f}% of positions, KL {float(np.mean(kls)):.3g} nats (prompt {worst + 1}'s "
            f"{kls[worst]:.3g})")


def _kl(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    """KL(want || got) per row of logits, in nats."""
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    lw, lg = log_softmax(want), log_softmax(got)
    return (np.exp(lw) * (lw - lg)).sum(-1)


def split_weight_only(asked, log: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """(the formats a decoder with its cache is written in, the weight-only ones made from its model.onnx
    afterwards) of the formats ``asked``, each once; model.onnx is written too where a weight-only one
    is asked without it."""
    reduced = [f for f in dict.fromkeys(asked) if f in weight_only_formats()]
    written = [f for f in dict.fromkeys(asked) if f not in reduced]
    if reduced and "onnx" not in written:
        log(f"{', '.join(reduced)}: made from model.onnx, which is written too")
        written.append("onnx")
    return written, reduced


def weight_only_formats() -> list[str]:
    """The registered weight-only formats (a decoder with its cache is written in these)."""
    return [name for name in formats.list_formats() if formats.get(name).weight_only]
