"""The ONNX Runtime runner (ort-cpu, ort-cuda): one InferenceSession on one ONNX file, run by name.

One class for a tutorial model's export and a user's own file alike: only where the signature comes
from differs (the contract a ptx export carries, checked against the graph; or the graph itself, a
recorded ``ptx.signature`` and the user's ``--input``). On CUDA every run goes through IO binding:
each input is bound where it lies in host memory (page-locked when the caller wrote it into a buffer
of ``host``), each output lands in a reused, page-locked buffer where its shape follows from the
inputs (else ONNX Runtime allocates it). numpy and onnxruntime only: never torch (the bound-tensor
path takes torch tensors a caller already made).
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.tensors import Signature
from ptx.errors import ArtifactError, BackendUnavailableError, InputError, PtxError, first_line

from .host_memory import HostBuffers, cuda_runtime_pinner, lease_or_new
from ..formats.onnx_graph import session_signature
from ..formats.signature import Opening
from .ort_session import (CPU_FALLBACK_REFUSED, CUDA_GRAPH_REFUSED, DISABLE_CPU_FALLBACK, ORT_DEFAULT, ORT_QUIET,
                          cuda_device_id, cuda_provider, import_ort, preload_cuda_libraries, session_options)
from .runner import Runner, beyond_a_table


# onnxruntime (1.20+) quantizes, when it loads a QDQ file, the float weights of any node that reads a
# DequantizeLinear: a node an int8 file keeps in f32 (`--keep-f32`) would run in int8 all the same.
KEEP_FLOAT = ["WeightBiasQuantization"]


class OrtRunner(Runner):
    """An InferenceSession created once; ``run`` is thread-safe as ORT's sessions are. On CUDA no
    node may fall back to the CPU (the session refuses, naming the nodes). The signature is what
    ``opening`` makes of the session's graph (a tutorial export's contract, a user's graph)."""

    cuda_graph = False  # ort-cuda-graph's subclass asks the provider for CUDA graphs
    holding = ("session",)
    _declared: Signature | None = None  # declared_outputs(), once read

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32", opening: Opening | None = None,
                 arena: bool = True):
        path = Path(path)
        opening = opening or Opening("onnx")
        self.on_cuda = device.startswith("cuda")
        self.device_id = cuda_device_id(device) if self.on_cuda else 0
        self.ort_device = ("cuda" if self.on_cuda else "cpu", self.device_id)  # an OrtValue's device, as ORT names it
        if precision == "tf32" and not self.on_cuda:
            raise BackendUnavailableError("tf32 is a mode of CUDA GPUs: use ort-cuda, or f32 on the CPU")
        # arena=False: a runner asked one question (--locate's pieces) returns its memory at once
        self.session = self._open_session(path, precision, opening.remedy, arena)
        signature = opening.of_graph(session_signature(self.session, path, opening.batch_axes), path)
        super().__init__(signature, path, opening.name, opening.metadata)
        self.backend = "ort-cuda" if self.on_cuda else "ort-cpu"
        self.device = device
        self.precision = precision
        self._names = signature.output_names
        if self.on_cuda:  # the session has loaded CUDA's runtime library: pinning can use it
            self.host = HostBuffers(cuda_runtime_pinner())

    def _open_session(self, path: Path, precision: str, remedy: str, arena: bool):
        """An InferenceSession for the ONNX file at ``path`` on the runner's device, each refusal one
        line: on CUDA no node may fall back to the CPU, and TF32 runs only at tf32."""
        ort = import_ort()
        options = session_options(ort)
        options.enable_cpu_mem_arena = arena  # a session run once (--locate's pieces) returns its memory at the end
        missing: list[str] = []
        if self.on_cuda:
            # ORT places any node without a CUDA kernel, and any its shape heuristic prefers on the
            # CPU, on the CPU, silently, and drops the whole CUDA provider when its libraries are
            # missing. Refusing that fallback makes each an error at load; cuda_placement_error
            # then says which it was.
            options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError("ort-cuda: this onnxruntime has no CUDA provider; "
                                              "pip install onnxruntime-gpu, or use --backend ort-cpu")
            missing = preload_cuda_libraries(ort)
            # naming the CPU provider too is a conflict then
            providers = [cuda_provider(self.device_id, tf32=precision == "tf32", cuda_graph=self.cuda_graph)]
        else:
            providers = ["CPUExecutionProvider"]
        ort.set_default_logger_severity(ORT_QUIET)
        try:
            return ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=KEEP_FLOAT)
        except Exception as exc:
            if self.on_cuda and CPU_FALLBACK_REFUSED in str(exc):
                # explained by a session like ort-cuda's (a CUDA-graph session refuses before placing)
                from .cuda_placement import cuda_placement_error  # a CUDA refusal only: not on ort-cpu's start

                plain = [cuda_provider(self.device_id, tf32=precision == "tf32"), "CPUExecutionProvider"]
                # A CUDA graph cannot hold a node on the CPU; a plain session may keep ORT's shape arithmetic there.
                why = cuda_placement_error(ort, path, plain, missing, self.device_id,
                                           shape_arithmetic_allowed=not self.cuda_graph)
                if why is not None:
                    raise BackendUnavailableError(why) from None
                return self._shape_arithmetic_on_cpu(ort, path, plain, arena)
            if self.on_cuda and CUDA_GRAPH_REFUSED in str(exc):
                raise BackendUnavailableError(
                    f"ort-cuda-graph: ONNX Runtime {ort.__version__} cannot run {path.name} as a CUDA graph "
                    f"({first_line(exc)}); use --backend ort-cuda") from None
            why = first_line(exc)
            found = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", why)
            if found:
                # onnx newer than onnxruntime writes an IR version this runtime refuses (helper.make_model's
                # default): re-exporting with the same onnx would not help; the version field would.
                why, remedy = found[0], (f"save it with IR version {found[2]} (model.ir_version = {found[2]} before "
                                         f"onnx.save), or install an onnxruntime newer than {ort.__version__}")
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({why}); {remedy}") from None
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT)

    def _shape_arithmetic_on_cpu(self, ort, path: Path, providers: list, arena: bool):
        """The session as ONNX Runtime places it, where the only nodes it keeps on the CPU are its shape
        heuristic's (cuda_placement_error said so): fallback is allowed for this session alone."""
        options = session_options(ort)
        options.enable_cpu_mem_arena = arena
        ort.set_default_logger_severity(ORT_QUIET)
        try:
            return ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=KEEP_FLOAT)
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self.on_cuda:
                return run_bound_host(self, feeds)
            # ORT's outputs are numpy arrays already: batch-1 latency pays for nothing more
            return dict(zip(self._names, self.session.run(self._names, feeds)))
        except PtxError:
            raise
        except Exception as exc:  # ORT raises its own types, with a C++ message many lines long
            raise self._failed(feeds, self._beyond_a_table(feeds) or first_line(exc)[:400]) from None

    def new_cache(self, generation):
        """A decoding's cache where ONNX Runtime holds it (ort_cache.py): a GroupQueryAttention decoder's buffer in
        place on the CPU (the runner writes an output into the array given for it), else each present as the
        OrtValue a run made, on this runner's device; a fixed-length cache's buffer (--static-cache) bound as past and
        present where it lies (a host array, an OrtValue on the GPU)."""
        from .buffer_cache import SlotCache
        from .ort_cache import DeviceSlotCache, HeldCache, PlacedCache

        if generation.cache_position:
            if self.on_cuda:
                return DeviceSlotCache(self, self.signature, generation)
            return SlotCache(self.run, self.signature, generation, self.run_holding)
        if generation.in_place and not self.on_cuda:
            return PlacedCache(self, self.signature, generation)
        return HeldCache(self, self.signature, generation)

    def run_holding(self, feeds: Mapping[str, object], held: Sequence[str],
                    into: Mapping[str, np.ndarray] | None = None) -> dict[str, object]:
        """A run for a loop that feeds some outputs back as inputs of its next run (a decoder's present as its next
        past: the cache forms of ort_cache.py), through IO binding: each array bound where it lies, each OrtValue a
        run held bound as it is, and the ``held`` outputs left where ONNX Runtime made them (on this runner's device),
        so that a decoder's cache is never copied into numpy and back between steps; the rest copied out. On
        the CPU, each output named in ``into`` is written into its array (fed as an input too, the two bound
        to one value: the buffer a GroupQueryAttention decoder keeps its cache in); on any device into an OrtValue
        given there (a fixed-length cache's buffer on the GPU)."""
        if self.closed:
            return self.run(feeds)  # its one error
        ort = import_ort()
        if into and self.on_cuda and not all(isinstance(a, ort.OrtValue) for a in into.values()):
            raise PtxError(f"{self.backend} writes no output into a host array: run it without into")
        placed = {id(a): a if isinstance(a, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(a)
                  for a in (into or {}).values()}  # the memory itself
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            elif id(value) in placed:
                binding.bind_ortvalue_input(name, placed[id(value)])
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        kept = set(held)
        for name in self._names:
            if into and name in into:
                binding.bind_ortvalue_output(name, placed[id(into[name])])
            elif name in kept and self.on_cuda:
                binding.bind_output(name, "cuda", self.device_id)
            else:
                binding.bind_output(name, "cpu")
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # ORT raises its own types, with a C++ message many lines long
            # no _beyond_a_table here: a decoding's ids and positions were held to the model's tables before
            raise self._failed(feeds, first_line(exc)[:400]) from None
        return {name: into[name] if into and name in into else value if name in kept else value.numpy()
                for name, value in zip(self._names, binding.get_outputs())}

    def declared_outputs(self) -> Signature:
        """ONNX Runtime drops an output's shape that its own inference contradicts in rank (declared
        [1, seqlen], inferred [batch, 1, 8]: a "lenient merge" to no shape at all); the graph still
        declares it, and that declaration is what Triton configs and server metadata are made of."""
        if self.path is None or all(t.shape for t in self.signature.outputs):
            return self.signature
        if self._declared is None:  # the graph is read once, and only for a file that needs it
            from ..formats.onnx_graph import graph_signature, read_graph

            try:
                declared = {t.name: t for t in graph_signature(read_graph(self.path), self.path).outputs}
            except PtxError:
                declared = {}
            self._declared = Signature(self.signature.inputs, tuple(t if t.shape else declared.get(t.name, t)
                                                                    for t in self.signature.outputs))
        return self._declared

    def _beyond_a_table(self, feeds: dict[str, np.ndarray]) -> str | None:
        """A run that failed on a size the graph cannot take, said as the input, axis and limit."""
        from ..formats.onnx_graph import lookup_tables

        def runs(cut: dict) -> bool:
            try:
                self.session.run(self._names, cut)
                return True
            except Exception:  # noqa: BLE001 - any failure: this size is not the one to blame
                return False

        try:
            return beyond_a_table(self.signature, feeds, lookup_tables(self.path), runs)
        except Exception:  # noqa: BLE001 - the explanation is a courtesy: ORT's own message stands without it
            return None

    def bare(self, feeds: dict[str, np.ndarray]):
        session, names = self.session, self._names
        return "bare InferenceSession.run", lambda: session.run(names, feeds)

    def run_on_device(self, feeds: Mapping[str, object]) -> dict[str, object]:
        """torch tensors on this runner's GPU in, torch tensors on the same GPU out (ort-cuda only):
        IO binding hands ONNX Runtime every pointer, so nothing crosses to the host."""
        if not self.on_cuda:
            raise InputError(f"run_on_device is ort-cuda's; this runner is {self.backend}: use run")
        for name, x in feeds.items():
            if not getattr(x, "is_cuda", False):
                raise InputError(f"run_on_device takes torch tensors on a CUDA device; {name!r} is {_describe_tensor(x)}: "
                                 "use run for host data")
            if (x.device.index or 0) != self.device_id:
                # ORT's CUDA provider runs on its device_id: a pointer on another GPU is not its memory.
                raise InputError(f"{name!r} is on cuda:{x.device.index or 0}, this runner runs on cuda:{self.device_id}: "
                                 f"move it with x.to('cuda:{self.device_id}') or load the model with "
                                 f"device='cuda:{x.device.index or 0}'")
        return run_with_binding(self, feeds, "cuda", self._binding_run_options())

    def _binding_run_options(self):
        """Run options of a run on bound GPU tensors (ort-cuda-graph's: never captured)."""
        return None


def _describe_tensor(x) -> str:
    device = getattr(x, "device", None)
    return f"{type(x).__name__}" + (f" on {device}" if device is not None else "")


def check_bound_tensors(signature: Signature, feeds: Mapping[str, object], model: str) -> None:
    """torch tensors bound by pointer are checked as ``check_feeds`` checks arrays: names, dtype
    (never cast: ORT would read the bytes as the graph's dtype), rank and fixed sizes."""
    unknown = [n for n in feeds if n not in signature.input_names]
    missing = [n for n in signature.input_names if n not in feeds]
    if unknown or missing:
        raise InputError(f"{model} takes {', '.join(signature.input_names)}; got {', '.join(feeds) or 'nothing'}")
    for t in signature.inputs:
        x = feeds[t.name]
        got = str(x.dtype).replace("torch.", "")
        if got != t.dtype:
            named = f" {t.name!r}" if len(signature.inputs) > 1 else ""
            raise InputError(f"input dtype {x.dtype} does not fit {model}'s {t.dtype} input{named}: "
                             f"convert it with x.to(torch.{t.dtype})")
        shape = tuple(x.shape)
        if len(shape) != len(t.shape) or any(isinstance(w, int) and w != s for w, s in zip(t.shape, shape)) \
                or 0 in shape:
            raise InputError(f"input {t.name!r} of shape {shape} does not fit {model}'s input {t.dims_text()}")


def run_with_binding(runner: OrtRunner, feeds: Mapping[str, object], device_type: str, run_options=None):
    """Run ``runner``'s session on torch tensors through IO binding: every input and a torch output
    tensor on the same device are bound by pointer. Only ort-cuda serves predictions this way;
    ``device_type`` is a parameter so that the binding is also checked on CPU machines.

    torch is imported here only because the inputs are torch tensors: it is loaded already."""
    import torch

    check_bound_tensors(runner.signature, feeds, runner.name)
    feeds = {n: x.detach().contiguous() for n, x in feeds.items()}
    shapes = runner.signature.output_shapes(feeds)
    if shapes is None:
        raise InputError(f"{runner.name}: an output's shape depends on the input values, so it cannot be bound "
                         "on the device: use run")
    device = next(iter(feeds.values())).device
    outs = {t.name: torch.empty(shapes[t.name], dtype=getattr(torch, t.dtype), device=device)
            for t in runner.signature.outputs}
    device_id = runner.device_id if device_type == "cuda" else 0  # the GPU the session's provider runs on
    binding = runner.session.io_binding()
    for bind, tensors, values in ((binding.bind_input, runner.signature.inputs, feeds),
                                  (binding.bind_output, runner.signature.outputs, outs)):
        for t in tensors:
            bind(name=t.name, device_type=device_type, device_id=device_id, element_type=np.dtype(t.dtype).type,
                 shape=tuple(values[t.name].shape), buffer_ptr=values[t.name].data_ptr())
    if device_type == "cuda":
        # ORT runs on its own CUDA stream: the kernels that wrote the inputs on torch's stream must
        # have finished before it reads (onnxruntime issues #26609, #10299). ORT synchronises its own
        # stream when the run ends, so torch may read the outputs afterwards.
        torch.cuda.current_stream(device).synchronize()
    runner.session.run_with_iobinding(binding, run_options)
    return outs


def run_bound_host(runner: OrtRunner, feeds: Mapping[str, np.ndarray], run_options=None) -> dict[str, np.ndarray]:
    """Run on host inputs through IO binding: each is bound by pointer where it lies (no copy of
    ours; the driver reads it directly when it is page-locked) and each output lands in a reused
    buffer of ``runner.host`` (page-locked on CUDA), copied out for the caller; an output whose
    shape depends on the values is allocated by ONNX Runtime. On the CPU provider (tests) the
    outputs are fresh arrays."""
    binding = runner.session.io_binding()
    for name, x in feeds.items():
        binding.bind_input(name, "cpu", 0, x.dtype.type, tuple(x.shape), x.ctypes.data)
    names = runner.signature.output_names
    shapes = runner.signature.output_shapes(feeds)
    if shapes is None:
        for name in names:
            binding.bind_output(name, "cpu")
        runner.session.run_with_iobinding(binding, run_options)
        return {n: np.asarray(v) for n, v in zip(names, binding.copy_outputs_to_cpu())}
    host = runner.host
    with contextlib.ExitStack() as held:
        outs = {}
        for t in runner.signature.outputs:
            dtype = np.dtype(t.dtype)
            outs[t.name] = held.enter_context(lease_or_new(host, shapes[t.name], dtype))
            binding.bind_output(t.name, "cpu", 0, dtype.type, shapes[t.name], outs[t.name].ctypes.data)
        runner.session.run_with_iobinding(binding, run_options)
        return {n: out.copy() for n, out in outs.items()} if host is not None else outs

