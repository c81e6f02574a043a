"""The torch runner (eager, torchscript, aoti): a torch callable on one device, run by name.

One class for every torch artifact and a user's own model alike: a tutorial checkpoint's rebuilt
nn.Module, a TorchScript file, an AOTInductor package (pt2) and a live nn.Module. Only where the
signature comes from differs: a tutorial export's contract, a file's recorded ``ptx.signature``, or
the inputs a user declares (TorchScript and pt2 files keep no description of their inputs), whose
outputs are learned by running the model twice on generated inputs at two batch sizes (and two
sizes of every other symbol): a size that follows the batch is the batch axis, one that follows
another symbol is that symbol, the rest are fixed. These import torch; the ONNX Runtime path never does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ptx.contract.generation import GENERATION_KEY
from ptx.contract.metadata import ArtifactInfo, provenance, to_strings
from ptx.contract.names import FULL_PRECISION, TF32
from ptx.contract.tensor_inputs import InputPlan, make_feeds, plan_inputs, symbol_steps
from ptx.contract.schema import signature_of_contract
from ptx.contract.structure import flatten
from ptx.contract.tensors import Signature, TensorSig, dtype_info
from ptx.cuda_math import fp32_math, quiet_rnn_weight_warning
from ptx.errors import (ArtifactError, BackendUnavailableError, InputError, MissingArtifactError, ModelRunError,
                        PtxError, first_line)

from .host_memory import CudaRuntimePinner, HostBuffers, cuda_runtime_pinner
from ..formats.signature import Opening
from .runner import Runner
from .torch_files import load_pt2, load_torchscript

PROBE_BATCHES = (3, 5)
# The runs after opening that may be answered from the runs that learned the outputs (export asks its
# validation cases after the shape certificate's probes and their bounds: a few runs, never this many).
LEARNED_FOR = 32
BARE_LABELS = {"eager": "bare nn.Module call", "torchscript": "bare torch.jit module call",
               "aoti": "bare aoti_load_package call", "eager-cuda-graph": "bare nn.Module call"}


def torch_device(name: str) -> torch.device:
    why = torch_unavailable(name)
    if why:
        raise BackendUnavailableError(f"--device {name}: {why}; use --device cpu")
    return torch.device(name)


def torch_unavailable(device: str) -> str | None:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind != "cuda" or not index.isdigit())):
        return f"device {device!r}: choose cpu, cuda or cuda:N"
    if kind == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    if index and int(index) >= torch.cuda.device_count():
        return f"torch sees {torch.cuda.device_count()} CUDA GPU(s), so there is no {device}"
    return None


def math_mode(device: torch.device, precision: str):
    """What float32 math a torch call on ``device`` at ``precision`` runs under: on CUDA, f32 with
    TF32 off (or tf32 with it on), the caller's settings restored after; on the CPU, no change."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return fp32_math(tf32=precision == TF32)


def flatten_outputs(out, where: str) -> dict[str, torch.Tensor]:
    """A module's return value -> named tensors: one tensor is ``output``, a tuple or list
    ``output_0``, ``output_1``..., a dict (or a named tuple) its own keys; tuples, lists and dicts
    nested by each tensor's path (``output_1_0``: ptx.contract.structure), a leaf that is no tensor
    refused in one line naming its path."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if hasattr(out, "_asdict"):
        out = out._asdict()
    if isinstance(out, Mapping):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(out)]
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):  # its fields, as export names them
        items = [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    else:
        raise PtxError(f"{where} returned {type(out).__name__}; ptx runs models that return tensors (one, a tuple, "
                       "a list, a dict or a dataclass of them)")
    if any(not isinstance(v, torch.Tensor) for _, v in items):  # nested: each tensor by its path, as export names it
        return flatten(out, lambda v: isinstance(v, torch.Tensor), lambda key, value: False).tensors
    return {str(k): v for k, v in items}


def torch_complaint(exc: BaseException) -> str:
    """What torch says went wrong: the TorchScript interpreter puts a traceback first and the error
    last ("RuntimeError: The size of tensor a (5) must match ..."); a C++ error (an AOTInductor
    kernel's "index out of bounds: 0 <= tmp13 < 64L") comes first, then c10's backtrace, left out."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    cut = next((k for k, ln in enumerate(lines) if ln.startswith("Exception raised from ")), len(lines))
    lines = lines[:cut]
    return lines[-1] if lines else type(exc).__name__


class FixedExecutor:
    """A TorchScript decoder called through TorchScript's simple graph executor, not its profiling one.

    The profiling executor specialises the graph to the shapes it has seen and recompiles it (and its
    fused kernels) when a call brings new ones, a number of times (torch.jit.set_fusion_strategy) before it
    falls back. A decoder's past grows by one at every step: every step is a new shape. Measured on a
    6-layer GPT-2 (6.2M parameters, 2 cores, 2026-11-26): 213-268 ms per step on its first decoding, then
    11-16 ms with spikes of 150-200 ms; through the simple executor 7.4-8.0 ms from the second decoding on
    (6.2 ms at one repeated shape), where ONNX Runtime took 2.2. Which executor a TorchScript method runs
    with is fixed when it is first called (torch's GraphExecutor reads the mode once), so the mode is set
    around the calls, and any other TorchScript model in the process keeps its own."""

    def __init__(self, module):
        self.module = module

    def __call__(self, *args):
        previous = torch._C._jit_set_profiling_executor(False)
        try:
            return self.module(*args)
        finally:
            torch._C._jit_set_profiling_executor(previous)

    def __getattr__(self, name):
        return getattr(self.module, name)


class TorchRunner(Runner):
    """A torch callable (nn.Module, TorchScript module, AOTInductor package) on one device. One
    forward at a time: neither torch modules nor AOTInductor's runner promise thread safety. On
    CUDA, batches written into ``host``'s page-locked buffers are copied by DMA."""

    holding = ("module", "_learned")

    def __init__(self, module, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig] | None, *, device: str,
                 backend: str, precision: str = FULL_PRECISION, path: Path | None = None, name: str | None = None,
                 metadata: Mapping[str, str] | None = None, limits: tuple[tuple[str, int], ...] = (),
                 plan: InputPlan | None = None, sizes: tuple[tuple[str, int], ...] = ()):
        self.torch_device = torch_device(device)
        if precision not in (FULL_PRECISION, TF32) or (precision == TF32 and self.torch_device.type != "cuda"):
            raise BackendUnavailableError(f"precision {precision} on {self.torch_device.type}: torch backends run f32, "
                                          "and tf32 on CUDA only")
        self.precision = precision
        if hasattr(module, "to"):  # an nn.Module or TorchScript module; a pt2 package runs where it was compiled
            module = module.to(self.torch_device)
        if self.torch_device.type == "cuda":
            if hasattr(module, "modules"):
                flatten_rnn_weights(module)
            self.host = HostBuffers(torch_pinner())
        if backend == "torchscript" and GENERATION_KEY in (metadata or {}):
            module = FixedExecutor(module)
        self.module = module
        self._lock = threading.Lock()
        self.backend, self.device = backend, str(self.torch_device)
        self._input_names = [t.name for t in inputs]
        # The answers of the two runs its outputs are learned from, each given once more where a caller asks
        # the same inputs again (export's validation cases are made as those runs are): not computed twice.
        # Kept for the next LEARNED_FOR runs only, so that a model served long after pays no digest per call.
        self._learned: dict[tuple, dict[str, torch.Tensor]] = {}
        self._learned_for = LEARNED_FOR
        if outputs is None:
            outputs = probe_outputs(self._remembering, Signature(tuple(inputs), ()), name or str(path), plan)
        super().__init__(Signature(tuple(inputs), tuple(outputs), limits, sizes), path, name, metadata)
        self.ids_first = backend == "aoti"  # its compiled code reads past a table's end, or aborts with C++ frames

    @classmethod
    def open(cls, path: str | Path | None, device: str = "cpu", precision: str = FULL_PRECISION,
             opening: Opening | None = None, **options) -> "TorchRunner":
        """Every torch backend's one opener: a tutorial checkpoint's rebuilt nn.Module, a TorchScript
        file, an AOTInductor package or a live nn.Module (``opening.module``), on ``cls`` (the CUDA
        graph runner replays it; ``options`` are its own)."""
        opening = opening or Opening("module")
        torch_device(device)  # a bad device is the user's error, not the file's
        path = Path(path) if path is not None else None
        module, opening = _load(path, device, opening)
        signature = opening.of_code(path)
        runner = cls(module, signature.inputs, signature.outputs or None, device=device,
                     backend=BACKEND_OF_KIND[opening.kind], precision=precision, path=path,
                     name=opening.name or (type(module).__name__ if opening.kind == "module" else None),
                     metadata=opening.metadata, limits=signature.limits, plan=opening.plan,
                     sizes=signature.sizes, **options)
        if signature.detections is not None:  # the recorded detections hold for the outputs it learned by name
            runner.signature = replace(runner.signature, detections=signature.detections)
        return runner

    def _tensors(self, feeds: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
        # non_blocking: an async copy where the batch lies in page-locked memory (self.host); the
        # .cpu() of the outputs waits for the stream, so the caller may reuse the buffer after.
        return [torch.from_numpy(np.require(feeds[n], requirements="C")).to(self.torch_device, non_blocking=True)
                for n in self._input_names]

    def _forward(self, feeds: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        args = self._tensors(feeds)
        with self._lock, torch.inference_mode(), math_mode(self.torch_device, self.precision):
            try:
                out = self.module(*args)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise self._failed(feeds, torch_complaint(exc)[:400]) from None
            named = flatten_outputs(out, "the model")
            if self.torch_device.type == "cuda":
                torch.cuda.synchronize(self.torch_device)
        return named

    def _remembering(self, feeds: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        key = feeds_key(feeds, self._input_names)  # before the run: a forward that writes into its input
        named = self._forward(feeds)  # (x.mul_(2) on the array it shares) would key its answer by other inputs
        self._learned[key] = named
        return named

    def remember(self, feeds: Mapping[str, np.ndarray], out) -> None:
        """Keep ``out``, the module's own answer to ``feeds`` computed by its caller (export's run of the
        example that finds its limits), as the answer to the next run on those inputs."""
        self._learned[feeds_key(feeds, self._input_names)] = flatten_outputs(out, "the model")
        self._learned_for = LEARNED_FOR

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        named = None
        if self._learned:
            named = self._learned.pop(feeds_key(feeds, self._input_names), None)
            self._learned_for -= 1
            if self._learned_for <= 0:
                self._learned.clear()
        values = [t.detach().cpu().numpy() for t in (named if named is not None else self._forward(feeds)).values()]
        # By position: a signature names the outputs (a contract's logits, ptx export --module --output
        # scores), while the module returns a tensor (output), a tuple (output_0, ...) or a list (pt2).
        names = self.signature.output_names
        if len(values) != len(names):
            raise ModelRunError(f"{self.backend}: {self.name} returned {len(values)} outputs; its signature names "
                                f"{len(names)} ({', '.join(names)})")
        return dict(zip(names, values))

    def bare(self, feeds: dict[str, np.ndarray]):
        """The module called straight, paying the host copies ptx's row pays (numpy in, numpy out), so
        that on a GPU the two differ by ptx's own overhead only; on the CPU the copies are no-ops."""
        module, device, precision = self.module, self.torch_device, self.precision
        hosts = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self._input_names]

        def call():
            with torch.inference_mode(), math_mode(device, precision):
                out = module(*(h.to(device) for h in hosts))
                return [t.cpu().numpy() for t in flatten_outputs(out, "the model").values()]  # .cpu() waits

        return BARE_LABELS.get(self.backend, f"bare {self.backend} call"), call

    def resident(self, feeds: dict[str, np.ndarray]):
        """The ceiling: inputs already on the device, outputs left there (only a sync per call)."""
        module, device, precision = self.module, self.torch_device, self.precision
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in self._input_names]

        def call():
            with torch.inference_mode(), math_mode(device, precision):
                out = module(*tensors)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        label = BARE_LABELS.get(self.backend, f"bare {self.backend} call").replace("bare ", "GPU-resident ")
        return f"{label}, the ceiling", call


def feeds_key(feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple:
    """What identifies a set of inputs: each input's dtype, shape and a digest of its bytes."""
    arrays = [np.asarray(feeds[n]) for n in names]  # its own shape: ascontiguousarray makes a 0-d array 1-d
    return tuple((a.dtype.str, a.shape, hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).digest())
                 for a in arrays)


def probe_outputs(forward, inputs_only: Signature, where: str, plan: InputPlan | None = None) -> tuple[TensorSig, ...]:
    """The outputs' names, dtypes and shapes, learned from two runs whose batch and other symbols
    differ (see the module's docstring), on inputs made by ``plan`` (the user's --shape, --range and
    --value at export: a model that takes no size or value ptx would choose), else ptx's own."""
    plan = plan or plan_inputs(inputs_only)
    batch_symbols = {t.batch_symbol for t in inputs_only.inputs if t.batch_axis is not None}
    others = [s for s in inputs_only.symbols() if s not in batch_symbols]

    def outputs_on(batch: int, p: InputPlan, seed: int) -> dict:
        feeds = make_feeds(inputs_only, p, batch, seed=seed)
        try:
            return {n: (tuple(t.shape), str(t.dtype).replace("torch.", "")) for n, t in forward(feeds).items()}
        except InputError as exc:
            shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in feeds.items())
            raise PtxError(f"{where}: running it on the declared inputs ({shapes}) failed: {exc}; check --input "
                           "(names in forward()'s order, shapes, dtypes), or shape the inputs it takes with --shape, "
                           "--min-shape, --range or --value") from None

    # seeded as export's validation cases are (seed 0, then 1; the second sizes as theirs), so that the
    # runner's answers to these two runs answer those cases too
    first = outputs_on(PROBE_BATCHES[0], plan, 0)
    # Each symbol moves by its own even step (symbol_steps: h and w both 64 become 66 and 68); past the
    # largest size it takes (--shape seq=512 of 512 positions) a step down instead, else multiples (a UNet of
    # stride 16 takes 64 and 128, not 66 or 62). The first refusal is said where none runs.
    steps = symbol_steps(inputs_only)
    sizes = [lambda n, step: n + step, lambda n, step: n - step, lambda n, step: n * (step // 2 + 1)]
    seconds = [replace(plan, bound={s: size(plan.size(s), steps[s]) for s in others}, chosen={})
               for size in (sizes if others else sizes[:1])]
    refused = None
    for second in (p for p in seconds if min(p.bound.values(), default=1) >= 1):
        try:
            other = outputs_on(PROBE_BATCHES[1], second, 1)
            break
        except PtxError as exc:
            refused = refused or exc
    else:
        raise refused
    if list(first) != list(other):
        raise PtxError(f"{where}: its outputs change with the input sizes ({list(first)} vs {list(other)}); ptx "
                       "needs the same named outputs for every input")
    batch_symbol = next((t.batch_symbol for t in inputs_only.inputs if t.batch_axis is not None), None)
    symbols = {s: (plan.size(s), second.size(s)) for s in others}
    outputs = []
    for name, ((shape1, dtype), (shape2, _)) in zip(first, zip(first.values(), other.values())):
        try:
            dtype = dtype_info(dtype, f"{where}: output {name!r}").name
        except Exception as exc:
            raise PtxError(str(exc)) from None
        if len(shape1) != len(shape2):
            raise PtxError(f"{where}: output {name!r} changes rank with the input sizes")
        dims, batch_axis = [], None
        for axis, (d1, d2) in enumerate(zip(shape1, shape2)):
            if d1 == d2:
                dims.append(d1)
            elif batch_symbol is not None and (d1, d2) == PROBE_BATCHES and batch_axis is None:
                dims.append(batch_symbol)
                batch_axis = axis
            else:
                match = next((s for s, sizes in symbols.items() if sizes == (d1, d2)), None)
                dims.append(match or f"{name}_{axis}")
        outputs.append(TensorSig(name, dtype, tuple(dims), batch_axis))
    return tuple(outputs)


# What each kind of model is loaded as, and the backend name a runner of it answers by.
BACKEND_OF_KIND = {"checkpoint": "eager", "module": "eager", "torchscript": "torchscript", "pt2": "aoti"}


def _load(path: Path | None, device: str, opening: Opening):
    """(the torch callable, the opening) for ``opening.kind``; a checkpoint's opening gains the
    contract it keeps (its strings as an export's, its tensors as the contract's)."""
    if opening.kind == "module":
        if not isinstance(opening.module, torch.nn.Module):
            raise PtxError(f"expected an nn.Module, got {type(opening.module).__name__}")
        return opening.module.eval(), opening
    if opening.kind == "checkpoint":
        module, info = checkpoint_module(path)
        strings = to_strings(info.contract, info.provenance)
        return module, replace(opening, metadata=strings, contract=signature_of_contract(info.contract))
    if opening.kind == "torchscript":
        try:
            module, _ = load_torchscript(path, device="cpu")
        except Exception as exc:
            raise ArtifactError(f"{path}: not a loadable TorchScript file ({first_line(exc)}); {opening.remedy}") \
                from None
        return module, opening
    try:  # an AOTInductor package: native code compiled for one device
        compiled, _, compiled_for = load_pt2(path)
    except PtxError:
        raise  # said already in one line (a module the package's outputs need is missing here)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a loadable pt2 package ({first_line(exc)}); {opening.remedy}") from None
    # AOTInductor names the device "cpu" or "cuda" (a device index is chosen at load time).
    if compiled_for and compiled_for.split(":")[0] != device.split(":")[0]:
        kind = device.split(":")[0]
        if opening.contract is None:
            raise ArtifactError(f"{path} was compiled for {compiled_for}, not {device}: a pt2 package runs on the "
                                "device it was compiled for")
        raise MissingArtifactError(f"{path} was compiled for {compiled_for}, not {kind}: run `ptx export "
                                   f"{opening.metadata['model']} --format pt2 --device {kind}` (one package per device)")
    return compiled, opening


def checkpoint_module(checkpoint: str | Path):
    """(nn.Module in eval mode, ArtifactInfo) rebuilt from a run's checkpoint.pt."""
    from ptx.files import file_sha256
    from ptx.trainers.checkpoint import build_model_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    _, model = build_model_from_checkpoint(ckpt)
    return model.eval(), ArtifactInfo(ckpt["contract"], provenance(ckpt, file_sha256(checkpoint), torch.__version__))


def torch_pinner() -> CudaRuntimePinner:
    """cudaHostRegister through ctypes on the CUDA runtime torch was built with, which can also clear
    a failed call's error; else torch's own binding of the call."""
    major = (torch.version.cuda or "").split(".")[0]
    return cuda_runtime_pinner((major,) if major else ("13", "12")) or CudaRuntimePinner(torch.cuda.cudart())


def flatten_rnn_weights(module) -> None:
    """cuDNN wants an RNN's weights in one block; where a module keeps ``flatten_parameters`` (an
    nn.Module's RNNs) it is called once the module is on the GPU. A TorchScript RNN, and
    gru-classifier's per-direction GRU calls, cannot be compacted: cuDNN then warns on every call,
    and ``quiet_rnn_weight_warning`` silences exactly that warning (it is about speed, not answers)."""
    for child in module.modules():
        flatten = getattr(child, "flatten_parameters", None)
        if callable(flatten) and isinstance(child, torch.nn.RNNBase):
            flatten()
    quiet_rnn_weight_warning()
