"""A user's TorchScript file, pt2 package or live nn.Module, run by name like any other model
(these import torch; the ONNX Runtime path never does).

TorchScript and pt2 files keep no description of their inputs: the user declares them (names,
shapes, dtypes, in forward()'s order). The outputs are learned by running the model twice on
generated inputs at two batch sizes (and two sizes of every other symbol): a size that follows the
batch is the batch axis, one that follows another symbol is that symbol, the rest are fixed.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ptx.contract.tensor_inputs import InputPlan, make_feeds, plan_inputs
from ptx.contract.tensors import Signature, TensorSig, dtype_info
from ptx.errors import ArtifactError, InputError, ModelRunError, PtxError, first_line

from .model_files import (PT2, TORCHSCRIPT, WEIGHTS_KEY, check_graph_against, check_weights, declared_signature,
                          read_model_file, recorded_signature, weights_digest)
from .tensor_model import TensorModel, describe_feeds
from .torch_predictor import math_mode, torch_device

PROBE_BATCHES = (3, 5)


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


class TorchTensorModel(TensorModel):
    """A torch callable (TorchScript module, AOTInductor package, nn.Module) on one device. One
    forward at a time: neither torch modules nor AOTInductor's runner promise thread safety."""

    def __init__(self, module, inputs: Sequence[TensorSig], outputs: Sequence[TensorSig] | None, *, device: str,
                 backend: str, path: Path | None = None, name: str | None = None,
                 metadata: Mapping[str, str] | None = None):
        self.torch_device = torch_device(device)
        self.module = module
        self._lock = threading.Lock()
        self.backend, self.device = backend, str(self.torch_device)
        self._input_names = [t.name for t in inputs]
        if outputs is None:
            outputs = probe_outputs(self._forward, Signature(tuple(inputs), ()), name or str(path))
        super().__init__(Signature(tuple(inputs), tuple(outputs)), path, name, metadata)

    def _forward(self, feeds: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        args = [torch.from_numpy(np.require(feeds[n], requirements="C")).to(self.torch_device) for n in self._input_names]
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
        # By position: a file's recorded signature names the outputs (ptx export --module --output
        # scores), while the module returns a tuple (output_0, ...) or a list (an AOTInductor package).
        names = self.signature.output_names
        if len(values) != len(names):
            raise ModelRunError(f"{self.backend}: {self.name} returned {len(values)} outputs; its signature names "
                                f"{len(names)} ({', '.join(names)})")
        return dict(zip(names, values))


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


class TorchScriptTensorModel(TorchTensorModel):
    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32", *,
                 inputs: Sequence[TensorSig] = (), ignore_metadata: bool = False,
                 batch_axes: Mapping[str, int | None] | None = None):
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
        module = module.to(torch_device(device))
        recorded = recorded_signature(metadata, path)
        ins = _declared_or_recorded(recorded, inputs, TORCHSCRIPT, path, batch_axes)
        self.precision = precision
        super().__init__(module, ins, recorded.outputs if recorded and not inputs else None, device=device,
                         backend="torchscript", path=path, name=found.name if metadata else None, metadata=metadata)
        if recorded and inputs:
            check_graph_against(recorded, self.signature, path)


class Pt2TensorModel(TorchTensorModel):
    """An AOTInductor package: native code compiled for one device, loaded by torch."""

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32", *,
                 inputs: Sequence[TensorSig] = (), ignore_metadata: bool = False,
                 batch_axes: Mapping[str, int | None] | None = None):
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
        self.precision = precision
        super().__init__(compiled, ins, recorded.outputs if recorded and not inputs else None, device=device,
                         backend="aoti", path=path, name=metadata.get("model"), metadata=metadata)


class ModuleTensorModel(TorchTensorModel):
    """A live nn.Module (ptx.infer.load(module, inputs=[...])): the reference a user's exports are
    checked against."""

    def __init__(self, module: torch.nn.Module, inputs: Sequence[TensorSig], device: str = "cpu",
                 name: str | None = None):
        if not isinstance(module, torch.nn.Module):
            raise PtxError(f"expected an nn.Module, got {type(module).__name__}")
        if not inputs:
            raise PtxError("an nn.Module keeps no description of its inputs: give inputs=[TensorSig or "
                           "'name=shape:dtype', ...] in forward()'s order")
        self.precision = "f32"
        super().__init__(module.to(torch_device(device)).eval(), inputs, None, device=device, backend="eager",
                         name=name or type(module).__name__)


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
