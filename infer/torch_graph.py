"""eager-cuda-graph: the checkpoint's nn.Module on a GPU, each batch shape captured once as a CUDA graph.

The torch side of issue 28's batch-1 latency: eager-cuda launches every kernel of the forward from
Python (297 us for convnet on an H100, 205 us for the bare call); a replayed graph launches them
as one. This is PyTorch's recipe (torch.cuda.graphs): warm-up calls on a side stream, capture on a
static input buffer, then each run copies the batch into that buffer and replays. Shapes are
padded as graph_shapes.py says; shapes beyond the captured ones run as eager-cuda does.

A model that cannot be captured is refused in one line when its first batch of a shape runs
(ptx verify then fails the row, and nothing chooses it): a graph backend that silently ran
eagerly would be timed and named as what it is not. ``graphs`` stands in for CUDA's graphs on
machines without a GPU (tests), as in ptx.trainers.step.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ptx.contract.names import FULL_PRECISION
from ptx.errors import BackendUnavailableError, first_line
from ptx.trainers.step import CudaGraphs

from .graph_shapes import GraphSlots
from .torch_predictor import EagerPredictor, math_mode

WARMUP_CALLS = 3  # on the side stream before capture: cuDNN and cuBLAS pick and allocate there


@dataclass
class _Slot:
    input: torch.Tensor  # on the device, the padded shape
    replay: Callable[[], object]
    outputs: dict  # "y": the graph's output tensor (rewritten by each replay)


class EagerGraphPredictor(EagerPredictor):
    backend = "eager-cuda-graph"

    def __init__(self, checkpoint: str | Path, device: str = "cuda", expected_model: str | None = None,
                 precision: str = FULL_PRECISION, graphs: Callable[[], object] | None = None):
        super().__init__(checkpoint, device, expected_model, precision)
        if graphs is None:
            if self.torch_device.type != "cuda":
                raise BackendUnavailableError("eager-cuda-graph captures CUDA graphs: it runs on cuda only; "
                                              "use --backend eager on the CPU")
            graphs = lambda: CudaGraphs(self.torch_device, "thread_local")  # noqa: E731 - a stream and graph per shape
        self._new_graphs = graphs
        self._slots: GraphSlots[_Slot] = GraphSlots(self._make_slot)
        # Capture and replay under the predictor's one lock (re-entered by the uncaptured path): a
        # capture must not meet this model's own runs from a server's other worker threads.
        self._lock = threading.RLock()

    def _make_slot(self, shape: tuple[int, ...], number: int) -> _Slot:
        static = torch.zeros(shape, dtype=self._dtype, device=self.torch_device)
        outputs: dict = {}
        graphs = self._new_graphs()

        def forward():
            outputs["y"] = self.module(static)

        try:
            with torch.no_grad(), math_mode(self.torch_device, self.precision):
                for _ in range(WARMUP_CALLS):
                    graphs.warmup(forward)
                replay = graphs.capture(forward)
        except Exception as exc:  # torch raises RuntimeError and others; which, it does not promise
            raise BackendUnavailableError(
                f"eager-cuda-graph: {self.contract.model} at input shape {list(shape)} cannot be captured as a "
                f"CUDA graph ({first_line(exc)}); use --backend eager") from None
        return _Slot(static, replay, outputs)

    def _forward(self, tensor) -> "object":
        axis = self.graph_input.batch_axis
        rows = tensor.shape[axis]
        with self._lock, torch.no_grad():  # no_grad: for the CPU stand-in, which replays by calling forward
            slot, batch = self._slots.for_rows(tuple(tensor.shape), axis)
            if slot is None:
                return super()._forward(tensor)
            slot.input.narrow(axis, 0, rows).copy_(tensor, non_blocking=True)
            if batch > rows:
                slot.input.narrow(axis, rows, batch - rows).zero_()
            slot.replay()
            out = slot.outputs["y"].narrow(self.contract.output.batch_axis, 0, rows)
            return out.to("cpu", copy=True).numpy()  # a copy: the next replay rewrites the graph's output


def bare_graph_runner(predictor: EagerGraphPredictor, x, *, label: str):
    """The captured graph called straight, paying the host copies: x into its input, replay, the
    output to host memory (no padding, lock or checks)."""
    x = np.ascontiguousarray(x)
    host = torch.from_numpy(x)
    axis = predictor.graph_input.batch_axis
    slot, batch = predictor._slots.for_rows(x.shape, axis)
    if batch != x.shape[axis]:  # ptx pads this batch or runs it uncaptured: the peer runs it uncaptured
        from .torch_predictor import bare_module_runner

        return bare_module_runner(predictor, x, label="bare nn.Module call (uncaptured)")

    def call():
        with torch.no_grad():
            slot.input.copy_(host, non_blocking=True)
            slot.replay()
            return slot.outputs["y"].cpu().numpy()

    return label, call
