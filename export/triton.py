"""A Triton Inference Server model repository for one model: REPO/NAME/config.pbtxt, 1/model.onnx
(platform onnxruntime_onnx) or 1/model.pt (TorchScript, platform pytorch_libtorch), labels.txt and a
README.md saying what a client must send. A user's own model file gets the same folder, its
config written from its tensors alone (export_triton_file).

The model file is the same validated export that ``ptx export`` writes (validated through its
serving Predictor before it is kept). The whole model folder is built under a temporary name beside
its final place and renamed in only when complete, so a failed export leaves no half folder.

The config itself (names, data types, dims, batching) is ptx.contract.protocol's, which `ptx serve`
answers model metadata from too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ptx.atomic import atomic_folder, ensure_writable_dir
from ptx.contract import ARTIFACT_FILES, Contract, Task
from ptx.contract.protocol import (CONFIG_FILE, LABELS_FILE, MAX_BATCH_SIZE, PLATFORMS, README_FILE,
                                   TRITON_PLATFORMS, VERSION, Platform, TritonBackend, has_label_file, model_config,
                                   signature_batch_first, signature_config, tensor_names)
from ptx.contract.schema import EncodeStep, NormalizeStep, PadStep, PictureStep, ScaleStep
from ptx.errors import PtxError

from . import formats

if TYPE_CHECKING:
    from .validate import OpenModel as OpenPredictor
# export_model (torch) is imported where a tutorial model is exported: a user's ONNX file makes its
# Triton folder without torch.


def _serving_backend(platform: Platform) -> str:
    """The ptx backend that reads (and so checks) the platform's model file."""
    return formats.get(platform.fmt).serving_backend


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


def readme(name: str, contract: Contract, backend: TritonBackend) -> str:
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
    return f"""# {name} (Triton model, written by `ptx export {name} --format triton`)

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


_PTX_FILES = {CONFIG_FILE, LABELS_FILE, README_FILE, VERSION}


def _ptx_model_in(folder: Path, name: str, open_predictor: OpenPredictor) -> bool:
    """Whether ``folder`` is a model folder that ptx wrote for ``name`` and nothing else."""
    if {p.name for p in folder.iterdir()} - _PTX_FILES:
        return False
    version = folder / VERSION
    files = [version / p.file_name for p in PLATFORMS.values() if (version / p.file_name).is_file()]
    if not files or not version.is_dir() or {p.name for p in version.iterdir()} - {f.name for f in files}:
        return False
    serving = {p.file_name: _serving_backend(p) for p in PLATFORMS.values()}
    try:
        return all(open_predictor(f, serving[f.name], "cpu").contract.model == name for f in files)
    except PtxError:
        return False


def export_triton(name: str, repo: str | Path, *, open_predictor: OpenPredictor,
                  backend: TritonBackend | str = TritonBackend.ONNXRUNTIME, force: bool = False,
                  log: Callable[[str], None] = print, **export_options) -> Path:
    """Write ``repo/name``: a Triton model folder holding ``name``'s validated export. Returns it.

    An existing ``repo/name`` is replaced only when ptx wrote it for the same model (a re-export),
    or with ``force``; anything else there is refused, untouched."""
    backend = TritonBackend(backend)
    platform = PLATFORMS[backend]
    repo = ensure_writable_dir(repo)
    final = repo / name
    if final.exists() and not final.is_dir():
        raise PtxError(f"{final} exists and is not a folder: pass another --out")
    if final.is_dir() and not force and not _ptx_model_in(final, name, open_predictor):
        raise PtxError(f"{final} holds files that ptx did not write for {name} (another model, other versions or "
                       "a hand-made config): pass another --out, or --force to replace the folder")
    try:
        with atomic_folder(final) as staging:
            version = staging / VERSION
            version.mkdir()

            def report(line: str) -> None:  # the export's own report line, naming the file where it will live
                log(line.replace(str(version / ARTIFACT_FILES[platform.fmt]),
                                 str(final / VERSION / platform.file_name)))

            from .api import export_model

            results = export_model(name, [platform.fmt], open_predictor=open_predictor, out=version, log=report,
                                   **export_options)
            results[0].path.rename(version / platform.file_name)
            contract = open_predictor(version / platform.file_name, _serving_backend(platform), "cpu").contract
            (staging / CONFIG_FILE).write_text(model_config(name, contract, backend))
            if has_label_file(contract):
                (staging / LABELS_FILE).write_text("\n".join(contract.labels) + "\n")
            (staging / README_FILE).write_text(readme(name, contract, backend))
    except OSError as exc:
        raise PtxError(f"cannot write {final}: {exc.strerror or exc}; nothing was changed there") from None
    written = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())
    log(f"triton      {final}  {', '.join(written)}  (platform {platform.platform})")
    return final


# -- a user's own model file ----------------------------------------------------------------------

OWN_KIND_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript"}
WRITTEN_BY = "# Written by ptx export "


def _written_by_ptx(folder: Path) -> bool:
    """Whether ``folder`` is a Triton model folder ptx export wrote (a re-export may replace it)."""
    config = folder / CONFIG_FILE
    if {p.name for p in folder.iterdir()} - _PTX_FILES or not config.is_file():
        return False
    with open(config, encoding="utf-8", errors="replace") as handle:
        return handle.readline().startswith(WRITTEN_BY)


def own_readme(name: str, path: Path, kind: str, signature, file_name: str) -> str:
    from ptx.contract.protocol import positional_names

    names = positional_names(signature, kind)
    first = signature_batch_first(signature)

    def rows(tensors):
        return "\n".join(f"| `{names[t.name]}` | `{t.name}` | {t.dtype_info.v2} | {t.dims_text()} | "
                         f"{'none' if t.batch_axis is None else t.batch_axis} |" for t in tensors)

    batching = ("Every input and output has its batch on axis 0: Triton batches requests itself (max_batch_size "
                f"{MAX_BATCH_SIZE}, dynamic batching): a request sends each tensor with its batch first, as the "
                "table's shapes say."
                if first else
                "Not every tensor has its batch on axis 0, so Triton does not batch this model itself "
                "(max_batch_size 0): every request sends each tensor's full shape (a scalar as shape [1]).")
    declared = "" if kind == "onnx" else " (with the same --input declarations)"
    return f"""# {name} (Triton model, written by `ptx export {path.name} --format triton`)

Your own model: `{VERSION}/{file_name}` is a copy of `{path.name}` ({OWN_KIND_NAMES[kind]}), platform
`{TRITON_PLATFORMS[kind]}`.

| Triton name | ptx name | datatype | shape | batch axis |
| --- | --- | --- | --- | --- |
{rows(signature.inputs)}
{rows(signature.outputs)}

{batching}

`ptx serve {path.name}`{declared} serves the same tensors by their ptx names over the same protocol.
"""


def export_triton_file(path: str | Path, kind: str, signature, repo: str | Path, *, force: bool = False,
                       log: Callable[[str], None] = print) -> Path:
    """Write ``repo/NAME`` (NAME: the file's name without its suffix) for a user's own model file
    of ``kind`` (onnx or torchscript) whose tensors are ``signature``: config.pbtxt from the
    signature (ptx.contract.protocol.signature_config), ``1/model.onnx`` or ``1/model.pt`` (a copy,
    with an ONNX file's external data beside it) and a README. Built beside its place and renamed in
    whole; an existing folder is replaced only when ptx export wrote it, or with ``force``."""
    import shutil

    from ptx.contract.onnx_wire import external_data_files

    path = Path(path)
    if kind not in TRITON_PLATFORMS:
        raise PtxError(f"{path} is a {kind} package: Triton serves ONNX (onnxruntime_onnx) and TorchScript "
                       "(pytorch_libtorch) files; export your model to one of those for a Triton repository")
    name = path.name.split(".")[0]
    file_name = PLATFORMS[TritonBackend.ONNXRUNTIME if kind == "onnx" else TritonBackend.PYTORCH].file_name
    repo = ensure_writable_dir(repo)
    final = repo / name
    if final.exists() and not final.is_dir():
        raise PtxError(f"{final} exists and is not a folder: pass another --out")
    if final.is_dir() and not force and not _written_by_ptx(final):
        raise PtxError(f"{final} holds files that ptx did not write (another model, other versions or a hand-made "
                       "config): pass another --out, or --force to replace the folder")
    source = "its graph names them" if kind == "onnx" else "declared with --input (forward()'s order)"
    comment = f"Written by ptx export {path.name} --format triton: your own model ({OWN_KIND_NAMES[kind]}), its " \
              f"tensors as {source}."
    try:
        with atomic_folder(final) as staging:
            version = staging / VERSION
            version.mkdir()
            shutil.copy2(path, version / file_name)
            for location in external_data_files(path) if kind == "onnx" else []:
                (version / location).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path.parent / location, version / location)
            (staging / CONFIG_FILE).write_text(signature_config(name, signature, kind, comments=(comment,)))
            (staging / README_FILE).write_text(own_readme(name, path, kind, signature, file_name))
    except OSError as exc:
        raise PtxError(f"cannot write {final}: {exc.strerror or exc}; nothing was changed there") from None
    written = sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())
    log(f"triton      {final}  {', '.join(written)}  (platform {TRITON_PLATFORMS[kind]}, max_batch_size "
        f"{MAX_BATCH_SIZE if signature_batch_first(signature) else 0})")
    return final
