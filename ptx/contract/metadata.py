"""An artifact's metadata: a flat map of plain strings, the same for every format.

ONNX keeps it in ``metadata_props`` (keys prefixed ``ptx.``); TorchScript in its extra file
``ptx.json`` (a JSON object of the same keys and string values). Plain values stay plain so that
Netron and ``polygraphy inspect`` show ``convnet``, not ``"convnet"``; the structured contract is
one versioned JSON document under ``ptx.contract``.

``ptx.checksums`` holds a short SHA-256 of every contract field, so that a hand-edited artifact
(a changed mean, a shortened label list) is refused with the field's name instead of believed.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Mapping

from ptx import __version__

from .names import METADATA_PREFIX
from .schema import Contract, ContractError, tensor_from_dict, tensor_to_dict
from .tensors import TensorSig, parse_json
from .transforms import picture_input

# Keys holding the contract; every other ptx.* key is provenance for people (dataset, accuracy...).
MODEL, DESCRIPTION, LABELS, CONTRACT, CHECKSUMS = "model", "description", "labels", "contract", "checksums"
# Present only in a ``--input uint8`` export: the graph's own input (raw pictures), a tensor as the
# contract writes its own; the contract's input is then the float tensor the graph's first nodes compute from it.
RAW_INPUT = "raw_input"
CONTRACT_KEYS = (MODEL, DESCRIPTION, LABELS, CONTRACT, CHECKSUMS, RAW_INPUT)
PLAIN_IN_CONTRACT = (MODEL, DESCRIPTION, LABELS)  # travel as plain strings, not inside ptx.contract


@dataclass(frozen=True)
class ArtifactInfo:
    """What an artifact says about itself: its contract, and provenance as plain strings."""

    contract: Contract
    provenance: dict[str, str] = field(default_factory=dict)
    raw_input: TensorSig | None = None  # what the graph takes when it is not contract.input (uint8 pictures)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.provenance.get(key, default)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def field_checksums(doc: Mapping) -> dict[str, str]:
    """``{"input.shape": "1f0c...", "preprocessing[1]": ..., "labels": ...}``: one per field of a
    contract document, one level down in objects and lists, so a mismatch names what was edited.

    They are taken over the document as stored, not as a newer ptx reads it: a parameter added
    later with a default (mnist-digit's paper_window) must not make older artifacts look edited."""
    sums = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            parts = {f"{key}.{sub}": v for sub, v in value.items()}
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            parts = {f"{key}[{i}]": v for i, v in enumerate(value)}
        else:
            parts = {key: value}
        sums.update({path: hashlib.sha256(_canonical(v).encode()).hexdigest()[:16] for path, v in parts.items()})
    return sums


def to_strings(contract: Contract, provenance: Mapping[str, object] = (), raw_input: TensorSig | None = None
               ) -> dict[str, str]:
    """The flat string map (keys without the ``ptx.`` prefix) an artifact stores."""
    doc = contract.to_dict()
    structured = {k: v for k, v in doc.items() if k not in PLAIN_IN_CONTRACT}
    out = {
        MODEL: contract.model,
        DESCRIPTION: contract.description,
        LABELS: "\n".join(contract.labels),
        CONTRACT: json.dumps(structured, separators=(",", ":")),
        CHECKSUMS: json.dumps(field_checksums(doc), separators=(",", ":")),
    }
    if raw_input is not None:
        out[RAW_INPUT] = json.dumps(tensor_to_dict(raw_input), separators=(",", ":"))
    for key, value in dict(provenance).items():
        if key in out:
            raise ValueError(f"provenance key {key!r} would overwrite the contract")
        if value is not None:
            out[key] = value if isinstance(value, str) else _canonical(value)
    return out


def provenance(ckpt: Mapping, checkpoint_sha256: str, torch_version: str) -> dict[str, str]:
    """Where an artifact came from, read from the training checkpoint it was made of: plain strings,
    none of which inference relies on (the exporter's and a checkpoint's opener's alike)."""
    metrics = ckpt.get("metrics", {})
    config = ckpt.get("config")
    augment = config.get("augment") if isinstance(config, dict) else None
    values = {
        "ptx_version": __version__,
        "dataset": ckpt.get("dataset", {}).get("name"),
        "test_accuracy": metrics.get("final_test_accuracy"),
        "test_mse": metrics.get("final_test_mse"),
        "epochs": ckpt.get("epoch"),
        # the augmentation the weights were trained with, for people choosing between runs
        "augment": json.dumps(augment, sort_keys=True) if isinstance(augment, dict) else None,
        "checkpoint_sha256": checkpoint_sha256,
        "torch_version": torch_version,
        "export_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {k: v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)
            for k, v in values.items() if v is not None}


def from_strings(strings: Mapping[str, str]) -> ArtifactInfo:
    """Read, validate and integrity-check what ``to_strings`` wrote. Raises ContractError."""
    missing = [k for k in (MODEL, LABELS, CONTRACT, CHECKSUMS) if k not in strings]
    if missing:
        raise ContractError(f"metadata lacks {METADATA_PREFIX}{missing[0]} (not a ptx export, or made by an older "
                            "ptx)")
    for key in CONTRACT_KEYS:
        if key in strings and not isinstance(strings[key], str):
            raise ContractError(f"metadata {METADATA_PREFIX}{key} is not a string")
    doc = parse_json(strings[CONTRACT], f"{METADATA_PREFIX}{CONTRACT}")
    if not isinstance(doc, dict):
        raise ContractError(f"metadata {METADATA_PREFIX}{CONTRACT} is not a JSON object")
    labels = strings[LABELS].split("\n") if strings[LABELS] else []
    clash = sorted(set(doc) & set(PLAIN_IN_CONTRACT))
    if clash:
        raise ContractError(f"contract field {clash[0]}: must be the plain key {METADATA_PREFIX}{clash[0]}, "
                            f"not inside {METADATA_PREFIX}{CONTRACT}")
    as_stored = {**doc, MODEL: strings[MODEL], DESCRIPTION: strings.get(DESCRIPTION, ""), LABELS: labels}
    contract = Contract.from_dict(as_stored)
    stored = parse_json(strings[CHECKSUMS], f"{METADATA_PREFIX}{CHECKSUMS}")
    if not isinstance(stored, dict):
        raise ContractError(f"metadata {METADATA_PREFIX}{CHECKSUMS} is not a JSON object")
    actual = field_checksums(as_stored)
    edited = sorted(path for path in set(actual) | set(stored) if actual.get(path) != stored.get(path))
    if edited:
        raise ContractError(f"contract field {', '.join(edited[:3])} was changed after export (checksum mismatch)")
    provenance = {k: v for k, v in strings.items() if k not in CONTRACT_KEYS}
    return ArtifactInfo(contract, provenance, _raw_input(strings, contract))


def _raw_input(strings: Mapping[str, str], contract: Contract) -> TensorSig | None:
    """ptx.raw_input, which must be exactly the picture input this contract's canvas implies."""
    if RAW_INPUT not in strings:
        return None
    where = f"{METADATA_PREFIX}{RAW_INPUT}"  # a string: from_strings checked every contract key
    tensor = tensor_from_dict(parse_json(strings[RAW_INPUT], where), where)
    if contract.picture is None or tensor != picture_input(contract):
        want = "nothing (not a picture model)" if contract.picture is None else tensor_to_dict(picture_input(contract))
        raise ContractError(f"metadata {where} is {tensor_to_dict(tensor)}; {contract.model}'s contract implies {want}")
    return tensor


def to_props(strings: Mapping[str, str]) -> dict[str, str]:
    """Add the ``ptx.`` prefix, for ONNX metadata_props."""
    return {f"{METADATA_PREFIX}{k}": v for k, v in strings.items()}


def from_props(props: Mapping[str, str]) -> dict[str, str]:
    return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
