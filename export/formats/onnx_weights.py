"""onnx-int4 and onnx-int8w: an ONNX graph whose MatMul weights are stored in 4 or 8 bits by onnxruntime's
weight-only quantizer (onnxruntime.quantization.matmul_nbits_quantizer), for ONNX Runtime (model.int4.onnx
and model.int8w.onnx, or a user's FILE.int4.onnx and FILE.int8w.onnx); activations stay f32.

Each MatMul with a constant weight becomes a MatMulNBits (com.microsoft): the weight in blocks of
``block_size`` values along its input axis, each block with its own scale (and, asymmetric, a zero point).
A language model's decoding reads every weight once per token, so its time per token follows the
weights' bytes: 4-bit blocks of 32 with f32 scales are 5 bits a weight, against f32's 32. ``accuracy_level``
4 (the default here, onnxruntime-genai's on the CPU) lets the kernel quantize the activations to int8 per
block as it runs and multiply in int8 (VNNI/AMX), which is where the speed comes from on x86; 0 keeps f32
arithmetic on the dequantized weights. onnx-int4 quantizes the embedding's table too (GatherBlockQuantized,
4-bit only; a symmetric file's rows packed as a MatMul weight's are: onnx_tables.py); onnx-int8w leaves it f32,
which costs file size, not time (a Gather reads one row per token).

A head tied to the embedding is quantized too (weight_only.constant_weights: ORT's quantizer skips a
MatMul whose weight is not a constant initializer), and export says so. No calibration: round-to-nearest
per block, the quantizer's DEFAULT algorithm; the file is judged as every reduced file is (a decoder by its
decoding of the prompts it records, export/weight_only.py; another model by its tensors).

The file is made for ONNX Runtime (its MatMulNBits), so a decoder's rotary embedding is written as its one
RotaryEmbedding op there (export/onnx_rotary.py says why and how it is found), and Reshapes that undo each
other are dropped (onnx_graph.drop_reshape_round_trips): an int4 token of SmolLM2-135M runs 1,068 nodes
where it ran 1,438 (522 where 1,137 with --ort-attention's GroupQueryAttention). After the quantizer, the
MatMulNBits that read one input (a layer's query, key and value; its gate and up) are merged into one and a
Split (export/onnx_shared_input.py says why: each small product costs its dispatch).
"""
from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import numpy as np

from ptx.atomic import scratch_folder
from ptx.contract import DEFAULT_OPSET
from ptx.contract.generation import of_metadata
from ptx.errors import PtxError, first_line
from ptx.infer.runtime.memory_plan import give_back_freed
from ptx.torch_quiet import quiet_logs

from ..onnx_graph import (drop_reshape_round_trips, inferred_shapes, name_not_in, value_names, weight_of, weight_part,
                          with_microsoft_ops)
from ..onnx_rotary import rotary_as_one_op
from ..onnx_shared_input import merge_shared_input_matmuls
from . import ExportFormat, Written, register
from .onnx import add_metadata, check_opset
from ..graph_weights import add_constant, spill_file, weights_placed
from .onnx_tables import TRANSPOSED, gathered, table_as_weight
from .weight_only import (check_block_size, drop_initializer, ops_changed_by, prepared, quantized_matmuls, raise_opset,
                          saved)

DEFAULT_BLOCK = 32  # onnxruntime-genai's model builder's block on the CPU (the quantizer's own default is 128)
DEFAULT_ACCURACY_LEVEL = 4  # int8 arithmetic in the kernel (onnxruntime-genai's default for the CPU)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # MatMulNBits' attribute: 0 unset, 1 f32, 2 f16, 3 bf16, 4 int8 arithmetic
LARGEST_BLOCK = 256  # onnxruntime's blockwise quantizer (MlasQuantizeBlockwise) takes blocks of 16 to 256


def check_options(opset: int = DEFAULT_OPSET, exporter=None, block_size: int | None = None,
                  symmetric: bool | None = None, accuracy_level: int | None = None, fmt: str = "onnx-int4", **_) -> None:
    check_opset(opset, exporter)
    if block_size == -1:
        raise PtxError(f"--block-size -1: {fmt}'s MatMulNBits keeps blocks of 16 to 256 values; give 32, 64 or 128")
    check_block_size(block_size, fmt, largest=LARGEST_BLOCK)
    if accuracy_level is not None and accuracy_level not in ACCURACY_LEVELS:
        raise PtxError(f"--accuracy-level {accuracy_level}: give one of {', '.join(map(str, ACCURACY_LEVELS))} (4: int8 "
                       "arithmetic, the fastest on x86; 0: f32 on the dequantized weights)")


def write(model, example, path: Path, signature, strings: dict[str, str], *, bits: int, fmt: str,
          opset: int = DEFAULT_OPSET, exporter=None, mode: str = "trace", block_size: int | None = None,
          symmetric: bool | None = None, accuracy_level: int | None = None, log=print) -> Written:
    """Quantize ``model`` (an nn.Module, exported to f32 ONNX first, or an f32 ONNX path) to ``bits``-bit
    weights into ``path``, and record how (ptx.quantization) and what it is (ptx.precision, ptx.format)."""
    block = block_size or DEFAULT_BLOCK
    symmetric = True if symmetric is None else symmetric
    level = DEFAULT_ACCURACY_LEVEL if accuracy_level is None else accuracy_level
    with scratch_folder(f"ptx-{fmt}-") as scratch:
        ready = prepared(model, example, Path(scratch), signature, strings, opset=opset, exporter=exporter, mode=mode)
        name = ready.base.get("model", path.stem)
        generation = of_metadata(ready.base, name)
        shapes = inferred_shapes(ready.proto)  # of the graph of ONNX's ops, before any is replaced
        dropped = drop_reshape_round_trips(ready.proto, shapes)
        rotations = rotary_as_one_op(ready.proto, ready.folder, generation and generation.max_positions, shapes)
        try:
            # np.errstate: the quantizer divides each block by its scale before it masks the blocks whose scale is
            # 0 (an all-zero block, as a padding row of an embedding is): numpy's warning for a value it then drops
            with quiet_logs("onnxruntime.quantization.matmul_nbits_quantizer", "onnxruntime.quantization"), \
                    np.errstate(divide="ignore", invalid="ignore"):
                kept = quantize_in_place(ready.proto, ready.folder, bits, block, symmetric, level)
        except Exception as exc:  # the quantizer raises many types; its first line says what failed
            raise PtxError(f"{fmt}: onnxruntime's weight-only quantizer failed for {name}: {first_line(exc)}; serve "
                           f"{ready.served} (f32)") from None
        proto = ready.proto
        give_back_freed(weights=ready.weights)  # what the quantizer read and let go
        done, left = quantized_matmuls(proto, ("MatMulNBits",))
        if not done and kept:
            raise PtxError(f"{fmt}: {name} has no weight {fmt} quantizes: {'; '.join(kept)}; serve {ready.served} "
                           "as it is")
        if not done:
            raise PtxError(f"{fmt}: {name} has no MatMul with a constant weight to quantize: serve {ready.served} (f32)")
        merged, into = merge_shared_input_matmuls(proto, ready.folder)
        # every weight (the quantized ones, and what was left f32: norms, int8's embedding) where the file keeps it
        weights_placed(proto, ready.folder, path)
        gathers = sum(n.op_type == "GatherBlockQuantized" for n in proto.graph.node)
        how = (f"onnxruntime weight-only: {done} MatMul{'s' * (done != 1)} as MatMulNBits, {bits}-bit "
               f"{'symmetric' if symmetric else 'asymmetric'} blocks of {block}, accuracy level {level}"
               + (f", {left} left f32" if left else "")
               + (f"; {merged} of them merged into {into} (those reading one input, then a Split)" if merged else "")
               + (f"; the embedding as GatherBlockQuantized ({bits}-bit)" if gathers else "")
               + "".join(f"; {what}" for what in kept)
               + (f"; {rotations} rotary rotations as RotaryEmbedding" if rotations else "")
               + (f"; {dropped} Reshapes that undid each other dropped" if dropped else ""))
        saved(proto, path, ready, fmt, f"int{bits}", how, log)
    made = ready.made
    return Written(how + (f", from the {made.method}" if made else ""), made and made.note, made.hint if made else "")


def quantize_in_place(proto, folder: Path, bits: int, block: int, symmetric: bool, level: int) -> list[str]:
    """Every MatMul of ``proto``'s main graph with a constant weight made a MatMulNBits (and, 4-bit, every
    Gather of a table a GatherBlockQuantized) by onnxruntime's own node quantizer, one weight at a time:
    each read from ``folder``'s data file into a graph of its own that the quantizer works in, and let go
    with it (weight_only.prepared says why not inside ``proto``); only the quantized tensors join ``proto``, their
    bytes in ``folder``'s data file as they are made (graph_weights.spill_file: a 7B model's are 4.4 GB), a weight past
    PIECE_BYTES quantized in pieces (``_quantized``). A symmetric 4-bit table is quantized as a MatMul's weight and
    gathered from its packed bytes (onnx_tables.py).
    Not MatMulNBitsQuantizer.process(), which holds every f32 weight in the model until the end. Returns
    what was left f32 and why, in words."""
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)

    # the quantizer's Gather is 4-bit only, and its int4 table needs opset 21: not where that changes an op's meaning
    packed_tables = bits == 4 and symmetric  # onnx_tables.py: uint8 bytes, no int4 type
    changed = [] if packed_tables else ops_changed_by(proto, 21)
    ops = ("MatMul", "Gather") if bits == 4 and not changed else ("MatMul",)
    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=symmetric, accuracy_level=level, quant_format=QuantFormat.QOperator,
        op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)), bits=bits))
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    readers = Counter(i for n in graph.node for i in n.input)
    # a Gather's table: a float matrix (an embedding), not the shape constants an exporter gathers from
    tables = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    names = _Names(value_names(graph), {n.name for n in graph.node if n.name})
    nodes, gathers, kept = [], False, Counter()
    if bits == 4 and changed and any(n.op_type == "Gather" and n.input and n.input[0] in tables for n in graph.node):
        kept[f"the embedding's table f32 (its int4 form needs opset 21, where {' and '.join(changed)} "
             "would change meaning)"] += 1
    for node in list(graph.node):
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else node.input[0] if node.input \
            else ""
        if not (weight in initializers and (node.op_type == "MatMul" or node.op_type in ops and weight in tables)):
            nodes.append(node)
            continue
        why = _left_f32(node, initializers[weight], block)
        if why:
            kept[why] += 1
            nodes.append(node)
            continue
        if node.op_type == "Gather" and packed_tables:
            nodes.extend(_packed_gather(graph, node, initializers[weight], quantizer, block, folder, names))
        else:
            made, new = _quantized(quantizer, node, initializers[weight], weight, folder)
            if made is None:  # left as it is (a weight the quantizer does not take)
                nodes.append(node)
                continue
            names.join(graph, made, new, (weight, node.op_type))
            nodes.extend(made)
            gathers |= node.op_type == "Gather"
        readers[weight] -= 1
        if not readers[weight]:
            drop_initializer(graph, weight)
    graph.ClearField("node")
    graph.node.extend(nodes)
    with_microsoft_ops(proto)
    if gathers:  # GatherBlockQuantized's int4 table: opset 21's type, IR 10
        raise_opset(proto, 21)
    if bits == 8 and any(n.op_type == "Gather" and n.input and n.input[0] in tables for n in nodes):
        kept["the embedding's table f32 (a Gather reads one row per token)"] += 1
    return [f"{what} ({n} of them)" if n > 1 else what for what, n in kept.items()]


class _Names:
    """The graph's value and node names, and what the quantizer's tensors are named in it (``made_for``: (weight,
    op) -> the quantizer's names -> the graph's): it names what it makes after the weight and the node, so a weight
    two nodes read (a table a Gather and a MatMul read, one weight two layers share) or a node without a name would
    give two tensors or two nodes one name. A weight read again by the same op reads what its first reader made."""

    def __init__(self, taken: set[str], nodes: set[str]):
        self.taken, self.nodes = taken, nodes
        self.made_for: dict[tuple[str, str], dict[str, str]] = {}
        self.tables: dict[str, tuple[str, str]] = {}  # a table packed for GatherBlockQuantized: (its rows, scales)

    def new(self, name: str) -> str:
        name = name_not_in(name, self.taken)
        self.taken.add(name)
        return name

    def join(self, graph, made: list, new: list, key: tuple[str, str]) -> None:
        """The quantizer's ``made`` nodes and ``new`` tensors (of ``key``) named apart in ``graph``, the tensors
        added to it at the weight's first reader."""
        if key not in self.made_for:
            self.made_for[key] = {t.name: self.new(t.name) for t in new}
            for tensor in new:
                tensor.name = self.made_for[key][tensor.name]
            graph.initializer.extend(new)
        for made_node in made:
            made_node.input[:] = [self.made_for[key].get(name, name) for name in made_node.input]
            if not made_node.name or made_node.name in self.nodes:
                made_node.name = name_not_in(made_node.name or f"{made_node.op_type}_{made_node.output[0]}",
                                            self.nodes)
            self.nodes.add(made_node.name)


def _packed_gather(graph, node, table, quantizer, block: int, folder: Path, names: _Names) -> list:
    """``node``, a Gather of ``table``, as GatherBlockQuantized of the table's rows quantized as the weight of a
    MatMul over its transpose (onnx_tables.py), once for every Gather that reads the table."""
    import onnx

    if table.name not in names.tables:
        name = names.new(table.name + TRANSPOSED)
        product = onnx.helper.make_node("MatMul", ["ptx_rows", name], [names.new(f"{name}_product")], name=name)
        made, new = _quantized(quantizer, product, table_as_weight(table, name, folder), name, folder)
        data, scales = made[0].input[1], made[0].input[2]  # the MatMulNBits' packed weight and scales
        packed = next(t for t in new if t.name == data)
        packed.dims[:] = [packed.dims[0], packed.dims[1] * packed.dims[2]]  # the same bytes, a row each
        names.join(graph, [], new, (name, "MatMul"))
        ours = names.made_for[(name, "MatMul")]
        names.tables[table.name] = ours[data], ours[scales]
    made_name = name_not_in(f"{node.name or table.name}_Q4", names.nodes)
    names.nodes.add(made_name)
    return [gathered(node, *names.tables[table.name], block, made_name)]


# The float32 bytes of the piece of a weight the quantizer is given at once. A weight past it is quantized in pieces
# along its output axis (a MatMul's columns, a table's rows), each as the quantizer quantizes the whole (its blocks
# run along the other axis), and the pieces' tensors joined: a protobuf message holds no tensor of 2 GiB (a 7B
# model's embedding and head are 2.2 GB each in float32), and the quantizer holds several copies of what it is given
# (10 GB at its peak for that embedding whole).
PIECE_BYTES = 256 << 20


def _quantized(quantizer, node, tensor, name: str, folder: Path):
    """(the nodes onnxruntime's ``quantizer`` makes of ``node``, reading weight ``tensor`` named ``name``; the tensors
    those nodes read, their bytes in ``folder``'s data file), or (None, []) where it leaves the node as it is."""
    import onnx

    axis = 1 if node.op_type == "MatMul" else 0  # the axis a MatMulNBits' N, a table's rows, lie along
    dims = list(tensor.dims)
    matrix = len(dims) == 2  # a weight of leading unit dims ([1, K, N]) is given whole: the quantizer squeezes it
    step = max(1, PIECE_BYTES // (4 * dims[1 - axis])) if matrix else dims[axis]
    joined: dict[str, list] = {}  # each made tensor: (its first piece, its pieces' bytes in a file of its own)
    made = None
    for start in range(0, dims[axis], step):
        stop = min(dims[axis], start + step)
        values = weight_of(tensor, folder) if stop - start == dims[axis] else weight_part(tensor, folder, axis, start,
                                                                                         stop)
        if node.op_type == "MatMul" and values.ndim == 2:
            made, pieces = _matmul_nbits(quantizer, node, name, values)
        else:
            alone = onnx.GraphProto()  # the weight (or its piece) in a graph the quantizer extends
            add_constant(alone, name, values, None)
            made, pieces = quantizer.quantize(node, [alone]), [t for t in alone.initializer if t.name != name]
        del values
        if made == [node]:
            return None, []
        for piece in pieces:
            if not piece.dims:  # a constant the quantizer made beside the weight (its output Reshape's shape)
                joined.setdefault(piece.name, [piece, None])
                continue
            if piece.name not in joined:  # a model held in memory (no folder) joins its pieces in memory
                joined[piece.name] = [onnx.TensorProto(), Path(folder) / f"piece.{len(joined)}.data" if folder
                                      else bytearray()]
                joined[piece.name][0].CopyFrom(piece)
                joined[piece.name][0].ClearField("raw_data")
                joined[piece.name][0].dims[0] = 0
            first, data = joined[piece.name]
            first.dims[0] += piece.dims[0]
            raw = piece.raw_data if piece.HasField("raw_data") else onnx.numpy_helper.to_array(piece).tobytes()
            if isinstance(data, bytearray):
                data += raw
                continue
            with open(data, "ab") as handle:
                handle.write(raw)
        del pieces
    for made_node in made if matrix else ():  # the last piece's nodes, sized for the whole
        for attribute in made_node.attribute:
            if attribute.name == "N":
                attribute.i = dims[axis]
    new = []
    for first, data in joined.values():  # data None: a constant taken whole
        if isinstance(data, bytearray):
            first.raw_data = bytes(data)
        elif data is not None:
            spill_file(first, data, folder)
        new.append(first)
    return made, new


def _matmul_nbits(quantizer, node, name: str, values: np.ndarray) -> tuple[list, list]:
    """(the MatMulNBits onnxruntime's ``quantizer`` makes of ``node``, and its tensors) for weight ``name`` of
    ``values`` [K, N]: DefaultWeightOnlyQuantizer.quantize_matmul's QOperator node, with its names and attributes, its
    values from the quantizer's own kernel (qbits_block_quant). quantize_matmul takes the weight as an initializer
    of a graph only: the float32 bytes copied into a protobuf and read back out took 2.1 s of the 0.5B config's
    10 s of quantization (a 7B model has 15 times its weights). tests/test_dequantized_reads.py holds the node and
    tensors to quantize()'s, byte for byte."""
    import onnx
    from onnx import numpy_helper

    config = quantizer.config
    # the kernel reads its input as C-ordered, whatever its strides say: a view laid otherwise would be quantized wrong
    packed, scales, zero_points = quantizer.qbits_block_quant(np.ascontiguousarray(values))
    tensors = [numpy_helper.from_array(packed, f"{name}_Q{config.bits}"),
               numpy_helper.from_array(scales, f"{name}_scales")]
    if not config.is_symmetric:
        tensors.append(numpy_helper.from_array(zero_points, f"{name}_zero_points"))
    attributes = dict(K=values.shape[0], N=values.shape[1], bits=config.bits, block_size=config.block_size)
    if config.accuracy_level:  # left out at 0, as the quantizer does: most runtimes' MatMulNBits do not take it
        attributes["accuracy_level"] = config.accuracy_level
    made = onnx.helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in tensors)], [node.output[0]],
                                 name=f"{node.name}_Q{config.bits}" if node.name else "", domain="com.microsoft",
                                 **attributes)
    return [made], tensors


FLOATS = (1, 10)  # onnx.TensorProto.FLOAT, FLOAT16: the weights MatMulNBits takes


def _left_f32(node, weight, block: int) -> str:
    """Why ``node``'s ``weight`` stays as it is, or '' where it is quantized."""
    import onnx

    if weight.data_type not in FLOATS:
        return f"a {onnx.helper.tensor_dtype_to_np_dtype(weight.data_type).name} weight left as it is " \
               "(MatMulNBits takes float32 and float16 weights)"
    if node.op_type != "Gather":
        return ""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if axis != 0:
        return "a table gathered along its columns left f32"
    if weight.dims[1] % block:
        # GatherBlockQuantized's blocks run along a row; OpenVINO reads one only where they divide it
        return f"the embedding's table f32 (its rows of {weight.dims[1]} are not a multiple of the block of {block})"
    return ""


def _register(fmt: str, bits: int, about: str) -> None:
    register(ExportFormat(name=fmt, description=about, serving_backend="ort-cpu",
                          write=functools.partial(write, bits=bits, fmt=fmt), precision=f"int{bits}",
                          unsupported=functools.partial(tutorial_refused, fmt=fmt), add_metadata=add_metadata,
                          check_options=functools.partial(check_options, fmt=fmt), progress="quantizing the weights",
                          weight_only=True))


def tutorial_refused(spec, fmt: str) -> str:
    """Why a tutorial model has no weight-only file: its int8 is onnx-int8 (activations too), judged by
    its labels; weight-only formats are for models whose time goes to reading weights (language models)."""
    return (f"{fmt}: weight-only formats are for language models, whose decoding reads every weight once per token; "
            f"a tutorial model's reduced file is onnx-int8 (or openvino-int8)")


_register("onnx-int4", 4, "ONNX with 4-bit MatMul weights, onnxruntime's MatMulNBits (ort-cpu --precision int4)")
_register("onnx-int8w", 8, "ONNX with 8-bit MatMul weights, onnxruntime's MatMulNBits (ort-cpu --precision int8)")
