"""What a model looks like to Triton and to any Open Inference Protocol (v2) client: tensor names,
data types, dims, whether the server may batch it, and its Triton config.pbtxt. Torch-free: the
`triton` export writes this config, and `ptx serve` answers model metadata and config from the
same definitions, so a client written for one runs unchanged against the other.

Triton's implicit batching needs the batch on the first axis: a model with max_batch_size > 0 whose
batch is elsewhere fails to load ("the first dimension must be -1"). Batch-first models get
max_batch_size and a dynamic_batching block; lstm (batch on axis 1) and the token models (seq,
batch) get max_batch_size 0 and their full shape with -1 for every dynamic dimension.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .schema import Contract, Task, ValueEnum, signature_of_contract

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
README_FILE = "README.md"
VERSION = "1"
MAX_BATCH_SIZE = 256  # the largest batch Triton's dynamic batcher forms for a batch-first model
MAX_QUEUE_DELAY_US = 100  # how long the batcher may hold a request to fill a batch

# -- the Open Inference Protocol's names, one definition for `ptx serve` and for ptx's client ----

SERVER_NAME = "ptx"  # ptx serve's name in its server metadata: how a client knows the server is ptx's
# v2 datatype -> numpy dtype name (BYTES is handled apart: a list, or object array, of bytes elements).
V2_TYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
            "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
            "FP32": "float32", "FP64": "float64"}
V2_OF = {v: k for k, v in V2_TYPES.items()}  # numpy dtype name -> v2 datatype
BYTES = "BYTES"
# gRPC InferTensorContents' field for each datatype (typed contents, for a peer that sends no raw bytes).
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", BYTES: "bytes_contents"}


class TritonBackend(ValueEnum):
    ONNXRUNTIME = "onnxruntime"
    PYTORCH = "pytorch"


@dataclass(frozen=True)
class Platform:
    platform: str  # config.pbtxt's platform
    fmt: str  # the ptx export format of the model file
    file_name: str  # Triton's default model file name for the platform


PLATFORMS = {
    TritonBackend.ONNXRUNTIME: Platform("onnxruntime_onnx", "onnx", "model.onnx"),
    TritonBackend.PYTORCH: Platform("pytorch_libtorch", "torchscript", "model.pt"),
}


def tensor_names(contract: Contract, backend: TritonBackend) -> tuple[str, str]:
    """Triton's names for the input and output. ONNX keeps the graph's names; TorchScript has no
    tensor names, so Triton's PyTorch backend follows the <name>__<index> convention (INPUT__0 is
    forward's first argument, OUTPUT__0 its first result)."""
    names = positional_names(signature_of_contract(contract), PLATFORMS[backend].fmt)
    return names[contract.input.name], names[contract.output.name]


def has_label_file(contract: Contract) -> bool:
    """Triton's classification extension reads one label per output element: classifiers with one
    answer per sample (not binary models' single probability, nor rnn-hello's per position)."""
    return contract.task is Task.CLASSIFICATION and not contract.per_position


def model_config(name: str, contract: Contract, backend: TritonBackend, *, max_batch_size: int = MAX_BATCH_SIZE,
                 max_queue_delay_us: int = MAX_QUEUE_DELAY_US, subject: str | None = None) -> str:
    """config.pbtxt for a tutorial model: its tensors' (signature_config, the one writer), with what
    its contract adds: its description, how its input is preprocessed, and a classifier's label file
    (the batcher's limits as given: `ptx serve` reports its own). ``subject``: how `ptx export` named
    it, where not by its name (a file of it)."""
    shape = ", ".join(str(d) for d in contract.input.shape)
    comments = (f"Written by ptx export {subject or name} --format triton: {' '.join(contract.description.split())}",
                f"Input: {contract.input.name} ({shape}), axes {', '.join(contract.input.axes)}; preprocessed as "
                f"{README_FILE} says.")
    return signature_config(name, signature_of_contract(contract), PLATFORMS[backend].fmt,
                            max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, comments=comments,
                            label_file=LABELS_FILE if has_label_file(contract) else None)


# -- a model of any signature (a user's own file) -------------------------------------------------

TRITON_PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}  # by model file kind


def signature_batch_first(signature) -> bool:
    """Triton can batch a model itself only when every input and output has its batch on axis 0."""
    return all(t.batch_axis == 0 for t in (*signature.inputs, *signature.outputs)) and bool(signature.inputs)


def positional_names(signature, kind: str, positional: bool | None = None) -> dict[str, str]:
    """ptx's tensor name -> Triton's: TorchScript keeps no tensor names, so Triton's PyTorch backend
    calls forward's arguments INPUT__0, INPUT__1, ... and its results OUTPUT__0, ... in order; an
    ONNX file keeps its graph's names. ``positional`` overrides what the kind says."""
    if not (kind == "torchscript" if positional is None else positional):
        return {t.name: t.name for t in (*signature.inputs, *signature.outputs)}
    return {**{t.name: f"INPUT__{i}" for i, t in enumerate(signature.inputs)},
            **{t.name: f"OUTPUT__{i}" for i, t in enumerate(signature.outputs)}}


def signature_config(name: str, signature, kind: str, *, max_batch_size: int = MAX_BATCH_SIZE,
                     max_queue_delay_us: int = MAX_QUEUE_DELAY_US, comments: tuple[str, ...] = (),
                     positional: bool | None = None, label_file: str | None = None) -> str:
    """config.pbtxt for a model known by its tensors alone (``ptx.contract.tensors.Signature``):
    Triton's ModelConfig in protobuf text format. Batch-first models (every tensor's batch on axis
    0) get ``max_batch_size`` and dynamic batching with dims that leave the batch out; any other
    (a batch elsewhere, a scalar input, a batch fixed by the exporter) gets ``max_batch_size: 0``
    and full dims, -1 for every symbol. A scalar is ``dims: [1]`` reshaped to ``[]``: Triton's
    config has no empty dims. ``positional``: name tensors INPUT__i/OUTPUT__i (the default for
    TorchScript, as Triton's PyTorch backend reads them; `ptx serve` names them as it takes them).
    ``label_file``: the outputs' labels, one per element (Triton's classification extension)."""
    first = signature_batch_first(signature)
    names = positional_names(signature, kind, positional)
    lines = [f"# {c}" for c in comments]
    if any(names[t.name] != t.name for t in signature.inputs):
        lines.append("# TorchScript keeps no tensor names: Triton's PyTorch backend takes forward's arguments and "
                     "results by position: " + ", ".join(f"{names[t.name]} is {t.name}"
                                                          for t in (*signature.inputs, *signature.outputs)) + ".")
    if not first:
        where = sorted({f"{t.name} on axis {t.batch_axis}" for t in (*signature.inputs, *signature.outputs)
                        if t.batch_axis not in (0, None)})
        none = [t.name for t in (*signature.inputs, *signature.outputs) if t.batch_axis is None]
        why = "; ".join(filter(None, [f"batch {', '.join(where)}" if where else "",
                                      f"no batch axis: {', '.join(none)}" if none else ""]))
        lines.append(f"# Not every tensor has its batch on axis 0 ({why}): Triton cannot batch this model itself "
                     "(max_batch_size 0), so every request carries its full shape.")
    lines += [f'name: "{name}"', f'platform: "{TRITON_PLATFORMS[kind]}"',
              f"max_batch_size: {max_batch_size if first else 0}"]
    for section, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        lines.append(f"{section} [")
        for i, t in enumerate(tensors):
            dims = [-1 if isinstance(d, str) else d for axis, d in enumerate(t.shape) if not (first and axis == 0)]
            lines += ["  {", f'    name: "{names[t.name]}"', f"    data_type: {t.dtype_info.triton}",
                      f"    dims: {json.dumps(dims or [1])}"]
            if not dims:
                lines.append("    reshape: { shape: [ ] }")
            if label_file and section == "output":
                lines.append(f'    label_filename: "{label_file}"')
            lines.append("  }," if i < len(tensors) - 1 else "  }")
        lines.append("]")
    if first:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    return "\n".join(lines) + "\n"
