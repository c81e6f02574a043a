"""Predictors over torch modules (eager, torchscript): these import torch; the ORT ones never do."""
from __future__ import annotations

import contextlib
import functools
import json
import threading
from pathlib import Path

import numpy as np
import torch

from ptx.contract.metadata import ArtifactInfo
from ptx.contract.names import FULL_PRECISION, TF32
from ptx.cuda_math import fp32_math, quiet_rnn_weight_warning
from ptx.errors import ArtifactError, BackendUnavailableError, first_line

from .host_memory import CudaRuntimePinner, HostBuffers, cuda_runtime_pinner
from .predictor import Predictor, artifact_info


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


class TorchPredictor(Predictor):
    def __init__(self, module, info: ArtifactInfo, device: str, path: Path | None = None,
                 precision: str = FULL_PRECISION):
        super().__init__(info, path)
        self.torch_device = torch_device(device)
        self.device = self.torch_device.type
        self.precision = check_precision(precision, self.torch_device)
        module = module.to(self.torch_device).eval()
        if self.device == "cuda":
            flatten_rnn_weights(module)
            self.host = HostBuffers(torch_pinner())  # batches written into these copy by DMA
        self._serve(module)

    def _serve(self, module) -> None:
        """``module``: what runs the model on this predictor's device (an nn.Module, a TorchScript
        module, an AOTInductor package)."""
        self.module = module
        self._dtype = getattr(torch, self.graph_input.dtype.value)
        # One forward at a time: neither torch modules nor AOTInductor's runner promise thread safety.
        self._lock = threading.Lock()

    def predict_array(self, x) -> np.ndarray:
        self.check_input(x)
        if self.info.raw_input is not None:  # --input uint8: the pictures x was made from
            return self.run_pictures(self.feed(x))
        if isinstance(x, torch.Tensor):
            tensor = x.to(self._dtype)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=self.info.contract.input.dtype.value))
        return self._forward(tensor)

    def run_pictures(self, pictures) -> np.ndarray:
        return self._forward(pictures if isinstance(pictures, torch.Tensor) else torch.from_numpy(pictures))

    def _forward(self, tensor) -> np.ndarray:
        with self._lock, torch.inference_mode(), math_mode(self.torch_device, self.precision):
            # non_blocking: an async copy where the batch lies in page-locked memory (self.host); the
            # .cpu() below waits for the stream, so the caller may reuse the buffer once this returns
            out = self.module(tensor.to(self.torch_device, non_blocking=True))
            if self.torch_device.type == "cuda":
                torch.cuda.synchronize(self.torch_device)
        return out.cpu().numpy()


class EagerPredictor(TorchPredictor):
    backend = "eager"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", expected_model: str | None = None,
                 precision: str = FULL_PRECISION):
        from ptx.export.metadata import provenance
        from ptx.files import file_sha256
        from ptx.trainers.checkpoint import build_model_from_checkpoint, load_checkpoint

        ckpt = load_checkpoint(checkpoint, expected_model=expected_model)
        _, model = build_model_from_checkpoint(ckpt)
        info = ArtifactInfo(ckpt["contract"], provenance(ckpt, file_sha256(checkpoint)))
        super().__init__(model, info, device, Path(checkpoint), precision)


class TorchScriptPredictor(TorchPredictor):
    backend = "torchscript"

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = FULL_PRECISION):
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
        super().__init__(module, info, device, Path(path), precision)


def torch_pinner() -> CudaRuntimePinner:
    """cudaHostRegister through ctypes on the CUDA runtime torch was built with, which can also clear
    a failed call's error; else torch's own binding of the call."""
    major = (torch.version.cuda or "").split(".")[0]
    return cuda_runtime_pinner((major,) if major else ("13", "12")) or CudaRuntimePinner(torch.cuda.cudart())


def bare_module_runner(predictor: TorchPredictor, x: np.ndarray, *, label: str):
    """The module called straight, paying the host copies ptx's row pays (numpy in, numpy out), so
    that on a GPU the two differ by ptx's own overhead only; on the CPU the copies are no-ops."""
    module, device = predictor.module, predictor.torch_device
    host = torch.from_numpy(np.ascontiguousarray(x))
    mode = functools.partial(math_mode, device, predictor.precision)

    def call():
        with torch.inference_mode(), mode():
            return module(host.to(device)).cpu().numpy()  # .cpu() waits for the GPU

    return label, call


def resident_module_runner(predictor: TorchPredictor, x: np.ndarray, *, label: str):
    """The ceiling: input already on the device, output left there (only a sync per call)."""
    module, tensor = predictor.module, torch.from_numpy(np.ascontiguousarray(x)).to(predictor.torch_device)
    cuda = predictor.torch_device.type == "cuda"
    mode = functools.partial(math_mode, predictor.torch_device, predictor.precision)

    def call():
        with torch.inference_mode(), mode():
            out = module(tensor)
        if cuda:
            torch.cuda.synchronize()
        return out

    return label, call



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
