"""export_module's way for a causal LM kept with its key/value cache (``--task text-generation``, or a
transformers model that generates): the name, folder, checkpoint and metadata as export_module makes them,
the files written and checked by export/generation.py."""
from __future__ import annotations

from pathlib import Path

import torch

from ptx.contract.tensors import Signature, as_declarations
from ptx.errors import PtxError
from ptx.files import file_sha256

from .factory import load_state_dict_file
from .formats import get as get_format
from .formats.onnx import Exporter
from .generation import export_generating
from .metadata import module_strings
from .weight_only import export_weight_only_decoder, weight_only_formats


SHAPING = {"input_files": "--inputs", "output_names": "--output", "plan": "--shape/--value/--range",
           "max_sizes": "--max-shape", "min_sizes": "--min-shape"}


def refuse_shaping(**given) -> None:
    """One line for the first of export_module's options that shape a forward export's tensors or its checks
    (``given``: by parameter name; a plan counts where one of its entries is set, as the CLI always makes one):
    a decoder's tensors and its checks are its own, so one would be ignored."""
    named = [SHAPING[k] for k, v in given.items() if (any(v.values()) if isinstance(v, dict) else v)]
    if named:
        raise PtxError(f"{named[0]} is not for a model exported with its cache (its tensors are the decoder's, "
                       "checked by decoding prompts): leave it out, or give --task forward")


def export_with_cache(module, out_dir: Path, *, formats, name: str, checkpoint, opset, exporter, device, provenance,
                      log, asked: bool, inputs, tolerance, tolerance_given: dict, weights=None) -> Signature:
    """export_module of a causal LM with its key/value cache (export/generation.py), its name and folder
    checked by export_module; returns the files' signature. ``tolerance(output, device)``: what the files
    are held to (``tolerance_given``: the user's, as the files record it). A weight-only format (onnx-int4...)
    is made from the f32 model.onnx once the folder is written (export/weight_only.py), with ``weights``'
    options (its block size, symmetry...)."""
    reduced = [f for f in dict.fromkeys(formats) if f in weight_only_formats()]
    formats = [f for f in formats if f not in reduced]
    if reduced and "onnx" not in formats:
        log(f"{', '.join(reduced)}: made from model.onnx, which is written too")
        formats.append("onnx")
    log(f"task: text-generation ({'asked' if asked else f'{type(module).__name__} generates'}): the decoder is exported "
        "with its key/value cache" + ("" if asked else "; --task forward exports its logits alone"))
    loaded = load_state_dict_file(module, checkpoint, name) if checkpoint is not None else None
    module.eval()
    if loaded:
        log(f"checkpoint: {loaded}")
    onnx_options = dict(opset=opset, exporter=Exporter(exporter) if exporter else None)
    options = {"onnx": onnx_options, "torchscript": {}, "pt2": dict(device=device)}

    def strings_of(signature: Signature) -> dict[str, str]:
        return module_strings(name, signature, {
            "torch_version": str(torch.__version__),
            **({"checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint)} if loaded else {}),
            **tolerance_given, **dict(provenance or {})})

    _, signature = export_generating(module, out_dir, formats=list(dict.fromkeys(formats)), name=name, strings_of=strings_of,
                             options=options, log=log, declared=[t.name for t in as_declarations(inputs or ())],
                             tolerance=tolerance)
    for fmt in reduced:  # each written whole or not at all; the f32 files are checked and kept before
        export_weight_only_decoder(out_dir / "model.onnx", get_format(fmt), out=out_dir, force=True,
                                   options=dict(opset=opset, **(weights or {})), log=log)
    return signature  # as every file records it: none is opened again to read it
