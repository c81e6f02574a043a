#!/usr/bin/env python3
"""Every way of quantizing a run's model to int8 onnxruntime offers, judged and timed on this CPU.

For each run folder (a trained checkpoint with its model.onnx from `ptx export NAME --run DIR
--format onnx`): the ways `ptx export --format onnx-int8` chooses between on the CPU that exports
(export/formats/onnx_int8.py's CHOICES), and the other options onnxruntime.quantization documents
(8-bit weights, int8 activations, per-tensor scales, the QOperator format, symmetric scales), each
quantized from the same pre-processed graph and calibration samples as export's, each judged as
`ptx verify` judges it (export's own judge, export/validate.judge_reduced, decided by
ptx.contract.verdict.decide: the real test samples verify draws, labels agree >= 99% with eager,
accuracy at most 0.005 lower), and each timed against model.onnx through ONNX Runtime at --batch.
--openvino adds OpenVINO f32 and bf16 (where the CPU has bf16) on model.onnx and OpenVINO on each of
export's choices, opened and judged through ptx's openvino backend as `ptx verify`'s openvino rows are;
--sessions adds ONNX Runtime f32 and export's choice with one intra-op thread and with graph
optimisation at `extended` (no NCHWc and NHWC layout transformers).

Everything of one run is timed in the same rounds, each round running every row once in a shuffled
order, and each row's ratio to ORT f32 is the median of the per-round ratios: a busy moment on a
shared machine weighs on a round's rows alike. Timed as export times them
(ptx.infer.runtime.timing.alternating_times); ONNX Runtime sessions do not spin between runs
(export/formats/onnx_int8.speed_against_f32 says why). Absolute pictures/s move with the machine's
load; read the ratios, with the CPU and date the header names.

Usage: python3 scripts/int8_choices.py /tmp/int8runs/convnet /tmp/int8runs/mlp --openvino --sessions
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from ptx.contract.metadata import from_props
from ptx.contract.schema import signature_of_contract
from ptx.contract.verdict import Verdict, decide
from ptx.errors import BackendUnavailableError, PtxError, first_line
from ptx.export import formats
from ptx.export.api import calibration_inputs
from ptx.export.formats import description, onnx_int8
from ptx.export.formats.onnx import save_with_metadata
from ptx.export.validate import judge_reduced
from ptx.infer.model.target import load_file
from ptx.files import file_sha256
from ptx.infer.runtime.timing import alternating_times
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
# The choice of export's whose nodes_to_exclude the "first Conv f32" rows above take.
FIRST_CONV = next(c for c in onnx_int8.CHOICES if c.f32_ops == "first Conv")
INT8 = formats.get("onnx-int8")


def quantize_tried(prepared: Path, out: Path, calibrated: list[dict], graph, options: dict) -> None:
    """``prepared`` quantized by quantize_static with export's plain choice's arguments
    (onnx_int8._quantize_static) changed by ``options``, on export's calibration batches."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options = dict(options)
    exclude = FIRST_CONV.excluded(graph) if options.pop("first_conv", False) else []
    kwargs = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                  weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=exclude)
    for key, value in options.items():
        kwargs[key] = getattr(QuantFormat if key == "quant_format" else QuantType, value) \
            if key in ("quant_format", "activation_type") else value
    quantize_static(str(prepared), str(out), onnx_int8._reader(calibrated), **kwargs)


def ort_session(path: Path, feeds: dict, threads: int, level: str):
    """--sessions: onnx_int8.ort_call's session (threads not spinning) with ``threads`` intra-op
    threads and graph optimisation at ``level``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def one_run(run: Path, args, scratch: Path) -> None:
    from ptx.infer import load

    ckpt_path = run / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    contract = ckpt["contract"]
    name = contract.model
    _, model = build_model_from_checkpoint(ckpt)
    if not (run / "model.onnx").is_file():
        raise SystemExit(f"{run}: no model.onnx: run `ptx export {name} --run {run} --format onnx` first")
    strings = from_props({p.key: p.value for p in onnx.load(str(run / "model.onnx"), load_external_data=False)
                          .metadata_props})
    if strings.get("checkpoint_sha256") not in (None, file_sha256(ckpt_path)):
        raise SystemExit(f"{run}: model.onnx was exported from another checkpoint than {ckpt_path}: run "
                         f"`ptx export {name} --run {run} --format onnx` again")
    scratch = scratch / name
    scratch.mkdir()

    # What export's onnx-int8 writer quantizes (onnx_int8.write): the f32 graph without its shape
    # annotations, pre-processed, calibrated on the checkpoint's samples in export's batches.
    signature = signature_of_contract(contract)
    cases = [{contract.input.name: calibration_inputs(ckpt, name)}]
    calibrated = onnx_int8.batches(signature, cases)
    samples = sum(onnx_int8.rows(signature, c) or 1 for c in cases)
    f32, _, base, _, served = onnx_int8.f32_graph(run / "model.onnx", None, scratch, signature, strings)
    prepared = onnx_int8.prepare(f32)
    graph = onnx.load(str(prepared))

    def save(out: Path, how: str) -> None:  # as onnx_int8.write saves its file: the metadata verify reads
        save_with_metadata(onnx_int8.quantized_graph(out, name, served), out,
                           onnx_int8.int8_strings(base, INT8.name, how, [], {"cpu": describe_cpu()}), description(base))

    files: list[tuple[str, Path, bool]] = []  # (label, file, one of export's choices)
    with onnx_int8.quiet_quantizer():
        for i, choice in enumerate(c for c in onnx_int8.CHOICES if c.applies(graph)):
            out = scratch / f"choice-{i}.onnx"
            save(out, onnx_int8._quantize_static(prepared, out, calibrated, samples, choice.excluded(graph), choice))
            files.append((f"export's choice: {choice.label}", out, True))
        if not args.only_choices:
            for i, (label, options) in enumerate(TRIED):
                if options.get("first_conv") and not FIRST_CONV.applies(graph):
                    continue
                out = scratch / f"tried-{i}.onnx"
                try:
                    quantize_tried(prepared, out, calibrated, graph, options)
                    save(out, f"static, {label}, {samples} calibration samples (scripts/int8_choices.py)")
                except Exception as exc:  # a combination the quantizer refuses is a finding too
                    print(f"   {label}: the quantizer failed: {first_line(exc)}")
                    continue
                files.append((label, out, False))

    # Each file judged as export and verify judge it: judge_reduced on verify's real test samples
    # (eager's answers computed once, in ``eager``), one Verdict per row by decide.
    eager: dict = {}
    opened = []  # OpenVINO models kept open for their timing rows

    def judged(model_file, label: str, keep: bool = False) -> Verdict:
        try:
            evidence, _ = judge_reduced(model_file, model, ckpt, notice=lambda line: print(f"   {line}"), eager=eager)
        finally:
            if not keep:
                model_file.close()
        return decide(label, [evidence], by="export")

    verdicts = [judged(load_file(path, INT8.serving_backend, precision=INT8.precision), "ort-cpu-int8") for _, path, _ in files]

    reps = -(-args.batch // len(cases[0][contract.input.name]))
    x = np.ascontiguousarray(np.concatenate([cases[0][contract.input.name]] * reps)[: args.batch])
    feeds = {contract.input.name: x}
    rows = [("ONNX Runtime f32 (model.onnx)", onnx_int8.ort_call(f32, feeds), None)]
    rows += [(label, onnx_int8.ort_call(path, feeds), verdict) for (label, path, _), verdict in zip(files, verdicts)]
    choices = [(i, label) for i, (label, _, own) in enumerate(files) if own]
    if args.sessions:
        rows += [("ONNX Runtime f32, 1 intra-op thread", ort_session(f32, feeds, 1, "all"), None),
                 ("ONNX Runtime f32, optimisation level extended", ort_session(f32, feeds, 0, "extended"), None)]
        for i, label in choices:
            rows += [(f"{label}, 1 intra-op thread", ort_session(files[i][1], feeds, 1, "all"), verdicts[i]),
                     (f"{label}, optimisation level extended", ort_session(files[i][1], feeds, 0, "extended"),
                      verdicts[i])]
    if args.openvino:  # through ptx's openvino backend, as verify opens and judges its rows; timed bare
        try:
            f32_ov = load(run / "model.onnx", "openvino", "cpu")
            opened.append(f32_ov)
            rows.append(("OpenVINO f32 (model.onnx)", f32_ov.bare(feeds)[1], None))
            try:
                bf16 = load(run / "model.onnx", "openvino", "cpu", precision="bf16")
                opened.append(bf16)
                rows.append(("OpenVINO bf16 (model.onnx)", bf16.bare(feeds)[1], judged(bf16, "openvino-bf16", True)))
            except BackendUnavailableError as exc:
                print(f"   OpenVINO bf16: not here ({exc})")
            for i, label in choices:
                int8 = load_file(files[i][1], "openvino", precision=INT8.precision)
                opened.append(int8)
                rows.append((f"OpenVINO int8, {label}", int8.bare(feeds)[1], judged(int8, "openvino-int8", True)))
        except BackendUnavailableError as exc:
            print(f"   OpenVINO: not here ({exc})")

    load_before = os.getloadavg()[0]
    # export's timing, every round run (no time cap: export's CHOICE_SECONDS is for its own 20 rounds)
    times = alternating_times([call for _, call, _ in rows], args.rounds, math.inf)
    load_after = os.getloadavg()[0]
    for m in opened:
        m.close()
    seconds = [statistics.median(took[i] for took in times) for i in range(len(rows))]
    ratios = [statistics.median(took[0] / took[i] for took in times) for i in range(len(rows))]

    # Export's rule (onnx_int8.choose) on these measurements: the fastest of its choices that passes,
    # a later one (more ops in f32) only where CLEARLY_FASTER.
    best = None
    for i, _ in choices:
        if not verdicts[i].unusable and (best is None or ratios[i + 1] > ratios[best + 1] * onnx_int8.CLEARLY_FASTER):
            best = i
    print(f"\n### {name} ({run}), batch {args.batch}, {len(times)} rounds, load average {load_before:.1f} before, "
          f"{load_after:.1f} after\n")
    print(f"Judged as `ptx verify` judges: {len(eager.get('truth', ())):,} real {eager.get('data', '?')} test samples, "
          f"labels and accuracy against eager; quantized from {samples} calibration samples.\n")
    print("| way | pictures/s | vs ORT f32 | verify's verdict |")
    print("| --- | ---: | ---: | --- |")
    for k, ((label, _, verdict), sec, ratio) in enumerate(zip(rows, seconds, ratios)):
        mark = " **(export keeps)**" if best is not None and k == best + 1 else ""
        judged_as = "f32" if verdict is None else (
            f"{verdict.status}: {verdict.measured}" + (f"; {'; '.join(verdict.reasons)}" if verdict.reasons else ""))
        print(f"| {label}{mark} | {args.batch / sec:,.0f} | {ratio:.2f}x | {judged_as} |")
    if best is None and choices:
        print("\nNone of export's choices passes verify's gate here: export writes the one whose labels agree best, "
              "and verify reports it NOT USABLE.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (checkpoint.pt and model.onnx)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds, every row once a round (default 30)")
    parser.add_argument("--openvino", action="store_true", help="add OpenVINO f32, bf16 and int8 rows")
    parser.add_argument("--sessions", action="store_true", help="add 1-thread and opt-level-extended ORT rows")
    parser.add_argument("--only-choices", action="store_true", help="export's CHOICES only, not the other options")
    args = parser.parse_args(argv)
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
            try:
                one_run(run, args, Path(scratch))
            except PtxError as exc:  # no test data here, a checkpoint of an older ptx, ...
                sys.exit(f"{run}: {exc}")


if __name__ == "__main__":
    main()
