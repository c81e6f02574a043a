"""onnx.reference: the onnx package's own evaluator, every node computed in numpy by the operator's
definition. Slow, and so a third opinion beside the runtimes on small inputs only: where ONNX
Runtime and OpenVINO part, it says which one reads the operator as its specification does.

numpy and onnx only: never torch or a runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ptx.errors import ArtifactError, first_line

from ..formats.onnx_graph import graph_signature, read_graph
from ..formats.signature import Opening
from .runner import Runner


class ReferenceRunner(Runner):
    """An ONNX file through onnx.reference.ReferenceEvaluator, run by name."""

    backend = "onnx.reference"
    holding = ("evaluator",)

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "f32", opening: Opening | None = None):
        from onnx.reference import ReferenceEvaluator

        path, opening = Path(path), opening or Opening("onnx")
        try:
            self.evaluator = ReferenceEvaluator(str(path))
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
