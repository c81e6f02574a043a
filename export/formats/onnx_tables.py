"""An embedding's table in a 4-bit symmetric file (onnx-int4): quantized as onnxruntime's quantizer quantizes a
MatMul's weight (blocks along each row of the table, by its C++ kernel, MlasQuantizeBlockwise), and gathered by
GatherBlockQuantized reading those packed bytes (uint8, ``bits`` 4), as onnxruntime-genai's model builder writes a
quantized embedding: to the quantizer, the table is the weight of a MatMul over its transpose.

Why not the quantizer's own Gather path: it quantizes the table in numpy, one column of blocks at a time (2.5 s of
the 0.5B config's 8 s of quantization, for its table of 136M values). The two round a value halfway between two
steps alike but for ties (numpy rounds them to even); a tied head, which the kernel quantized already, and its
table are now quantized alike. Why a tied head's MatMulNBits weight is not read by the Gather, as the builder's
shared embeddings do (a smaller file): MatMulNBits takes its weight as [rows, blocks, block / 2] and
GatherBlockQuantized as [rows, bytes], so the builder reshapes one for the other, and OpenVINO's reader takes only a
constant there ("GatherBlockQuantized: 'data' must be a constant"). Symmetric only: OpenVINO's reader takes
GatherBlockQuantized's packed bytes without zero points only ("ConvertGatherToGatherCompressed ... constant !=
nullptr" with them); an asymmetric file's table keeps the quantizer's Gather path (int4 and uint4 types).
"""
from __future__ import annotations

from pathlib import Path

from ..folder_weights import is_lazy, lazy_transposed
from ..graph_weights import add_constant
from ..onnx_graph import weight_of

TRANSPOSED = ".transposed"  # the name of the table read as a MatMul weight, after weight_only's for a tied head


def table_as_weight(table, name: str, folder: Path | None):
    """A [hidden, rows] weight ``name`` that is ``table`` transposed, for the quantizer to quantize as a MatMul's:
    a folder tensor by reference (nothing read), else its values inside the tensor (a model held in memory: written
    to ``folder``'s data file they would stay there, read by nothing once quantized)."""
    if is_lazy(table):
        return lazy_transposed(table, name)
    import onnx

    return add_constant(onnx.GraphProto(), name, weight_of(table, folder).T, None)


def gathered(node, data: str, scales: str, block: int, made_name: str):
    """``node`` (a Gather of a table, along its rows) as GatherBlockQuantized of the packed rows ``data`` [rows,
    hidden / 2] and their ``scales`` [rows, hidden / block]: 4 bits a value, zero point 8 (symmetric)."""
    import onnx

    return onnx.helper.make_node("GatherBlockQuantized", [data, node.input[1], scales], list(node.output),
                                 name=made_name, domain="com.microsoft", bits=4, block_size=block, gather_axis=0,
                                 quantize_axis=1)
