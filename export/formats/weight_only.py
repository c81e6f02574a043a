"""What the weight-only formats share (onnx-int4 and onnx-int8w through onnxruntime's MatMulNBits
quantizer, openvino-int4 and openvino-int8w through NNCF's compress_weights): the f32 graph they start
from, with every weight a MatMul reads made a constant first, and what the file records.

Why the constants: a quantizer replaces a MatMul whose weight is a constant initializer, and leaves
any other alone ("MatMul doesn't have const weight. Skip to quantize", onnxruntime's log says; NNCF's
graph builder likewise finds no weight there). A head tied to the embedding is exported as
``MatMul(x, Transpose(embedding))``: the one weight is the Gather's table and, transposed, the head's.
Left so, the head (Qwen2-0.5B's: 136M parameters, 28% of its weights, 545 MB in f32) stays f32 and every
token reads it whole. Here the transposed table becomes an initializer of its own, which the quantizer
then quantizes like any other weight (the embedding's Gather keeps reading the table, quantized too
where the format quantizes Gathers). A Gemm (a Linear on 2-D input) is made a MatMul and an Add, the op
both quantizers take. A MatMul whose weight is computed some other way from a constant is said, and left.

The source file's weights are read whole (onnx.load with its external data): the quantizers take a
ModelProto with its weights. A writer that is given an nn.Module exports it to f32 ONNX first, as the
int8 formats' writers do (onnx_int8.f32_graph).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptx.errors import PtxError

from . import description
from ..graph_weights import add_constant
from ..onnx_graph import default_opset, name_not_in, rsqrt_as_division, weight_of
from .onnx import save_with_metadata
from .onnx_int8 import f32_graph


@dataclass
class Prepared:
    """The f32 graph a weight-only quantizer reads, and what export says of it."""

    proto: object  # onnx.ModelProto, its weights in ``folder``'s data files, every MatMul weight a constant one
    folder: Path  # where its weights are (external data, relative to it)
    base: dict[str, str]  # the metadata the written file carries (the f32 graph's, or the caller's)
    served: str  # the f32 file's name, as a refusal sends the user back to it
    made: object | None  # the onnx format's Written where a module was exported first, else None
    constants: list[str] = field(default_factory=list)  # the weights made constants, in words
    computed: list[str] = field(default_factory=list)  # MatMuls whose weight stays computed (left f32)

    @property
    def weights(self) -> int:
        """The bytes of the f32 weights, in ``folder``'s data files."""
        return sum(f.stat().st_size for f in self.folder.iterdir() if f.is_file() and f.suffix != ".onnx")


def prepared(model, example, scratch: Path, signature, strings: dict[str, str], **onnx_options) -> Prepared:
    """``model`` (an nn.Module, exported to f32 ONNX in ``scratch`` first, or an f32 ONNX path) as the
    graph a weight-only quantizer reads: every MatMul weight a constant, every weight in a data file in
    ``scratch`` rather than in the proto. Why outside: a protobuf message keeps the memory of every value
    it ever held until it is freed whole, so weights read into the graph and replaced one by one are all
    still held at the end (Qwen2-0.5B's int4 export peaked at 4.1 GB for 1.98 GB of f32 weights); read one
    at a time from the file, they are let go once quantized."""
    import onnx

    from ptx.infer.formats import onnx_files

    f32, structure, base, made, served = f32_graph(model, example, scratch, signature, strings, **onnx_options)
    if not onnx_files.holds_external(structure):  # a small graph's weights inside it: written beside it here
        f32 = scratch / "weights.onnx"
        onnx.save_model(structure, str(f32), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=onnx_files.data_name(f32), size_threshold=onnx_files.INLINE_BYTES)
    del structure
    proto = onnx.load(str(f32), load_external_data=False)
    constants, computed = constant_weights(proto, scratch)
    rsqrt_as_division(proto)  # where the f32 file was exported before ptx wrote its norms so
    return Prepared(proto, scratch, base, served, made, constants, computed)


def constant_weights(proto, folder: Path | None = None) -> tuple[list[str], list[str]]:
    """Every MatMul of ``proto``'s main graph reading a weight that is a constant transposed (a tied head)
    made to read that constant as an initializer of its own; every Gemm with a constant weight made a
    MatMul (and an Add of its bias). Returns (what was made a constant, in words; the MatMuls whose
    weight is computed from a constant another way, left as they are). ``folder``: where the graph's
    external data is, and where a new constant is written (None: the weights are inside the proto)."""
    graph = proto.graph
    _gemms_to_matmuls(graph, folder)
    initializers = {t.name: t for t in graph.initializer}
    made = {o: n for n in graph.node for o in n.output}
    constants, computed, transposed, memo = [], [], {}, {}
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] in initializers:
            continue
        chain, source = _carried(node.input[1], made, initializers, memo)
        if source is None:
            continue  # both sides computed (attention's scores): no weight
        if [n.op_type for n in chain] != ["Transpose"] or not _plain_transpose(chain[0]):
            computed.append(f"{node.name or node.output[0]} (its weight is {' of '.join(n.op_type for n in chain)} "
                            f"of {source})")
            continue
        if source not in transposed:
            transposed[source] = _derived_constant(graph, initializers, source, "transposed", folder, lambda v: v.T)
            shared = any(source in n.input and n.op_type == "Gather" for n in graph.node)
            constants.append(f"{node.name or node.output[0]} read {source} transposed"
                             + (" (a head tied to the embedding)" if shared else "") + ": stored as a constant")
        node.input[1] = transposed[source]
    if transposed:  # a Transpose nothing reads any more
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        keep = [n for n in graph.node if n.op_type != "Transpose" or any(o in used for o in n.output)]
        del graph.node[:]
        graph.node.extend(keep)
    return constants, computed


def _carried(tensor: str, made: dict, initializers: dict, memo: dict) -> tuple[list, str | None]:
    """(the nodes ``tensor`` is computed by, first to last, the initializer their first input comes from) where
    it is computed from constants alone (initializers, Constant nodes), or ([], None) where an activation
    enters (attention's scores: no weight there). ``memo``: what was found of each tensor already."""
    if tensor in initializers:
        return [], tensor
    if tensor in memo:
        return memo[tensor]
    memo[tensor] = [], None  # a tensor on its own path (a graph has no cycle: only while it is walked)
    node = made.get(tensor)
    if node is None:
        return memo[tensor]
    if node.op_type == "Constant":
        memo[tensor] = [node], None
        return memo[tensor]
    found = [_carried(i, made, initializers, memo) for i in node.input if i]
    if found and all(source is not None or (chain and chain[-1].op_type == "Constant") for chain, source in found):
        chain, source = found[0]
        memo[tensor] = [*chain, node], source
    return memo[tensor]


def _plain_transpose(node) -> bool:
    """A Transpose of a 2-D weight: no perm, or perm [1, 0]."""
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    return perm in (None, [1, 0])


def _gemms_to_matmuls(graph, folder: Path | None = None) -> None:
    """Each Gemm of a constant weight without a transposed A as MatMul then Add: the op the weight-only
    quantizers take (a Linear on 2-D input is exported as Gemm). Its alpha is folded into the weight and its
    beta into a constant bias; a Gemm whose bias is computed and scaled by beta is left as it is."""
    import onnx
    from onnx import helper

    initializers = {t.name: t for t in graph.initializer}
    names = {n.name for n in graph.node if n.name}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if (node.op_type != "Gemm" or node.input[1] not in initializers or attrs.get("transA", 0)
                or beta != 1.0 and has_bias and node.input[2] not in initializers):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0) or alpha != 1.0:
            weight = _derived_constant(graph, initializers, weight, "as_matmul", folder, lambda v: (
                v.T if attrs.get("transB", 0) else v) * v.dtype.type(alpha))
        bias = node.input[2] if has_bias else ""
        if has_bias and beta != 1.0:
            bias = _derived_constant(graph, initializers, bias, "scaled", folder, lambda v: v * v.dtype.type(beta))
        base = name_not_in(node.name or node.output[0], names)  # unnamed Gemms' nodes need names of their own
        names |= {f"{base}_MatMul", f"{base}_Add"}
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{base}_MatMul"))
        if has_bias:
            nodes.append(onnx.helper.make_node("Add", [product, bias], list(node.output), name=f"{base}_Add"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    for name in [t.name for t in graph.initializer if t.name not in used]:  # a transposed Gemm weight's original
        drop_initializer(graph, name)


# The default-domain ops whose meaning, not only their types, changed between opset 18 (the exporters') and 21, by
# the version that changed it: GroupNormalization's scale and bias went from one per group to one per channel,
# GridSample's modes were renamed (bilinear to linear), DFT's axis moved from an attribute to an input. Every other
# op that changed on the way only took new types, modes or attributes whose defaults keep the old meaning.
MEANING_CHANGED = {"GroupNormalization": 21, "GridSample": 20, "DFT": 20}
CHECKED_FROM = 18  # below it, many ops changed (ReduceMean's axes became an input at 18): a raise is not checked


def ops_changed_by(proto, version: int) -> list[str]:
    """The ops of ``proto`` (its subgraphs and functions too) whose meaning changes if its opset is raised to
    ``version``: raising it is safe where this is empty. A graph below opset 18 is not checked op by op: it is
    said as its opset's ops."""
    below = default_opset(proto, missing=version)
    if below < min(CHECKED_FROM, version):
        return [f"its opset-{below} ops"]
    changed = {op for op, since in MEANING_CHANGED.items() if below < since <= version}
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if node.domain in ("", "ai.onnx") and node.op_type in changed:
                found.add(node.op_type)
            for attribute in node.attribute:
                for graph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                    visit(graph.node)

    if changed:
        visit(proto.graph.node)
        for function in proto.functions:
            visit(function.node)
    return sorted(found)


def raise_opset(proto, version: int) -> None:
    """``proto``'s default-domain opset raised to ``version`` where it is below, refused where that would change what
    one of its ops computes (ops_changed_by). Not onnx's version_converter: it serializes the model whole, which a
    2 GiB model cannot be."""
    changed = ops_changed_by(proto, version)
    if changed:
        raise PtxError(f"this file needs opset {version}, where {' and '.join(changed)} would change meaning: "
                       f"export the model at opset {version} (--opset {version}) first")
    for imports in (proto.opset_import, *(f.opset_import for f in proto.functions)):  # a function's own imports too
        for entry in imports:
            if entry.domain in ("", "ai.onnx") and entry.version < version:
                entry.version = version
    proto.ir_version = max(proto.ir_version, 10)  # int4 tensors need IR 10


def drop_initializer(graph, name: str) -> None:
    """The initializer ``name`` taken out of ``graph`` (by its index: a repeated field's remove() compares
    whole tensors), and the graph input of that name where the file lists its weights as inputs too (IR
    version 3 and older did): left, it would become an input every caller must feed."""
    for field in (graph.initializer, graph.input):
        for index, value in enumerate(field):
            if value.name == name:
                del field[index]
                break


def _derived_constant(graph, initializers: dict, source: str, suffix: str, folder: Path | None, change) -> str:
    """The name of a new constant holding ``change`` of initializer ``source``'s values (a weight the graph reads
    through a Transpose; a Gemm's weight with its transB and alpha, its bias with its beta), named
    ``source.suffix``, added to ``graph`` and to ``initializers``. A transformers folder's tensor read transposed
    is named as such, not read (export/folder_weights.py: a 3B model's tied head is 1.2 GB in float32)."""
    from ..folder_weights import is_lazy, lazy_transposed

    name = name_not_in(f"{source}.{suffix}", initializers)
    if suffix == "transposed" and is_lazy(initializers[source]):
        graph.initializer.append(lazy_transposed(initializers[source], name))
        initializers[name] = graph.initializer[-1]
        return name
    initializers[name] = add_constant(graph, name, change(weight_of(initializers[source], folder)), folder)
    return name


def quantized_matmuls(proto, ops: tuple[str, ...]) -> tuple[int, int]:
    """(MatMuls made one of ``ops``, MatMuls left f32 with a constant weight) in the written graph."""
    initializers = {t.name for t in proto.graph.initializer}
    done = sum(n.op_type in ops for n in proto.graph.node)
    left = sum(n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in initializers for n in proto.graph.node)
    return done, left


def describe_prepared(ready: Prepared) -> str:
    """What export says of the weights it made constants or left computed, or ''."""
    said = "; ".join(ready.constants)
    if ready.computed:
        said += ("; " if said else "") + (f"left f32 (their weight is computed, not a constant): "
                                          f"{', '.join(ready.computed)}")
    return said


def saved(proto, path: Path, ready: Prepared, fmt: str, precision: str, how: str, log) -> None:
    """The quantized ``proto`` written at ``path`` with what a weight-only file records beside the f32 graph's
    strings: its precision, its format and how its weights were quantized (block, symmetry, what was made a
    constant), which is said too."""
    said = describe_prepared(ready)
    if said:
        log(f"{fmt:<11} {said}")
    strings = {**ready.base, "precision": precision, "format": fmt, "quantization": how + (f"; {said}" if said else "")}
    save_with_metadata(proto, path, strings, description(ready.base))


def check_block_size(block_size: int | None, fmt: str, largest: int | None = None, per_channel: bool = False) -> None:
    """A block (group) of weights sharing one scale: a power of two of at least 16 (the kernels' and
    onnxruntime's quantizer's own requirement) and at most ``largest`` where the format's kernels have a bound;
    -1 (one scale per output channel) where ``per_channel``."""
    if block_size is None or block_size == -1 and per_channel:
        return
    if block_size < 16 or block_size & (block_size - 1) or largest is not None and block_size > largest:
        span = f"from 16 to {largest}" if largest else "of at least 16"
        raise PtxError(f"--block-size {block_size}: {fmt} takes a power of two {span} (32, 64, 128)"
                       + (", or -1 for one scale per output channel" if per_channel else ""))
