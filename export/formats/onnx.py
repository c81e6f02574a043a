"""ONNX: a dynamic batch (and seq) axis from the contract, metadata inside, checker-clean."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from ptx.contract import DEFAULT_OPSET, Contract, TensorSpec
from ptx.contract.metadata import to_props
from ptx.contract.schema import ValueEnum
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
    the legacy one also prints C++ shape-inference warnings straight to file descriptor 2, which
    only a descriptor-level redirect keeps off the terminal. Errors still arrive as exceptions."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            os.dup2(devnull.fileno(), 2)
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
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


def write(model, example, path: Path, contract: Contract, strings: dict[str, str], *,
          opset: int = DEFAULT_OPSET, exporter: Exporter | str = DEFAULT_EXPORTER,
          graph_input: TensorSpec | None = None) -> dict[str, str]:
    """Write ``model`` to ``path``; ``example`` must have a batch (and sequence) of at least 2:
    torch.export specializes sizes 0 and 1. ``graph_input``: the graph's input when it is not the
    contract's (raw uint8 pictures). Returns the opset and exporter actually used."""
    import onnx
    import torch

    exporter = Exporter(exporter)
    check_opset(opset, exporter)
    given = graph_input or contract.input
    names = dict(input_names=[given.name], output_names=[contract.output.name])
    # Every symbolic dimension of the contract (batch, and seq for token models) stays dynamic.
    input_axes = {i: d for i, d in enumerate(given.shape) if isinstance(d, str)}
    output_axes = {i: d for i, d in enumerate(contract.output.shape) if isinstance(d, str)}
    try:
        with _quiet_exporter(), torch.no_grad():
            if exporter is Exporter.DYNAMO:
                dims = {name: torch.export.Dim(name, min=1, max=1 << 20) for name in input_axes.values()}
                torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                                  dynamic_shapes=({i: dims[d] for i, d in input_axes.items()},),
                                  external_data=False, verbose=False, **names)
            else:
                torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                                  dynamic_axes={given.name: input_axes, contract.output.name: output_axes},
                                  **names)
    except Exception as exc:  # the exporters raise many types; the first line says what failed
        raise PtxError(f"the {exporter.value} ONNX exporter failed for {contract.model} at opset {opset}: "
                       f"{first_line(exc)}; try --exporter {'legacy' if exporter is Exporter.DYNAMO else 'dynamo'} "
                       f"or --opset {DEFAULT_OPSET}") from None
    proto = onnx.load(str(path))
    # Zero RNN/GRU/LSTM states built from the input's shape would keep ort-cuda off the GPU.
    omit_zero_initial_states(proto)
    # The dynamo exporter may raise a too-low opset to the version it implements: record the truth.
    used = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    extra = {"opset": str(used), "exporter": exporter.value}
    save_with_metadata(proto, path, contract, {**strings, **extra})
    return extra


def save_with_metadata(proto, path: Path, contract: Contract, strings: dict[str, str]) -> None:
    """Replace the graph's metadata_props by ptx's strings, check the model in full, save it."""
    import onnx

    del proto.metadata_props[:]
    for key, value in to_props(strings).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = contract.description
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def symbolic_dims(path) -> tuple[list, list]:
    """The input's and output's dimensions as stored: names where dynamic, sizes where fixed."""
    import onnx

    graph = onnx.load(str(path)).graph
    dims = [[d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim] for t in (graph.input[0], graph.output[0])]
    return dims[0], dims[1]


register(ExportFormat(name="onnx", description="ONNX (onnxruntime, OpenVINO, Triton, ...)", serving_backend="ort-cpu",
                      write=write, symbolic_dims=symbolic_dims, raw_pictures=True,
                      check_options=lambda opset, exporter: check_opset(opset, exporter)))
