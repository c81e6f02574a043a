"""openvino-int4 and openvino-int8w: an ONNX graph whose MatMul weights NNCF compressed
(``nncf.compress_weights``), for OpenVINO (model.openvino-int4.onnx, model.openvino-int8w.onnx, or a user's
FILE.openvino-int4.onnx); activations stay f32.

NNCF's own defaults, as optimum-intel applies them: int8 asymmetric per output channel for int8w; for
int4, asymmetric groups of 128 on ``ratio`` of the MatMuls (1.0 by default: all of them; below it, the
ones NNCF finds least sensitive, the rest int8), the embedding and the head in int8 (NNCF's backup mode,
``all_layers`` off). Given data (a decoder's recorded prompts, run as its first step), NNCF ranks the
layers by their activations and, for int4, runs AWQ and scale estimation on them; without, it is
data-free. Data-free at ratio 1 (the default), NNCF is given the weights a group at a time
(nncf_groups.py), so that a model of any size is compressed in the memory of a group; --ratio below 1 and
--data-aware give it the whole graph, refused in one line where that cannot fit.

The file is ONNX with the weights in DequantizeLinear ahead of each MatMul (int4 blocks need opset 21's
``block_size``: the graph's opset is raised to 21, refused where that would change what one of its ops computes,
weight_only.ops_changed_by; int8w's is raised too where nothing changes, for its weights read blocked,
dequantized_reads.py), which OpenVINO's
ONNX frontend turns into its own compressed-weight MatMul, and ONNX Runtime runs too. NNCF's other way
for opsets below 21, MatMulNBits, writes an asymmetric int4 zero point ONNX Runtime refuses and OpenVINO
misreads (nncf 3.4, onnxruntime 1.31, openvino 2026.4: every top token wrong on a tiny Llama), so the DQ
form is the one written. Why an ONNX file and not OpenVINO's IR: openvino_int8.py says.

A head tied to the embedding is made a constant first (weight_only.constant_weights), so NNCF sees it as
a weight; export says so. NNCF imports torch where it is installed (this export does); the file runs on
OpenVINO without it. NNCF is optional (the openvino extra): without it the format is refused in one line.
"""
from __future__ import annotations

import functools
from pathlib import Path

from ptx.atomic import scratch_folder
from ptx.contract import DEFAULT_OPSET
from ptx.errors import PtxError, first_line
from ptx.infer.runtime.memory_plan import give_back_freed

from ..folder_weights import resolve_lazy
from . import ExportFormat, Written, register
from .onnx import add_metadata, check_opset
from .onnx_weights import tutorial_refused
from .openvino_int8 import imported_nncf, quiet_nncf, unavailable
from ..graph_weights import weights_placed
from .dequantized_reads import dequantized_where_read, per_channel_scales_made_1d
from .nncf_groups import compress_in_groups, weights_to_compress
from .weight_only import check_block_size, ops_changed_by, prepared, quantized_matmuls, raise_opset, saved

DEFAULT_GROUP = {4: 128, 8: -1}  # NNCF's defaults: int4 groups of 128, int8 one scale per output channel
BLOCKED_OPSET = 21  # DequantizeLinear's block_size and the int4 type
LAZY_DATA = "folder.data"  # the folder's tensors, written in float32 for NNCF


def check_options(opset: int = DEFAULT_OPSET, exporter=None, block_size: int | None = None,
                  symmetric: bool | None = None, ratio: float | None = None, fmt: str = "openvino-int4", **_) -> None:
    check_opset(opset, exporter)
    check_block_size(block_size, fmt, per_channel=fmt.endswith("int8w"))
    if ratio is not None and (not 0 < ratio <= 1 or fmt.endswith("int8w")):
        raise PtxError(f"--ratio {ratio}: the share of MatMuls openvino-int4 keeps in 4 bits (the rest int8), above 0 "
                       "and at most 1" + (f"; {fmt} has no 4-bit share" if fmt.endswith("int8w") else ""))


def write(model, example, path: Path, signature, strings: dict[str, str], *, bits: int, fmt: str,
          opset: int = DEFAULT_OPSET, exporter=None, mode: str = "trace", block_size: int | None = None,
          symmetric: bool | None = None, ratio: float | None = None, calibration=None, log=print) -> Written:
    """Compress ``model``'s weights (an nn.Module, exported to f32 ONNX first, or an f32 ONNX path) to
    ``bits`` bits with NNCF into ``path``; ``calibration``: cases of inputs by name NNCF reads the
    activations from (None: data-free)."""
    from ptx.extras import MissingExtraError

    why = unavailable()
    if why:
        raise MissingExtraError(why)
    nncf = imported_nncf()
    group = block_size or DEFAULT_GROUP[bits]
    symmetric = bool(symmetric)
    kind = f"INT{bits}_{'SYM' if symmetric else 'ASYM'}"
    data = bool(calibration)
    options = dict(mode=getattr(nncf.CompressWeightsMode, kind), group_size=group)
    if bits == 4:
        options.update(ratio=ratio or 1.0)
        if data:
            options.update(dataset=nncf.Dataset(list(calibration)), awq=True, scale_estimation=True,
                           subset_size=len(calibration))
    # a weight whose input size is not a multiple of the group gets the largest power of two that divides it (a
    # tiny model's 64 channels under groups of 128), not an error
    fallback = dict(group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST, min_adjusted_group_size=16)
    with scratch_folder(f"ptx-{fmt}-") as scratch:
        ready = prepared(model, example, Path(scratch), signature, strings, opset=opset, exporter=exporter, mode=mode)
        name = ready.base.get("model", path.stem)
        changed = ops_changed_by(ready.proto, BLOCKED_OPSET)
        if bits == 4 and changed:
            raise PtxError(f"{fmt}: its int4 weights need opset {BLOCKED_OPSET}, where {' and '.join(changed)} "
                           f"would change meaning ({name}): export the model at --opset {BLOCKED_OPSET}, or export "
                           f"--format onnx-int4, or serve {ready.served} (f32)")
        if bits == 4:  # its blocks
            raise_opset(ready.proto, BLOCKED_OPSET)
        _, other = weights_to_compress(ready.proto.graph)
        whole = data or options.get("ratio", 1.0) < 1.0 or bool(other)
        try:
            if whole:
                proto = _whole_call(nncf, ready, options, fallback, fmt, other)
            else:  # NNCF's own result, a group of weights at a time (nncf_groups.py says why it is the same)
                proto = ready.proto
                with quiet_nncf():
                    compress_in_groups(proto, ready.folder, (kind, group), fallback)
            per_channel_scales_made_1d(proto)
            kept_per_channel = _raised_for_blocks(proto, changed) if bits == 8 else ""
            reads = dequantized_where_read(proto, ready.folder)
            if not whole:
                weights_placed(proto, ready.folder, path)
        except PtxError:
            raise
        except Exception as exc:  # NNCF raises many types; its first line says what failed
            raise PtxError(f"{fmt}: NNCF's compress_weights failed for {name}: {first_line(exc)}; serve "
                           f"{ready.served} (f32)") from None
        give_back_freed(weights=ready.weights)
        done = sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) + reads[1]  # a table gathered first
        _, left = quantized_matmuls(proto, ())
        if not done:
            raise PtxError(f"{fmt}: NNCF found no MatMul weight to compress in {name}: serve {ready.served} (f32)")
        how = (f"NNCF {nncf.__version__} compress_weights: {kind.lower()}"
               + (f", groups of {group} (fewer where a weight's inputs are not a multiple)" if group > 0
                  else ", per output channel")
               + (f", ratio {options['ratio']:g} (the rest int8)" if bits == 4 else "")
               + (", the embedding and the head int8" if bits == 4 else "")
               + (f", data-aware (AWQ, scale estimation) on {len(calibration)} case{'s' * (len(calibration) != 1)}"
                  if data and bits == 4 else ", data-free")
               + ("; the whole graph at once" if whole else "; a group of weights at a time")
               + f"; {done} weights compressed" + (f", {left} MatMul weights left f32" if left else "")
               + _read_in_8_bits(*reads)
               + (f"; the weights left per channel, which ONNX Runtime dequantizes at every run ({kept_per_channel})"
                  if bits == 8 and kept_per_channel else ""))
        saved(proto, path, ready, fmt, f"int{bits}", how, log)
    made = ready.made
    return Written(how + (f", from the {made.method}" if made else ""), made and made.note, made.hint if made else "")


def _read_in_8_bits(blocked: int, tables: int) -> str:
    """What dequantized_reads.py rewrote, as the export says it."""
    said = [f"{blocked} per-channel weight{'s' * (blocked != 1)} blocked" if blocked else "",
            f"{tables} table{'s' * (tables != 1)} gathered before {'they are' if tables != 1 else 'it is'} "
            "dequantized" if tables else ""]
    said = [s for s in said if s]
    return f"; {' and '.join(said)}, for ONNX Runtime to read in 8 bits" if said else ""


def _raised_for_blocks(proto, changed: list[str]) -> str:
    """int8w's graph raised to opset 21, where its per-channel MatMul weights can be written blocked
    (dequantized_reads.py), or why not: an op whose meaning would change, or a scale of more than one dimension
    left after per_channel_scales_made_1d (21's DequantizeLinear would read it as blocks)."""
    if changed:
        return (f"opset {BLOCKED_OPSET}, where they would be read blocked, would change what "
                f"{' and '.join(changed)} compute")
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}
    wide = sum(1 for n in proto.graph.node if n.op_type == "DequantizeLinear"
               and (len(n.input) < 2 or len(dims.get(n.input[1], [0, 0])) > 1))
    if wide:
        return (f"{wide} of their scales have more than one dimension, which opset {BLOCKED_OPSET}'s DequantizeLinear "
                "would read as blocks: the export's opset kept")
    raise_opset(proto, BLOCKED_OPSET)
    return ""


def _whole_call(nncf, ready, options: dict, fallback: dict, fmt: str, other: list[str]):
    """NNCF's compress_weights on the whole graph (what --ratio below 1 and --data-aware rank or calibrate across),
    refused in one line where it would hold more than the memory available."""
    from nncf.onnx.quantization.backend_parameters import BackendParameters

    from ptx.infer.runtime.memory_plan import MARGIN, size_text
    from ptx.machine import available_memory

    from ..graph_weights import stored_bytes

    need, available = NNCF_HOLDS * stored_bytes(ready.proto) * (1 + MARGIN), available_memory()
    if available is not None and need > available:
        why = (f"{', '.join(other[:3])} read weights that are compressed with the whole graph alone; export it on a "
               "machine with more memory" if other else "--ratio below 1 and --data-aware rank the weights across the "
               "whole model; leave them out to compress a group of weights at a time")
        raise PtxError(f"{fmt}: NNCF would hold every weight at once, about {size_text(need)}, and "
                       f"{size_text(available)} is available: {why}")
    # NNCF reads the weights from the data files itself: a graph traced without them gets them written here
    resolve_lazy(ready.proto, ready.folder, LAZY_DATA)
    # The graph's weights stay in its data file, which NNCF reads them from (a 2 GiB graph is no message NNCF could
    # copy). A weight whose input size is not a multiple of the group gets the largest power of two that divides it
    # (a tiny model's 64 channels under groups of 128), not an error.
    advanced = nncf.AdvancedCompressionParameters(
        **fallback, backend_params={BackendParameters.EXTERNAL_DATA_DIR: str(ready.folder.resolve())})
    graph = ready.proto
    del ready.proto
    with quiet_nncf():
        return nncf.compress_weights(graph, advanced_parameters=advanced, **options)


# NNCF's compress_weights given the whole graph holds every weight at once: 3.1x the float32 weights at its peak
# beside what the export held before it (Qwen2.5-0.5B: 1.98 GB, 7.35 GB at its peak, 2026-11-28).
NNCF_HOLDS = 3.1


def _register(fmt: str, bits: int, about: str) -> None:
    register(ExportFormat(name=fmt, description=about, serving_backend="openvino",
                          write=functools.partial(write, bits=bits, fmt=fmt), precision=f"int{bits}",
                          unsupported=functools.partial(tutorial_refused, fmt=fmt), unavailable=unavailable,
                          add_metadata=add_metadata, check_options=functools.partial(check_options, fmt=fmt),
                          progress="compressing the weights with NNCF", weight_only=True))


_register("openvino-int4", 4, "ONNX with 4-bit MatMul weights compressed by NNCF for OpenVINO (openvino --precision int4)")
_register("openvino-int8w", 8, "ONNX with 8-bit MatMul weights compressed by NNCF for OpenVINO (openvino --precision int8)")
