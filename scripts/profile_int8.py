#!/usr/bin/env python3
"""Where an ONNX file's time goes in ONNX Runtime's CPU provider, op type by op type (issue 53).

For each file: how it is quantized (as stored: activation/weight types, 7-bit or 8-bit weights,
per-channel or per-tensor scales, the first convolution's input channels, the ops left in f32), what
ORT's graph optimiser made of it (which Q/DQ pairs it fused into QLinearConv/QGemm/QLinearMatMul,
which Transposes its NCHW->NHWC layout transformer inserted, which Q/DQ stay standalone), and
onnxruntime's own profiler (SessionOptions.enable_profiling) summed per op type: milliseconds per
run, share of the run, the kernels (op, domain, input types) that ran and the largest tensor each
type touched. An f32 and an int8 file side by side show what int8 adds.

The profiler times every node of every run; the first run (allocations, first-call work) is left out.
Inputs are seeded random values of the file's own input shape (batch axis set to --batch): int8
kernels take the same time whatever the values. Figures move with what else the machine does: read
shares within one file, and compare files only within one invocation.

Usage: python3 scripts/profile_int8.py runs/convnet/model.onnx runs/convnet/model.int8.onnx --batch 1024
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FUSED = {"QLinearConv", "QGemm", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
         "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "QLinearSoftmax",
         "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "MatMulIntegerToFloat"}
TYPES = {onnx.TensorProto.UINT8: "u8", onnx.TensorProto.INT8: "s8", onnx.TensorProto.FLOAT: "f32",
         onnx.TensorProto.INT32: "s32", onnx.TensorProto.INT64: "s64", onnx.TensorProto.FLOAT16: "f16"}
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}
SHORT = {"float": "f32", "uint8": "u8", "int8": "s8", "int32": "s32", "int64": "s64", "float16": "f16"}


def quantization(proto) -> list[str]:
    """What the file stores: the facts about its int8 make-up that decide which kernels can run."""
    inits = {t.name: t for t in proto.graph.initializer}
    maker = {o: n for n in proto.graph.node for o in n.output}
    lines = []
    acts, weights, per_channel, kept = set(), [], [], []
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            acts.add(TYPES.get(inits[node.input[2]].data_type, "?"))
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a stored (weight) tensor
            w = numpy_helper.to_array(inits[node.input[0]])
            if w.dtype in (np.int8, np.uint8):
                weights.append((node.input[0], w))
                per_channel.append(inits[node.input[1]].dims != [] and list(inits[node.input[1]].dims) != [1])
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            w = node.input[1]
            source = maker.get(w)
            if w in inits or (source is not None and source.op_type != "DequantizeLinear"):
                kept.append(f"{node.op_type} {node.name}")
    qops = [n for n in proto.graph.node if n.op_type in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger")]
    for node in qops:  # QOperator files and dynamic quantization: the weight is the op's own input
        for name in node.input:
            t = inits.get(name)
            if t is not None and t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(t.dims) >= 2:
                weights.append((name, numpy_helper.to_array(t)))
    if not acts and not weights:
        return ["not quantized (f32 graph)"]
    big = [int(np.abs(w.astype(np.int16)).max()) for _, w in weights if w.size > 1]
    wtypes = sorted({"s8" if w.dtype == np.int8 else "u8" for _, w in weights})
    lines.append(f"activations {'/'.join(sorted(acts)) or 'quantized per call (dynamic)'}, weights "
                 f"{'/'.join(wtypes) or '-'}: {'+'.join(sorted(acts) or ['u8'])}{'+'.join(wtypes)} kernels")
    if big:
        lines.append(f"largest |weight| {max(big)}: {'7-bit (reduce_range)' if max(big) <= 64 else '8-bit'}")
    if per_channel:
        lines.append(f"weight scales: {sum(per_channel)} per-channel, {len(per_channel) - sum(per_channel)} per-tensor")
    convs = [n for n in proto.graph.node if n.op_type in ("Conv", "QLinearConv", "ConvInteger")]
    if convs:
        first = convs[0]
        w = first.input[3] if first.op_type == "QLinearConv" else first.input[1]
        if first.op_type == "Conv" and w in maker and maker[w].op_type == "DequantizeLinear":
            w = maker[w].input[0]
        if w in inits:
            dims = list(inits[w].dims)
            lines.append(f"first convolution {first.name}: {dims[1]} input channel{'s' * (dims[1] != 1)}, "
                         f"{dims[0]} outputs, kernel {'x'.join(map(str, dims[2:]))}, "
                         f"{'f32' if inits[w].data_type == onnx.TensorProto.FLOAT else 'int8'}")
    lines.append("left in f32: " + (", ".join(kept) if kept else "none of Conv/Gemm/MatMul"))
    return lines


def optimised(path: Path, options_for) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """The graph ORT runs after its optimiser (and layout transformer), and node name -> op label."""
    with tempfile.TemporaryDirectory(prefix="ptx-profile-") as scratch:
        options = options_for()
        options.optimized_model_filepath = str(Path(scratch) / "optimised.onnx")
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    nodes = list(graph.node)
    labels = {n.name: (f"{n.op_type} ({n.domain})" if n.domain and n.domain != "ai.onnx" else n.op_type)
              for n in nodes}
    # QLinearConv, QGemm, QLinearMatMul: input 2 is the activation's zero point, input 3 the weight.
    # Their kernel is named by the two types (u8s8, s8s8); the profiler lists no prepacked weight.
    stored = {t.name: TYPES.get(t.data_type, "?") for t in graph.initializer}
    for n in nodes:
        if n.op_type in ("QLinearConv", "QGemm", "QLinearMatMul") and len(n.input) > 3 and n.input[3] in stored:
            labels[n.name] += f" {stored.get(n.input[2], '?')}{stored[n.input[3]]}"
    return nodes, labels


def graph_facts(source, nodes) -> list[str]:
    """What the optimiser did: fused quantized ops, Q/DQ left standalone, Transposes it inserted."""
    before = defaultdict(int)
    for n in source.graph.node:
        before[n.op_type] += 1
    after = defaultdict(int)
    for n in nodes:
        after[n.op_type] += 1
    fused = {k: v for k, v in after.items() if k in FUSED}
    standalone = {k: v for k, v in after.items() if k in QDQ}
    lines = [f"optimised graph: {len(nodes)} nodes ({len(source.graph.node)} in the file)",
             "fused int8 ops: " + (", ".join(f"{v} {k}" for k, v in sorted(fused.items())) or "none"),
             "standalone Q/DQ: " + (", ".join(f"{v} {k}" for k, v in sorted(standalone.items())) or "none"),
             (f"Transpose: {after['Transpose']} ({after['Transpose'] - before['Transpose']} inserted by the layout "
              "transformer)")]
    left = [n.op_type for n in nodes if n.op_type not in FUSED | QDQ | {"Transpose"}]
    if left:
        lines.append("other ops: " + ", ".join(left))
    return lines


def feeds_for(session, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = [batch if not isinstance(d, int) or d <= 0 else d for d in i.shape]
        if i.type == "tensor(float)":
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif i.type == "tensor(uint8)":
            feeds[i.name] = rng.integers(0, 256, shape).astype(np.uint8)
        else:  # token ids: small non-negative integers any vocabulary holds
            feeds[i.name] = rng.integers(0, 2, shape).astype(np.int64)
    return feeds


def profile(path: Path, options_for, batch: int, runs: int, seed: int, labels: dict[str, str]):
    """Per op label: [microseconds summed over the timed runs, nodes, input types seen, largest output]."""
    options = options_for()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="ptx-profile-") as scratch:
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = feeds_for(session, batch, seed)
        for _ in range(runs + 1):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    first_end = model_runs[0][1] if model_runs else -1
    per_op: dict[str, list] = {}
    nodes: dict[str, float] = {}  # node name -> microseconds summed over the timed runs
    run_us = sum(end - start for start, end in model_runs[1:])
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] <= first_end:
            continue
        args = e.get("args", {})
        name = e["name"][: -len("_kernel_time")]
        label = labels.get(name, args.get("op_name", "?"))
        given = [SHORT.get(next(iter(t)), next(iter(t))) for t in args.get("input_type_shape", []) if t]
        types = given[0] if given else "-"  # the data's type; a quantized kernel's pair is in its label
        out = args.get("output_type_shape", [{}])
        shape = next(iter(out[0].values()), []) if out else []
        nodes[name] = nodes.get(name, 0.0) + e["dur"]
        row = per_op.setdefault(label, [0.0, set(), set(), []])
        row[0] += e["dur"]
        row[1].add(name)
        row[2].add(types)
        if np.prod(shape or [0]) > np.prod(row[3] or [0]):
            row[3] = shape
    return per_op, nodes, run_us, runs


def table(per_op, run_us: float, runs: int) -> list[str]:
    total = sum(r[0] for r in per_op.values()) or 1.0
    lines = [f"{'op (domain) kernel':<36} {'ms/run':>8} {'share':>6} {'nodes':>5}  input type; largest output",
             "-" * 100]
    for label, (us, names, types, shape) in sorted(per_op.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{label:<36} {us / runs / 1e3:>8.2f} {us / total:>6.1%} {len(names):>5}  "
                     f"{' | '.join(sorted(types))}; {'x'.join(map(str, shape)) or '-'}")
    lines.append(f"{'all nodes':<36} {total / runs / 1e3:>8.2f} {1:>6.1%}   (whole runs: "
                 f"{run_us / runs / 1e3:.2f} ms/run)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="ONNX files (an f32 file and its int8 file, say)")
    parser.add_argument("--batch", type=int, default=1024, help="batch size fed (default 1024)")
    parser.add_argument("--runs", type=int, default=10, help="profiled runs after one untimed run (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: one per core, as ptx)")
    parser.add_argument("--opt-level", choices=sorted(LEVELS), default="all",
                        help="ORT graph optimisation level (default all, as ptx)")
    parser.add_argument("--nodes", type=int, default=0, help="also list the N slowest nodes of each file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    def options_for():
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # the optimised-model warning about NCHWc is for this script's eyes only
        options.intra_op_num_threads = args.threads
        options.graph_optimization_level = getattr(onnxruntime.GraphOptimizationLevel, LEVELS[args.opt_level])
        return options

    from ptx.machine import describe_cpu  # torch-free; names the CPU next to every figure

    print(f"CPU: {describe_cpu()}, {os.cpu_count()} cores; onnxruntime {onnxruntime.__version__}; batch {args.batch}, "
          f"{args.runs} profiled runs, opt level {args.opt_level}, intra-op threads {args.threads or 'one per core'}")
    for path in args.files:
        source = onnx.load(str(path))
        nodes, labels = optimised(path, options_for)
        per_op, per_node, run_us, runs = profile(path, options_for, args.batch, args.runs, args.seed, labels)
        print(f"\n== {path}")
        for line in quantization(source) + graph_facts(source, nodes):
            print(f"   {line}")
        print()
        print("\n".join(table(per_op, run_us, runs)))
        if args.nodes:
            total = sum(per_node.values()) or 1.0
            print(f"\n   the {args.nodes} slowest nodes:")
            for name, us in sorted(per_node.items(), key=lambda kv: -kv[1])[: args.nodes]:
                print(f"   {labels.get(name, '?'):<36} {us / runs / 1e3:>8.2f} {us / total:>6.1%}  {name}")


if __name__ == "__main__":
    main()
