"""f32 means f32 on CUDA: ptx's own torch calls run with TF32 off (or on, for the tf32 precision),
and the caller's settings are restored afterwards.

PyTorch lets cuDNN convolutions and RNNs use TF32 by default, and cuBLAS matmuls where an app asks
for it; on an H100 that moved convnet's outputs by up to 2.3e-04 from the CPU's (issue 26), past
the f32 tolerance. The flags are process-wide, so an app that embeds ptx and chose TF32 for its
own model keeps its choice: ``fp32_math`` sets them for the duration of one ptx call only.

torch >= 2.9 also has per-backend ``fp32_precision`` settings ("ieee" or "tf32") and refuses to
read the legacy ``allow_tf32`` flags once the two are mixed; Inductor reads the legacy ones, so
those are used, and the new ones only where the caller already mixed them (see _settings). Training keeps torch's defaults (docs/gpu.md):
its speed matters more than the last bits, and its result is judged by test accuracy.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

FULL, TF32 = "ieee", "tf32"  # torch's names for the two float32 modes


def _settings(torch) -> dict[str, tuple[object, str]]:
    """torch's name for each setting that decides float32 math on CUDA -> (object, attribute).

    The legacy ``allow_tf32`` flags, which Inductor itself reads while it compiles (a pt2 export
    failed when only the new settings had been changed: torch then refuses the legacy read); the
    per-backend ``fp32_precision`` settings where the caller set those apart (torch >= 2.9 refuses
    a legacy read then, so the legacy flags cannot be saved)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        matmul.allow_tf32, cudnn.allow_tf32  # noqa: B018 - raises where the new settings were mixed in
        return {"torch.backends.cuda.matmul.allow_tf32": (matmul, "allow_tf32"),
                "torch.backends.cudnn.allow_tf32": (cudnn, "allow_tf32")}
    except RuntimeError:
        return {"torch.backends.cuda.matmul.fp32_precision": (matmul, "fp32_precision"),
                "torch.backends.cudnn.conv.fp32_precision": (cudnn.conv, "fp32_precision"),
                "torch.backends.cudnn.rnn.fp32_precision": (cudnn.rnn, "fp32_precision")}


@contextmanager
def fp32_math(tf32: bool = False):
    """Within the block, CUDA float32 matmuls, convolutions and RNNs use full f32 (``tf32=False``)
    or TF32; on leaving it, every setting is what it was before, even after an exception."""
    import torch

    settings = list(_settings(torch).values())
    saved = [getattr(obj, name) for obj, name in settings]
    for obj, name in settings:
        setattr(obj, name, (TF32 if tf32 else FULL) if name == "fp32_precision" else tf32)
    try:
        yield
    finally:
        for (obj, name), value in zip(settings, saved):
            setattr(obj, name, value)


def current() -> dict[str, object]:
    """The settings ``fp32_math`` manages and their values now (tests; gpu_check's log)."""
    import torch

    return {label: getattr(obj, name) for label, (obj, name) in _settings(torch).items()}


# cuDNN's warning when an RNN's weights are not one block (torch/csrc: RNN.cpp). ptx's RNNs on the
# GPU cannot always be compacted (a TorchScript RNN has no flatten_parameters; gru-classifier calls
# the GRU one direction at a time), and the warning then comes once per call: a flood that says
# only that cuDNN copies the weights first.
RNN_WEIGHT_WARNING = r"RNN module weights are not part of single contiguous chunk of memory"


def quiet_rnn_weight_warning() -> None:
    """Silence cuDNN's non-contiguous RNN weights warning, and no other (called where ptx puts a
    model on a CUDA device). Idempotent: warnings.filterwarnings drops a duplicate filter."""
    warnings.filterwarnings("ignore", message=RNN_WEIGHT_WARNING, category=UserWarning)
