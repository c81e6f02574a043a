"""Export-format registry (the model registry's pattern): a format is one file in this folder
that calls ``register(ExportFormat(...))``, plus its module name in ``_FORMAT_FILES``.

A format's writer is the only one there is for it: the one export driver (export/pipeline.py) calls
``write(model, example, path, signature, strings, **options)`` for a tutorial model (export/api.py),
a user's module (export/module.py) and a user's model file (export/file.py: its int8) alike. The two int8 formats take
``calibration``, ``judge`` and ``bound`` alike (api.py and file.py hand them in by ``calibrated``).

Importing this package imports neither torch nor onnx: the CLI reads the names for its choices.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptx.contract import ARTIFACT_FILES
from ptx.contract.names import DEFAULT_FORMATS
from ptx.contract.registry import Registry


@dataclass
class Written:
    """What a writer made: how (the file's line says it), a note said before that line (an
    exporter's fallback), and what to add to a validation failure (why the file may disagree)."""

    method: str
    note: str | None = None
    hint: str = ""  # why the file may disagree, said with a validation failure
    traced: str = ""  # how a graph traced without its weights was traced, where it is worth saying (its layers)


@dataclass(frozen=True)
class ExportFormat:
    """``write(model, example, path, signature, strings, **options)`` writes ``model`` (an
    nn.Module called on ``example``, a tuple of tensors in forward()'s order, whose named tensors
    are ``signature``) to ``path`` with the metadata ``strings`` inside, and returns Written;
    ``serving_backend`` is the backend that serves this format and so validates it."""

    name: str
    description: str
    serving_backend: str
    write: Callable[..., Written]
    check_options: Callable[..., None] | None = None  # refuses bad options before any work is done
    precision: str = "f32"  # reduced-precision formats are validated by labels, not by the f32 atol
    calibrated: bool = False  # write() takes ``calibration=``: cases of inputs by name (None: uncalibrated)
    # spec -> why this format cannot express that model, or None (checked before any work is done)
    unsupported: Callable[[object], str | None] | None = None
    # () -> why this machine cannot write the format (pt2 without a C++ compiler), or None
    unavailable: Callable[[], str | None] | None = None
    # Said before a slow write starts, so an export is never silent for long: "compiling ... (~20-40 s)".
    progress: str | None = None
    # True: ``ptx export --input uint8`` can write it (the graph takes raw pictures: the signature's input).
    raw_pictures: bool = False
    # True: written in a second or two (a trace), so written first where export_files checks one file while
    # the next is written (the ONNX exporter's ten seconds then cover its checks)
    writes_quickly: bool = False
    # (path, strings) -> None: ``strings`` added to a written file's ptx metadata, beside what it holds
    # (a verdict, a shape certificate: what export learns of the file after writing it).
    add_metadata: Callable[[Path, dict[str, str]], None] | None = None
    # True: only the weights are reduced (activations stay f32), so a decoder with its cache has this format
    # too, made from its f32 ONNX file (export/weight_only.py judges it by its decoding).
    weight_only: bool = False

    @property
    def file_name(self) -> str:
        return ARTIFACT_FILES[self.name]


_REGISTRY: Registry[ExportFormat] = Registry("export format")
_FORMAT_FILES = ("onnx", "torchscript", "onnx_int8", "openvino_int8", "pt2", "onnx_weights", "openvino_weights")
get, list_formats = _REGISTRY.get, _REGISTRY.names


def default_formats() -> list[str]:
    """What an export that names no format writes (ptx.contract.names.DEFAULT_FORMATS)."""
    return list(DEFAULT_FORMATS)


def every_format(spec, raw_pictures: bool = False) -> tuple[list[str], list[str]]:
    """What ``--format all`` writes for model ``spec`` on this machine: every registered file format
    that can express the model, that this machine can write and (``raw_pictures``: ``--input uint8``)
    that takes raw pictures; and a reason for each one left out."""
    chosen, left_out, weight_only = [], [], {}
    for name, fmt in _REGISTRY.entries.items():
        why = ((fmt.unsupported(spec) if fmt.unsupported else None)
               or (fmt.unavailable() if fmt.unavailable else None)
               or (f"{name} cannot take raw pictures (--input uint8)" if raw_pictures and not fmt.raw_pictures else None))
        if why and fmt.weight_only:  # said once for all of them: "onnx-int4, ...: weight-only formats are for ..."
            weight_only.setdefault(why.removeprefix(f"{name}: "), []).append(name)
            continue
        (left_out if why else chosen).append(why or name)
    left_out += [f"{', '.join(names)}: {why}" for why, names in weight_only.items()]
    return chosen, left_out


def supported_formats(spec) -> list[str]:
    """The registered formats that can express model ``spec``."""
    return [name for name, fmt in _REGISTRY.entries.items() if not (fmt.unsupported and fmt.unsupported(spec))]


def description(strings: dict[str, str]) -> str:
    """The file's own description: a tutorial contract's, else what made it."""
    return strings.get("description") or f"{strings['model']}, exported by ptx from a PyTorch module"


def bind_weights(path: Path, kind: str, write_digest: Callable[[str], None], changed: str,
                 digest: str | None = None) -> str:
    """The one binding of a written file's contract to its weights (ptx.contract.weights): the digest
    taken on the file as it is (or ``digest``, the one its weights were bound to when the writer that
    still holds them wrote it before), written in by ``write_digest(digest)``, which must leave the digest
    unchanged; ``changed`` says what happened where it did not. Returns the digest."""
    from ptx.contract.weights import digest_of
    from ptx.errors import PtxError

    digest = digest or digest_of(path, kind)
    write_digest(digest)
    if digest_of(path, kind) != digest:
        raise PtxError(f"{path.name}: {changed}: ptx cannot bind this file's contract to its weights; please report it")
    return digest


def register(fmt: ExportFormat) -> ExportFormat:
    if fmt.name not in ARTIFACT_FILES:
        raise ValueError(f"export format {fmt.name!r} has no file name in ptx.contract.names.ARTIFACT_FILES")
    return _REGISTRY.register(fmt)


for _file in _FORMAT_FILES:
    importlib.import_module(f"{__name__}.{_file}")
