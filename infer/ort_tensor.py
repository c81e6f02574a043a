"""A user's ONNX file through ONNX Runtime (ort-cpu, ort-cuda): numpy and onnxruntime only, never torch."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptx.contract.tensors import Signature, TensorSig, dtype_of_ort, infer_batch_axes
from ptx.contract.schema import ContractError
from ptx.errors import ArtifactError, ModelRunError, first_line

from .model_files import IGNORE_HINT, check_graph_against, check_weights, read_model_file, recorded_signature
from .ort_session import cuda_device_id, open_session
from .tensor_model import TensorModel, describe_feeds, outputs_by_name

FOREIGN_REMEDY = "check the file with `ptx inspect`, or re-export it"


def graph_tensors(args, kind: str, path: Path) -> tuple[TensorSig, ...]:
    """ORT's NodeArgs -> TensorSigs (no batch axes yet). An unnamed dynamic size is a symbol of its
    own, except a leading one, which is called N (a batch, unless --batch-axis says otherwise). A
    size named ``?`` is unnamed too: paddle2onnx writes every unknown size so, and one symbol for
    them all would bind a picture's height to its width."""
    out = []
    for arg in args:
        try:
            dtype = dtype_of_ort(arg.type, f"{path.name}: {kind} {arg.name!r}")
        except ContractError as exc:
            raise ArtifactError(str(exc)) from None
        shape = []
        for axis, d in enumerate(arg.shape or []):
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif isinstance(d, str) and d and d != "?" and not d.startswith("unk__"):
                shape.append(d)
            else:  # None, -1, ?, or ORT's made-up unk__N: a dynamic size with no name
                shape.append("N" if axis == 0 else f"{arg.name}_{axis}")
        out.append(TensorSig(arg.name, dtype, tuple(shape)))
    return tuple(out)


def session_signature(session, path: Path, batch_axes: Mapping[str, int | None] | None = None) -> Signature:
    inputs, outputs = infer_batch_axes(graph_tensors(session.get_inputs(), "input", path),
                                       graph_tensors(session.get_outputs(), "output", path), batch_axes)
    return Signature(inputs, outputs)


class OrtTensorModel(TensorModel):
    """An InferenceSession on a user's ONNX file, created once; ``run`` is thread-safe as ORT's
    sessions are. On CUDA no node may fall back to the CPU (the session refuses, naming the nodes)."""

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32", *,
                 batch_axes: Mapping[str, int | None] | None = None, ignore_metadata: bool = False,
                 inputs: Sequence[TensorSig] = ()):
        path = Path(path)
        found = read_model_file(path)
        metadata = {} if ignore_metadata else found.metadata
        check_weights(path, metadata, found.digest)
        on_cuda = device.startswith("cuda")
        if on_cuda:
            cuda_device_id(device)
        self.session = open_session(path, device, precision, remedy=FOREIGN_REMEDY)
        signature = file_signature(path, session_signature(self.session, path, batch_axes), metadata, batch_axes,
                                   inputs)
        super().__init__(signature, path, found.name if not ignore_metadata else None, metadata)
        self.backend = "ort-cuda" if on_cuda else "ort-cpu"
        self.device = device
        self.precision = precision
        self._names = signature.output_names

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return outputs_by_name(self._names, self.session.run(self._names, feeds))
        except Exception as exc:  # ORT raises its own types, with a C++ message many lines long
            raise ModelRunError(f"{self.backend} failed running {self.name} on inputs "
                                f"{describe_feeds(feeds)}: {first_line(exc)[:400]}") from None

    def bare(self, feeds: dict[str, np.ndarray]):
        session, names = self.session, self._names
        return "bare InferenceSession.run", lambda: session.run(names, feeds)


def file_signature(path: Path, graph: Signature, metadata: Mapping[str, str],
                   batch_axes: Mapping[str, int | None] | None, inputs: Sequence[TensorSig]) -> Signature:
    """An ONNX file's signature as every runtime takes it: what its graph says, or the ptx.signature
    its metadata records once the graph is found to match it, narrowed by the user's --input."""
    recorded = recorded_signature(metadata, path)
    signature = check_graph_against(recorded, graph, path) if recorded and not batch_axes else graph
    return _with_declared(signature, inputs, path) if inputs else signature


def _with_declared(signature: Signature, declared: Sequence[TensorSig], path: Path) -> Signature:
    """--input on an ONNX file narrows what its graph says (a size for a symbol, a range), never
    contradicts it."""
    by_name = {t.name: t for t in declared}
    unknown = sorted(set(by_name) - set(signature.input_names))
    if unknown:
        raise ArtifactError(f"--input {unknown[0]}: {path.name} has no input {unknown[0]!r}; its inputs are "
                            f"{', '.join(signature.input_names)} (an ONNX file describes its own inputs: {IGNORE_HINT} "
                            "is not needed)")
    merged = []
    for t in signature.inputs:
        d = by_name.get(t.name)
        if d is not None and (d.dtype != t.dtype or len(d.shape) != len(t.shape)
                              or any(isinstance(a, int) and isinstance(b, int) and a != b
                                     for a, b in zip(d.shape, t.shape))):
            raise ArtifactError(f"--input {t.name}: declared {d.dtype} {d.dims_text()}, but {path.name} takes "
                                f"{t.dtype} {t.dims_text()}")
        if d is None:
            merged.append(t)
            continue
        shape = tuple(b if isinstance(b, int) or axis == t.batch_axis else a
                      for axis, (a, b) in enumerate(zip(d.shape, t.shape)))
        merged.append(replace(t, shape=shape, value_range=d.value_range or t.value_range))
    return signature.with_inputs(merged)
