"""Names every stage shares, defined once: symbolic axes, artifact files, formats, opset."""
from __future__ import annotations

BATCH = "batch"  # the dynamic batch dimension of an input or output shape
SEQ = "seq"  # a dynamic sequence length (token models)

SCHEMA_VERSION = 1  # of the ptx.contract document; bump when a reader could misread a new writer
METADATA_PREFIX = "ptx."  # ONNX metadata_props keys; TorchScript keeps the same map in TORCHSCRIPT_EXTRA_FILE
TORCHSCRIPT_EXTRA_FILE = "ptx.json"

CHECKPOINT_FILE = "checkpoint.pt"
# Artifact format -> the file it is written to inside a run folder. The export-format registry
# (ptx.export.formats) and the backend registry (ptx.infer.runtime.backends) refer to formats by these names.
CHECKPOINT_FORMAT = "checkpoint"
ARTIFACT_FILES = {
    CHECKPOINT_FORMAT: CHECKPOINT_FILE,
    "onnx": "model.onnx",
    "torchscript": "model.torchscript.pt",
    "pt2": "model.pt2",  # torch.export + AOTInductor package (on request: a compile takes ~40 s)
    "onnx-int8": "model.int8.onnx",  # onnxruntime.quantization's QDQ graph, for ONNX Runtime
    "openvino-int8": "model.openvino-int8.onnx",  # NNCF's QDQ graph, for OpenVINO
    # Weight-only: the MatMul weights stored in 4 or 8 bits, activations f32 (a language model's decoding
    # reads every weight once per token, so its time per token follows the weights' bytes).
    "onnx-int4": "model.int4.onnx",  # onnxruntime's MatMulNBits quantizer, for ONNX Runtime
    "onnx-int8w": "model.int8w.onnx",
    "openvino-int4": "model.openvino-int4.onnx",  # NNCF's compress_weights, for OpenVINO
    "openvino-int8w": "model.openvino-int8w.onnx",
}
# What an export that names no format writes: the two portable files. pt2 (a compile takes ~40 s per
# model on 2 cores) and int8 (an opt-in trade of accuracy for speed) are written on request only
# (`--format all` still writes them). Read by export's CLI and by infer's "run `ptx export ...`" advice.
DEFAULT_FORMATS = ("onnx", "torchscript")
# The int8 formats: an ONNX graph with Q/DQ nodes, each made by the quantizer of the runtime that
# serves it. Either runs on both runtimes; a file records which it is (ptx.format, int8_format).
INT8_FORMATS = ("onnx-int8", "openvino-int8")
# The weight-only formats: block-quantized weights (MatMulNBits, GatherBlockQuantized, DequantizeLinear of
# the weights) beside f32 activations; a decoder with its cache among them.
WEIGHT_ONLY_FORMATS = ("onnx-int4", "onnx-int8w", "openvino-int4", "openvino-int8w")
INT8, INT4 = "int8", "int4"
# The precisions a file is (not a mode a runtime runs an f32 file in), and the formats whose files are each.
FILE_PRECISIONS = {INT8: (*INT8_FORMATS, "onnx-int8w", "openvino-int8w"), INT4: ("onnx-int4", "openvino-int4")}
# The file a backend reads at a precision, and the one it reads where that one is not there: a decoder has
# no Q/DQ int8 (its activations have no range to calibrate), and its int8 is the weight-only file.
TWIN_FORMATS = {"onnx-int8": ("onnx-int8", "onnx-int8w"), "openvino-int8": ("openvino-int8", "openvino-int8w")}
# Numeric precisions a backend may run a model at. f32 is judged by the agreement rule's atol;
# the reduced ones by labels and accuracy (ptx.contract.accuracy_rule.judge_reduced_precision).
FULL_PRECISION = "f32"
TF32 = "tf32"  # the f32 file with CUDA's TensorFloat-32 matmuls and convolutions: faster, 10-bit mantissa
PRECISIONS = (FULL_PRECISION, "bf16", TF32, INT8, INT4)
# Precisions that exist on one kind of device only: TF32 is a mode of NVIDIA's GPUs (Ampere and later).
PRECISION_DEVICES = {TF32: "cuda"}
DEFAULT_RUNS_ROOT = "runs"
# What `ptx verify` and `ptx bench` found on a machine, kept in the run folder for `ptx serve`.
VERIFY_RECORD_FILE = "verify.json"
BENCH_RECORD_FILE = "bench.json"
DEFAULT_OPSET = 18


# What a model file's name ends in, and what ptx's own exports add before it (model.int8.onnx,
# model.torchscript.pt): a model's name is what is left, every other dot kept
# (ch_ppocr_mobile_v2.0_cls_infer.onnx is the model ch_ppocr_mobile_v2.0_cls_infer).
MODEL_FILE_SUFFIXES = (".onnx", ".pt", ".pt2", ".pth", ".ts", ".jit")
# Every export file's infix (model.int8.onnx's .int8), longest first: .openvino-int8w before .int8w.
EXPORT_INFIXES = tuple(sorted({name[len("model"):name.rindex(".")] for name in ARTIFACT_FILES.values()
                               if name.startswith("model.") and name.count(".") > 1}, key=len, reverse=True))


def weight_only_file(path, metadata=None) -> bool:
    """Whether a file is a weight-only export's (its MatMul weights stored in 4 or 8 bits, each widened where it is
    read, the rest of the graph f32): by the format its ``metadata`` records where it records one, else by its
    name (model.int8w.onnx, net.openvino-int4.onnx), as a plan that has read nothing yet tells it."""
    return _of_formats(path, metadata, WEIGHT_ONLY_FORMATS)


def dequantized_weights_file(path, metadata=None) -> bool:
    """Whether a file's weights are DequantizeLinear nodes of 4- or 8-bit blocks (NNCF's openvino-int4 and
    openvino-int8w), not an operator that reads them packed (onnx-int4's MatMulNBits): by its recorded format, else
    its name."""
    return _of_formats(path, metadata, ("openvino-int4", "openvino-int8w"))


def _of_formats(path, metadata, formats) -> bool:
    """Whether a file is of one of ``formats``: the format its ``metadata`` records where it records one, else the
    name an export of that format writes (model.int8w.onnx, or a user's net.openvino-int4.onnx)."""
    from pathlib import Path

    recorded = (metadata or {}).get("format")
    if recorded:
        return recorded in formats
    name = Path(path).name.lower()
    stem = name[:-len(".onnx")] if name.endswith(".onnx") else name
    return any(stem.endswith(ARTIFACT_FILES[fmt][len("model"):-len(".onnx")]) for fmt in formats)


def int8_format(metadata) -> str:
    """Which reduced format a file ptx quantized is: its ptx.format (written since openvino-int8 came),
    else onnx-int8, the only one there was before."""
    recorded = metadata.get("format")
    return recorded if file_precision(recorded) else INT8_FORMATS[0]


def file_precision(fmt: str) -> str | None:
    """The precision a file of format ``fmt`` is (int8, int4), or None for an f32 one."""
    return next((p for p, formats in FILE_PRECISIONS.items() if fmt in formats), None)


def twin_name(path, fmt: str) -> str:
    """The file an int8 format writes beside a user's f32 file: net.onnx -> net.int8.onnx,
    net.openvino-int8.onnx."""
    from pathlib import Path

    path = Path(path)
    infix = ARTIFACT_FILES[fmt][len("model"):-len(".onnx")]
    return f"{path.stem}{infix}{path.suffix}"


def model_name(path) -> str:
    """A model file's name without its suffix and ptx's own infix: net.onnx, net.int8.onnx -> net."""
    from pathlib import Path

    name = Path(path).name
    suffix = next((s for s in MODEL_FILE_SUFFIXES if name.lower().endswith(s) and len(name) > len(s)), "")
    name = name[:len(name) - len(suffix)]
    infix = next((i for i in EXPORT_INFIXES if name.endswith(i) and len(name) > len(i)), "")
    return name.removesuffix(infix)
