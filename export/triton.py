"""A Triton Inference Server model repository for one model: REPO/NAME/config.pbtxt, 1/model.onnx
(platform onnxruntime_onnx) or 1/model.pt (TorchScript, platform pytorch_libtorch), a README.md
saying what a client must send, and labels.txt for a classifier. One writer (``export_triton``) for
every kind of model (export/sources.py): a tutorial model's validated export, a user's module
exported and validated, or a user's model file copied as it is.

The config comes from what the file is once opened as ptx serves it: a file that carries a
tutorial contract gets the contract's config, README (its preprocessing, its labels) and label
file; any other is described by its tensors alone (ptx.contract.protocol's config, which `ptx serve`
answers model metadata from too). The whole model folder is built under a temporary name beside
its final place and renamed in only when complete, so a failed export leaves no half folder.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Callable

from ptx.atomic import ensure_writable_dir
from ptx.contract import Contract, Task
from ptx.contract.protocol import (CONFIG_FILE, LABELS_FILE, MAX_BATCH_SIZE, PLATFORMS, README_FILE, VERSION,
                                   TritonBackend, has_label_file, model_config, positional_names,
                                   signature_batch_first, signature_config, tensor_names)
from ptx.contract.schema import EncodeStep, NormalizeStep, PadStep, PictureStep, ScaleStep

from .sources import KIND_NAMES, Source, contract_of, tutorial_source, verify_line, write_folder

_PTX_FILES = {CONFIG_FILE, LABELS_FILE, README_FILE, VERSION}
TRITON_HTTP_PORT = 8000  # tritonserver's default --http-port


def _step_text(step) -> str:
    if isinstance(step, PictureStep):
        params = ", ".join(f"{k} {v}" for k, v in step.params)
        return (f"picture pipeline `{step.pipeline}` ({params}): a photo or scan becomes one {step.canvas}x"
                f"{step.canvas} uint8 picture, light ink on a dark background, made the way the training "
                "pictures were (ptx's docs/artifact-format.md, \"Picture pipelines\", defines each step); "
                "dataset samples already have this form")
    if isinstance(step, ScaleStep):
        as_fraction = f" (1/{round(1 / step.factor)})" if abs(round(1 / step.factor) * step.factor - 1) < 1e-9 else ""
        return f"`x = x * {step.factor!r}`{as_fraction}, in float32"
    if isinstance(step, NormalizeStep):
        return f"`x = (x - {list(step.mean)}) / {list(step.std)}` (per feature when there are several)"
    if isinstance(step, PadStep):
        return f"pad {step.pixels} zero pixels on every side of the picture (after normalising)"
    if isinstance(step, EncodeStep):
        if step.encoding == "vocab":
            return (f"each character -> its index in {step.vocab!r} (no other characters; no padding id, so "
                    "only words of one length share a request)")
        return (f"each character -> its Latin-1 code (int64), {step.unknown_id} for characters outside Latin-1; "
                f"shorter words of a request are padded at the end with {step.pad_id}")
    raise TypeError(step)


def readme(name: str, contract: Contract, backend: TritonBackend, subject: str | None = None) -> str:
    """A tutorial contract's README: what a client must do to a picture, a word or a row first."""
    in_name, out_name = tensor_names(contract, backend)
    first = signature_batch_first(contract.signature)
    shape = ", ".join(str(d) for d in contract.input.shape)
    sample = ", ".join(str(d) for d in contract.input.sample_shape)
    axis = contract.input.batch_axis
    layout = [f"stack the N samples as an array of shape (N, {sample})"]
    if axis:
        layout.append(f"move the batch to axis {axis}: `x = np.moveaxis(x, 0, {axis})`, giving ({shape})")
    steps = "\n".join(f"{i}. {text}" for i, text in
                      enumerate([*(_step_text(s) for s in contract.steps), *layout], 1))
    if contract.task is Task.CLASSIFICATION and contract.per_position:
        answer = (f"`{out_name}` holds logits per position; the label of each position is the argmax over the "
                  f"last axis, an index into {list(contract.labels)}.")
    elif contract.task is Task.CLASSIFICATION:
        answer = (f"`{out_name}` holds one logit per label; the answer is the argmax, whose name is that line of "
                  f"`{LABELS_FILE}` (Triton's classification extension returns it: ask for the output with "
                  "`class_count`).")
    elif contract.task is Task.BINARY:
        answer = (f"`{out_name}` holds P(label 1); the answer is {contract.labels[1]!r} when it is at least 0.5, "
                  f"else {contract.labels[0]!r}.")
    else:
        answer = f"`{out_name}` holds the predicted value."
    where = ("ONNX metadata_props `ptx.*`" if backend is TritonBackend.ONNXRUNTIME
             else 'the TorchScript extra file `ptx.json`: `torch.jit.load(path, _extra_files={"ptx.json": ""})`')
    batching = (f"Triton batches requests itself (max_batch_size {MAX_BATCH_SIZE}, dynamic batching): a request "
                f"sends `[N, {', '.join(str(d) for d in contract.input.v2_shape()[1:])}]`."
                if first else
                f"The batch is axis {contract.input.batch_axis} of the input, so Triton does not batch this model "
                f"itself (max_batch_size 0): a request sends the full shape ({shape}), the batch included.")
    return f"""# {name} (Triton model, written by `ptx export {subject or name} --format triton`)

{contract.description}

- platform `{PLATFORMS[backend].platform}`, file `{VERSION}/{PLATFORMS[backend].file_name}`
- input `{in_name}`: {contract.input.dtype_info.v2}, shape ({shape}), axes {', '.join(contract.input.axes)}
- output `{out_name}`: {contract.output.dtype_info.v2}, shape ({', '.join(str(d) for d in contract.output.shape)})

{batching}

## What a client must do first

Triton receives tensors, not pictures or words: apply these steps (the model's ptx contract, in
order, then its layout):

{steps}

{answer}

With ptx installed, `ptx.contract.transforms.to_model_input(raw_samples, contract)` applies the
tensor steps and the layout. The model file carries this contract itself ({where}; ptx's
docs/artifact-format.md defines every key).

## The contract

```json
{json.dumps(contract.to_dict(), indent=2)}
```
"""


def own_readme(source: Source, backend: TritonBackend, signature) -> str:
    """The README of a model known by its tensors alone: Triton's names for them and ptx's."""
    platform, kind = PLATFORMS[backend], PLATFORMS[backend].fmt
    names = positional_names(signature, kind)

    def rows(tensors):
        return "\n".join(f"| `{names[t.name]}` | `{t.name}` | {t.dtype_info.v2} | {t.dims_text()} | "
                         f"{'none' if t.batch_axis is None else t.batch_axis} |" for t in tensors)

    batching = ("Every input and output has its batch on axis 0: Triton batches requests itself (max_batch_size "
                f"{MAX_BATCH_SIZE}, dynamic batching): a request sends each tensor with its batch first, as the "
                "table's shapes say."
                if signature_batch_first(signature) else
                "Not every tensor has its batch on axis 0, so Triton does not batch this model itself "
                "(max_batch_size 0): every request sends each tensor's full shape (a scalar as shape [1]).")
    declared = "" if kind == "onnx" else " (with the same --input declarations)"
    return f"""# {source.name} (Triton model, written by `ptx export {source.subject} --format triton`)

Your own model: `{VERSION}/{platform.file_name}` is {source.made} ({KIND_NAMES[kind]}), platform
`{platform.platform}`.

| Triton name | ptx name | datatype | shape | batch axis |
| --- | --- | --- | --- | --- |
{rows(signature.inputs)}
{rows(signature.outputs)}

{batching}

`ptx serve {VERSION}/{platform.file_name}`{declared} serves the same tensors by their ptx names over the same
protocol.
"""


def export_triton(model: str | Source, repo: str | Path, *, backend: TritonBackend | str = TritonBackend.ONNXRUNTIME,
                  force: bool = False, log: Callable[[str], None] = print, **export_options) -> Path:
    """Write ``repo/NAME`` for ``model``: a Source (export/sources.py), or a tutorial model's name,
    exported with ``export_options`` (export_model's). The folder holds its validated
    file (``1/model.onnx``, or ``1/model.pt`` with ``backend`` pytorch), config.pbtxt, a README and,
    for a classifier with a contract, its label file. Returns the folder. An existing one is
    replaced only when ptx export wrote it for the same model (a re-export), or with ``force``;
    anything else there is refused, untouched."""
    source = model if isinstance(model, Source) else tutorial_source(model, **export_options)
    backend = TritonBackend(backend)
    platform = PLATFORMS[backend]
    final = ensure_writable_dir(repo) / source.name

    def foreign(folder: Path) -> str | None:
        # A re-export may replace a folder ptx export wrote for this model: only ptx's files, and a config whose
        # first line says so.
        config = folder / CONFIG_FILE
        if not {p.name for p in folder.iterdir()} - _PTX_FILES and config.is_file():
            with open(config, encoding="utf-8", errors="replace") as handle:
                if handle.readline().startswith(f"# Written by ptx export {source.subject} --format triton"):
                    return None
        return (f"{folder} holds files that ptx did not write for {source.subject} (another model, other versions "
                "or a hand-made config): pass another --out")

    def fill(staging: Path, log: Callable[[str], None]) -> int:
        (staging / VERSION).mkdir()
        with source.place(staging / VERSION / platform.file_name, platform.fmt, log) as model:
            contract = contract_of(model)
            if contract is not None:
                (staging / CONFIG_FILE).write_text(model_config(source.name, contract, backend, subject=source.subject))
                if has_label_file(contract):
                    (staging / LABELS_FILE).write_text("\n".join(contract.labels) + "\n")
                (staging / README_FILE).write_text(readme(source.name, contract, backend, source.subject))
            else:
                named = "its graph names them" if platform.fmt == "onnx" else "forward() takes and returns them"
                comment = (f"Written by ptx export {source.subject} --format triton: your own model "
                           f"({KIND_NAMES[platform.fmt]}), its tensors as {named}.")
                (staging / CONFIG_FILE).write_text(signature_config(source.name, model.signature, platform.fmt,
                                                                    comments=(comment,)))
                (staging / README_FILE).write_text(own_readme(source, backend, model.signature))
            return MAX_BATCH_SIZE if signature_batch_first(model.signature) else 0

    batching, written = write_folder(final, force, foreign, fill, log)
    log(f"triton      {final}  {', '.join(written)}  (platform {platform.platform}, max_batch_size {batching})")
    log(verify_line(f"http://HOST:{TRITON_HTTP_PORT}/v2/models/{source.name}", final / VERSION / platform.file_name,
                    where=f"HOST: where `tritonserver --model-repository {shlex.quote(str(final.parent))}` runs"))
    return final
