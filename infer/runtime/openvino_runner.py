"""The OpenVINO runner (openvino, openvino-bf16, openvino-int8): an ONNX file through OpenVINO's CPU
plugin, run by name. One class for a tutorial model's export and a user's own file alike.

numpy, onnx (to read the metadata and the graph's signature) and openvino only: never torch. Each
set of input shapes gets its own copy of the model reshaped to those static shapes and compiled once
(a small cache): OpenVINO's CPU plugin ignores a GRU's ``sequence_lens`` when the sequence or batch
axis is dynamic, and gave gru-classifier wrong answers (462 of 1,128 labels agreed) until the shape
was static. A user's file's signature is read from the ONNX graph (onnx_graph.py), not from OpenVINO,
whose reader drops the names of symbolic dimensions: every backend then names a file's tensors alike.
A decoder with its cache is compiled with its dynamic shapes: in its stateful form for a decoding (openvino_state.py),
as written for a run given its past.
"""
from __future__ import annotations

import functools
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import numpy as np

from ptx.contract.generation import GENERATION_KEY, layout_of, of_metadata
from ptx.contract.names import FULL_PRECISION, weight_only_file
from ptx.errors import ArtifactError, BackendUnavailableError, ModelRunError, PtxError, PtxWarning, first_line

from ..formats.signature import Opening
from ..formats.onnx_graph import graph_signature, read_graph
from . import backends as registry
from .memory_plan import compiled_shapes_room, weights_bytes
from .openvino_attention import fuse_attention, with_cache_reorder
from .openvino_state import StateCache, StatefulRequest, cache_pairs, make_stateful
from .runner import Runner

# OpenVINO's own names for the precisions it runs the f32 graph at. Without the hint it picks bf16
# on CPUs with AMX or avx512_bf16, and its answers then differ from eager beyond the f32 atol.
# int8 and int4: the file's own quantized weights (Q/DQ ops, MatMulNBits), the rest f32
RUNTIME_PRECISION = {"f32": "f32", "bf16": "bf16", "int8": "f32", "int4": "f32"}
# Compiled shapes kept per runner at most (verify uses a handful, a server one or two): as many as the memory
# plan's budget for compiled copies holds, at least one, each what the registry says one holds.
SHAPE_CACHE = 8
STATEFUL = ("stateful",)  # the key of a decoder's stateful form among the compiled models
# "off": a decoder's stateful form keeps its attention as the file writes it (openvino_attention.py), to measure
ATTENTION_ENV = "PTX_OPENVINO_ATTENTION"


def unavailable(device: str = "cpu") -> str | None:
    """Why the openvino backend cannot run here (the extra is not installed), or None."""
    from ptx.extras import missing

    return missing("openvino")


@functools.cache
def shared_core():
    """One OpenVINO Core for the process: each holds its plugins' state, and --locate opens a runner
    per question (a Core each was a plugin load each). Compiling from several threads is safe."""
    why = unavailable()
    if why:
        raise BackendUnavailableError(why)
    import openvino

    return openvino.Core()


COMPILED_CACHE_ENV = "PTX_OPENVINO_CACHE"  # a folder where OpenVINO keeps compiled decoders between processes


def compiled_cache() -> str | None:
    """Where OpenVINO keeps compiled decoders between processes ($PTX_OPENVINO_CACHE), or None: by default
    nowhere. With OpenVINO 2026.4's CACHE_DIR set, the CPU plugin compiles a decoder otherwise: a tiny Llama's
    bf16 greedy tokens agreed with eager's on 20 of 48 steps where they agree on 34 without it (on every
    run, the first compile included), so the file ptx judged would not be the model that runs. Opt in where
    the compile's time matters more (a server's start); a compiled model takes about its file's size."""
    chosen = os.environ.get(COMPILED_CACHE_ENV, "").strip()
    if not chosen or chosen.lower() in ("off", "0", "no", "false"):
        return None
    folder = Path(chosen).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(folder)


def has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (OpenVINO would silently run f32 otherwise)."""
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_complaint(exc: BaseException) -> str:
    """What OpenVINO says went wrong, in one line: its messages open with the C++ check that failed
    ("Check 'TRShape::broadcast_merge_into(...)' failed at src/...") and say why on the lines after. Its ONNX
    reader's report of ops it could not convert names each op with its reason, the one at the root of it
    often not first (a GatherBlockQuantized it refuses leaves the ops after it untyped): each is said."""
    text = str(exc)
    if UNCONVERTED in text:
        failed = [_unconverted(block) for block in text.split("\n-- ")[1:] if " with a message:" in block]
        failed += [f"{op.strip()} (no conversion rule)" for line in text.splitlines() if NO_RULE in line
                   for op in line.split(NO_RULE, 1)[1].split(",") if op.strip()]
        if failed:
            return f"its ONNX reader does not convert {'; '.join(failed)}"[:600]
    lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Check '"):
        lines = lines[1:]
    return " ".join(lines)[:400] or type(exc).__name__


UNCONVERTED = "Model wasn't fully converted"  # OpenVINO's ONNX reader's report of the ops it could not convert
NO_RULE = "No conversion rule found for operations:"  # the report's line of ops it has no rule for at all
_CONTEXT = ("Check '", "While validating", "Summary:", "-- Conversion is failed", "-- No conversion rule")


def _unconverted(block: str) -> str:
    """``OP (why)`` of one op of the reader's report (a block that opens "OP with a message:")."""
    op, _, body = block.partition(" with a message:")
    why = [" ".join(ln.split()) for ln in body.splitlines() if ln.strip() and not ln.strip().startswith(_CONTEXT)]
    return f"{op.strip()} ({why[0]})" if why else op.strip()


class OpenVinoRunner(Runner):
    """An OpenVINO model read from an ONNX file, compiled per set of input shapes. One call at a
    time (an infer request serves one), guarded by a lock."""

    backend = "openvino"
    holding = ("model",)

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION,
                 opening: Opening | None = None):
        path, opening = Path(path), opening or Opening("onnx")
        if device != "cpu":
            raise PtxError(f"openvino runs on the CPU here, not {device}")
        if precision not in RUNTIME_PRECISION:
            raise PtxError(f"openvino runs {', '.join(RUNTIME_PRECISION)}, not {precision!r}")
        if precision == "bf16" and not has_bf16():  # OpenVINO would silently run f32
            raise BackendUnavailableError("openvino-bf16: this CPU has no bf16 instructions (OpenVINO would run f32)")
        self.core = shared_core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # the ONNX frontend's refusal names the operator it cannot convert
            raise ArtifactError(f"{path}: OpenVINO cannot read it ({openvino_complaint(exc)}); {opening.remedy}") \
                from None
        # The graph's own signature (onnx): OpenVINO's reader drops the names of symbolic dimensions.
        signature = opening.of_graph(graph_signature(read_graph(path), path, opening.batch_axes), path)
        super().__init__(signature, path, opening.name, opening.metadata)
        self.device, self.precision = "cpu", precision
        # the precision hint, and one stream using every core (a synchronous call gets all of them)
        self.config = {"INFERENCE_PRECISION_HINT": RUNTIME_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        self._lock = threading.Lock()
        weights = weights_bytes(path)
        per_shape = registry.get("openvino").compiled_copy(precision, weight_only_file(path, opening.metadata))
        self.shapes_kept = compiled_shapes_room(weights, per_shape, SHAPE_CACHE)
        self._cache: OrderedDict[tuple, tuple[object, list[int]]] = OrderedDict()  # the most recently used last
        # A decoder with its cache meets a new past length at every step: compiled once with its dynamic
        # shapes, as OpenVINO GenAI runs one (a compile per step would cost more than the step); so is a
        # decoder in Optimum's layout without ptx's record. Compiled here, as ONNX Runtime builds its session
        # when it opens a file, not within the first prompt's run (ptx generate said a 6-layer GPT-2's first
        # prompt took 230 ms, nearly all of it the compile); kept in OpenVINO's model cache between processes
        # where the user asks (compiled_cache says why not by default).
        self.dynamic = GENERATION_KEY in self.metadata or layout_of(signature) is not None
        # its cache kept in OpenVINO between a decoding's steps (openvino_state.py says why)
        self.pairs: dict[str, str] = {}
        self.ids = "input_ids"  # the decoder's token ids, whose batch its fused attention's cache index reads
        self.attention_fused = 0  # layers whose attention the stateful form runs as OpenVINO's fused operator
        if self.dynamic:
            cache = compiled_cache()
            if cache is not None:
                self.config["CACHE_DIR"] = cache
            try:
                generation = of_metadata(self.metadata, path.name) if GENERATION_KEY in self.metadata else \
                    layout_of(signature)
            except PtxError:  # a contract that does not hold is said where a decoding reads it: run as written
                generation = None
            self.pairs = cache_pairs(generation, signature.input_names, signature.output_names)
            self.ids = generation.input_ids if generation is not None else self.ids
            # The variables in the precision the model runs at: the CPU plugin's default is u8. It applies to the
            # plugin's fused attention operator, which the stateful form's attention is rewritten into
            # (openvino_attention.py), so a u8 cache would be a second rounding the file was not judged with.
            if self.pairs:
                self.config["KV_CACHE_PRECISION"] = RUNTIME_PRECISION[precision]
                try:
                    self.compiled_for({}, stateful=True)  # what a decoding runs; a run given its past, on demand
                    return
                except Exception as exc:  # noqa: BLE001 - a graph OpenVINO cannot make stateful runs as written
                    # said: its decoding then hands the whole cache to OpenVINO and back at every step (slower)
                    warnings.warn(PtxWarning(
                        f"{first_line(exc)}: its decodings hand the whole cache to OpenVINO and back at every step, "
                        "as the file is written (slower)"), stacklevel=2)
                    self.pairs = {}
                    self.config.pop("KV_CACHE_PRECISION", None)
                    self._cache.clear()
            self.compiled_for({})

    def compiled_for(self, shapes: Mapping[str, tuple[int, ...]], stateful: bool = False):
        """(infer request, output index per signature output) of the model compiled for these static
        input shapes; compiled once, a few kept. ``stateful``: (the compiled model, None) of a decoder in its
        stateful form, kept among them (a run that feeds its past as arrays runs the model as written: setting
        the variables from arrays cost 1.4x to 1.6x a stateless run of a batch of 4 at 500 positions). A
        compile failure is one ModelRunError."""
        key = STATEFUL if stateful else () if self.dynamic else \
            tuple((name, tuple(shape)) for name, shape in shapes.items())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        while len(self._cache) >= self.shapes_kept:  # let the oldest go before the next is compiled, not after
            self._cache.popitem(last=False)
        self._cache[key] = self._compile(key)
        return self._cache[key]

    def close(self, collect: bool = False) -> None:
        """The compiled shapes and the read model let go."""
        self._cache.clear()
        super().close(collect)

    def _compile(self, key: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[object, list[int] | None]:
        try:
            model = self._stateful_model() if key == STATEFUL else self.model.clone()
            if key and key != STATEFUL:
                model.reshape({name: list(shape) for name, shape in key})
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:
            shown = "in its stateful form (a decoding's cache in its variables)" if key == STATEFUL else \
                "for inputs " + (", ".join(f"{n} {list(s)}" for n, s in key)
                                 or "its dynamic shapes (a decoder with its cache)")
            raise ModelRunError(f"openvino cannot compile {self.name} {shown}: {openvino_complaint(exc)}") from None
        if key == STATEFUL:  # its requests are StatefulRequests (one per decoding)
            return compiled, None
        ports = [set(port.get_names()) for port in compiled.outputs]
        # ONNX outputs keep their names in OpenVINO; the graph's order stands in where one was renamed
        order = [next((i for i, names in enumerate(ports) if name in names), k)
                 for k, name in enumerate(self.signature.output_names)]
        return compiled.create_infer_request(), order

    def _stateful_model(self):
        """The read model in its stateful form, each attention block it matches as OpenVINO's fused operator
        (openvino_attention.py). A rewrite that fails is said, and the stateful form runs the attention as the
        file writes it."""
        model = self.model.clone()
        if os.environ.get(ATTENTION_ENV, "").strip().lower() in ("off", "0", "no", "false"):
            make_stateful(model, self.pairs)
            return model
        try:
            fused = fuse_attention(model)
            make_stateful(model, self.pairs)
            if fused:
                with_cache_reorder(model, self.ids)
            self.attention_fused = fused
            return model
        except Exception as exc:  # noqa: BLE001 - OpenVINO's own errors: the file's attention runs as written
            why = exc
        self.attention_fused = 0
        model = self.model.clone()
        make_stateful(model, self.pairs)  # its own failure is the stateful form's (the caller's to say), not ours
        warnings.warn(PtxWarning(f"openvino runs {self.name}'s attention as the file writes it, not as its fused "
                                 f"operator: {first_line(why)}"), stacklevel=2)
        return model

    def stateful_request(self) -> StatefulRequest:
        """A new infer request of the stateful decoder, its variables its own (a StateCache's)."""
        with self._lock:  # the compiled models are shared with run()'s, which compiles under the lock too
            compiled, _ = self.compiled_for({}, stateful=True)
        return StatefulRequest(compiled, self.pairs, self.signature.output_names)

    def new_cache(self, generation):
        """A stateful decoder's decoding keeps its cache in the variables of a request of its own (StateCache:
        HeldState values fed back); its release lets them go. Any other model, and a fixed-length cache (whose buffer
        the file writes at the slots it is given, fed as any input): Runner's."""
        if not self.pairs or self.closed or generation.cache_position:
            return super().new_cache(generation)
        return StateCache(self, self.signature, generation)

    def run_stateful(self, request: StatefulRequest, feeds, held=()) -> dict[str, object]:
        """A run of ``request`` (a StateCache's), its failure one line as a run's would be."""
        if self.closed:  # a decoding begun before close(): refused as a run would be
            return self.run(feeds)
        try:
            return request.run(feeds, held)
        except PtxError:
            raise
        except Exception as exc:
            raise self._failed(feeds, openvino_complaint(exc)) from None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            request, order = self.compiled_for({n: a.shape for n, a in feeds.items()})
            try:
                # copies (share_outputs is off): the request reuses its buffers on the next call
                result = request.infer(feeds, share_inputs=True)
            except Exception as exc:
                raise self._failed(feeds, openvino_complaint(exc)) from None
        return {name: np.asarray(result[i]) for name, i in zip(self.signature.output_names, order)}

    def bare(self, feeds: dict[str, np.ndarray]):
        """The compiled model's infer request called directly, as an OpenVINO user would."""
        request, _ = self.compiled_for({n: a.shape for n, a in feeds.items()})
        return "bare OpenVINO infer request", lambda: request.infer(feeds, share_inputs=True)
