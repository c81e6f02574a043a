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
import functools
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ptx.contract.metadata import ArtifactInfo
from ptx.contract.names import FULL_PRECISION, TF32
from ptx.contract.tensor_inputs import InputPlan, make_feeds, plan_inputs
from ptx.contract.schema import signature_of_contract
from ptx.contract.tensors import Signature, TensorSig, dtype_info
from ptx.cuda_math import fp32_math, quiet_rnn_weight_warning
from ptx.errors import (ArtifactError, BackendUnavailableError, InputError, MissingArtifactError, ModelRunError,
                        PtxError, first_line)

from ..model.head import Head, artifact_info
from .host_memory import CudaRuntimePinner, HostBuffers, cuda_runtime_pinner
from ..model.model import Model
from ..formats.model_files import (PT2, TORCHSCRIPT, WEIGHTS_KEY, check_graph_against, check_weights, declared_signature,
                          read_model_file, recorded_signature, weights_digest)
from .runner import Runner, describe_feeds

PROBE_BATCHES = (3, 5)
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


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in (FULL_PRECISION, TF32) or (precision == TF32 and device.type != "cuda"):
        raise BackendUnavailableError(f"precision {precision} on {device.type}: torch backends run f32, "
                                      "and tf32 on CUDA only")
    return precision


def flatten_outputs(out, where: str) -> dict[str, torch.Tensor]:
    """A module's return value -> named tensors: one tensor is ``output``, a tuple or list
    ``output_0``, ``output_1``..., a dict (or a named tuple) its own keys."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if hasattr(out, "_asdict"):
        out = out._asdict()
    if isinstance(out, Mapping):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [(f"output_{i}", v) for i, v in enumerate(out)]
    else:
        raise PtxError(f"{where} returned {type(out).__name__}; ptx runs models that return tensors (one, a tuple, "
                       "a list or a dict of them)")
    bad = [str(k) for k, v in items if not isinstance(v, torch.Tensor)]
    if bad:
        raise PtxError(f"{where} returned a {type(out).__name__} whose {bad[0]!r} is not a tensor; ptx runs models "
                       "that return tensors (one, a tuple, a list or a dict of them)")
    return {str(k): v for k, v in items}


def torch_complaint(exc: BaseException) -> str:
    """What torch says went wrong: the TorchScript interpreter puts a traceback first and the error
    last ("RuntimeError: The size of tensor a (5) must match ...")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


class TorchRunner(Runner):
    """A torch callable (nn.Module, TorchScript module, AOTInductor package) on one device. One
    forward at a time: neither torch modules nor AOTInductor's runner promise thread safety. On
    CUDA, batches written into ``host``'s page-locked buffers are copied by DMA."""

    def __init__(self, module, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig] | None, *, device: str,
                 backend: str, precision: str = FULL_PRECISION, path: Path | None = None, name: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        self.torch_device = torch_device(device)
        self.precision = check_precision(precision, self.torch_device)
        if hasattr(module, "to"):  # an nn.Module or TorchScript module; a pt2 package runs where it was compiled
            module = module.to(self.torch_device)
        if self.torch_device.type == "cuda":
            if hasattr(module, "modules"):
                flatten_rnn_weights(module)
            self.host = HostBuffers(torch_pinner())
        self.module = module
        self._lock = threading.Lock()
        self.backend, self.device = backend, str(self.torch_device)
        self._input_names = [t.name for t in inputs]
        if outputs is None:
            outputs = probe_outputs(self._forward, Signature(tuple(inputs), ()), name or str(path))
        super().__init__(Signature(tuple(inputs), tuple(outputs)), path, name, metadata)

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
                raise ModelRunError(f"{self.backend} failed running {getattr(self, 'name', 'the model')} on inputs "
                                    f"{describe_feeds(feeds)}: {torch_complaint(exc)[:400]}") from None
            named = flatten_outputs(out, "the model")
            if self.torch_device.type == "cuda":
                torch.cuda.synchronize(self.torch_device)
        return named

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = [t.detach().cpu().numpy() for t in self._forward(feeds).values()]
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
        module, device = self.module, self.torch_device
        hosts = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self._input_names]
        mode = functools.partial(math_mode, device, self.precision)

        def call():
            with torch.inference_mode(), mode():
                out = module(*(h.to(device) for h in hosts))
                return [t.cpu().numpy() for t in flatten_outputs(out, "the model").values()]  # .cpu() waits

        return BARE_LABELS.get(self.backend, f"bare {self.backend} call"), call

    def resident(self, feeds: dict[str, np.ndarray]):
        """The ceiling: inputs already on the device, outputs left there (only a sync per call)."""
        module, device = self.module, self.torch_device
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in self._input_names]
        cuda = device.type == "cuda"
        mode = functools.partial(math_mode, device, self.precision)

        def call():
            with torch.inference_mode(), mode():
                out = module(*tensors)
            if cuda:
                torch.cuda.synchronize()
            return out

        label = BARE_LABELS.get(self.backend, f"bare {self.backend} call").replace("bare ", "GPU-resident ")
        return f"{label}, the ceiling", call


def probe_outputs(forward, inputs_only: Signature, where: str) -> tuple[TensorSig, ...]:
    """The outputs' names, dtypes and shapes, learned from two runs whose batch and other symbols
    differ (see the module's docstring)."""
    plan = plan_inputs(inputs_only)
    second = InputPlan(bound={s: v + 2 for s, v in plan.chosen.items()})
    runs = []
    for batch, p in zip(PROBE_BATCHES, (plan, second)):
        feeds = make_feeds(inputs_only, p, batch, seed=0)
        try:
            runs.append((batch, p, {n: (tuple(t.shape), str(t.dtype).replace("torch.", ""))
                                    for n, t in forward(feeds).items()}))
        except InputError as exc:
            shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in feeds.items())
            raise PtxError(f"{where}: running it on the declared inputs ({shapes}) failed: {exc}; check --input "
                           "(names in forward()'s order, shapes, dtypes)") from None
    (b1, p1, first), (b2, p2, other) = runs
    if list(first) != list(other):
        raise PtxError(f"{where}: its outputs change with the input sizes ({list(first)} vs {list(other)}); ptx "
                       "needs the same named outputs for every input")
    batch_symbol = next((t.batch_symbol for t in inputs_only.inputs if t.batch_axis is not None), None)
    symbols = {s: (p1.size(s), p2.size(s)) for s in inputs_only.symbols() if s != batch_symbol}
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
            elif batch_symbol is not None and (d1, d2) == (b1, b2) and batch_axis is None:
                dims.append(batch_symbol)
                batch_axis = axis
            else:
                match = next((s for s, sizes in symbols.items() if sizes == (d1, d2)), None)
                dims.append(match or f"{name}_{axis}")
        outputs.append(TensorSig(name, dtype, tuple(dims), batch_axis))
    return tuple(outputs)


# -- tutorial models: checkpoint.pt, model.torchscript.pt, model.pt2 --------------------------------


def contract_runner(module, info: ArtifactInfo, device: str, backend: str, precision: str, path: Path,
                    runner_class: type[TorchRunner] = TorchRunner, **options) -> Model:
    """A tutorial model's torch callable on a runner answering its contract's tensors, the head above."""
    signature = signature_of_contract(info.contract, info.raw_input)
    runner = runner_class(module, signature.inputs, signature.outputs, device=device, backend=backend,
                          precision=precision, path=path, **options)
    return Model(runner, Head(info))


def checkpoint_module(checkpoint: str | Path, expected_model: str | None = None):
    """(nn.Module in eval mode, ArtifactInfo) rebuilt from a run's checkpoint.pt."""
    from ptx.export.metadata import provenance
    from ptx.files import file_sha256
    from ptx.trainers.checkpoint import build_model_from_checkpoint, load_checkpoint

    ckpt = load_checkpoint(checkpoint, expected_model=expected_model)
    _, model = build_model_from_checkpoint(ckpt)
    return model.eval(), ArtifactInfo(ckpt["contract"], provenance(ckpt, file_sha256(checkpoint)))


def open_checkpoint(checkpoint: str | Path, device: str = "cpu", precision: str = FULL_PRECISION,
                    expected_model: str | None = None) -> Model:
    """eager's ``load``: the checkpoint's nn.Module, the reference every other backend meets."""
    torch_device(device)
    module, info = checkpoint_module(checkpoint, expected_model)
    return contract_runner(module, info, device, "eager", precision, Path(checkpoint))


def open_torchscript_artifact(path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION) -> Model:
    """torchscript's ``load``: a tutorial model's TorchScript export and the contract in its ptx.json."""
    from ptx.export.formats.torchscript import load

    torch_device(device)  # a bad device is the user's error, not the file's
    try:
        module, text = load(path, device="cpu")
    except Exception as exc:
        raise ArtifactError(f"{path}: not a loadable TorchScript file ({first_line(exc)}); "
                            "re-export with `ptx export`") from None
    try:
        strings = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: ptx.json is not valid JSON ({exc}); re-export with `ptx export`") from None
    if not isinstance(strings, dict):
        raise ArtifactError(f"{path}: ptx.json is not a JSON object; re-export with `ptx export`")
    info = artifact_info(path, strings, missing="no ptx.json inside")
    return contract_runner(module, info, device, "torchscript", precision, Path(path))


def open_pt2_artifact(path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION) -> Model:
    """aoti's ``load``: a tutorial model's AOTInductor package. On CUDA the package's cuBLAS/cuDNN
    calls follow the TF32 setting of each call (f32: off); its Triton kernels were compiled with TF32
    off (export compiles under ptx.cuda_math.fp32_math). It runs on the device it was compiled for."""
    from ptx.export.formats.pt2 import load

    kind = torch_device(device).type  # a bad device is the user's error, not the file's
    try:
        compiled, strings, compiled_for = load(path)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a loadable pt2 package ({first_line(exc)}); "
                            "re-export with `ptx export NAME --format pt2`") from None
    info = artifact_info(path, strings, missing="no ptx.* metadata in the package", export_args=" --format pt2")
    # AOTInductor names the device "cpu" or "cuda" (a device index is chosen at load time).
    if compiled_for.split(":")[0] != kind:
        raise MissingArtifactError(f"{path} was compiled for {compiled_for or 'an unknown device'}, not "
                                   f"{kind}: run `ptx export {info.contract.model} --format pt2 "
                                   f"--device {kind}` (one package per device)")
    return contract_runner(compiled, info, device, "aoti", precision, Path(path))


# -- a user's own model: TorchScript and pt2 files, a live nn.Module ---------------------------------


def open_torchscript_file(path: str | Path, device: str = "cpu", precision: str = "f32", *,
                          inputs: Sequence[TensorSig] = (), ignore_metadata: bool = False,
                          batch_axes: Mapping[str, int | None] | None = None, runner_class: type = None,
                          **runner_options) -> TorchRunner:
    """A TorchScript file on ``runner_class`` (TorchRunner; eager-cuda-graph's TorchGraphRunner
    replays it from CUDA graphs, with ``runner_options`` such as its ``graphs``)."""
    from ptx.export.formats.torchscript import load

    path = Path(path)
    found = read_model_file(path)
    metadata = {} if ignore_metadata else found.metadata
    check_weights(path, metadata, weights_digest(path, TORCHSCRIPT) if metadata.get(WEIGHTS_KEY) else None)
    torch_device(device)  # a bad device is the user's error, not the file's
    try:
        module, _ = load(path, device="cpu")
    except Exception as exc:
        raise ArtifactError(f"{path}: not a loadable TorchScript file ({first_line(exc)})") from None
    recorded = recorded_signature(metadata, path)
    ins = _declared_or_recorded(recorded, inputs, TORCHSCRIPT, path, batch_axes)
    runner = (runner_class or TorchRunner)(module, ins, recorded.outputs if recorded and not inputs else None,
                                           device=device, backend="torchscript", precision=precision, path=path,
                                           name=found.name if metadata else None, metadata=metadata, **runner_options)
    if recorded and inputs:
        check_graph_against(recorded, runner.signature, path)
    return runner


def open_pt2_file(path: str | Path, device: str = "cpu", precision: str = "f32", *,
                  inputs: Sequence[TensorSig] = (), ignore_metadata: bool = False,
                  batch_axes: Mapping[str, int | None] | None = None, runner_class: type = None,
                  **runner_options) -> TorchRunner:
    """An AOTInductor package: native code compiled for one device, loaded by torch (on
    ``runner_class``, as open_torchscript_file)."""
    from ptx.export.formats.pt2 import load

    path = Path(path)
    torch_device(device)
    found = read_model_file(path)
    # Checked before torch loads the package's native code: foreign ptx metadata is refused first.
    check_weights(path, found.metadata, weights_digest(path, PT2) if found.metadata.get(WEIGHTS_KEY) and not
                  ignore_metadata else None)
    try:
        compiled, strings, compiled_for = load(path)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a loadable pt2 package ({first_line(exc)})") from None
    if compiled_for and compiled_for.split(":")[0] != device.split(":")[0]:
        raise ArtifactError(f"{path} was compiled for {compiled_for}, not {device}: a pt2 package runs on the "
                            "device it was compiled for")
    metadata = {} if ignore_metadata else dict(strings or {})
    recorded = recorded_signature(metadata, path)
    ins = _declared_or_recorded(recorded, inputs, PT2, path, batch_axes)
    return (runner_class or TorchRunner)(compiled, ins, recorded.outputs if recorded and not inputs else None,
                                         device=device, backend="aoti", precision=precision, path=path,
                                         name=metadata.get("model"), metadata=metadata, **runner_options)


def open_module(module: torch.nn.Module, inputs: Sequence[TensorSig], device: str = "cpu",
                name: str | None = None) -> TorchRunner:
    """A live nn.Module (ptx.infer.load(module, inputs=[...])): the reference a user's exports are
    checked against."""
    if not isinstance(module, torch.nn.Module):
        raise PtxError(f"expected an nn.Module, got {type(module).__name__}")
    if not inputs:
        raise PtxError("an nn.Module keeps no description of its inputs: give inputs=[TensorSig or "
                       "'name=shape:dtype', ...] in forward()'s order")
    return TorchRunner(module.eval(), inputs, None, device=device, backend="eager",
                       name=name or type(module).__name__)


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


def _declared_or_recorded(recorded: Signature | None, declared: Sequence[TensorSig], kind: str, path: Path,
                          batch_axes: Mapping[str, int | None] | None) -> tuple[TensorSig, ...]:
    ins = tuple(declared) if declared else (recorded.inputs if recorded else declared_signature(declared, kind, path))
    for name, axis in (batch_axes or {}).items():
        match = [i for i, t in enumerate(ins) if t.name == name]
        if not match:
            raise PtxError(f"--batch-axis {name}: no input {name!r} (inputs: {', '.join(t.name for t in ins)}); "
                           f"outputs' batch axes are found by running the model")
        t = ins[match[0]]
        if axis is not None and not (0 <= axis < len(t.shape) and isinstance(t.shape[axis], str)):
            raise PtxError(f"--batch-axis {name}={axis}: {name}'s shape is {list(t.shape)}; the batch axis must be "
                           "one of its symbolic dimensions (or none)")
        ins = ins[:match[0]] + (replace(t, batch_axis=axis),) + ins[match[0] + 1:]
    return ins
