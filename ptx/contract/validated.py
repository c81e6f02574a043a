"""The tolerance a user gave export, recorded in each file it wrote (``ptx.tolerance``), so that
``ptx verify FILE`` judges by it by default as export did (torch-free: the ONNX path reads it). The
sizes and ranges export validated at travel in the signature itself (Signature.sizes,
TensorSig.value_range; export/sizes.py)."""
from __future__ import annotations

import json
from typing import Mapping

TOLERANCE_KEY = "tolerance"  # ptx.tolerance: {"atol": ..., "rtol": ...} as the user gave them to export


def tolerance_strings(atol: float | None, rtol: float | None) -> dict[str, str]:
    """The ``ptx.tolerance`` entry for the user's tolerance ({} where none was given)."""
    given = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    return {TOLERANCE_KEY: json.dumps(given, separators=(",", ":"))} if given else {}


def recorded_tolerance(metadata: Mapping[str, str] | None) -> dict[str, float]:
    """The tolerance a file records export was given ({} where none, or not one)."""
    try:
        doc = json.loads((metadata or {}).get(TOLERANCE_KEY, "{}"))
        return {k: float(v) for k, v in doc.items() if k in ("atol", "rtol") and float(v) >= 0}
    except (ValueError, TypeError, AttributeError):
        return {}
