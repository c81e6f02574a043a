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

from .names import BATCH
from .schema import Contract, DType, Task, ValueEnum

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
README_FILE = "README.md"
VERSION = "1"
MAX_BATCH_SIZE = 256  # the largest batch Triton's dynamic batcher forms for a batch-first model
MAX_QUEUE_DELAY_US = 100  # how long the batcher may hold a request to fill a batch
TRITON_TYPES = {DType.FLOAT32: "TYPE_FP32", DType.INT64: "TYPE_INT64"}
# The v2 protocol's datatype names (tritonclient's InferInput datatypes).
CLIENT_TYPES = {DType.FLOAT32: "FP32", DType.INT64: "INT64"}


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
    if backend is TritonBackend.PYTORCH:
        return "INPUT__0", "OUTPUT__0"
    return contract.input.name, contract.output.name


def batch_first(contract: Contract) -> bool:
    """Triton can batch a model itself only when the batch is the first axis of input and output."""
    return contract.input.batch_axis == 0 and contract.output.batch_axis == 0


def tensor_dims(shape, drop_batch: bool) -> list[int]:
    """Triton's dims: -1 for each dynamic dimension; the batch dropped when Triton batches."""
    return [-1 if isinstance(d, str) else d for d in shape if not (drop_batch and d == BATCH)]


def has_label_file(contract: Contract) -> bool:
    """Triton's classification extension reads one label per output element: classifiers with one
    answer per sample (not binary models' single probability, nor rnn-hello's per position)."""
    return contract.task is Task.CLASSIFICATION and not contract.per_position


def model_config(name: str, contract: Contract, backend: TritonBackend, *, max_batch_size: int = MAX_BATCH_SIZE,
                 max_queue_delay_us: int = MAX_QUEUE_DELAY_US) -> str:
    """config.pbtxt for ``contract``: Triton's ModelConfig in protobuf text format (the batcher's
    limits as given: `ptx serve` reports its own)."""
    first = batch_first(contract)
    in_name, out_name = tensor_names(contract, backend)
    in_dims, out_dims = tensor_dims(contract.input.shape, first), tensor_dims(contract.output.shape, first)
    label = f'\n    label_filename: "{LABELS_FILE}"' if has_label_file(contract) else ""
    shape = ", ".join(str(d) for d in contract.input.shape)
    lines = [
        f"# Written by ptx export {name} --format triton: {' '.join(contract.description.split())}",
        f"# Input: {contract.input.name} ({shape}), axes {', '.join(contract.input.axes)}; preprocessed as "
        f"{README_FILE} says.",
        f'name: "{name}"',
        f'platform: "{PLATFORMS[backend].platform}"',
        f"max_batch_size: {max_batch_size if first else 0}",
        "input [",
        "  {",
        f'    name: "{in_name}"',
        f"    data_type: {TRITON_TYPES[contract.input.dtype]}",
        f"    dims: {json.dumps(in_dims)}",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{out_name}"',
        f"    data_type: {TRITON_TYPES[contract.output.dtype]}",
        f"    dims: {json.dumps(out_dims)}{label}",
        "  }",
        "]",
    ]
    if first:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    else:
        lines.insert(2, f"# The batch is axis {contract.input.batch_axis} of the input, not the first: Triton "
                        "cannot batch it itself (max_batch_size 0), so every request carries its full shape.")
    return "\n".join(lines) + "\n"
