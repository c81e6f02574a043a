"""The tolerance a user gave export, recorded in each file it wrote (``ptx.tolerance``), so that
``ptx verify FILE`` judges by it by default as export did (torch-free: the ONNX path reads it). The
sizes and ranges export validated at travel in the signature itself (Signature.sizes,
TensorSig.value_range; export/sizes.py)."""
from __future__ import annotations

import json
import math
from typing import Mapping

TOLERANCE_KEY = "tolerance"  # ptx.tolerance: {"atol": ..., "rtol": ...} as the user gave them to export


def tolerance_strings(atol: float | None, rtol: float | None) -> dict[str, str]:
    """The ``ptx.tolerance`` entry for the user's tolerance ({} where none was given)."""
    given = {k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None}
    return {TOLERANCE_KEY: json.dumps(given, separators=(",", ":"))} if given else {}


def _read(metadata: Mapping[str, str] | None) -> tuple[dict[str, float], bool]:
    """(the recorded atol and rtol, whether the record is one: a JSON object of finite numbers >= 0)."""
    try:
        doc = json.loads((metadata or {}).get(TOLERANCE_KEY, "{}"))
        read = {k: float(v) for k, v in doc.items() if k in ("atol", "rtol")}
    except (ValueError, TypeError, AttributeError):
        return {}, False
    # an infinite or negative tolerance (JSON's Infinity parses) would pass every answer, or none
    good = {k: v for k, v in read.items() if math.isfinite(v) and v >= 0}
    return good, good == read and set(doc) <= {"atol", "rtol"}


def recorded_tolerance(metadata: Mapping[str, str] | None) -> tuple[dict[str, float], str]:
    """(the tolerance a file records export was given, {} where none or not one; a note where its
    ``ptx.tolerance`` is there and not a tolerance, '' otherwise: it is not used, and a hand-edited or
    damaged record should not go unsaid)."""
    read, whole = _read(metadata)
    if whole:
        return read, ""
    if TOLERANCE_KEY not in (metadata or {}):
        return {}, ""
    return {}, (f"note: the file's ptx.tolerance {str(metadata[TOLERANCE_KEY])[:60]!r} is not "
                '{"atol": number >= 0, "rtol": number >= 0}: not used, judged by the default tolerance '
                "(--atol/--rtol give one; re-export to record it)")
