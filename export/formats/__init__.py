"""Export-format registry (the model registry's pattern): a format is one file in this folder
that calls ``register(ExportFormat(...))``, plus its module name in ``_FORMAT_FILES``.

Importing this package imports neither torch nor onnx: the CLI reads the names for its choices.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptx.contract import ARTIFACT_FILES
from ptx.errors import PtxError


@dataclass(frozen=True)
class ExportFormat:
    """``write(model, example, path, contract, strings, options)`` writes the file at ``path`` with
    the metadata ``strings`` inside and returns extra provenance (e.g. the method used);
    ``serving_backend`` is the backend that serves this format and so validates it."""

    name: str
    description: str
    serving_backend: str
    write: Callable[..., dict[str, str]]
    symbolic_dims: Callable[[Path], tuple[list, list]] | None = None  # (input dims, output dims) as stored
    check_options: Callable[..., None] | None = None  # refuses bad options before any work is done

    @property
    def file_name(self) -> str:
        return ARTIFACT_FILES[self.name]


_REGISTRY: dict[str, ExportFormat] = {}
_FORMAT_FILES = ("onnx", "torchscript")


def register(fmt: ExportFormat) -> ExportFormat:
    if fmt.name in _REGISTRY:
        raise ValueError(f"export format {fmt.name!r} is registered twice")
    if fmt.name not in ARTIFACT_FILES:
        raise ValueError(f"export format {fmt.name!r} has no file name in ptx.contract.names.ARTIFACT_FILES")
    _REGISTRY[fmt.name] = fmt
    return fmt


def get(name: str) -> ExportFormat:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PtxError(f"unknown export format {name!r}; choose from {', '.join(_REGISTRY)}") from None


def list_formats() -> list[str]:
    return list(_REGISTRY)


for _file in _FORMAT_FILES:
    importlib.import_module(f"{__name__}.{_file}")
