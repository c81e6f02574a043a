"""Reference tensors that travel with a model (torch-free): a few seeded inputs and the outputs the
reference gave for them, in one ``.npz`` beside the model file (Polygraphy's --save-outputs /
--load-outputs and Model Navigator's package, in one file).

``ptx export`` (and ``ptx verify PATH --save-reference``) writes it; ``ptx verify`` on another
machine (a GPU server, a container without torch) compares every backend there against it, so a
deployment is checked against eager PyTorch without PyTorch.

Layout: ``in:NAME:K`` and ``out:NAME:K`` arrays for case K, and ``meta`` (a JSON string: format
version, what produced the outputs, the signature, the weights digest of the file it was made
for). docs/artifact-format.md defines it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptx.errors import ArtifactError

from .cases import Case
from .names import model_name
from .tensors import Signature

REFERENCE_SUFFIX = ".reference.npz"
REFERENCE_VERSION = 1


@dataclass
class Reference:
    cases: list[Case]  # each with its feeds and the reference's outputs on them
    produced_by: str  # "eager PyTorch (torch 2.13.0)", "ort-cpu (onnxruntime 1.31.1)"
    signature: Signature
    weights_sha256: str | None = None  # of the file the outputs were made for, where known
    # What the cases' inputs were, as a verdict's evidence names them: "inputs", the user's own (--inputs);
    # "generated", made by ptx (a file written before this was recorded reads as generated: the weaker claim)
    inputs: str = "generated"


def reference_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.reference.npz`` (one file serves model.onnx and model.torchscript.pt)."""
    path = Path(model_path)
    return path.with_name(model_name(path) + REFERENCE_SUFFIX)


def save_reference(path: str | Path, reference: Reference) -> Path:
    """Write ``reference`` to ``path`` atomically (a temporary name, then renamed)."""
    from ptx.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {}
    for k, case in enumerate(reference.cases):
        arrays.update({f"in:{n}:{k}": np.asarray(a) for n, a in case.feeds.items()})
        arrays.update({f"out:{n}:{k}": np.asarray(a) for n, a in case.outputs.items()})
    meta = {"version": REFERENCE_VERSION, "produced_by": reference.produced_by,
            "signature": reference.signature.to_dict(), "weights_sha256": reference.weights_sha256,
            "cases": len(reference.cases), "inputs": reference.inputs}
    arrays["meta"] = np.array(json.dumps(meta))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return path


def load_reference(path: str | Path) -> Reference:
    """Read what save_reference wrote; ArtifactError in one line for anything else."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such reference file") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable reference file ({' '.join(str(exc).split())[:200]})") from None
    if "meta" not in arrays:
        raise ArtifactError(f"{path}: not a ptx reference file (no meta entry); write one with "
                            "`ptx verify MODEL --save-reference`")
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("version") != REFERENCE_VERSION:
            raise ValueError(f"version {meta.get('version')!r}, this ptx reads {REFERENCE_VERSION}")
        signature = Signature.from_dict(meta["signature"], f"{path.name}: signature")
        count = int(meta["cases"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: a damaged reference file ({exc})") from None
    cases = []
    for k in range(count):
        inputs = {n: arrays.get(f"in:{n}:{k}") for n in signature.input_names}
        outputs = {n: arrays.get(f"out:{n}:{k}") for n in signature.output_names}
        missing = [f"{kind}:{n}:{k}" for kind, d in (("in", inputs), ("out", outputs)) for n, a in d.items() if a is None]
        if missing:
            raise ArtifactError(f"{path}: a damaged reference file (no {missing[0]})")
        cases.append(Case(f"stored #{k}", inputs, outputs=outputs))
    inputs = "inputs" if meta.get("inputs") == "inputs" else "generated"
    return Reference(cases, str(meta.get("produced_by", "?")), signature, meta.get("weights_sha256"), inputs)
