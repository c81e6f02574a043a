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
``--backend auto`` name it only where it passed and is faster. The same runner serves a tutorial
export and a user's own ONNX file: every input is padded along its batch axis, every output cut
back along its own. numpy and onnxruntime only.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ptx.errors import BackendUnavailableError, PtxError

from .graph_shapes import GraphSlots, fill_padded, first_rows, graph_batch
from .ort_graph_cache import GraphSlotCache, StepSession
from .host_memory import lease_or_new
from .ort_runner import OrtRunner, run_bound_host
from .runner import Runner
from .ort_session import import_ort

GRAPH_ID = "gpu_graph_id"  # ONNX Runtime's run option naming the graph a run captures or replays
UNCAPTURED = "-1"  # the id that runs without capture or replay
KEPT_STEPS = 1  # the step sessions (ort_graph_cache.py) kept for the next decoding: each holds the weights again


@dataclass
class _Slot:
    inputs: dict  # name -> OrtValue on the device, the padded shape
    outputs: dict  # name -> OrtValue on the device
    binding: object
    run_options: object


class OrtGraphRunner(OrtRunner):
    """On ``cuda`` the provider captures graphs. On ``cpu`` (machines without a GPU) the same
    buffers, bindings and graph ids run on the CPU provider without capture: what the tests use to
    check everything around the graph."""

    cuda_graph = True
    holding = ("session", "_slots", "_steps")

    def __init__(self, path, device: str = "cpu", precision: str = "f32", opening=None, arena: bool = True):
        from ptx.contract.generation import GENERATION_KEY, of_metadata

        metadata = getattr(opening, "metadata", None) or {}
        generation = of_metadata(metadata, "ptx." + GENERATION_KEY)
        if generation is not None and generation.cache_position:
            # a fixed-length cache's decoder: its steps replay from sessions of fixed sizes (ort_graph_cache.py);
            # its own session, which runs the prompts (their lengths vary), is ort-cuda's, uncaptured
            self.cuda_graph = False
        super().__init__(path, device, precision, opening, arena)
        self._steps: dict[tuple[int, int], StepSession] = {}  # the step sessions no cache holds, by (rows, capacity)
        self.backend = "ort-cuda-graph" if self.on_cuda else "ort-cpu (graph buffers, no capture)"
        self._ort = import_ort()
        self._slots: GraphSlots[_Slot] = GraphSlots(self._make_slot)
        self._uncaptured = self._ort.RunOptions()
        self._uncaptured.add_run_config_entry(GRAPH_ID, UNCAPTURED)
        # Padding rows changes no answer only where every input and output has a batch axis: any
        # other model is captured at the exact shapes it is given.
        self._pads = self.signature.batched
        # A slot's buffers are shared by every run of its shapes: one run at a time per runner.
        self._lock = threading.Lock()

    def _make_slot(self, key: tuple, number: int) -> _Slot:
        ort = self._ort
        shapes = dict(key)
        outs = self.signature.output_shapes({n: np.empty(s, dtype=np.uint8) for n, s in shapes.items()})
        if outs is None:
            raise BackendUnavailableError(f"ort-cuda-graph: an output shape of {self.name} depends on its input values, "
                                          "and a CUDA graph replays fixed shapes; use --backend ort-cuda")
        binding = self.session.io_binding()
        inputs, outputs = {}, {}
        for bind, tensors, values, sizes in ((binding.bind_ortvalue_input, self.signature.inputs, inputs, shapes),
                                             (binding.bind_ortvalue_output, self.signature.outputs, outputs, outs)):
            for t in tensors:
                values[t.name] = ort.OrtValue.ortvalue_from_shape_and_type(sizes[t.name], np.dtype(t.dtype),
                                                                           *self.ort_device)
                bind(t.name, values[t.name])
        options = ort.RunOptions()
        options.add_run_config_entry(GRAPH_ID, str(number))
        return _Slot(inputs, outputs, binding, options)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # One run at a time, captured or not: ONNX Runtime's CUDA graphs forbid runs of the session
        # from other threads meanwhile (a capture is global to its stream), and a slot's buffers are
        # shared by every run of its shapes.
        with self._lock:
            slot, batch, rows = self._slots.for_feeds(self.signature, feeds)
            if slot is None:
                return run_bound_host(self, feeds, self._uncaptured)
            for t in self.signature.inputs:
                x, value = feeds[t.name], slot.inputs[t.name]
                if batch == rows and self.host is None:  # the CPU provider: a plain copy
                    value.update_inplace(x)
                    continue
                # On CUDA always through a page-locked buffer: a copy from it is complete when
                # update_inplace returns, where one from pageable memory may still be in flight
                # when the replay starts on ONNX Runtime's own stream.
                with lease_or_new(self.host, tuple(value.shape()), t.dtype) as staged:
                    value.update_inplace(fill_padded(staged, x, t.batch_axis) if t.batch_axis is not None
                                         and self._pads else _copied(staged, x))
            self.session.run_with_iobinding(slot.binding, slot.run_options)
            return {t.name: first_rows(slot.outputs[t.name].numpy(), t.batch_axis, rows)
                    if t.batch_axis is not None and self._pads else slot.outputs[t.name].numpy().copy()
                    for t in self.signature.outputs}

    def run_on_device(self, feeds):
        """GPU tensors are bound by their own pointers, which change from call to call: such a run is
        never captured (gpu_graph_id -1; left unset, ONNX Runtime would capture graph 0 on the first
        call's pointers and replay it on freed memory)."""
        with self._lock:
            return super().run_on_device(feeds)

    def new_cache(self, generation):
        """A fixed-length cache's decoding (--static-cache) keeps its buffers on the device and replays each step
        (GraphSlotCache); any other decoding's steps run through the captured graphs' own buffers (Runner's): a
        graph replays fixed addresses and shapes, which a cache held from step to step (ort_cache.py) does not."""
        if generation.cache_position:
            return GraphSlotCache(self, self.signature, generation)
        return Runner.new_cache(self, generation)

    def take_step(self, generation, rows: int, capacity: int) -> StepSession:
        """A step session for at least ``rows`` rows over ``capacity`` slots, its buffers the taker's until it gives
        it back: the smallest one no cache holds, else a new one of the next power of two of rows (a session of its
        own: seconds to make, the weights again)."""
        with self._lock:
            if self._steps is None:
                raise PtxError(f"{self.name} on {self.backend} was closed: open it again (ptx.infer.load)")
            fits = sorted(key for key in self._steps if key[1] == capacity and key[0] >= rows)
            step = self._steps.pop(fits[0]) if fits else None
        return step if step is not None else StepSession(self, generation, graph_batch(rows) or rows, capacity)

    def give_back_step(self, step: StepSession) -> None:
        """``step`` free for the next decoding of its sizes; only the latest KEPT_STEPS are kept (each holds the
        weights)."""
        with self._lock:
            if self._steps is None:  # closed
                return
            self._steps.pop((step.rows, step.capacity), None)
            self._steps[(step.rows, step.capacity)] = step
            while len(self._steps) > KEPT_STEPS:
                self._steps.pop(next(iter(self._steps)))

    def _binding_run_options(self):
        return self._uncaptured

    def bare(self, feeds: dict[str, np.ndarray]):
        """The captured graph called straight for bench's peer column: the inputs copied into the
        graph's input buffers, replayed, the outputs read back (no padding, lock or checks)."""
        feeds = {n: np.ascontiguousarray(x) for n, x in feeds.items()}
        slot, batch, rows = self._slots.for_feeds(self.signature, feeds)
        session, options = self.session, self._uncaptured
        if slot is None or batch != rows:  # ptx pads this batch or runs it uncaptured: the peer runs it uncaptured
            return "bare InferenceSession.run (uncaptured)", lambda: session.run(None, feeds, options)

        def call():
            for name, x in feeds.items():
                slot.inputs[name].update_inplace(x)
            session.run_with_iobinding(slot.binding, slot.run_options)
            return [value.numpy() for value in slot.outputs.values()]

        return "bare run_with_iobinding on a CUDA graph", call


def _copied(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    np.copyto(out, x)
    return out
