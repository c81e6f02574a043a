"""onnx-int8: an ONNX graph quantized to int8 by onnxruntime.quantization (model.int8.onnx, or a user's
FILE.int8.onnx).

Static QDQ (weights and activations int8, per-channel weights), calibrated on the inputs the caller
gives: a tutorial model's real training samples its checkpoint keeps, a user's --calibration file or
inputs generated from the file's signature. Dynamic quantization (int8 weights, activations
quantized per call) where static calibration cannot work: recurrent graphs (ORT's shape inference
fails on the LSTM's graph, and its QDQ kernels do not cover LSTM/GRU/RNN), integer inputs, and a
user's module, which comes without samples (generated ones would calibrate its activations to
noise). A graph where neither quantizes anything is refused in one line; so is a tutorial model
whose task has no labels to judge int8 by (``unsupported``).

Weights use 7 of their 8 bits (onnxruntime's ``reduce_range``). On x86 CPUs without VNNI (AVX2, and
AVX-512 before Cascade Lake) an 8-bit dot product adds two uint8 x int8 products into a 16-bit
intermediate, which saturates for full-range weights (255 x 127 x 2 > 32,767): measured on an AVX2-only
AMD EPYC, convnet's int8 labels agreed with eager on 98.5% through ONNX Runtime against 99.8% through
OpenVINO on the same file. With 7-bit weights the pair sum (255 x 64 x 2 = 32,640) fits, so every x86
CPU computes the same sums (99.6% and 99.6% there): one file, one verdict, whatever CPU judges it.

Which ops go int8 is chosen on the CPU that exports (issue 53). On an AMD EPYC with AVX-512 VNNI the
all-int8 convnet ran at 0.16-0.43x f32's speed through ONNX Runtime. onnxruntime's profiler showed
why: its first convolution reads 1 channel, so each output is a 25-term dot product, too short for
the int8 kernel (5-8x the time of f32's NCHWc convolution); and the quantizer's ReLU removal gave
each MaxPool a different scale on each side, so ORT ran it in f32, behind a DequantizeLinear and a
Transpose of the f32 tensor back from NHWC. On an Intel Xeon with AMX (2026-11-21) ORT's all-int8
convnet was 0.28x f32 and its mlp 5.1x: what pays off in int8 depends on the model and the CPU. So
export quantizes each ``CHOICES`` entry that applies to the graph (onnxruntime.quantization's own
options: ``nodes_to_exclude``, ``op_types_to_quantize``, ``QDQKeepRemovableActivations``), judges
each as ``ptx verify`` does, times each against the f32 graph in alternating rounds, and keeps the
fastest that passes (docs/precisions.md has the measurements). The file records the CPU
(``ptx.cpu``), its speed against f32 there (``ptx.speed_vs_f32``) and what was tried
(``ptx.quantization_tried``); export says so in one line where it is still slower than f32.

The file carries the same metadata as the f32 graph (a tutorial model's contract, a user's
``ptx.signature``) plus ``ptx.precision`` = ``int8``, how it was quantized and the nodes kept in
f32; it is judged by labels (a tutorial model) or by its tensors against the f32 graph (a user's
model), never by the f32 atol.
"""
from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ptx.atomic import scratch_folder
from ptx.contract import DEFAULT_OPSET, Task
from ptx.contract.metadata import from_props
from ptx.errors import DataError, PtxError, first_line
from ptx.infer.formats import onnx_files
from ptx.infer.runtime.memory_plan import give_back_freed, weights_bytes
from ptx.infer.runtime.ort_session import timing_session
from ptx.infer.runtime.timing import alternating_ratios, alternating_times
from ptx.machine import describe_cpu

from . import ExportFormat, Written, description, register
from .onnx import add_metadata, check_opset, save_with_metadata
from .onnx import write as write_onnx

RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
# Ops that only a quantized graph holds: one of them must be there, or nothing was quantized.
QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM",
                 "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul"}
CALIBRATION_BATCH = 64
TIMED_RUNS = 20  # runs of each file, alternating, for what keeping nodes in f32 costs
TIMED_RUNS_NOTE = f"medians of {TIMED_RUNS} runs each, alternating, ONNX Runtime on the CPU"
# How the weights are stored, as the artifact's ptx.quantization names it (module docstring: why 7 bits).
WEIGHTS = "7-bit int8 weights (reduce_range: no 16-bit saturation on CPUs without VNNI)"

# A choice with more ops in f32 must beat the one before it by this much to be taken: on the shared
# 2-core AMD EPYC two mlp files that ORT optimises to the same graph timed 3.98x and 3.62x f32 in
# one run, and the file should not change between two exports on one CPU for less than that noise.
CLEARLY_FASTER = 1.10
MATRIX_OPS = ("Gemm", "MatMul")


@dataclass(frozen=True)
class Choice:
    """One way of calling ``quantize_static``, by options onnxruntime documents: which ops it
    quantizes and whether removable activations stay nodes. Always static QDQ, uint8 activations,
    per-channel 7-bit int8 weights (the module docstring: one verdict on every CPU; tried
    alternatives are in docs/precisions.md)."""

    label: str  # as ptx.quantization and the log name it
    # QDQKeepRemovableActivations: the quantizer normally deletes a ReLU and gives the tensor before
    # it the ReLU's scale; after a MaxPool that leaves the MaxPool two different scales, which ORT can
    # only run in f32 (DequantizeLinear, layout Transposes, QuantizeLinear). Kept, the MaxPool shares
    # its input's scale and runs in uint8 (NhwcMaxPool).
    keep_relu: bool = False
    # "": every op onnxruntime quantizes; "first Conv": the graph's first convolution stays f32 (it
    # reads the picture's few channels: convnet's 1-channel 5x5 one took 5-8x f32's time in int8);
    # "Conv": only Gemm/MatMul go int8 (``op_types_to_quantize``).
    f32_ops: str = ""

    def applies(self, graph) -> bool:
        ops = [n.op_type for n in graph.graph.node]
        if self.keep_relu and not {"Relu", "Clip"} & set(ops):
            return False
        # Convs left in f32 must leave something to int8: a Gemm/MatMul, or ("first Conv") another Conv
        matrix = bool(set(MATRIX_OPS) & set(ops))
        return not self.f32_ops or "Conv" in ops and (matrix or self.f32_ops == "first Conv" and ops.count("Conv") > 1)

    def excluded(self, graph) -> list[str]:
        """The nodes ``nodes_to_exclude`` keeps in f32 for this choice (names of ``graph``)."""
        if self.f32_ops == "first Conv":
            return [next(n.name for n in graph.graph.node if n.op_type == "Conv")]
        return []


CHOICES = (
    Choice("all ops int8"),  # onnxruntime's plain static QDQ: ptx's only int8 file before issue 53
    Choice("all ops int8, ReLUs kept", keep_relu=True),
    Choice("first Conv f32, ReLUs kept", keep_relu=True, f32_ops="first Conv"),
    Choice("Gemm/MatMul int8, Conv f32", f32_ops="Conv"),
)


def unsupported(spec, fmt: str = "onnx-int8") -> str | None:
    """Why ``spec`` cannot have an int8 artifact of format ``fmt`` (so ``ptx models`` and export say
    so up front)."""
    if spec.task is Task.REGRESSION:
        return (f"{fmt}: {spec.name} is a regression model; int8 is judged by label agreement and accuracy, "
                "which a regression has none of: serve model.onnx (f32)")
    return None


def quantized_statically(graph, signature) -> bool:
    """Whether ``graph`` is quantized statically (given inputs to calibrate on): not where it holds a
    recurrent op (ORT's shape inference fails on the LSTM's graph, and its QDQ kernels do not cover
    LSTM/GRU/RNN) or takes an integer input (a token id has no range to calibrate)."""
    return not RECURRENT_OPS & {n.op_type for n in graph.graph.node} and all(
        t.dtype == "float32" for t in signature.inputs)


def batches(signature, cases, size: int = CALIBRATION_BATCH) -> list[dict[str, np.ndarray]]:
    """Each case of inputs by name cut into batches of at most ``size`` rows (a case without a batch
    stays whole)."""
    out = []
    for case in cases:
        n = rows(signature, case)
        out += [case] if n is None else [take(signature, case, s, min(s + size, n)) for s in range(0, n, size)]
    return out


def take(signature, case, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of a case of inputs along each input's batch axis (an input without one whole)."""
    return {t.name: case[t.name] if t.batch_axis is None else
            np.ascontiguousarray(np.take(case[t.name], range(start, stop), axis=t.batch_axis)) for t in signature.inputs}


def rows(signature, case) -> int | None:
    """The batch of a case of inputs: its first batched input's size on its batch axis (None: none is)."""
    return next((case[t.name].shape[t.batch_axis] for t in signature.inputs if t.batch_axis is not None), None)


def _reader(cases: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        get_next = functools.partial(next, iter(cases), None)  # a partial is not bound: called without self

    return Reader()


def split(f32: Path) -> bool:
    """Whether the f32 graph at ``f32`` keeps its weights beside it (onnx_files): then every file made
    from it is written so too (onnxruntime's ``use_external_data_format``), never as one protobuf."""
    return bool(onnx_files.companions(f32))


def prepare(f32: Path) -> Path:
    """ORT's recommended first step (symbolic shape inference, then graph optimisation), so that
    fused ops are what gets quantized: the graph whose node names ``nodes_to_exclude`` takes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = f32.with_name("prepared.onnx")
    external = dict(save_as_external_data=True, all_tensors_to_one_file=True,
                    external_data_location=onnx_files.data_name(prepared)) if split(f32) else {}
    try:
        quant_pre_process(str(f32), str(prepared), **external)
    except Exception:  # optional: quantizing the plain graph still works, only less fused
        return f32
    return prepared


def _quantize_static(prepared: Path, out: Path, calibration: list[dict[str, np.ndarray]], samples: int,
                     exclude: list[str] = (), choice: "Choice" = None) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    # U8S8 (uint8 activations, int8 weights): the pairing ORT's x86 kernels are built for; 7-bit
    # weights so that CPUs without VNNI do not saturate (module docstring). On the AMD EPYC with
    # AVX-512 VNNI, int8 activations (s8s8) and 8-bit weights ran within the noise of this, and the
    # QOperator format lost the ReLUs after each MaxPool (docs/precisions.md#int8-which-ops-and-why).
    quantize_static(str(prepared), str(out), _reader(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    reduce_range=True, nodes_to_exclude=list(exclude), use_external_data_format=split(prepared),
                    op_types_to_quantize=list(MATRIX_OPS) if choice.f32_ops == "Conv" else None,
                    extra_options={"QDQKeepRemovableActivations": choice.keep_relu})
    give_back_freed(weights=weights_bytes(prepared))  # the quantizer's copies of the model and its calibration tensors
    return f"static QDQ, per-channel {WEIGHTS}, uint8 activations, {samples} calibration samples; {choice.label}"


@contextmanager
def quiet_quantizer():
    """The quantizer logs advice through the root logger ("consider pre-processing ..."):
    addressed to us, not to a ptx user."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_dynamic_weights(f32: Path, out: Path, exclude: list[str] = ()) -> str:
    """int8 weights, activations quantized per call: needs no calibration data. Returns how."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(f32), str(out), weight_type=QuantType.QInt8, reduce_range=True,
                     nodes_to_exclude=list(exclude), use_external_data_format=split(f32))
    give_back_freed(weights=weights_bytes(f32))  # the quantizer's copies of the model, freed, were still the process's
    return f"dynamic ({WEIGHTS}, activations quantized per call)"


def write(model, example, path: Path, signature, strings: dict[str, str], *, opset: int = DEFAULT_OPSET,
          exporter=None, mode: str = "trace", calibration=None, keep_f32=None, rank=None, judge=None, bound=None,
          log=print) -> Written:
    """Quantize ``model`` into ``path`` and record how: an nn.Module is exported to f32 ONNX in a
    scratch folder first (the onnx format's writer, with ``opset``, ``exporter``, ``mode``); a path is
    an f32 ONNX file (a user's own), quantized as it is.

    ``calibration``: cases of inputs by name that static quantization calibrates on (None:
    dynamic). A static graph is quantized each way of ``CHOICES`` that applies to it, and the fastest
    that ``judge`` (the caller's: verify's gate for a tutorial model, the tensor rule for a user's)
    passes on this CPU is kept (the module docstring). ``keep_f32``: node names onnxruntime's
    quantizer leaves in f32 (``nodes_to_exclude``) on top of that choice, or ``auto``
    (export/keep_f32.py) with ``rank`` and ``judge`` handed in by the caller, then the revert pass.
    ``bound`` (export/bound.py: --max-drop): the loss the user accepts, which then judges the choice
    and the search in verify's judge's place, and which the file records."""
    from ..keep_f32 import AUTO, resolve

    if bound is not None:  # the user's bound is the judge, and the nodes kept in f32 are searched for
        judge, keep_f32 = bound.judge, AUTO  # a --keep-f32 list beside it was refused (pipeline.check_options)

    name = strings["model"]
    with scratch_folder("ptx-int8-") as scratch:
        f32, proto, base, made, served = f32_graph(model, example, Path(scratch), signature, strings, opset=opset,
                                                   exporter=exporter, mode=mode)
        static = calibration is not None and quantized_statically(proto, signature)
        calibrated = batches(signature, calibration or [])
        samples = sum(rows(signature, c) or 1 for c in calibration or [])
        source = prepare(f32) if static else f32  # the graph the quantizer reads: its node names

        made_here: dict[Path, tuple[str, list[str]]] = {}  # file -> (how it was quantized, the nodes kept in f32)
        graph_read = onnx_files.load_structure(source)  # its nodes' names and ops: never its weights
        recorded: dict[str, str] = {"cpu": describe_cpu()}  # where the choice was measured, and its speed there

        def save(out: Path) -> None:
            save_with_metadata(quantized_graph(out, name, served), out,
                               int8_strings(base, "onnx-int8", *made_here[out], recorded), description(base))

        def quantize(exclude, out=path, choice: Choice = CHOICES[0]) -> Path:
            exclude = resolve(exclude, graph_read, proto, name) if exclude else []
            # The choice's own f32 nodes are named by its label; ptx.keep_f32 lists the ones asked for.
            own = [n for n in choice.excluded(graph_read) if n not in exclude] if static else []
            try:
                with quiet_quantizer():
                    how = (_quantize_static(source, out, calibrated, samples, own + exclude, choice) if static
                           else quantize_dynamic_weights(source, out, exclude))
            except Exception as exc:  # the quantizer raises many types; its first line says what failed
                raise PtxError(f"onnx-int8: onnxruntime's {'static' if static else 'dynamic'} quantizer failed for "
                               f"{name}: {first_line(exc)}; serve {served} (f32)") from None
            made_here[out] = how + kept_in_f32(exclude), exclude
            save(out)
            return out

        feeds = calibrated[0] if calibrated else None  # what the ranking and the keep-f32 timing run on
        timing = calibration[0] if calibration else None  # the first calibration case whole: the choice's batch
        batch = rows(signature, timing) if timing is not None else None
        chosen, ratio = CHOICES[0], None
        if static and judge is not None:
            chosen, ratio = choose(quantize, [c for c in CHOICES if c.applies(graph_read)], f32, timing, batch,
                                   recorded, judge, Path(scratch), served, log)

        chosen_with = functools.partial(quantize, choice=chosen)  # the kept choice, plus the nodes asked for in f32

        if keep_f32 == AUTO:
            keep_searched(chosen_with, f32, feeds, rank, judge, name, log, quantizable(graph_read, static))
        else:
            chosen_with(keep_f32 or [])
        method, kept = made_here[path]
        if kept and feeds is not None:  # what keeping them costs: the int8 file with none kept, timed against this one
            say_what_keeping_costs(chosen_with([], Path(scratch) / "all-int8.onnx"), path, kept, chosen,
                                   feeds, rows(signature, feeds), log)
        if timing is not None and (kept or ratio is None):  # the file written is not one the choice timed
            [ratio], rounds = speed_against_f32(f32, [path], timing)
            recorded["speed_vs_f32"] = speed_note(ratio, batch, rounds, served)
            save(path)
        if bound is not None:  # what the file holds, measured on it as written
            recorded.update(bound.strings(bound.judge(path).value))
            save(path)
        if ratio is not None:
            say_if_slower(ratio, batch, served, log)
    return Written(method + (f", from the {made.method}" if made else ""), made and made.note, made.hint if made else "")


def keep_searched(quantize, f32: Path, feeds, rank, judge, name: str, log: Callable[[str], None],
                  candidates: list[str]) -> None:
    """--keep-f32 auto: the nodes ``rank`` puts first kept in f32 until ``judge`` passes
    (export/keep_f32.py), then each one put back in int8 that the file holds its judge without."""
    from ..keep_f32 import keep_auto, revert

    if feeds is None:
        raise PtxError("--keep-f32 auto ranks nodes on calibration inputs, and there are none here")
    done = keep_auto(quantize, f32, feeds, rank, judge, name, log, candidates)
    if not done.nodes:
        log(f"onnx-int8   --keep-f32 auto: nothing needed keeping in f32 ({done.rounds[0]})")
    else:
        revert(quantize, judge, done.nodes, log)


def say_what_keeping_costs(everything: Path, path: Path, kept: list[str], chosen: Choice, feeds: dict,
                           rows_timed: int | None, log: Callable[[str], None]) -> None:
    """Log the int8 file at ``path`` (``kept`` nodes in f32) timed against ``everything`` (the same
    choice with none kept), in alternating runs."""
    times = alternating_times([ort_call(everything, feeds), ort_call(path, feeds)], TIMED_RUNS, math.inf)
    before, after = (statistics.median(took[i] for took in times) for i in (0, 1))
    log(f"onnx-int8   kept {len(kept)} node{'s' * (len(kept) != 1)} in f32 ({', '.join(kept)}): "
        f"{f'a batch of {rows_timed}' if rows_timed else 'a call'} takes {after * 1e3:.2f} ms where "
        f"{'all-int8' if chosen is CHOICES[0] else chosen.label} takes {before * 1e3:.2f} ms "
        f"({after / before:.2f}x, {TIMED_RUNS_NOTE})")


def kept_in_f32(nodes) -> str:
    """How an int8 file's ptx.quantization ends where it keeps ``nodes`` in f32."""
    return f", {len(nodes)} node{'s' * (len(nodes) != 1)} kept in f32" if nodes else ""


def int8_strings(base: dict[str, str], fmt: str, how: str, kept, recorded: dict[str, str]) -> dict[str, str]:
    """What an int8 file of format ``fmt`` records: the f32 graph's strings (``base``), how it was
    quantized, where and how fast it runs (``recorded``: ptx.cpu, ptx.speed_vs_f32...) and the nodes
    it keeps in f32 (ptx.keep_f32)."""
    return {**base, "precision": "int8", "format": fmt, "quantization": how, **recorded,
            **({"keep_f32": ",".join(kept)} if kept else {})}


def f32_graph(model, example, scratch: Path, signature, strings: dict[str, str], **onnx_options):
    """(the f32 ONNX file in ``scratch`` a quantizer reads, its proto, the metadata the int8 file
    carries, the onnx writer's Written or None, the f32 file's name as the user knows it): an
    nn.Module exported by the onnx format's writer first, a path (a user's own file) as it is."""
    import onnx

    from ..folder_weights import is_lazy

    f32 = scratch / "model.onnx"
    made = None if isinstance(model, (str, Path)) else write_onnx(model, example, f32, signature, strings,
                                                                   **onnx_options)
    # the weights stay in their file where the graph keeps them external (the save below writes the graph alone)
    proto = onnx.load(str(f32 if made else model), load_external_data=False)
    lazy = not made and any(is_lazy(t) for t in proto.graph.initializer)  # traced without its weights (weightless.py)
    if not made and not lazy:  # a user's file's weights beside it, present beside its copy here under its names
        onnx_files.copy_data(model, scratch)
    # the f32 file a refusal sends the user back to (a graph traced without its weights has none yet)
    served = "model.onnx" if made else "its onnx export (--format onnx)" if lazy else Path(model).name
    # What the module's f32 export recorded (its opset, its exporter) travels on; a user's file's
    # own metadata is the caller's to vouch for (in ``strings``).
    base = {**from_props({p.key: p.value for p in proto.metadata_props}), **strings} if made else dict(strings)
    # The dynamo exporter's intermediate shape annotations can contradict the quantizer's own
    # shape inference (lstm: "Inferred shape and existing shape differ"); it re-infers them.
    del proto.graph.value_info[:]
    onnx_files.save_model(proto, f32)
    return f32, proto, base, made, served


def quantizable(graph, static: bool) -> list[str]:
    """The nodes of ``graph`` (the one the quantizer reads) that its registry quantizes, in graph
    order: the ones ``nodes_to_exclude`` can keep in f32."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    return [n.name for n in graph.graph.node if n.op_type in (QDQRegistry if static else IntegerOpsRegistry) and n.name]


def quantized_graph(path: Path, model: str, served: str = "model.onnx"):
    """The quantized ONNX at ``path`` (its weights where they are: inside, or in its external data file),
    refused in one line when the quantizer left nothing in int8."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    if not ops & QUANTIZED_OPS:
        kinds = ", ".join(sorted(RECURRENT_OPS & ops)) or "its"
        raise PtxError(f"onnx-int8: onnxruntime's quantizer leaves nothing of {model} in int8 ({kinds} ops "
                       f"have no int8 kernels): serve {served} (f32)")
    return proto


def speed_against_f32(f32: Path, files: list[Path], feeds: dict) -> tuple[list[float], int]:
    """Each file's speed against ``f32`` through ONNX Runtime's CPU provider (ptx's session defaults:
    a thread per core, every graph optimisation), in ``alternating_ratios``. Returns (ratios, rounds run).

    The sessions' threads do not spin between runs: ORT's do by default, and a session's spinning
    worker then holds a core while the next session runs. On 2 cores two files that optimise to the
    same graph (mlp with and without QDQKeepRemovableActivations) timed 7.7x and 2.2x f32 with
    spinning, each round in the same cyclic order, and 3.4x and 3.5x without it."""
    return alternating_ratios([ort_call(p, feeds) for p in [f32, *files]])


def ort_call(path: Path, feeds: dict) -> Callable[[], object]:
    """One run of the file at ``path`` on ``feeds`` through ONNX Runtime's CPU provider, its threads
    not spinning between runs (``speed_against_f32``)."""
    return functools.partial(timing_session(path).run, None, feeds)


def speed_note(ratio: float, batch: int | None, rounds: int, served: str = "model.onnx",
               through: str = "through ONNX Runtime on the CPU") -> str:
    """ptx.speed_vs_f32: the ratio, and how and when it was measured (the CPU is ptx.cpu)."""
    return (f"{ratio:.2f}x {served}'s speed {through}, {_batch_words(batch)}, median of "
            f"{rounds} alternating rounds, {time.strftime('%Y-%m-%d')}")


def _batch_words(batch: int | None) -> str:
    return f"batch {batch}" if batch else "one call"


def say_if_slower(ratio: float, batch: int | None, served: str, log: Callable[[str], None], fmt: str = "onnx-int8",
                  through: str = "through ONNX Runtime", others: str = "openvino-int8/bf16") -> None:
    if ratio < 1.0:
        log(f"{fmt:<11} slower than f32 on this CPU ({describe_cpu()}): {ratio:.2f}x {served}'s speed {through}, "
            f"{_batch_words(batch)}; int8 is smaller here, not faster ({others} may be: ptx bench)")


def choose(quantize, choices: list[Choice], f32: Path, feeds: dict, batch: int | None, recorded: dict[str, str],
           judge, scratch: Path, served: str, log: Callable[[str], None]) -> tuple[Choice, float | None]:
    """Quantize with each choice, judge each as verify does, time each against f32 in one set of
    alternating rounds, and keep the fastest that passes (a later one, with more ops left in f32,
    only when ``CLEARLY_FASTER``); where none passes, the one whose labels agree best, for the gate
    to report. Writes what was tried and the speed into ``recorded``; returns the choice and its speed."""
    files, verdicts, tried = [], [], []
    for i, choice in enumerate(choices):
        try:
            files.append(quantize([], scratch / f"choice-{i}.onnx", choice))
        except PtxError:
            if not tried:  # the plain quantization failed: nothing to choose from
                raise
            continue
        tried.append(choice)
        try:
            verdicts.append(judge(files[-1]))
        except DataError as exc:  # the run's test data is not on this machine: keep the plain way, unjudged
            log(f"onnx-int8   {exc}: int8 not chosen by speed here (the plain way kept; verify cannot judge either)")
            return choices[0], None
    ratios, rounds = speed_against_f32(f32, files, feeds)
    best = None
    for i, verdict in enumerate(verdicts):  # the fastest that passes, a later one only when clearly faster
        if not verdict.unusable and (best is None or ratios[i] > ratios[best] * CLEARLY_FASTER):
            best = i
    if best is None:  # none passes: the one closest to passing (labels agree best, fewest failures), for the gate
        # (labels agree best, or a --max-drop bound's metric is highest; fewest failures)
        best = max(range(len(tried)), key=lambda i: (verdicts[i].value or 0.0, -len(verdicts[i].unusable)))
    summary = "; ".join(f"{c.label}: {r:.2f}x, {'PASS' if not v.unusable else 'fails the gate'}"
                        for c, r, v in zip(tried, ratios, verdicts))
    recorded.update(quantization_tried=f"{summary} (speed against {served} through ONNX Runtime, "
                                       f"{_batch_words(batch)})",
                    speed_vs_f32=speed_note(ratios[best], batch, rounds, served))
    log(f"onnx-int8   {len(tried)} way{'s' * (len(tried) != 1)} to quantize timed against {served} on "
        f"{describe_cpu()} ({_batch_words(batch)}): {summary}: kept {tried[best].label}")
    return tried[best], ratios[best]



register(ExportFormat(name="onnx-int8", description="ONNX quantized to int8 (ort-cpu and openvino --precision int8)",
                      serving_backend="ort-cpu", write=write, precision="int8", calibrated=True,
                      unsupported=unsupported, add_metadata=add_metadata, check_options=check_opset))
