"""A decoder exported with its key/value cache, its weights reduced: ``ptx export lm/model.onnx --format
onnx-int4`` (and onnx-int8w, openvino-int4, openvino-int8w), or the same formats named with ``ptx export
--module``, made from the f32 model.onnx that export writes first.

The format's one writer quantizes the f32 file (export/formats/onnx_weights.py, openvino_weights.py);
NNCF's reads its activations on the prompts the file records, run as the first step (data-aware). The
written file is then judged on every runtime that reads it by the one judge of a decoding
(ptx.contract.generation_judge, through infer/model/generation_check.py, as export's check and ``ptx verify``
call it): the prompts the f32 file records, teacher-forced on eager's recorded tokens then free-running,
each prompt held on its own to its precision's bounds (top-1 agreement, and the KL divergence of its
distribution from eager's, mean and 99th percentile: llama.cpp's "same top token" and KL), the bounds the
f32 file records where export was given them. Each verdict is recorded in the file (ptx.verdict), so that
verify, generate and serve read it; a file that misses it is still written, said NOT USABLE in one line,
as an int8 file is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ptx.atomic import ensure_writable_dir, final_of
from ptx.contract.comparison import default_tolerance
from ptx.contract.generation import Generation, left_padded, of_metadata, positions
from ptx.contract.generation_judge import bounds_for
from ptx.contract.reference_decoding import recorded_reference
from ptx.contract.names import twin_name
from ptx.contract.verdict import Evidence, verdict_strings
from ptx.errors import BackendUnavailableError, PtxError
from ptx.files import file_sha256
from ptx.infer.formats.model_files import check_weights, read_model_file
from ptx.infer.formats.signature import recorded_signature
from ptx.infer.model.generation import empty_past
from ptx.infer.model.generation_check import judge_decoding
from ptx.infer.runtime import backends
from ptx.infer.runtime.memory_plan import MARGIN, file_size_text, opening_need, size_text, weights_bytes
from ptx.machine import available_memory

from . import formats
from .pipeline import atomic_file, guard, judge_on_runtimes, verdict_lines
from .validate import ExportResult, open_checked


def export_weight_only_decoder(path: Path, fmt, *, out=None, options: dict | None = None, force: bool = False,
                               foreign: Callable[[Path], str | None] | None = None,
                               log: Callable[[str], None] = print, folder=None) -> ExportResult:
    """``fmt`` (a weight-only format) of the f32 decoder file at ``path``, written beside it (or in
    ``out``), judged by its decoding on every runtime that reads it, the verdicts recorded in it. ``folder``: the
    transformers folder (export/folder_weights.FolderWeights) whose tensors the graph at ``path`` names (a graph
    traced without its weights, export/weightless.py): the file is made from the folder, not from ``path``."""
    path = Path(path)
    # what the file is, read from its metadata (its weights digest checked): no runtime holds the f32 weights
    # while the quantizer does
    found = read_model_file(path, digest=folder is None)  # a graph naming its folder's tensors has no data beside it
    check_weights(found)
    metadata = dict(found.metadata)
    if found.precision != "f32":
        raise PtxError(f"{path} is already {found.precision}: quantize the f32 file it was made from")
    generation = of_metadata(metadata, f"{path.name}: ptx.generation")
    reference = recorded_reference(generation)
    signature = recorded_signature(metadata, path)
    if reference is None or reference.logits is None or signature is None:
        raise PtxError(f"{path.name} records no reference decoding (with its steps' logits) to judge {fmt.name} by: "
                       "re-export it with `ptx export --module FILE.py:FACTORY --task text-generation`")
    prompts, by = reference.prompts, reference.by
    final = Path(out or path.parent) / twin_name(path, fmt.name)
    guard(final, force, foreign or (lambda _: None))
    ensure_writable_dir(final.parent)
    # a file made from the folder's own tensors records the folder (export's provenance), not a scratch graph
    strings = {**metadata, **({} if folder else {"source": path.name, "source_sha256": file_sha256(path)})}
    options = dict(options or {})
    data_aware = options.pop("data_aware", False)
    options = options_for(fmt, options)
    if data_aware and "calibration" in _parameters(fmt):  # NNCF reads the recorded prompts' first step's activations
        options["calibration"] = first_steps(signature, generation, prompts)
    if fmt.progress:
        log(f"{fmt.name:<11} {fmt.progress} ...")
    bounds = bounds_for(fmt.precision, generation.bounds)
    with atomic_file(final) as (tmp, final):
        made = fmt.write(path, None, tmp, signature, strings, log=log, **options)

        def evidence(backend: str) -> list:
            why = backends.refuses_generation(backends.get(backend), generation) or (
                backend != fmt.serving_backend and _beyond_share(backend, tmp, fmt.precision))
            if why:
                raise BackendUnavailableError(why)
            with open_checked(tmp, fmt, backend=backend) as model:
                tolerance = default_tolerance(model.signature.output(generation.logits).dtype, model.device)
                judged, _ = judge_decoding(model.run, model.signature, model.generation, reference,
                                           precision=fmt.precision, tolerance=tolerance, bounds=bounds,
                                           cache=model.runner.new_cache(model.generation))
            return [Evidence("generated", f"{len(prompts)} recorded prompts against {by}: {judged.summary()}",
                             judged.failures())]

        verdicts = judge_on_runtimes(fmt, evidence, log, staged=tmp)
        fmt.add_metadata(tmp, verdict_strings(verdicts))
        size = weights_bytes(tmp)
    against = (f"{size / folder.stored_bytes:.2f}x {folder.folder.name}'s {folder.dtype} weights" if folder else
               f"{size / weights_bytes(path):.2f}x {path.name}")
    log(f"{fmt.name:<11} {final_of(final)}  {file_size_text(size)} ({against})  {made.method}")  # not a staging path
    instead = "(serve its onnx export)" if folder else f"(serve {path.name})"
    for line in verdict_lines(verdicts, fmt.precision, metadata.get("model", path.stem), instead):
        log(line)
    result = ExportResult(fmt.name, final, size, made.method, (), {}, False)
    result.judgement, result.judged_by, result.verdicts = verdicts[0], verdicts[0].label, verdicts
    return result


# Another runtime's verdict on a reduced file (OpenVINO's on an onnx-int4 file) is recorded where it fits in this
# share of the memory available: beyond it, the file's own runtime is judged and the other left to `ptx verify`,
# rather than a 7B model's export holding 2.6x its 4.4 GB int4 file to compile it for a runtime it was not made for.
OTHER_RUNTIME_SHARE = 0.5


def _beyond_share(backend: str, path: Path, precision: str) -> str:
    """Why ``backend`` does not judge the file at ``path`` during export ('' where it fits OTHER_RUNTIME_SHARE)."""
    need, available = opening_need(backends.get(backend), path, precision), available_memory()
    if available is None or need * (1 + MARGIN) <= available * OTHER_RUNTIME_SHARE:
        return ""
    return (f"it would hold about {size_text(need * (1 + MARGIN))} of memory, more than half of the "
            f"{size_text(available)} available: `ptx verify {final_of(path).name} --backends {backend}` judges it")


def _parameters(fmt) -> set[str]:
    import inspect

    return set(inspect.signature(fmt.write).parameters)


def options_for(fmt, given: dict) -> dict:
    """The options of ``given`` that ``fmt``'s writer takes and that are set (--ratio is NNCF's, --accuracy-level
    onnxruntime's: the CLI refuses one given for no format named)."""
    takes = _parameters(fmt)
    return {k: v for k, v in given.items() if k in takes and v is not None}


def first_steps(signature, generation: Generation, prompts) -> list[dict[str, np.ndarray]]:
    """Each prompt's first step as the decoder runs it (the ids, a mask of ones, positions from 0, an
    empty past; a fixed-length cache's buffer of the prompt's slots): what NNCF reads the MatMuls' activations on."""
    cases = []
    for prompt in prompts:
        ids, mask = left_padded([prompt], generation.pad)
        slots = ids.shape[1] if generation.cache_position else 0
        feeds = {generation.input_ids: ids, generation.attention_mask: mask,
                 **empty_past(signature, generation, 1, slots),
                 **generation.kept_logits(ids.shape[1], every=True)}  # the head read at every position too
        if generation.cache_position:
            feeds[generation.cache_position] = np.arange(slots, dtype=np.int64)
        if generation.position_ids:
            feeds[generation.position_ids] = positions(mask)
        cases.append(feeds)
    return cases


def split_weight_only(asked, log: Callable[[str], None], f32_first: bool = True) -> tuple[list[str], list[str]]:
    """(the formats a decoder with its cache is written in, the weight-only ones made from its model.onnx
    afterwards) of the formats ``asked``, each once; model.onnx is written too where a weight-only one
    is asked without it and ``f32_first`` (False: the weight-only files are made from the model's folder)."""
    reduced = [f for f in dict.fromkeys(asked) if f in weight_only_formats()]
    written = [f for f in dict.fromkeys(asked) if f not in reduced]
    if reduced and "onnx" not in written and f32_first:
        log(f"{', '.join(reduced)}: made from model.onnx, which is written too")
        written.append("onnx")
    return written, reduced


def weight_only_formats() -> list[str]:
    """The registered weight-only formats (a decoder with its cache is written in these)."""
    return [name for name in formats.list_formats() if formats.get(name).weight_only]
