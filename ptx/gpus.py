"""How many NVIDIA GPUs this process may use, without importing torch or onnxruntime: `--device
cuda:N` is checked when the command line is read, before minutes of loading."""
from __future__ import annotations

import os
from pathlib import Path

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the Linux driver manages


def visible_gpus() -> int:
    """The GPUs the driver lists, as few as CUDA_VISIBLE_DEVICES leaves visible (0 without a driver)."""
    try:
        count = sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")]))
    return count


def missing_gpu(index: int) -> str | None:
    """Why GPU ``index`` (cuda:N) cannot be used here, or None when it is there."""
    count = visible_gpus()
    if index < count:
        return None
    if count == 0:
        return f"cuda:{index}: this machine has no NVIDIA GPU that CUDA can use; use --device cpu"
    listed = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
    return f"cuda:{index}: no such GPU; this machine has {count} ({listed})"
