"""onnx.reference: the onnx package's own evaluator, every node computed in numpy by the operator's
definition. Slow, and so a third opinion beside the runtimes on small inputs only: where ONNX
Runtime and OpenVINO part, it says which one reads the operator as its specification does.

numpy and onnx only: never torch or a runtime.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ptx.errors import ArtifactError, first_line

from ..formats.onnx_graph import graph_signature, read_graph
from ..formats.signature import Opening
from .runner import Runner


@functools.cache
def _gather_elements():
    """GatherElements as its definition reads: ``data``'s values at ``indices`` along ``axis`` (negative indices count
    from the end), numpy's take_along_axis. onnx's own (1.23) goes through numpy.choose, which takes at most 64 values
    along the axis, and falls back on a loop that gathers one index a row: a BERT's position or token-type table
    gathered over 8 tokens failed ("cannot reshape array of size 1 into shape (1,8)")."""
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        def _run(self, data, indices, axis=None):
            axis = int(axis or 0) % data.ndim
            indices = np.where(indices < 0, indices + data.shape[axis], indices).astype(np.int64)
            # off the axis, indices may be shorter than data: output[i][j] reads data's [i][j] there, not a broadcast
            data = data[tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(indices.shape))]
            return (np.take_along_axis(data, indices, axis=axis),)

    return GatherElements


class ReferenceRunner(Runner):
    """An ONNX file through onnx.reference.ReferenceEvaluator, run by name."""

    backend = "onnx.reference"
    holding = ("evaluator",)

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32", opening: Opening | None = None):
        from onnx.reference import ReferenceEvaluator

        path, opening = Path(path), opening or Opening("onnx")
        try:
            self.evaluator = ReferenceEvaluator(str(path), new_ops=[_gather_elements()])
        except Exception as exc:  # noqa: BLE001 - an op it does not implement: it cannot evaluate this graph
            raise ArtifactError(f"{path}: onnx.reference cannot evaluate it ({type(exc).__name__}: "
                                f"{first_line(exc)[:200]})") from None
        signature = opening.of_graph(graph_signature(read_graph(path), path, opening.batch_axes), path)
        super().__init__(signature, path, opening.name, opening.metadata)
        self.device, self.precision = device, precision

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.evaluator.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - its own types, one line
            raise self._failed(feeds, f"{type(exc).__name__}: {first_line(exc)[:300]}") from None
        by_name = dict(zip(self.evaluator.output_names, values))
        return {n: np.asarray(by_name[n]) for n in self.signature.output_names}
