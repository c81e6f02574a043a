"""The two sides ``ptx verify --locate`` compares: each runs a model file of one runtime (ONNX
Runtime on the CPU or a GPU, OpenVINO at f32 or bf16, onnx.reference) on given inputs and answers
the tensors asked for: a copy of its graph that gives some intermediate tensors as outputs, or a
piece of it run as a model of its own (graph.py's regions). It keeps nothing between questions.

Never torch: a TorchScript file's side is torchscript.py's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptx.errors import ModelRunError, first_line

from .graph import LocateGraph


class Side:
    """Values of named tensors of ``graph`` for ``feeds``, computed by one runtime."""

    label = "?"

    def __init__(self, graph: LocateGraph, feeds: Mapping[str, np.ndarray]):
        self.graph, self.feeds = graph, dict(feeds)

    def has(self, name: str) -> bool:
        return name in self.graph.produced_at or name in self.feeds

    def values(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's tensors ``names`` on the feeds: one run of a copy that outputs them."""
        wanted = [n for n in dict.fromkeys(names) if n in self.graph.produced_at]
        got = {n: self.feeds[n] for n in names if n in self.feeds}
        if wanted:
            got.update(self.run(self.graph.marked(wanted), self.feeds, wanted))
        return got

    def run(self, path: Path, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """The model file at ``path`` (a marked copy, a region) run on ``feeds``: ``names``' values."""
        try:
            return self._run(path, feeds, list(names))
        except ModelRunError:
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime's own error types, many lines long
            invalid = invalid_model(path)
            if invalid:  # ptx built it (a marked copy, a region, a file with nodes kept in f32): say what is wrong
                raise ModelRunError(f"{path.name}, cut from {self.graph.path.name}, is not a valid ONNX model "
                                    f"({invalid[:300]})") from None
            raise ModelRunError(f"{self.label} cannot give the intermediate tensors of {self.graph.path.name} "
                                f"({first_line(exc)[:300]})") from None

    def _run(self, path: Path, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def invalid_model(path: Path) -> str | None:
    """Why onnx.checker refuses the model at ``path`` (with its shapes inferred), or None: a runtime
    says only "invalid model" and the file's name, which is a temporary one the user never sees."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker's ValidationError and shape inference's own
        return " ".join(str(exc).split())
    return None


class OrtSide(Side):
    def __init__(self, graph, feeds, device: str = "cpu", label: str = "ort-cpu", precision: str = "f32"):
        super().__init__(graph, feeds)
        self.device, self.label, self.precision = device, label, precision

    def _run(self, path, feeds, names):
        from ..runtime.ort_runner import inference_session

        session = inference_session(path, self.device, self.precision, remedy="check it with `ptx inspect`",
                                    arena=False)
        inputs = {i.name for i in session.get_inputs()}
        return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in inputs})))


class OpenVinoSide(Side):
    def __init__(self, graph, feeds, precision: str = "f32", label: str = "openvino"):
        super().__init__(graph, feeds)
        self.precision, self.label, self.core = precision, label, None

    def _run(self, path, feeds, names):
        from ..runtime.openvino_runner import compile_config, import_openvino

        if self.core is None:  # one Core for every question: each holds its plugin's state
            self.core = import_openvino().Core()
        core = self.core
        model = core.read_model(str(path))
        model.reshape({p.get_any_name(): list(feeds[p.get_any_name()].shape) for p in model.inputs})
        # verify's openvino rows' settings: without the hint OpenVINO may pick bf16 by itself
        compiled = core.compile_model(model, "CPU", compile_config(self.precision))
        result = compiled.create_infer_request().infer({p.get_any_name(): feeds[p.get_any_name()]
                                                        for p in model.inputs})
        got = {}
        for k, port in enumerate(compiled.outputs):
            for name in port.get_names():
                if name in names:
                    got[name] = np.asarray(result[k])
        return got


class ReferenceSide(Side):
    """onnx.reference's evaluator (it only runs on small inputs, as verify's third opinion)."""

    label = "onnx.reference"

    def _run(self, path, feeds, names):
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(str(path))
        inputs = set(evaluator.input_names)
        return dict(zip(names, evaluator.run(names, {k: v for k, v in feeds.items() if k in inputs})))


def side_for(label: str, graph: LocateGraph, feeds) -> Side | None:
    """The side of a verify row's backend label, or None where locate cannot ask it."""
    if label == "onnx.reference":
        return ReferenceSide(graph, feeds)
    if label.startswith("ort-"):
        # A captured CUDA graph replays into fixed output buffers and cannot be asked for more
        # outputs; the same session un-captured (ort-cuda) runs the same kernels and can.
        asked = label.replace("ort-cuda-graph", "ort-cuda")
        device = "cpu" if asked.startswith("ort-cpu") else "cuda"
        return OrtSide(graph, feeds, device, asked, "tf32" if asked.endswith("-tf32") else "f32")
    if label.startswith("openvino"):
        precision = label.split("-", 1)[1] if "-" in label else "f32"
        return OpenVinoSide(graph, feeds, precision, label)
    return None
