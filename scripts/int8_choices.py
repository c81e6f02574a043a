#!/usr/bin/env python3
"""Every way of quantizing a run's model to int8 that issue 53 tried, judged and timed on this CPU.

For each run folder (a trained checkpoint with its model.onnx from `ptx export NAME --run DIR
--format onnx`): the ways `ptx export --format onnx-int8` chooses between on the CPU that exports
(export/formats/onnx_int8.py's CHOICES), and the other options onnxruntime.quantization documents
(8-bit weights, int8 activations, per-tensor scales, the QOperator format, symmetric scales), each
quantized from the same pre-processed graph and calibration samples as export's, each judged as
`ptx verify` judges it (export's own judge: 1,000 real test samples, labels agree >= 99% with eager,
accuracy at most 0.005 lower), and each timed against model.onnx through ONNX Runtime at --batch.
--openvino adds OpenVINO f32 and bf16 on model.onnx and int8 on the files named by --openvino-int8;
--sessions adds ONNX Runtime f32 and export's choice with one intra-op thread and with graph
optimisation at `extended` (no NCHWc and NHWC layout transformers).

Everything of one run is timed in the same rounds, each round running every row once in a shuffled
order, and each row's ratio to ORT f32 is the median of the per-round ratios: a busy moment on a
shared machine weighs on a round's rows alike. ONNX Runtime sessions do not spin between runs
(export/formats/onnx_int8.speed_against_f32 says why). Absolute pictures/s move with the machine's
load; read the ratios, with the CPU and date the header names.

Usage: python3 scripts/int8_choices.py /tmp/int8runs/convnet /tmp/int8runs/mlp --openvino --sessions
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from ptx.export.api import calibration_inputs
from ptx.export.formats import onnx_int8
from ptx.machine import cpu_features, cpu_name, describe_cpu
from ptx.trainers.checkpoint import build_model_from_checkpoint, load_checkpoint

# (label, quantize_static keyword arguments over export's plain choice): the options onnxruntime's
# quantization guide names for x86 CPUs, besides export's own CHOICES.
TRIED = [
    ("8-bit weights (reduce_range off)", dict(reduce_range=False)),
    ("int8 activations (s8s8)", dict(activation_type="QInt8")),
    ("per-tensor weight scales", dict(per_channel=False)),
    ("QOperator format, u8s8", dict(quant_format="QOperator")),
    ("QOperator format, s8s8", dict(quant_format="QOperator", activation_type="QInt8")),
    ("ActivationSymmetric, WeightSymmetric", dict(extra_options={"ActivationSymmetric": True,
                                                                 "WeightSymmetric": True})),
    ("ReLUs kept, 8-bit weights", dict(reduce_range=False, extra_options={"QDQKeepRemovableActivations": True})),
    ("ReLUs kept, s8s8", dict(activation_type="QInt8", extra_options={"QDQKeepRemovableActivations": True})),
    ("first Conv f32, ReLUs kept, 8-bit weights", dict(reduce_range=False, first_conv=True,
                                                       extra_options={"QDQKeepRemovableActivations": True})),
    ("first Conv f32, ReLUs kept, s8s8", dict(activation_type="QInt8", first_conv=True,
                                              extra_options={"QDQKeepRemovableActivations": True})),
]


def quantize_tried(prepared: Path, out: Path, contract, calibration: np.ndarray, options: dict) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options = dict(options)
    graph = onnx.load(str(prepared))
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    exclude = convs[:1] if options.pop("first_conv", False) else []
    kwargs = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                  weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=exclude)
    for key, value in options.items():
        kwargs[key] = getattr(QuantFormat if key == "quant_format" else QuantType, value) \
            if key in ("quant_format", "activation_type") else value
    quantize_static(str(prepared), str(out), onnx_int8._reader(contract, calibration), **kwargs)


def ort_runner(path: Path, feeds: dict, threads: int = 0, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def openvino_runner(path: Path, x: np.ndarray, precision: str, keep_input: bool = True):
    """As ptx's openvino runner compiles: the model reshaped to the batch's static shape, one
    stream (PERFORMANCE_HINT LATENCY), the precision hint given (f32 for an int8 file's own ops).
    ``keep_input``: a callable running ``x`` (for timing); else one taking the batch, giving the output."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    if keep_input:
        return lambda: request.infer({0: x})
    return lambda batch: np.array(request.infer({0: batch})[0])


class OpenVinoJudged:
    """What export.validate.judge_reduced needs of a predictor, over OpenVINO compiled as ptx's
    openvino runner compiles (one static shape per batch size): the int8 file judged through
    OpenVINO as `ptx verify`'s openvino-int8 row judges it."""

    def __init__(self, path: Path, contract, precision: str = "f32"):
        from types import SimpleNamespace

        self.path, self.precision, self.compiled = path, precision, {}
        self.head = SimpleNamespace(feeds=lambda x: {contract.input.name: x}, output_name=contract.output.name)
        self.output = contract.output.name

    def run(self, feeds):
        [x] = feeds.values()
        if x.shape not in self.compiled:
            self.compiled[x.shape] = openvino_runner(self.path, np.ascontiguousarray(x), self.precision, keep_input=False)
        return {self.output: self.compiled[x.shape](np.ascontiguousarray(x))}


def time_rows(runners: list, rounds: int) -> tuple[list[float], list[float]]:
    """(median seconds per run, median per-round ratio to the first runner) of each runner."""
    for run in runners:  # warm up: allocation, weight packing, OpenVINO's first-inference work
        run()
        run()
    took = [[] for _ in runners]
    order = list(range(len(runners)))
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for i in order:
            start = time.perf_counter()
            runners[i]()
            took[i].append(time.perf_counter() - start)
    ratios = [statistics.median(t0 / t for t0, t in zip(took[0], mine)) for mine in took]
    return [statistics.median(t) for t in took], ratios


def one_run(run: Path, args, scratch: Path) -> None:
    ckpt = load_checkpoint(run / "checkpoint.pt")
    name = ckpt["contract"].model
    _, model = build_model_from_checkpoint(ckpt)
    contract = ckpt["contract"]
    calibration = calibration_inputs(ckpt, name)
    if not (run / "model.onnx").is_file():
        raise SystemExit(f"{run}: no model.onnx: run `ptx export {name} --run {run} --format onnx` first")
    f32 = scratch / f"{name}.onnx"
    proto = onnx.load(str(run / "model.onnx"))
    del proto.graph.value_info[:]  # as export does before quantizing (onnx_int8.write)
    onnx.save(proto, str(f32))
    prepared = onnx_int8.prepare(f32)
    graph = onnx.load(str(prepared))
    files: list[tuple[str, Path, bool]] = []  # (label, file, one of export's choices)
    logging.disable(logging.WARNING)
    for i, choice in enumerate(c for c in onnx_int8.CHOICES if c.applies(graph)):
        out = scratch / f"{name}-choice-{i}.onnx"
        onnx_int8._quantize_static(prepared, out, contract, calibration, choice.excluded(graph), choice)
        files.append((f"export's choice: {choice.label}", out, True))
    if not args.only_choices:
        for i, (label, options) in enumerate(TRIED):
            if options.get("first_conv") and not any(n.op_type == "Conv" for n in graph.graph.node):
                continue
            out = scratch / f"{name}-tried-{i}.onnx"
            try:
                quantize_tried(prepared, out, contract, calibration, options)
            except Exception as exc:  # a combination the quantizer refuses is a finding too
                print(f"   {label}: the quantizer failed: {str(exc).splitlines()[0]}")
                continue
            files.append((label, out, False))
    logging.disable(logging.NOTSET)

    dataset = (ckpt.get("dataset") or {}).get("name")
    judge = onnx_int8.labels_judge(model, contract, {"dataset": dataset}, calibration)
    verdicts = [judge(path) for _, path, _ in files]
    from ptx.export.validate import judge_reduced

    kept: dict = {}  # the judging samples and eager's answers, once for every OpenVINO row

    def judge_openvino(path: Path, precision: str = "f32"):
        return judge_reduced(OpenVinoJudged(path, contract, precision), model, {"contract": contract, "dataset":
                             {"name": dataset}}, notice=lambda _: None, eager=kept)[0]
    reps = -(-args.batch // len(calibration))
    x = np.ascontiguousarray(np.concatenate([calibration] * reps)[: args.batch])
    feeds = {contract.input.name: x}
    rows = [("ONNX Runtime f32 (model.onnx)", ort_runner(f32, feeds), "f32")]
    rows += [(label, ort_runner(path, feeds), verdict) for (label, path, _), verdict in zip(files, verdicts)]
    choices = [(i, label) for i, (label, _, own) in enumerate(files) if own]
    extra = []
    if args.sessions:
        extra += [("ONNX Runtime f32, 1 intra-op thread", ort_runner(f32, feeds, threads=1), "f32"),
                  ("ONNX Runtime f32, optimisation level extended", ort_runner(f32, feeds, level="extended"), "f32")]
        for i, label in choices:
            extra += [(f"{label}, 1 intra-op thread", ort_runner(files[i][1], feeds, threads=1), verdicts[i]),
                      (f"{label}, optimisation level extended", ort_runner(files[i][1], feeds, level="extended"),
                       verdicts[i])]
    if args.openvino:
        extra += [("OpenVINO f32 (model.onnx)", openvino_runner(f32, x, "f32"), "f32")]
        if cpu_features() & {"avx512_bf16", "amx_bf16"}:
            extra += [("OpenVINO bf16 (model.onnx)", openvino_runner(f32, x, "bf16"), judge_openvino(f32, "bf16"))]
        for i, label in choices:
            extra += [(f"OpenVINO int8, {label}",
                       openvino_runner(files[i][1], x, "f32"), judge_openvino(files[i][1]))]
    load_before = os.getloadavg()[0]
    seconds, ratios = time_rows([r for _, r, _ in rows + extra], args.rounds)
    load_after = os.getloadavg()[0]

    # Export's rule (onnx_int8.choose) on these measurements: the fastest of its choices that passes.
    best = None
    for i, _ in choices:
        if not verdicts[i].unusable and (best is None or ratios[i + 1] > ratios[best + 1] * onnx_int8.CLEARLY_FASTER):
            best = i
    print(f"\n### {name} ({run}), batch {args.batch}, {args.rounds} rounds, load average {load_before:.1f} before, "
          f"{load_after:.1f} after\n")
    print("| way | pictures/s | vs ORT f32 | labels agree with eager | accuracy (eager) | verify's gate |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for k, ((label, _, verdict), sec, ratio) in enumerate(zip(rows + extra, seconds, ratios)):
        mark = " **(export keeps)**" if best is not None and k == best + 1 else ""
        if verdict == "f32":
            judged = "| - | - | f32"
        else:
            accuracy = getattr(verdict, "accuracy", None)
            judged = (f"| {100 * verdict.label_agreement:.1f}% | "
                      + (f"{accuracy:.4f} ({verdict.reference_accuracy:.4f})" if accuracy is not None else "-")
                      + f" | {'PASS' if not verdict.unusable else 'FAIL: ' + '; '.join(verdict.unusable)}")
        print(f"| {label}{mark} | {args.batch / sec:,.0f} | {ratio:.2f}x {judged} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (checkpoint.pt and model.onnx)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds, every row once a round (default 30)")
    parser.add_argument("--openvino", action="store_true", help="add OpenVINO f32, bf16 and int8 rows")
    parser.add_argument("--sessions", action="store_true", help="add 1-thread and opt-level-extended ORT rows")
    parser.add_argument("--only-choices", action="store_true", help="export's CHOICES only, not the other options")
    args = parser.parse_args()
    import onnxruntime

    try:
        import openvino
        ov_version = f", openvino {openvino.__version__.split('-')[0]}"
    except ImportError:
        ov_version = ""
    flags = " ".join(sorted(f for f in cpu_features() if "avx512" in f or "vnni" in f or "amx" in f or "bf16" in f))
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores ({describe_cpu()}; flags: {flags}); "
          f"onnxruntime {onnxruntime.__version__}{ov_version}; {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="ptx-int8-choices-") as scratch:
        for run in args.runs:
            one_run(run, args, Path(scratch))


if __name__ == "__main__":
    main()
