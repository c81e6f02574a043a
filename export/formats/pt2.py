"""pt2: torch.export + AOTInductor, PyTorch's successor to TorchScript for a Python-free model file.

``torch.export`` captures the graph with the signature's dynamic dimensions (``torch.export.Dim``
for the batch, a sequence, ...), ``torch._inductor.aoti_compile_and_package`` compiles it to
native code for one device (cpu, or cuda) and writes a ``.pt2`` package, which
``torch._inductor.aoti_load_package`` (Python: infer/runtime/torch_files.py) or the C++ ``AOTIModelPackageLoader`` runs.

The ptx metadata travels inside the package as AOTInductor's own metadata map
(``aot_inductor.metadata``, read back with ``get_metadata()``), with the ``ptx.`` prefix that ONNX's
metadata_props use: AOTInductor adds keys of its own (``AOTI_DEVICE_KEY``, ``AOTI_CPU_ISA``...).
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

from ptx.contract.metadata import to_props
from ptx.contract.names import METADATA_PREFIX
from ptx.contract.tensors import Signature
from ptx.contract.weights import AOTI_METADATA_SUFFIX, SIGNATURE_KEY, WEIGHTS_KEY
from ptx.cuda_math import fp32_math
from ptx.errors import PtxError
from ptx.pytree_types import KEY as PYTREE_KEY, modules_to_record
from ptx.torch_quiet import quiet_inductor

from ..refusal import describe_refusal, user_files
from . import ExportFormat, Written, bind_weights, register
from .zip_members import replace_members

DEVICES = ("cpu", "cuda")

# AOTInductor's defaults compile the wrapper (model_container.h: most of the compile, whatever the
# model) with -g1 line tables, for profilers to map addresses to generated source. Without them a
# tiny GPT-2's package is 0.7 MB, not 1.9 MB, the wrapper compiles ~4% faster and the package runs
# as fast (measured). The wrapper's -O1 stays: at -O0 its calls at batch 1 took 45% longer.
# Options an older torch (>= 2.4) lacks are left out.
COMPILE_OPTIONS = {"enable_line_tables": False}


def unsupported(spec) -> str | None:
    blocker = getattr(spec, "torch_export_blocker", None)
    return f"{spec.name} cannot be exported as pt2: {blocker} (use --format onnx or torchscript)" if blocker else None


def no_compiler() -> str | None:
    """Why AOTInductor cannot compile here: it builds C++ with $CXX, else g++ (clang++ on macOS)."""
    import os
    import shutil
    import sys

    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    return None if shutil.which(cxx) else (f"pt2: AOTInductor compiles C++ and there is no {cxx} on PATH here "
                                           "(install one, or set CXX)")


def check_compile_device(device: str, **_) -> None:
    """--device for a pt2 package: one it compiles for, and a CUDA GPU torch sees where it is cuda."""
    import torch

    if device not in DEVICES:
        raise PtxError(f"--device {device!r}: pt2 compiles for {' or '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise PtxError("--device cuda: torch sees no CUDA GPU here, so a CUDA pt2 cannot be compiled (or validated); "
                       "compile on a GPU machine, or use --device cpu")


def write(model, example: tuple, path: Path, signature, strings: dict[str, str], *, device: str = "cpu") -> Written:
    """torch.export ``model`` on ``example`` with every symbolic size of ``signature`` dynamic, compile
    it for ``device`` and write the package to ``path`` (each example size 2 or more: torch.export
    specializes sizes 0 and 1)."""
    from .onnx import dynamic_dims

    name = strings["model"]
    try:
        limits = compile_package(model, example, dynamic_dims(signature), path, {**strings, "aoti_device": device},
                                 device)
    except PtxError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export and Inductor raise many types
        raise PtxError(f"pt2: {name} cannot be exported as pt2 ({describe_refusal(exc, user_files(model))}); "
                       "--format onnx or torchscript may still work") from None
    if device != "cpu":  # the loader's crash was a CUDA package's; a CPU one is loaded in this process
        probe_load(path, device, name)
    bounds = ", ".join(f"{symbol} up to {size}" for symbol, size in limits.items())
    return Written(f"torch.export + AOTInductor for {device}",
                   note=f"the model bounds {bounds} (torch.export found it): the package refuses larger inputs"
                   if limits else None)


def compile_package(model, args: tuple, dynamic_shapes, path: Path, strings: dict[str, str], device: str
                    ) -> dict[str, int]:
    """``torch.export`` ``model`` on ``args`` with ``dynamic_shapes``, compile it with AOTInductor for
    ``device`` and write the package to ``path`` with ``strings`` (and the weights digest,
    ptx.contract.weights) in its metadata. Raises what torch.export or Inductor raise. Returns the
    sizes the model bounds ({symbol: largest}), recorded in the package's signature."""
    import copy

    import torch

    check_compile_device(device)
    # A copy goes to the device: validation runs the caller's model as the eager reference on the CPU.
    target = copy.deepcopy(model).to(device).eval() if device != "cpu" else model
    strings = {k: v for k, v in strings.items() if k != WEIGHTS_KEY}
    # TF32 off while Inductor decides its CUDA kernels: f32 means f32 (ptx.cuda_math).
    with quiet_inductor(), torch.no_grad(), fp32_math():
        example = tuple(a.to(device) for a in args)
        try:
            program = torch.export.export(target, example, dynamic_shapes=dynamic_shapes)
        except torch._dynamo.exc.UserError as exc:
            if "Constraints violated" not in str(exc):
                raise
            # The model bounds a size (BERT's position table of 64 rows bounds the sequence), and a
            # Dim with no upper bound claims more: torch.export then finds each range itself. A size it
            # would fix is still refused (DYNAMIC, not AUTO), and validation checks the rest.
            # Not DYNAMIC on the first try (one export, not two): torch then starts every range
            # at 2 (range_constraints), where a Dim's min=1 makes 1 a size the compiled code handles.
            found = tuple({axis: torch.export.Dim.DYNAMIC for axis in dims} if dims else dims
                          for dims in dynamic_shapes)
            program = torch.export.export(target, example, dynamic_shapes=found)
        # The compiled code reads past a table's end where eager raises (BERT's answers a sequence of
        # 65 from its 64 positions): the range torch.export found is recorded, and every load refuses
        # a size beyond it (ptx.contract.tensor_inputs.check_feeds).
        strings, limits = _bounded(program, strings)
        # The types the package's outputs are built of (a transformers ModelOutput) are registered
        # only where their module is imported: recorded, so that every load imports them first.
        modules = modules_to_record(program, strings.get("model", "the model"))
        if modules:
            strings = {**strings, PYTREE_KEY: ",".join(modules)}
        # Into memory first, as for TorchScript: Python's own write then reports a full disk
        # as one line (atomic_path), and the package never lies half-written under its name.
        buffer = io.BytesIO()
        options = {f"aot_inductor.{k}": v for k, v in COMPILE_OPTIONS.items()
                   if hasattr(torch._inductor.config.aot_inductor, k)}
        torch._inductor.aoti_compile_and_package(
            program, package_path=buffer, inductor_configs={"aot_inductor.metadata": to_props(strings), **options})
    path.write_bytes(buffer.getbuffer())
    # AOTInductor keeps its metadata map in ``*_metadata.json`` members, which the digest leaves out:
    # the digest goes in there (rewrite_metadata), and the package's digest stays the same.
    bind_weights(path, "pt2", lambda digest: rewrite_metadata(path, {WEIGHTS_KEY: digest}),
                 "the package changed when its metadata was rewritten")
    return limits


def _bounded(program, strings: dict[str, str]) -> tuple[dict[str, str], dict[str, int]]:
    """(``strings`` with the signature's ``limits``, {symbol: largest size}) for each symbol whose
    range in ``program`` (torch.export's range_constraints) ends below MAX_DIM."""
    import sympy

    from .onnx import MAX_DIM

    if SIGNATURE_KEY not in strings:
        return strings, {}
    signature = Signature.from_json(strings[SIGNATURE_KEY], SIGNATURE_KEY)
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    shapes = [getattr(nodes[name].meta.get("val"), "shape", ()) for name in program.graph_signature.user_inputs]
    limits: dict[str, int] = {}
    for sig, shape in zip(signature.inputs, shapes):
        for symbol, size in zip(sig.shape, shape):
            expr = getattr(getattr(size, "node", None), "expr", None)
            upper = getattr(program.range_constraints.get(expr), "upper", None)
            # an unbounded size's upper end is torch's int_oo, which is no sympy Integer
            if isinstance(symbol, str) and isinstance(upper, sympy.Integer) and int(upper) < MAX_DIM:
                limits[symbol] = min(limits.get(symbol, int(upper)), int(upper))
    if not limits:
        return strings, {}
    bounded = replace(signature, limits=tuple(sorted(limits.items())))
    return {**strings, SIGNATURE_KEY: json.dumps(bounded.to_dict(), separators=(",", ":"))}, limits


def rewrite_metadata(path: Path, strings: dict[str, str], replace: bool = False) -> None:
    """Add ``strings`` (``ptx.`` prefixed) to the metadata map of the package at ``path``; with
    ``replace``, drop its ptx keys first (AOTInductor's own keys stay). Only the map's members are
    written (zip_members): the compiled code and the weights stay as they are, and so does their digest."""
    with zipfile.ZipFile(path) as archive:
        docs = {name: json.loads(archive.read(name)) for name in archive.namelist()
                if name.endswith(AOTI_METADATA_SUFFIX)}
    rewritten = {}
    for name, doc in docs.items():
        if replace:
            doc = {k: v for k, v in doc.items() if not k.startswith(METADATA_PREFIX)}
        rewritten[name] = json.dumps({**doc, **to_props(strings)}).encode()
    replace_members(path, rewritten)


# A CUDA package is loaded once in a child before this process loads it to validate: torch's
# aoti_load_package has segfaulted there (torch 2.11 on an H100, a CUDA package), and a crash in
# the child is one error, inside export's atomic_path, so no package is kept. A CPU package never
# crashed it, and the child costs an interpreter with torch (and transformers) imported: 3-5 s.
# The modules the package's output types come from are imported first, as every load does
# (ptx.pytree_types).
PROBE = ("import sys, torch; from ptx.pytree_types import import_recorded; import_recorded(sys.argv[1]); "
         "torch._inductor.aoti_load_package(sys.argv[1])")


def probe_load(path: Path, device: str, model: str, code: str = PROBE) -> None:
    import torch

    from ptx.child import ChildCrashError, run_child

    try:
        run_child(code, str(path), what=f"torch {torch.__version__}'s aoti_load_package")
    except ChildCrashError as exc:
        raise ChildCrashError(f"pt2 of {model} for {device}: {exc} loading the package it had just compiled; "
                              "that crash is torch's, not ptx's or the model's; no model.pt2 was kept "
                              "(--format onnx or torchscript still work; another torch version may load it)") from None


register(ExportFormat(name="pt2", description="torch.export + AOTInductor package (aoti_load_package, C++ runtime)",
                      serving_backend="aoti", write=write, unsupported=unsupported, unavailable=no_compiler,
                      add_metadata=rewrite_metadata, check_options=check_compile_device,
                      progress="torch.export, then AOTInductor compiles C++ for {device} (about 20-40 s on 2 CPU "
                               "cores for the CPU; for CUDA, minutes: convnet's took over 95 s on an H100's 16-core "
                               "host), then validates against eager"))
