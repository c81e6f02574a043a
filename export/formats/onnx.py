"""ONNX: a dynamic batch (and seq) axis from the contract, metadata inside, checker-clean."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from ptx.contract import DEFAULT_OPSET, Contract, TensorSig
from ptx.contract.metadata import to_props
from ptx.contract.names import METADATA_PREFIX
from ptx.contract.schema import ValueEnum
from ptx.contract.weights import WEIGHTS_KEY, digest_of
from ptx.errors import PtxError, first_line

from ..onnx_graph import omit_zero_initial_states
from . import ExportFormat, register

DYNAMO_MIN_OPSET = 18  # torch.export's ONNX translation starts at opset 18


class Exporter(ValueEnum):
    # dynamo is PyTorch's maintained exporter (the default since 2.9; the TorchScript-based one is
    # deprecated). Measured here: both give the same numbers on convnet/lstm/mlp (max |diff| ~1e-7),
    # dynamo takes 0.7-3.7 s per model against 0.06 s, a one-off cost worth the supported path.
    DYNAMO = "dynamo"
    LEGACY = "legacy"


DEFAULT_EXPORTER = Exporter.DYNAMO


@contextmanager
def _quiet_exporter():
    """The exporters log registration notices and deprecations that say nothing to a ptx user;
    the legacy one also prints C++ shape-inference warnings straight to file descriptor 2, and on a
    failure the whole TorchScript graph to descriptor 1 ("Torch IR graph at exception"), which only
    descriptor-level redirects keep off the terminal. Errors still arrive as exceptions."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            for fd in saved:
                os.dup2(devnull.fileno(), fd)
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        logger.setLevel(level)


def opset_range(exporter: Exporter) -> tuple[int, int]:
    """The opsets ``exporter`` can write with the installed torch and onnx."""
    import onnx.defs

    try:  # torch's own bounds; private, so fall back to those of torch 2.13
        from torch.onnx import _constants

        legacy = (_constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
        newest = _constants.ONNX_MAX_OPSET
    except (ImportError, AttributeError):
        legacy, newest = (7, 20), 23
    low, high = legacy if exporter is Exporter.LEGACY else (DYNAMO_MIN_OPSET, newest)
    return low, min(high, onnx.defs.onnx_opset_version())


def check_opset(opset: int, exporter: Exporter | str = DEFAULT_EXPORTER) -> int:
    exporter = Exporter(exporter)
    low, high = opset_range(exporter)
    if not low <= opset <= high:
        raise PtxError(f"--opset {opset}: the {exporter.value} exporter writes opsets {low} to {high} here")
    return opset


def export_graph(model, args: tuple, path: Path, *, exporter: Exporter | str, opset: int, input_names: list[str],
                 output_names: list[str], dynamic_shapes=None, dynamic_axes: dict | None = None) -> None:
    """``torch.onnx.export`` of ``model`` called on ``args``, quietly: the torch.export-based exporter
    (dynamo) with ``dynamic_shapes`` (a ``torch.export.Dim`` per dynamic axis, per input), or the
    TorchScript-based one (legacy) with ``dynamic_axes`` ({tensor name: {axis: symbol}}). Every
    example size must be 2 or more: torch.export specializes sizes 0 and 1. The exporter's own
    exception is raised (callers turn it into one line)."""
    import torch

    exporter = Exporter(exporter)
    names = dict(input_names=list(input_names), output_names=list(output_names))
    with _quiet_exporter(), torch.no_grad():
        if exporter is Exporter.DYNAMO:
            torch.onnx.export(model, tuple(args), str(path), dynamo=True, opset_version=opset,
                              dynamic_shapes=dynamic_shapes, external_data=False, verbose=False, **names)
        else:
            torch.onnx.export(model, tuple(args), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes=dynamic_axes or None, **names)


def finish(path: Path, strings: dict[str, str], description: str, extra: dict[str, str]) -> dict[str, str]:
    """The exported file at ``path`` made ready to keep: zero recurrent states dropped, the opset the
    exporter really wrote recorded in ``extra``, the metadata and the weights digest written in.
    Returns ``extra`` with the opset."""
    import onnx

    proto = onnx.load(str(path))
    # Zero RNN/GRU/LSTM states built from the input's shape would keep ort-cuda off the GPU.
    omit_zero_initial_states(proto)
    # The dynamo exporter may raise a too-low opset to the version it implements: record the truth.
    used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    extra = {**extra, **({"opset": str(used)} if used is not None else {})}
    save_with_metadata(proto, path, {**strings, **extra}, description)
    return extra


def write(model, example, path: Path, contract: Contract, strings: dict[str, str], *,
          opset: int = DEFAULT_OPSET, exporter: Exporter | str = DEFAULT_EXPORTER,
          graph_input: TensorSig | None = None) -> dict[str, str]:
    """Write ``model`` to ``path``; ``example`` must have a batch (and sequence) of at least 2:
    torch.export specializes sizes 0 and 1. ``graph_input``: the graph's input when it is not the
    contract's (raw uint8 pictures). Returns the opset and exporter actually used."""
    import torch

    exporter = Exporter(exporter)
    check_opset(opset, exporter)
    given = graph_input or contract.input
    # Every symbolic dimension of the contract (batch, and seq for token models) stays dynamic.
    input_axes = {i: d for i, d in enumerate(given.shape) if isinstance(d, str)}
    output_axes = {i: d for i, d in enumerate(contract.output.shape) if isinstance(d, str)}
    dims = {name: torch.export.Dim(name, min=1, max=1 << 20) for name in input_axes.values()}
    try:
        export_graph(model, (example,), path, exporter=exporter, opset=opset, input_names=[given.name],
                     output_names=[contract.output.name],
                     dynamic_shapes=({i: dims[d] for i, d in input_axes.items()},),
                     dynamic_axes={given.name: input_axes, contract.output.name: output_axes})
    except Exception as exc:  # the exporters raise many types; the first line says what failed
        raise PtxError(f"the {exporter.value} ONNX exporter failed for {contract.model} at opset {opset}: "
                       f"{first_line(exc)}; try --exporter {'legacy' if exporter is Exporter.DYNAMO else 'dynamo'} "
                       f"or --opset {DEFAULT_OPSET}") from None
    return finish(path, strings, contract.description, {"opset": str(opset), "exporter": exporter.value})


def save_with_metadata(proto, path: Path, strings: dict[str, str], description: str = "") -> str:
    """Replace the graph's metadata_props by ptx's strings, check the model in full, save it, and
    write in the digest of its weights (ptx.contract.weights), taken on the saved file: the
    metadata_props lie outside the graph, so adding the digest leaves it unchanged, which is
    checked. Returns the digest."""
    import onnx

    strings = {k: v for k, v in strings.items() if k != WEIGHTS_KEY}
    del proto.metadata_props[:]
    for key, value in to_props(strings).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = description
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    digest = digest_of(path, "onnx")
    proto.metadata_props.add(key=f"{METADATA_PREFIX}{WEIGHTS_KEY}", value=digest)
    onnx.save(proto, str(path))
    if digest_of(path, "onnx") != digest:  # protobuf wrote the graph differently the second time
        raise PtxError(f"{path.name}: the graph's digest changed when ptx wrote it in (onnx {onnx.__version__}): "
                       "ptx cannot bind this file's contract to its weights; please report it")
    return digest


def symbolic_dims(path) -> tuple[list, list]:
    """The input's and output's dimensions as stored: names where dynamic, sizes where fixed."""
    import onnx

    graph = onnx.load(str(path)).graph
    dims = [[d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim] for t in (graph.input[0], graph.output[0])]
    return dims[0], dims[1]


register(ExportFormat(name="onnx", description="ONNX (onnxruntime, OpenVINO, Triton, ...)", serving_backend="ort-cpu",
                      write=write, symbolic_dims=symbolic_dims, raw_pictures=True,
                      check_options=lambda opset, exporter: check_opset(opset, exporter)))
