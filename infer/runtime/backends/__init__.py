"""Backend registry (the model registry's pattern): a backend is one file in this folder that calls
``register(Backend(...))``, plus its module name in ``_BACKEND_FILES``. The CLI's choices, ``load``,
``ptx verify`` and ``ptx bench`` all iterate this registry.

Importing it imports neither torch nor onnxruntime: each backend imports its runtime when loaded.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptx.contract.names import FULL_PRECISION, PRECISION_DEVICES, PRECISIONS
from ptx.contract.registry import Registry
from ptx.errors import PtxError

@dataclass(frozen=True)
class Backend:
    """``open(path, device, precision, opening)`` -> a Runner (ptx.infer.runtime.runner) on the
    model at ``path`` (a tutorial model's artifact and a user's file alike: ``opening``, made once by
    the model layer, says where its signature comes from); ``unavailable(device)`` -> why this
    machine cannot run it, or None. A runner answers ``bare(feeds)`` (ptx bench's peer column)."""

    name: str
    artifact: str  # the artifact format it reads from a run folder (a key of ptx.contract.names.ARTIFACT_FILES)
    devices: tuple[str, ...]
    open: Callable[..., "object"]
    unavailable: Callable[[str], str | None]
    needs_torch: bool
    # The memory it holds at its peak while it opens a model and runs it, as a multiple of the file's weights:
    # every backend declares it, measured (its file says on which models: scripts/backend_memory.py measures
    # them), and the memory plan (memory_plan.py) plans every opening with it; a row that cannot fit is skipped.
    holds: float
    # Precision -> the artifact format it reads (None: ``artifact``). The first is the default; a
    # backend without this runs f32 only. bf16 is a runtime setting of the f32 file; int8 is its
    # own file, made by the quantizer of the runtime that serves it (ort-cpu: --format onnx-int8,
    # model.int8.onnx; openvino: --format openvino-int8, model.openvino-int8.onnx); tf32 runs the f32
    # file with TF32 math on CUDA (PRECISION_DEVICES).
    precisions: tuple[tuple[str, str | None], ...] = ((FULL_PRECISION, None),)
    # What can be proven of an artifact for this backend without running it (``static(path)`` -> one
    # line), for the rows ``ptx verify`` cannot run on this machine: ort-cuda's static CUDA placement.
    static: Callable[[Path], str] | None = None
    # Whether bench adds its runner's ``resident(feeds)`` row on CUDA: the model called on input
    # already on its GPU, no host copies, the "GPU-resident" ceiling, never named fastest.
    resident: bool = False
    # The kinds of model ``open`` takes (onnx, torchscript, pt2, checkpoint, module), where they are
    # more than ``artifact``'s one: eager rebuilds a checkpoint or runs a live nn.Module;
    # eager-cuda-graph replays a checkpoint's module, a TorchScript file or a pt2 package.
    reads: tuple[str, ...] = ()
    # A third opinion (onnx.reference): its disagreement alone is a note, not a verdict (--strict
    # makes it one); never benched, and never chosen for speed.
    third_opinion: bool = False
    # Where it is slow: the cases it runs have at most this many input values (the rest are said).
    case_values: int | None = None
    # The backend asked for intermediate tensors in its place (--locate): a captured CUDA graph replays
    # into fixed output buffers, and the same session un-captured (ort-cuda) runs the same kernels.
    traced_by: str | None = None
    # An ONNX file whose weights lie in external data (model.onnx.data, as ptx writes one past 1.5 GiB): what it
    # holds then, where that differs (ONNX Runtime reads the weights once, with no protobuf of them to parse).
    holds_external: float | None = None
    # A file whose weights are DequantizeLinear nodes of 4- or 8-bit blocks (NNCF's openvino-int4, openvino-int8w;
    # names.dequantized_weights_file): what it holds, where it widens them to f32 as it runs (ONNX Runtime).
    holds_dequantized: float | None = None
    # Where a precision holds more than ``holds`` (precision, multiple of that file's weights): OpenVINO
    # widens a dynamically quantized int8 graph's weights back to f32 when it compiles it.
    holds_at: tuple[tuple[str, float], ...] = ()
    # A runtime that compiles the model for each shape it meets (OpenVINO): what each compiled copy holds, per
    # precision, as a multiple of the file's weights; the runner keeps as many as the memory plan has room for.
    compiled_copy_at: tuple[tuple[str, float], ...] = ()
    # Where it holds far more than a runtime (onnx.reference: numpy, every node in turn): the largest
    # weights, in bytes, it opens; a bigger file's row is skipped in one line.
    model_bytes: int | None = None
    # Whether it runs a decoder exported with --ort-attention (export/ort_attention.py): ONNX Runtime's
    # GroupQueryAttention in float32 with an additive mask. ort-cpu does; ONNX Runtime's CUDA kernel takes float16
    # or bfloat16 and no attention bias, and the other runtimes lack the operator.
    runs_ort_attention: bool = False
    # Whether it decodes a language model whose past grows by a position at every step (the plain file's): a CUDA
    # graph replays fixed shapes, so ort-cuda-graph decodes a file exported with --static-cache alone
    # (runtime/ort_graph_cache.py).
    decodes_growing_cache: bool = True
    # What it holds to open and run any model, beside its multiple of the weights: its plugin's own compiled kernels,
    # thread pools and per-shape plans, which a small file does not scale down (OpenVINO: below).
    opens_with: int = 0

    def holds_for(self, precision: str = FULL_PRECISION, weight_only: bool = False) -> float:
        """What it holds at its peak at ``precision``, as a multiple of the file's weights. A ``weight_only`` file
        (names.weight_only_file) holds what an f32 file of its weights does: ``holds_at`` is for a graph quantized
        whole (OpenVINO held 2.41x a weight-only int8 Qwen2.5-3B's 4.74 GB, 11.5 GB, where an int8 Q/DQ graph's
        weights took 13x)."""
        return self.holds if weight_only else dict(self.holds_at).get(precision, self.holds)

    def compiled_copy(self, precision: str = FULL_PRECISION, weight_only: bool = False) -> float:
        """What each compiled shape holds at ``precision``, as a multiple of the file's weights (0: none); a
        ``weight_only`` file's, as f32's of its own weights."""
        return dict(self.compiled_copy_at).get(FULL_PRECISION if weight_only else precision, 0.0)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.reads or (self.artifact,)

    def label(self, device: str, precision: str = FULL_PRECISION) -> str:
        """How verify and bench name a (backend, device, precision): eager-cuda, ort-cpu, openvino-bf16."""
        base = self.name if len(self.devices) == 1 else f"{self.name}-{device}"
        return base if precision == FULL_PRECISION else f"{base}-{precision}"

    @property
    def precision_names(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.precisions)

    def precisions_on(self, device: str) -> tuple[str, ...]:
        """The precisions this backend runs on ``device`` (tf32 on CUDA only)."""
        kind = device.partition(":")[0]
        return tuple(p for p in self.precision_names if PRECISION_DEVICES.get(p, kind) == kind)

    def artifact_for(self, precision: str = FULL_PRECISION) -> str:
        """The artifact format this backend reads at ``precision``; a one-line error if it has none."""
        for name, fmt in self.precisions:
            if name == precision:
                return fmt or self.artifact
        if precision not in PRECISIONS:
            raise PtxError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        offered = [b.name for b in _REGISTRY.entries.values() if precision in b.precision_names]
        raise PtxError(f"backend {self.name} runs {', '.join(self.precision_names)}, not {precision}"
                       + (f"; {precision} runs on {', '.join(offered)}" if offered else ""))


def refuses_generation(backend: Backend, generation) -> str | None:
    """Why ``backend`` does not run a decoder of ``generation``'s contract on any machine (one line), or None:
    the one place the runtimes a --ort-attention file runs on are named (verify, bench, load, export)."""
    if generation is not None and generation.in_place and not backend.runs_ort_attention:
        return (f"its attention is ONNX Runtime's GroupQueryAttention (exported with --ort-attention), which "
                f"{backend.name} does not run: use ort-cpu")
    if generation is not None and not generation.cache_position and not backend.decodes_growing_cache \
            and generation.encoder is None:
        return (f"its cache grows at every step, and {backend.name} replays fixed shapes: export it with "
                "--static-cache, or use ort-cuda")
    return None


# A torch or ORT CUDA backend: f32 everywhere, and on CUDA the same file at TF32 as well.
CUDA_TF32 = ((FULL_PRECISION, None), ("tf32", None))

_REGISTRY: Registry[Backend] = Registry("backend")
_BACKEND_FILES = ("eager", "torchscript", "ort_cpu", "ort_cuda", "openvino", "aoti", "ort_cuda_graph", "eager_cuda_graph",
                  "onnx_reference")
register, get, list_backends = _REGISTRY.register, _REGISTRY.get, _REGISTRY.names


def lazy(module: str, attribute: str) -> Callable:
    """A callable that imports ``ptx.infer.<module>`` only when called (``attribute`` may be a
    class's, ``Runner.open``): the registry must load without torch or onnxruntime."""
    def call(*args, **kwargs):
        return pkgutil.resolve_name(f"ptx.infer.{module}:{attribute}")(*args, **kwargs)
    return call


def file_pairs(kind: str) -> list[tuple[Backend, str]]:
    """Every (backend, device) that opens a model of ``kind`` (onnx, torchscript, pt2), CPU first."""
    return [(b, d) for b, d in pairs() if kind in b.kinds]


def pairs() -> list[tuple[Backend, str]]:
    """Every (backend, device) pair, CPU first; each device's first is the eager reference."""
    all_pairs = [(b, d) for b in _REGISTRY.entries.values() for d in b.devices]
    return sorted(all_pairs, key=lambda pair: pair[1] != "cpu")


def variants(names: list[str] | None = None) -> list[tuple[Backend, str, str]]:
    """Every (backend, device, precision) that ``names`` pick (a backend name picks all its
    precisions; a label such as ort-cpu-int8 or eager-cuda picks one); everything if None."""
    every = [(b, d, p) for b, d in pairs() for p in b.precisions_on(d)]
    if not names:
        return every
    known = {b.name for b, _, _ in every} | {b.label(d) for b, d, _ in every} | {b.label(d, p) for b, d, p in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PtxError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [(b, d, p) for b, d, p in every if {b.name, b.label(d), b.label(d, p)} & set(names)]


# The fields every torch backend shares (torch's device check, f32 and on CUDA tf32), and every ORT CUDA one.
TORCH = {"unavailable": lazy("runtime.torch_runner", "torch_unavailable"), "needs_torch": True,
         "precisions": CUDA_TF32}
# What an ONNX Runtime session holds on the host while it opens a file and runs it, as a multiple of the weights
# (scripts/backend_memory.py, Intel Xeon, 2026-11-26). Weights inside the file: the protobuf read and parsed, then
# the initializers made and prepacked: 1.56x a 134 MB MLP's, 1.92x a 504 MB one's, 1.94x a 1,041 MB one's, 2.5x
# a 783 MB Qwen2's (AMD EPYC, 2026-11-26), the largest taken. Weights in external data (ptx writes them so past
# 1.5 GiB), read once with no protobuf of them: 1.18x, 1.05x, 1.02x the same MLPs'; whole processes 1.31x a
# 1.98 GB Qwen2-0.5B's and 1.22x a 4.68 GB Qwen2's (docs/benchmarks/large-models.md, Python's own memory in
# them). A CUDA session reads the file on the host as the CPU one does (not measured on a GPU: the CPU figures).
ORT_HOLDS = 2.5
ORT_HOLDS_EXTERNAL = 1.2
# ONNX Runtime runs an NNCF file's DequantizeLinear weights as they are written, widened to f32 at each step, and its
# arena keeps them: a Qwen2.5-0.5B openvino-int4 file (469 MB of weights, 1.98 GB of them in f32) opened and decoding
# 8 tokens held 4.2x its weights (AMD EPYC, 2026-11-29), where the same config's MatMulNBits file held 1.85x; a 3B
# model's took the export's ort-cpu row past 20 GB. An int8w file's weights widen 4x: planned the same, not measured.
ORT_HOLDS_DEQUANTIZED = 4.2
ORT_CUDA = {"unavailable": lazy("runtime.ort_session", "cuda_unavailable"), "needs_torch": False,
            "precisions": CUDA_TF32, "holds": ORT_HOLDS, "holds_external": ORT_HOLDS_EXTERNAL,
            "holds_dequantized": ORT_HOLDS_DEQUANTIZED}

for _file in _BACKEND_FILES:
    importlib.import_module(f"{__name__}.{_file}")
