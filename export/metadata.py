"""The metadata every artifact carries, so that inference needs the file alone."""
from __future__ import annotations

import json
import time

from ptx import __version__

ONNX_PREFIX = "ptx."
TORCHSCRIPT_EXTRA_FILE = "ptx.json"


def artifact_metadata(ckpt: dict, checkpoint_sha256: str, **extra) -> dict:
    import torch

    metrics = ckpt.get("metrics", {})
    return {
        "ptx_version": __version__,
        **ckpt["contract"],
        "checkpoint_sha256": checkpoint_sha256,
        "dataset": ckpt.get("dataset", {}).get("name"),
        "test_accuracy": metrics.get("final_test_accuracy"),
        "test_mse": metrics.get("final_test_mse"),
        "epochs": ckpt.get("epoch"),
        "torch_version": torch.__version__,
        "export_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def to_onnx_props(meta: dict) -> dict[str, str]:
    """ONNX metadata_props are string -> string: each value is JSON so types survive the trip."""
    return {f"{ONNX_PREFIX}{key}": json.dumps(value) for key, value in meta.items()}


def from_onnx_props(props: dict[str, str]) -> dict:
    return {key[len(ONNX_PREFIX):]: json.loads(value) for key, value in props.items() if key.startswith(ONNX_PREFIX)}
