"""ort-cuda-graph: model.onnx through ONNX Runtime's CUDA provider, each run replayed from a CUDA graph.

At batch 1 a small model's run is bound by launching its kernels one at a time, not by arithmetic
(issue 28: convnet 148 us through ort-cuda, where the GPU computes it in a fraction). ONNX Runtime
captures a run's kernels as one CUDA graph and replays it (provider option enable_cuda_graph) on
its conditions: every node on the GPU (ptx refuses CPU fallback anyway), inputs and outputs bound
to the same device buffers on every run, fixed shapes. So each padded shape (graph_shapes.py) gets
device buffers of its own and a graph id (run option gpu_graph_id); a run copies the batch into
its input buffer (``update_inplace``, from page-locked host memory), replays, and reads the output
buffer back. Shapes beyond the captured ones run uncaptured (gpu_graph_id -1) with IO binding on
host memory, as ort-cuda does.

A backend of its own, so that ptx verify judges it like every other row and bench and
``--backend auto`` name it only where it passed and is faster. numpy and onnxruntime only.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .graph_shapes import GraphSlots, fill_padded, first_rows
from .ort_session import OrtPredictor, bound_output_shape, import_ort, run_bound_host

GRAPH_ID = "gpu_graph_id"  # ONNX Runtime's run option naming the graph a run captures or replays
UNCAPTURED = "-1"  # the id that runs without capture or replay


@dataclass
class _Slot:
    input: object  # OrtValue on the device, the padded shape
    output: object  # OrtValue on the device
    binding: object
    run_options: object


class OrtGraphPredictor(OrtPredictor):
    """On ``cuda`` the provider captures graphs. On ``cpu`` (machines without a GPU) the same
    buffers, bindings and graph ids run on the CPU provider without capture: what the tests use to
    check everything around the graph."""

    cuda_graph = True

    def __init__(self, path: str | Path, device: str = "cuda", precision: str = "f32"):
        super().__init__(path, device, precision)
        self.backend = "ort-cuda-graph" if self.on_cuda else "ort-cpu (graph buffers, no capture)"
        self._ort = import_ort()
        self._device_type = "cuda" if self.on_cuda else "cpu"
        self._slots: GraphSlots[_Slot] = GraphSlots(self._make_slot)
        self._uncaptured = self._ort.RunOptions()
        self._uncaptured.add_run_config_entry(GRAPH_ID, UNCAPTURED)
        # A slot's buffers are shared by every run of its shape: one run at a time per predictor.
        self._lock = threading.Lock()

    def _make_slot(self, shape: tuple[int, ...], number: int) -> _Slot:
        ort = self._ort
        x = ort.OrtValue.ortvalue_from_shape_and_type(shape, self._dtype, self._device_type, self.device_id)
        out_shape = bound_output_shape(self, np.empty(shape, dtype=np.uint8))  # reads the shape only
        out = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.dtype(self.contract.output.dtype.value),
                                                        self._device_type, self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x)
        binding.bind_ortvalue_output(self.output_names[0], out)
        options = ort.RunOptions()
        options.add_run_config_entry(GRAPH_ID, str(number))
        return _Slot(x, out, binding, options)

    def run_host(self, x: np.ndarray) -> np.ndarray:
        # One run at a time, captured or not: ONNX Runtime's CUDA graphs forbid runs of the session
        # from other threads meanwhile (a capture is global to its stream), and a slot's buffers are
        # shared by every run of its shape.
        with self._lock:
            axis = self.graph_input.batch_axis
            rows = x.shape[axis]
            slot, batch = self._slots.for_rows(x.shape, axis)
            if slot is None:
                return run_bound_host(self, x, self._uncaptured)
            if batch == rows and self.host is None:  # the CPU provider: a plain copy
                slot.input.update_inplace(x)
            else:
                # On CUDA always through a page-locked buffer: a copy from it is complete when
                # update_inplace returns, where one from pageable memory may still be in flight
                # when the replay starts on ONNX Runtime's own stream.
                with self._staging(slot) as staged:
                    slot.input.update_inplace(fill_padded(staged, x, axis))
            self.session.run_with_iobinding(slot.binding, slot.run_options)
            return first_rows(slot.output.numpy(), self.contract.output.batch_axis, rows)

    def predict_on_device(self, x):
        """GPU tensors are bound by their own pointers, which change from call to call: such a run is
        never captured (gpu_graph_id -1; left unset, ONNX Runtime would capture graph 0 on the first
        call's pointers and replay it on freed memory)."""
        with self._lock:
            return super().predict_on_device(x)

    def _binding_run_options(self):
        return self._uncaptured

    def _staging(self, slot: _Slot):
        """A host buffer of the slot's padded shape (page-locked on CUDA) to pad the batch in."""
        shape = tuple(slot.input.shape())
        if self.host is not None:
            return self.host.lease(shape, self._dtype)
        return contextlib.nullcontext(np.empty(shape, self._dtype))


def bare_graph_runner(predictor: OrtGraphPredictor, x: np.ndarray):
    """The captured graph called straight for bench's peer column: ``x`` copied into the graph's
    input buffer, replayed, its output read back (no padding, lock or checks)."""
    x = np.ascontiguousarray(x)
    axis = predictor.graph_input.batch_axis
    slot, batch = predictor._slots.for_rows(x.shape, axis)
    if batch != x.shape[axis]:  # ptx pads this batch or runs it uncaptured: the peer runs it uncaptured
        session, feed, options = predictor.session, {predictor.input_name: x}, predictor._uncaptured
        return "bare InferenceSession.run (uncaptured)", lambda: session.run(None, feed, options)
    session = predictor.session

    def call():
        slot.input.update_inplace(x)
        session.run_with_iobinding(slot.binding, slot.run_options)
        return slot.output.numpy()

    return "bare run_with_iobinding on a CUDA graph", call
