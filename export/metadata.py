"""The metadata strings every artifact carries: the contract, and provenance for people."""
from __future__ import annotations

import json
import time

from ptx import __version__
from ptx.contract import Contract
from ptx.contract.metadata import provenance, to_strings
from ptx.contract.schema import signature_of_contract
from ptx.contract.tensors import Signature
from ptx.contract.weights import SIGNATURE_KEY


def artifact_strings(contract: Contract, ckpt: dict, checkpoint_sha256: str, raw_input=None) -> dict[str, str]:
    """A tutorial model's strings: its contract (the head), its tensor signature (what a user's own
    model records too, so every tool reads any ptx export by its tensors) and provenance. The
    format writers add the weights digest (ptx.contract.weights)."""
    import torch

    signature = signature_of_contract(contract, raw_input)
    return {**to_strings(contract, provenance(ckpt, checkpoint_sha256, torch.__version__), raw_input=raw_input),
            SIGNATURE_KEY: json.dumps(signature.to_dict(), separators=(",", ":"))}


def module_strings(name: str, signature: Signature, provenance_: dict[str, str | None]) -> dict[str, str]:
    """A user's own model's strings (a module's, or a file's int8): its name, its tensor signature and provenance (no head: the
    tensors are its whole contract). The format writers add the weights digest."""
    values = {"model": name, SIGNATURE_KEY: json.dumps(signature.to_dict(), separators=(",", ":")),
              "ptx_version": __version__, "export_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance_}
    return {k: v for k, v in values.items() if v is not None}
