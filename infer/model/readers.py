"""Which backends of the registry read a model file, why one cannot run here, and opening each (a
file ptx did not write is opened in a child process first): what ``ptx inspect``, ``ptx verify``
and ``ptx bench`` of a model file share.

Importing this imports neither torch nor a runtime: each backend imports its own when opened.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ptx.contract.schema import signature_of_contract
from ptx.contract.tensors import Signature, as_declarations
from ptx.errors import PtxError

from ..runtime import backends as registry
from ..formats.model_files import ModelFile, read_model_file
from .opening import DEFAULT_FILE_BACKEND, KIND_NAMES, PROBE, load, probe_args

NO_GPU = "no GPU"


@dataclass(frozen=True)
class FileBackend:
    """One (backend, device) that reads a file of some kind."""

    backend: object  # infer.backends.Backend
    device: str

    @property
    def label(self) -> str:
        return self.backend.label(self.device)

    @property
    def reference(self) -> bool:
        """The file's own runtime on the CPU: what verify compares every other backend with."""
        return self.device == "cpu" and self.backend.name == DEFAULT_FILE_BACKEND.get(self.backend.artifact)

    def unavailable(self) -> str | None:
        """Why this machine cannot run it, or None. Every CUDA row says the same "no GPU" where the
        machine has none, so that verify can say it once for all of them."""
        from ptx.machine import visible_gpus

        if self.device.startswith("cuda") and visible_gpus() == 0:
            return NO_GPU
        return self.backend.unavailable(self.device)


def file_backends(kind: str, names: Sequence[str] | None = None) -> list[FileBackend]:
    """The (backend, device) pairs that open a user's file of ``kind`` (``open_file``), CPU first.
    ``names`` (backend names or labels such as ort-cuda) picks some; an unknown one is one line."""
    rows = [FileBackend(b, d) for b, d in registry.file_pairs(kind)]
    if not names:
        return rows
    known = {r.backend.name for r in rows} | {r.label for r in rows}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PtxError(f"backend {unknown[0]} does not run {KIND_NAMES[kind]}; these do: "
                       f"{', '.join(dict.fromkeys(r.label for r in rows))}")
    return [r for r in rows if r.backend.name in names or r.label in names]


def group_reasons(reasons: Mapping[str, str]) -> list[str]:
    """``{label: why}`` -> one line per reason: "ort-cuda, torchscript-cuda: no GPU"."""
    by_reason: dict[str, list[str]] = {}
    for label, why in reasons.items():
        by_reason.setdefault(why, []).append(label)
    return [f"{', '.join(labels)}: {why}" for why, labels in by_reason.items()]


def tutorial_signature(found: ModelFile) -> Signature | None:
    """The tensor layer of a tutorial model's export (its contract's one input and one output)."""
    from .head import artifact_info

    if not found.has_contract:
        return None
    info = artifact_info(found.path, found.metadata)
    return signature_of_contract(info.contract, info.raw_input)


def probe_rows(path: Path, rows: Sequence[FileBackend], options: Mapping) -> dict[str, PtxError]:
    """Open a file ptx did not write with every backend of ``rows`` in a child process first, as
    load does with one (a runtime that crashes on a malformed graph crashes there): {label:
    ChildCrashError} for each backend that crashed (found by trying them one by one after a crash).
    Every backend opens the file in turn in one child: one interpreter start for all of them (each
    costs ~0.7 s here), where load's own probe starts one per backend."""
    from ptx.export.child import ChildCrashError, run_child

    found = read_model_file(path)
    if not rows or not (options.get("ignore_metadata") or not found.metadata):
        return {}
    declared = as_declarations(options.get("inputs"))
    args = [probe_args(path, r.label, r.device, declared, options.get("batch_axes"),
                       bool(options.get("ignore_metadata"))) for r in rows]
    try:
        run_child(PROBE, json.dumps(args), what=f"opening {path.name}")
        return {}
    except ChildCrashError:
        crashed: dict[str, PtxError] = {}
        for row, one in zip(rows, args):
            try:
                run_child(PROBE, json.dumps([one]), what=f"{row.label} opening {path.name}")
            except ChildCrashError as exc:
                crashed[row.label] = exc
        return crashed


def open_rows(path: Path, rows: Sequence[FileBackend], options: Mapping, probe: bool = True) -> dict[str, object]:
    """{label: the Model, or the PtxError that says why it did not open} for every row."""
    opened: dict[str, object] = dict(probe_rows(path, rows, options)) if probe else {}
    for row in rows:
        if row.label not in opened:
            try:
                opened[row.label] = load(path, row.label, device=row.device, probe=False, **options)
            except PtxError as exc:
                opened[row.label] = exc
    return opened
