"""eager-cuda-graph: the checkpoint's nn.Module on a GPU, each batch shape captured once as a CUDA graph.

The torch side of issue 28's batch-1 latency: eager-cuda launches every kernel of the forward from
Python (297 us for convnet on an H100, 205 us for the bare call); a replayed graph launches them
as one. This is PyTorch's recipe (torch.cuda.graphs): warm-up calls on a side stream, capture on a
static input buffer, then each run copies the batch into that buffer and replays. Shapes are
padded as graph_shapes.py says; shapes beyond the captured ones run as eager-cuda does.

A model that cannot be captured is refused in one line when its first batch of a shape runs
(ptx verify then fails the row, and nothing chooses it): a graph backend that silently ran
eagerly would be timed and named as what it is not. ``graphs`` stands in for CUDA's graphs on
machines without a GPU (tests), as in ptx.trainers.step. The same runner serves a tutorial
checkpoint, a user's nn.Module and a user's TorchScript or pt2 file (a scripted or AOTInductor-compiled
forward launches its kernels on the capturing stream as eager's does): every input is padded along its
batch axis, every output cut back along its own.
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ptx.errors import BackendUnavailableError, first_line
from ptx.trainers.step import CudaGraphs

from .graph_shapes import GraphSlots
from .torch_runner import TorchRunner, flatten_outputs, math_mode

WARMUP_CALLS = 3  # on the side stream before capture: cuDNN and cuBLAS pick and allocate there


@dataclass
class _Slot:
    inputs: dict  # name -> tensor on the device, the padded shape
    replay: Callable[[], object]
    outputs: dict  # name -> the graph's output tensor (rewritten by each replay)


class TorchGraphRunner(TorchRunner):
    def __init__(self, module, inputs, outputs, *, device: str = "cuda", graphs: Callable[[], object] | None = None,
                 **options):
        super().__init__(module, inputs, outputs, device=device, **options)
        self.backend = "eager-cuda-graph"
        # The answers of the eager runs that learned a module's outputs are not its graphs': verify's first
        # generated case (seed 0, batch 3) is those runs' inputs, and must be replayed, not answered eagerly.
        self._learned.clear()
        if graphs is None:
            if self.torch_device.type != "cuda":
                raise BackendUnavailableError("eager-cuda-graph captures CUDA graphs: it runs on cuda only; "
                                              "use --backend eager on the CPU")
            graphs = lambda: CudaGraphs(self.torch_device, "thread_local")  # noqa: E731 - a stream and graph per shape
        self._new_graphs = graphs
        self._slots: GraphSlots[_Slot] = GraphSlots(self._make_slot)
        self._pads = self.signature.batched  # padding rows changes nothing only where every tensor is batched
        # Capture and replay under the runner's one lock (re-entered by the uncaptured path): a
        # capture must not meet this model's own runs from a server's other worker threads.
        self._lock = threading.RLock()

    def _make_slot(self, key: tuple, number: int) -> _Slot:
        statics = {t.name: torch.zeros(dict(key)[t.name], dtype=getattr(torch, t.dtype), device=self.torch_device)
                   for t in self.signature.inputs}
        outputs: dict = {}

        def forward():
            named = flatten_outputs(self.module(*(statics[n] for n in self._input_names)), "the model")
            outputs.update(zip(self.signature.output_names, named.values()))

        try:
            replay = self._capture(forward)
        except Exception as first:  # torch raises RuntimeError and others; which, it does not promise
            # Once more on a fresh graph before the refusal: on an H100 (2026-11-26) lstm's first f32 capture
            # of [28, 64, 28] failed ("operation failed due to a previous error during capture") where its
            # tf32 capture of the same shape, later in the same process, succeeded. On 2026-11-27 the row
            # passed there, and nothing said whether the retry had been needed: it says so now.
            shown = ", ".join(f"{n} {list(s)}" for n, s in key)
            try:
                replay = self._capture(forward)
            except Exception:  # noqa: BLE001 - the first failure is the one said
                raise BackendUnavailableError(
                    f"eager-cuda-graph: {self.name} at input shapes {shown} cannot be captured as a "
                    f"CUDA graph ({first_line(first)}); use --backend eager") from None
            warnings.warn(f"eager-cuda-graph: {self.name}'s capture at input shapes {shown} failed once "
                          f"({first_line(first)}) and succeeded on a fresh graph", RuntimeWarning, stacklevel=2)
        return _Slot(statics, replay, outputs)

    def _capture(self, forward: Callable[[], None]) -> Callable[[], object]:
        """Warm-up calls, then ``forward`` captured on a graph of its own: the replay."""
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)  # nothing of an earlier, failed capture still in flight
        graphs = self._new_graphs()
        with torch.no_grad(), math_mode(self.torch_device, self.precision):
            for _ in range(WARMUP_CALLS):
                graphs.warmup(forward)
            return graphs.capture(forward)

    def _forward(self, feeds) -> dict[str, torch.Tensor]:
        if getattr(self, "_slots", None) is None:  # learning a user's module's outputs, before any capture
            return super()._forward(feeds)
        with self._lock, torch.no_grad():  # no_grad: for the CPU stand-in, which replays by calling forward
            slot, batch, rows = self._slots.for_feeds(self.signature, feeds)
            if slot is None:
                return super()._forward(feeds)
            for t, x in zip(self.signature.inputs, self._tensors(feeds)):
                static = slot.inputs[t.name]
                if t.batch_axis is None or not self._pads:
                    static.copy_(x, non_blocking=True)
                    continue
                static.narrow(t.batch_axis, 0, rows).copy_(x, non_blocking=True)
                if batch > rows:
                    static.narrow(t.batch_axis, rows, batch - rows).zero_()
            slot.replay()
            # copies: the next replay rewrites the graph's outputs
            return {t.name: (slot.outputs[t.name].narrow(t.batch_axis, 0, rows) if t.batch_axis is not None
                             and self._pads else slot.outputs[t.name]).to("cpu", copy=True)
                    for t in self.signature.outputs}

    def bare(self, feeds: dict[str, np.ndarray]):
        """The captured graph called straight, paying the host copies: the inputs into its buffers,
        replay, the outputs to host memory (no padding, lock or checks)."""
        slot, batch, rows = self._slots.for_feeds(self.signature, feeds)
        if slot is None or batch != rows:  # ptx pads this batch or runs it uncaptured: the peer runs it uncaptured
            label, call = super().bare(feeds)
            return f"{label} (uncaptured)", call
        hosts = {n: torch.from_numpy(np.ascontiguousarray(x)) for n, x in feeds.items()}

        def call():
            with torch.no_grad():
                for name, host in hosts.items():
                    slot.inputs[name].copy_(host, non_blocking=True)
                slot.replay()
                return [out.cpu().numpy() for out in slot.outputs.values()]

        return "bare CUDA graph replay", call
