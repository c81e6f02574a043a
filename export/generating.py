"""export_module's way for a causal LM kept with its key/value cache (``--task text-generation``, or a
transformers model that generates): the name, folder, checkpoint and metadata as export_module makes them,
the files written and checked by export/generation.py."""
from __future__ import annotations

from pathlib import Path

import torch

from ptx.contract.tensors import Signature, as_declarations
from ptx.contract.validated import tolerance_strings
from ptx.errors import PtxError
from ptx.files import file_sha256
from ptx.infer.model.target import load

from .factory import load_state_dict_file
from .formats.onnx import Exporter
from .generation import export_generating
from .metadata import module_strings
from .module import ModuleExportResult, _check_name, _check_out_dir, _tolerance


def export_with_cache(module, out_dir, *, formats, name, checkpoint, opset, exporter, device, force, provenance, log,
                       asked: bool, inputs, atol=None, rtol=None) -> ModuleExportResult:
    """export_module of a causal LM with its key/value cache (export/generation.py)."""
    if not isinstance(module, torch.nn.Module):
        raise PtxError(f"export_module takes an nn.Module, not {type(module).__name__}")
    log(f"task: text-generation ({'asked' if asked else f'{type(module).__name__} generates'}): the decoder is exported "
        "with its key/value cache" + ("" if asked else "; --task forward exports its logits alone"))
    name = _check_name(name or type(module).__name__)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
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
            **tolerance_strings(atol, rtol), **dict(provenance or {})})

    done = export_generating(module, out_dir, formats=list(dict.fromkeys(formats)), name=name, strings_of=strings_of,
                             options=options, log=log, declared=[t.name for t in as_declarations(inputs or ())],
                             tolerance=lambda sig, on: _tolerance(sig, on, atol, rtol))
    return ModuleExportResult(out_dir, name, load(done[0][1]).signature)
