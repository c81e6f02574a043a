"""openvino-int8: an ONNX graph quantized to int8 by NNCF, OpenVINO's own quantizer, for the openvino
backend (model.openvino-int8.onnx, or a user's FILE.openvino-int8.onnx).

``nncf.quantize`` (post-training quantization: symmetric int8 weights per channel, activations
calibrated on samples, fast bias correction) places Q/DQ pairs where OpenVINO's CPU plugin runs
int8 kernels; onnxruntime's quantizer (onnx-int8) places them where ONNX Runtime's do. Calibrated on
what onnx-int8 calibrates on: a tutorial model's real training samples its checkpoint keeps, a
user's --calibration file or inputs generated from the file's signature. With ``bound``
(``--max-drop``, export/bound.py) it is ``nncf.quantize_with_accuracy_control`` instead: NNCF ranks
the quantized operations by how much each costs the metric and returns the worst to f32 until the
bound holds; ptx then runs its revert pass (export/keep_f32.py) with ``nncf.quantize``'s
``ignored_scope``, so that no operation stays in f32 that the bound holds without.

Why an NNCF-quantized ONNX file, not an OpenVINO IR (model.xml/.bin from ``openvino.save_model``):
on the AMD EPYC with AVX-512 VNNI (2026-11-24) the two ran at the same speed through OpenVINO
(convnet 1.48x and 1.45x ORT f32 at batch 1024, mlp 2.45x and 2.69x, then 2.62x and 2.37x: within
the noise), and an ONNX file is one file that carries its contract in ``metadata_props`` as every
other ptx export does, that every loader, ``ptx inspect``, verify's --locate and the Triton and KServe
writers read already, and that ONNX Runtime runs too (``ptx verify FILE.openvino-int8.onnx``). An IR
would be two files, a second metadata store (rt_info) and a second reader for each of those.

Weights use 7 of their 8 bits (NNCF's ``OverflowFix.ENABLE``), for the reason onnx-int8's do: CPUs
without VNNI add two 8-bit products in 16 bits, which saturates with full-range weights; with half
the range every x86 CPU computes the same sums, and one file gets one verdict.

NNCF imports torch where it is installed (its tensor functions register torch's): this export does,
the file it writes runs on OpenVINO (or ONNX Runtime) without it. NNCF is optional (the openvino
extra): without it the format is refused in one line.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from pathlib import Path

from ptx.atomic import scratch_folder
from ptx.contract import DEFAULT_OPSET
from ptx.errors import DataError, PtxError, first_line
from ptx.infer.formats import onnx_files
from ptx.infer.runtime.timing import alternating_ratios
from ptx.machine import describe_cpu

from . import ExportFormat, Written, description, register
from .onnx import add_metadata, check_opset, save_with_metadata
from .onnx_int8 import (CALIBRATION_BATCH, batches, f32_graph, int8_strings, kept_in_f32, ort_call, rows, say_if_slower,
                        speed_note, unsupported)

NAME = "openvino-int8"
# The ops NNCF's ONNX backend quantizes here (weights and inputs): the ones ptx.keep_f32 can name.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHTS = "7-bit int8 weights (NNCF OverflowFix.ENABLE: no 16-bit saturation on CPUs without VNNI)"


def unavailable() -> str | None:
    """Why this machine cannot write the format (``--format all`` leaves it out), or None."""
    from ptx.extras import missing, missing_part

    _telemetry_off()  # before the check imports NNCF
    return missing_part("nncf") or missing("openvino")


def imported_nncf():
    """NNCF, its telemetry off (``_telemetry_off``)."""
    _telemetry_off()
    import nncf

    return nncf


def _telemetry_off() -> None:
    """NNCF's telemetry off, before NNCF is first imported. Left on, openvino_telemetry forks the process for
    each call NNCF counts, and each fork is a second copy of the exporting process in its process tree (6 GB
    more, counted, at each group of a 0.5B model's weights). It is also a network call the user did not ask for.
    NNCF reads its switch, NNCF_CI, when it is first imported (nncf/telemetry/wrapper.py); it stubs the telemetry
    under pytest alone, so the suite never saw the forks."""
    import os

    os.environ.setdefault("NNCF_CI", "1")


@contextmanager
def quiet_nncf():
    """NNCF draws progress bars (rich) and logs advice: addressed to its users' scripts, not to a ptx
    user, who reads one line per step. Its bars are one class, used as iterator and as context."""
    nncf_logger = logging.getLogger("nncf")
    level, nncf_logger.level = nncf_logger.level, logging.ERROR
    try:
        from nncf.common.logging.track_progress import track
    except ImportError:  # another NNCF: its bars are drawn
        track = None
    if track is not None:
        drawn = track.__init__
        track.__init__ = lambda self, *args, **kwargs: drawn(self, *args, **{**kwargs, "disable": True})
    try:
        yield
    finally:
        nncf_logger.level = level
        if track is not None:
            track.__init__ = drawn


# Ops that only move values: NNCF puts the Q/DQ pair before them (input -> Q/DQ -> Reshape -> Gemm), so a
# quantized node's data input may come from one of these rather than from its DequantizeLinear.
MOVES_VALUES = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool", "Relu", "Gather",
                "Slice")


def _int8(proto) -> dict[str, bool]:
    """Each node of NNCF's graph that quantizes (QUANTIZED_OPS): whether it reads its data or its
    weight through a DequantizeLinear (looking through ops that only move values)."""
    made = {o: n for n in proto.graph.node for o in n.output}

    def dequantized(tensor: str) -> bool:
        node = made.get(tensor)
        while node is not None and node.op_type in MOVES_VALUES:
            node = made.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return {n.name: any(dequantized(t) for t in n.input[:2]) for n in proto.graph.node if n.op_type in QUANTIZED_OPS}


def f32_nodes(proto) -> list[str]:
    """The nodes quantize_with_accuracy_control returned to f32 (its ignored scope quantizes neither
    their data nor their weight)."""
    return [name for name, int8 in _int8(proto).items() if not int8]


def write(model, example, path: Path, signature, strings: dict[str, str], *, opset: int = DEFAULT_OPSET,
          exporter=None, mode: str = "trace", calibration=None, judge=None, bound=None, log=print) -> Written:
    """Quantize ``model`` (an nn.Module, exported to f32 ONNX first, or a user's f32 ONNX path) with
    NNCF into ``path``, calibrated on ``calibration`` (cases of inputs by name), and record how, its
    speed on this CPU and, with ``bound``, what it holds. ``judge`` is not used: NNCF's placement is
    OpenVINO's, not chosen by timing here; export judges the file written as verify does."""
    import onnx

    from ptx.extras import MissingExtraError

    from ..keep_f32 import revert

    why = unavailable()  # NNCF and OpenVINO (which times the file) come with the openvino extra
    if why:
        raise MissingExtraError(why)
    nncf = imported_nncf()

    name = strings["model"]
    if not calibration:
        raise PtxError(f"openvino-int8: NNCF calibrates on real inputs, and there are none for {name} here: export "
                       "it to ONNX, then `ptx export model.onnx --format openvino-int8 --calibration SAMPLES.npz`")
    with scratch_folder("ptx-ov-int8-") as scratch:
        f32, proto, base, made, served = f32_graph(model, example, Path(scratch), signature, strings, opset=opset,
                                                   exporter=exporter, mode=mode)
        calibrated = batches(signature, calibration, CALIBRATION_BATCH)
        samples = sum(rows(signature, c) or 1 for c in calibration)
        how = f"NNCF {nncf.__version__} post-training quantization, {WEIGHTS}, {samples} calibration samples"
        recorded: dict[str, str] = {"cpu": describe_cpu()}
        kept: list[str] = []

        def options(exclude) -> dict:
            return dict(subset_size=len(calibrated), target_device=nncf.TargetDevice.CPU,
                        ignored_scope=nncf.IgnoredScope(names=list(exclude)) if exclude else None)

        def advanced():
            return nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE,
                                                       backend_params=_external_data(proto, Path(scratch)))

        def save(quantized, out: Path, exclude) -> Path:
            save_with_metadata(quantized, out, int8_strings(base, NAME, how + kept_in_f32(exclude), exclude, recorded),
                               description(base))
            return out

        def quantize(exclude, out: Path = path) -> Path:
            try:
                with quiet_nncf():
                    quantized = nncf.quantize(proto, nncf.Dataset(calibrated), advanced_parameters=advanced(),
                                              **options(exclude))
            except Exception as exc:  # NNCF raises many types; its first line says what failed
                raise PtxError(f"openvino-int8: NNCF's quantizer failed for {name}: {first_line(exc)}; serve "
                               f"{served} (f32)") from None
            return save(quantized, out, exclude)

        if bound is not None:
            how += "; NNCF's accuracy control, then ptx's revert pass"
            kept = _accuracy_control(nncf, proto, calibrated, bound, base, Path(scratch), options, advanced, name,
                                     served, log)
        if kept:
            log(f"{NAME} NNCF kept {len(kept)} node{'s' * (len(kept) != 1)} in f32 ({', '.join(kept)}); the "
                "revert pass returns each to int8 where the bound holds without it")
            if bound.judge(quantize(kept)).unusable:  # quantize() and NNCF's restorer can differ by a little
                kept = _fallback(quantize, bound, kept, log)
            kept = revert(quantize, bound.judge, kept, log, NAME)
        else:
            quantize([])
        timing = calibration[0]
        batch = rows(signature, timing)
        ratios, rounds = alternating_ratios([ort_call(f32, timing), openvino_call(path, timing),
                                             openvino_call(f32, timing)])
        recorded["speed_vs_f32"] = speed_note(ratios[0], batch, rounds, served,
                                              f"through ONNX Runtime f32 ({ratios[0] / ratios[1]:.2f}x through OpenVINO "
                                              "f32), run through OpenVINO on the CPU")
        if bound is not None:
            recorded.update(bound.strings(bound.judge(path).value))
        save(onnx.load(str(path), load_external_data=False), path, kept)  # its weights stay where they are
        say_if_slower(ratios[0], batch, served, log, NAME, "through OpenVINO against ONNX Runtime f32",
                      "ort-cpu-int8, openvino-bf16")
    return Written(how + (f", from the {made.method}" if made else ""), made and made.note, made.hint if made else "")


def _accuracy_control(nncf, proto, calibrated, bound, base, scratch: Path, options, advanced, name, served,
                      log) -> list[str]:
    """NNCF's quantize_with_accuracy_control on ``bound``'s metric; the nodes it left in f32."""
    candidate = scratch / "candidate.onnx"

    def validate(model, items) -> tuple[float, list[float] | None]:
        # Each candidate NNCF hands over is measured as the written file will be: saved with the
        # contract, opened by the serving backend. An f32 one (NNCF's reference) is opened at f32.
        quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        save_with_metadata(model, candidate, {**base, **({"precision": "int8", "format": NAME} if quantized else {})},
                           description(base))
        indices = [int(i) for i in items]
        return bound.measure(candidate, None if len(indices) == bound.items else indices)

    log(f"{NAME} NNCF quantize_with_accuracy_control: {bound.metric} may drop at most {bound.max_drop:g}{bound.unit} "
        f"from f32's {bound.reference:.4f}")
    try:
        with quiet_nncf():
            quantized = nncf.quantize_with_accuracy_control(
                proto, nncf.Dataset(calibrated), nncf.Dataset(list(range(bound.items))), validate,
                max_drop=bound.max_drop / bound.points, drop_type=nncf.DropType.ABSOLUTE,
                advanced_quantization_parameters=advanced(), **options([]))
    except (PtxError, DataError):
        raise
    except Exception as exc:  # NNCF raises many types; its first line says what failed
        raise PtxError(f"openvino-int8: NNCF's accuracy control failed for {name}: {first_line(exc)}; serve "
                       f"{served} (f32)") from None
    return f32_nodes(quantized)


def _fallback(quantize, bound, kept: list[str], log) -> list[str]:
    """Where ``nncf.quantize`` with NNCF's choice in ``ignored_scope`` misses the bound that NNCF's own
    model held (its restorer undoes bias correction op by op; quantize recalibrates): every quantized
    node is kept in f32 until it holds, then the revert pass takes back what is not needed."""
    every = list(dict.fromkeys(kept + quantized_nodes(onnx_files.load_structure(quantize([])))))
    log(f"{NAME} with NNCF's {len(kept)} node{'s' * (len(kept) != 1)} in f32 the file misses the bound: starting the "
        f"revert pass from all {len(every)} quantized nodes in f32")
    return every


def _external_data(proto, scratch: Path) -> dict:
    """NNCF's backend parameters for the f32 graph ``proto``: where a large one's weights are (the
    folder its external data file is in, absolute, as NNCF asks), so that it reads them from there."""
    if not onnx_files.holds_external(proto):
        return {}
    from nncf.onnx.quantization.backend_parameters import BackendParameters

    return {BackendParameters.EXTERNAL_DATA_DIR: str(scratch.resolve())}


def quantized_nodes(proto) -> list[str]:
    """Every node of the quantized graph that NNCF quantized."""
    return [name for name, int8 in _int8(proto).items() if int8]


def openvino_call(path: Path, feeds: dict):
    """One run of the file at ``path`` through OpenVINO's CPU plugin, compiled for ``feeds``' shapes
    as the openvino backend compiles it (f32 hint: the int8 file's own Q/DQ ops decide its int8)."""
    from ptx.infer.runtime.openvino_runner import shared_core

    core = shared_core()  # the openvino backend's own: one Core's plugins for the process
    model = core.read_model(str(path))
    model.reshape({name: list(array.shape) for name, array in feeds.items()})
    request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    return lambda: request.infer(feeds, share_inputs=True)


register(ExportFormat(name=NAME, description="ONNX quantized to int8 by NNCF for OpenVINO (openvino --precision int8)",
                      serving_backend="openvino", write=write, precision="int8", calibrated=True,
                      unsupported=functools.partial(unsupported, fmt=NAME), unavailable=unavailable,
                      progress="quantizing with NNCF", add_metadata=add_metadata, check_options=check_opset))
