"""What a deployment folder (a Triton model, a KServe image) holds, whatever kind of model it is: a
tutorial model's validated export, a user's module exported and validated, or a user's model file
as it is. Each kind is a Source that puts its file in place and opens it as ptx serves it, so that
the folder writers (triton.py, kserve.py) are one each, and read the model's tensors, and its
contract where it carries one, from that opened file.

Torch-free: a user's ONNX file becomes a folder without torch (export_model and export_module, which
need it, are imported where a tutorial model or a module is exported).
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptx.atomic import atomic_folder, scratch_folder
from ptx.contract import ARTIFACT_FILES
from ptx.errors import PtxError
from ptx.infer.formats.onnx_files import move_with_data
from ptx.infer.model.target import load, load_file

from . import formats
from .pipeline import guard


KIND_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": "pt2"}


def _served(path: Path, fmt_name: str):
    """The file at ``path`` as its format's serving backend opens it, at the format's precision."""
    fmt = formats.get(fmt_name)
    return load_file(path, fmt.serving_backend, precision=fmt.precision)


@dataclass
class Source:
    """A model for a deployment folder. ``place(path, fmt, log)`` writes its file of format ``fmt``
    at ``path`` (validated where it is exported) and returns the Model ptx serves it as."""

    name: str  # its name in the folder, and as it is served
    subject: str  # how `ptx export` named it: convnet, model.onnx, --module net.py:build
    place: Callable[[Path, str, Callable[[str], None]], object]
    made: str  # what the folder's file is, for a README: "a copy of model.onnx"
    registered: bool = False  # a tutorial model: `ptx serve NAME --root` finds it by its name


def contract_of(model):
    """The tutorial contract the opened file carries (its head's), or None: a model of tensors alone,
    or a raw-picture export, whose graph input is not the contract's."""
    head = getattr(model, "head", None)
    return head.contract if head is not None and head.info.raw_input is None else None


def write_folder(final: Path, force: bool, foreign: Callable[[Path], str | None],
                 fill: Callable[[Path, Callable[[str], None]], object],
                 log: Callable[[str], None]) -> tuple[object, list[str]]:
    """A deployment folder at ``final``, built whole under a temporary name by ``fill(staging, log)``
    (its lines name ``final``) and renamed in when complete: (what ``fill`` returned, the files the
    folder holds). A folder there is replaced only with ``force`` or where ``foreign(final)`` finds
    it this model's own (export/pipeline.guard)."""
    if final.exists() and not final.is_dir():
        raise PtxError(f"{final} exists and is not a folder: pass another --out")
    guard(final, force, foreign)
    try:
        with atomic_folder(final) as staging:
            made = fill(staging, lambda line: log(line.replace(str(staging), str(final))))
    except OSError as exc:
        raise PtxError(f"cannot write {final}: {exc.strerror or exc}; nothing was changed there") from None
    return made, sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file())


def tutorial_source(name: str, **export_options) -> Source:
    """Tutorial model ``name``'s checkpoint exported (export_model, with ``export_options``) and validated."""
    def place(path: Path, fmt: str, log: Callable[[str], None]):
        from .api import export_model

        made = path.parent / ARTIFACT_FILES[fmt]  # where the export writes it, before Triton's name
        [result] = export_model(name, [fmt], out=path.parent,
                                log=lambda line: log(line.replace(str(made), str(path))), **export_options)
        result.path.rename(path)
        return _served(path, fmt)

    return Source(name, name, place, f"{name}'s validated export", registered=True)


def file_source(path: str | Path, kind: str, **open_options) -> Source:
    """A user's model file of ``kind`` (onnx, torchscript), copied as it is (an ONNX file's external
    data beside it) and opened with ``open_options`` (a TorchScript file's --input declarations)."""
    from ptx.contract.onnx_wire import external_data_files

    path = Path(path)
    if kind not in ("onnx", "torchscript"):
        raise PtxError(f"{path} is a {KIND_NAMES.get(kind, kind)} package: Triton serves ONNX (onnxruntime_onnx) and "
                       "TorchScript (pytorch_libtorch) files, KServe's image ONNX: export your model to one of those")

    def place(target: Path, fmt: str, log: Callable[[str], None]):
        if fmt != kind:
            raise PtxError(f"{path.name} is a {KIND_NAMES[kind]} file and this folder serves {KIND_NAMES[fmt]} (the "
                           "KServe image runs ONNX Runtime, without torch): export your model to ONNX for it")
        shutil.copy2(path, target)
        for location in external_data_files(path) if kind == "onnx" else []:
            (target.parent / location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path.parent / location, target.parent / location)
        return load(target, **open_options)

    return Source(path.name.split(".")[0], path.name, place, f"a copy of `{path.name}`")


def module_source(module, example_inputs, *, name: str, subject: str, **module_options) -> Source:
    """A user's nn.Module exported and validated (export_module, with ``module_options``), its
    one file of the folder's format kept."""
    def place(target: Path, fmt: str, log: Callable[[str], None]):
        from .module import export_module

        with scratch_folder("ptx-module-") as scratch:
            made = Path(scratch) / "export" / ARTIFACT_FILES[fmt]
            export_module(module, example_inputs, made.parent, formats=[fmt], name=name,
                          reference=False, log=lambda line: log(line.replace(str(made), str(target))),
                          **module_options)
            move_with_data(made, target)  # a large ONNX file's weights (model.onnx.data) go with it
        return _served(target, fmt)

    return Source(name, subject, place, f"exported from `{subject.split()[-1]}`")


# -- the `ptx verify URL` line a Triton or KServe export ends with (issue 59): once the folder is
# deployed, the served model is checked against the very file placed in it, through the Open
# Inference Protocol (`ptx verify http://HOST:PORT/v2/models/NAME --against FILE`).

def verify_line(url: str, placed: Path, options: str = "", where: str = "") -> str:
    """One line: the command that checks the served model at ``url`` against ``placed``, the file
    the folder serves, with ``options`` (--token) and ``where`` (what HOST is) after it."""
    return (f"verify it once served: ptx verify {url} --against {shlex.quote(str(placed))}{options}"
            + (f"  ({where})" if where else ""))
