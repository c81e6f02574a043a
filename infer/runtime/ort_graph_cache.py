"""ort-cuda-graph's decoding: a fixed-length cache (a decoder exported with --static-cache) kept on the runner's
device, each one-position step replayed as one CUDA graph.

ONNX Runtime captures a run as a CUDA graph on its conditions (enable_cuda_graph): every node on the GPU, the
same buffers bound at every replay, fixed shapes. A decoder of plain operators keeps its shape arithmetic (Shape,
Gather, Range over the dynamic sizes) on the CPU, which a capture refuses; with every size fixed by the session's
free-dimension overrides (the rows, one position, the buffer's length, one kept logit) ONNX Runtime folds that
arithmetic away at load. So the steps run through a session of their own (``StepSession``, one per rows x
capacity, the latest kept) whose past and present are bound to the cache's buffers and whose small inputs (ids,
mask, positions, slot) are copied into device buffers bound once; a prompt's run, and drafts' (several positions),
go through the runner's own session, uncaptured, on the same buffers. Measured on a GPU before it was built
(scripts/gpu_lm_step.py, H200): Qwen2-0.5B's f32 step 15.9 ms under the profiler, of which the GPU was busy
2.5 ms over 891 kernels: the step is bound by launching them, which a replay does at once.

The steps' session holds its own copy of the weights on the device (ONNX Runtime shares no initializers
between CUDA sessions): twice the weights' memory, said in docs/generate.md. On the CPU (machines without a
GPU) the same sessions, buffers and bindings run without capture: what the tests check. numpy and onnxruntime
only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ptx.contract.generation import Generation
from ptx.contract.tensors import Signature
from ptx.errors import BackendUnavailableError, first_line

from .graph_shapes import ROUNDED, step_sizes
from .host_memory import lease_or_new
from .ort_cache import DeviceSlotCache
from .ort_session import CUDA_GRAPH_REFUSED, DISABLE_CPU_FALLBACK, ORT_DEFAULT, ORT_QUIET, cuda_provider, import_ort, \
    session_options



class StepSession:
    """A session of ``runner``'s file whose sizes are fixed (``rows`` rows, one new position, ``capacity`` slots,
    one kept logit), its inputs and outputs bound once: its own cache buffers (``buffers``, zeros: a slot masked
    still enters the attention's sums at weight 0, where a NaN of uninitialised memory would poison them) as past
    and present, a device buffer for every other input and for the logits. ``replay(feeds)`` copies the small
    inputs in and runs the captured graph. A GraphSlotCache takes one from the runner for as long as it holds
    rows of that many and that capacity."""

    def __init__(self, runner, generation: Generation, rows: int, capacity: int):
        ort = import_ort()
        signature: Signature = runner.signature
        self.rows, self.capacity = rows, capacity
        self._runner = runner
        self.session = _fixed_session(runner, ort, step_sizes(signature, generation, rows, capacity))
        self.device = runner.ort_device
        self.binding = self.session.io_binding()
        self.inputs: dict[str, object] = {}
        self.buffers: dict[str, object] = {}
        caches = dict(generation.cache)
        for t in signature.inputs:
            shape = _fixed_shape(t, generation, rows, capacity)
            if t.name in caches:
                self.buffers[t.name] = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.dtype(t.dtype)), *self.device)
                self.binding.bind_ortvalue_input(t.name, self.buffers[t.name])
                self.binding.bind_ortvalue_output(caches[t.name], self.buffers[t.name])
                continue
            self.inputs[t.name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.dtype(t.dtype), *self.device)
            self.binding.bind_ortvalue_input(t.name, self.inputs[t.name])
        logits = signature.output(generation.logits)
        self.logits = ort.OrtValue.ortvalue_from_shape_and_type((rows, 1, int(logits.shape[-1])),
                                                                np.dtype(logits.dtype), *self.device)
        self.binding.bind_ortvalue_output(generation.logits, self.logits)
        self.options = ort.RunOptions()
        self.options.add_run_config_entry("gpu_graph_id", "1")  # the one graph of this session

    def copy_in(self, value, x: np.ndarray) -> None:
        """``x`` copied into the device buffer ``value``: on CUDA through page-locked memory, since a copy from it is
        done when update_inplace returns, where one from pageable memory may still be in flight when the replay
        starts on ONNX Runtime's own stream."""
        host = self._runner.host
        if host is None:
            value.update_inplace(x)
            return
        with lease_or_new(host, x.shape, x.dtype) as staged:
            np.copyto(staged, x)
            value.update_inplace(staged)

    def replay(self, feeds: Mapping[str, object]) -> np.ndarray:
        """The logits [rows, 1, vocab] of a one-position run of ``feeds`` (the buffers among them, bound already)."""
        signature = self._runner.signature
        for name, value in self.inputs.items():
            self.copy_in(value, np.ascontiguousarray(feeds[name], dtype=np.dtype(signature.input(name).dtype)))
        self.session.run_with_iobinding(self.binding, self.options)
        return self.logits.numpy().copy()


def _rows(a: np.ndarray, axis: int, rows: int, fill) -> np.ndarray:
    """``a`` with rows of ``fill`` after its own along ``axis``, ``rows`` in all."""
    if a.shape[axis] == rows:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, rows - a.shape[axis])
    return np.pad(a, widths, constant_values=fill)


def _fixed_shape(t, generation: Generation, rows: int, capacity: int) -> tuple[int, ...]:
    if t.name == generation.attention_mask:
        return (rows, capacity)
    if t.name in (generation.cache_position, generation.logits_to_keep):
        return (1,)
    if t.name in dict(generation.cache):  # [rows, heads, capacity, head size]
        return tuple(capacity if axis == generation.past_axis else rows if isinstance(size, str) else int(size)
                     for axis, size in enumerate(t.shape))
    return (rows, 1)  # the ids, the positions


def _fixed_session(runner, ort, overrides: Mapping[str, int]):
    """A session of ``runner``'s file with ``overrides`` fixing its sizes; on CUDA captured as a graph, every node on
    the GPU (refused in one line where ONNX Runtime cannot)."""
    from .ort_runner import KEEP_FLOAT

    options = session_options(ort)
    for name, size in overrides.items():
        options.add_free_dimension_override_by_name(name, int(size))
    if runner.on_cuda:
        options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
        providers = [cuda_provider(runner.device_id, tf32=runner.precision == "tf32", cuda_graph=True)]
    else:
        providers = ["CPUExecutionProvider"]
    ort.set_default_logger_severity(ORT_QUIET)
    try:
        return ort.InferenceSession(str(runner.path), options, providers=providers, disabled_optimizers=KEEP_FLOAT)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal, in one line
        why = first_line(exc)
        hint = "a node stays off the GPU at fixed sizes" if CUDA_GRAPH_REFUSED in why else why
        raise BackendUnavailableError(f"ort-cuda-graph: ONNX Runtime cannot run {runner.path.name}'s decoding step as a "
                                      f"CUDA graph ({hint[:300]}); use --backend ort-cuda") from None
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT)


class GraphSlotCache(DeviceSlotCache):
    """A fixed-length cache on an OrtGraphRunner's device: its buffers those of a StepSession it takes from the
    runner for its capacity and at least its rows, bound as past and present of every run; a run of one position a
    row replayed through it, a longer one through the runner's own session (run_holding) on the same buffers,
    uncaptured. The session's rows only grow (the next power of two): rows that leave a running batch (a server's)
    leave padding rows, fed the pad id over one slot and never read, so that a batch whose rows come and go replays
    one session instead of making one per count."""

    def __init__(self, runner, signature: Signature, generation: Generation):
        super().__init__(runner, signature, generation)
        self._step: StepSession | None = None

    def _new(self) -> "GraphSlotCache":
        return GraphSlotCache(self._runner, self.signature, self.generation)

    def _allocated(self, arrays: Mapping[str, np.ndarray], capacity: int) -> dict[str, object]:
        """Buffers of ``capacity`` slots (rounded up, so that decodings of similar lengths share a step session),
        ``arrays`` in their first positions: the step session's where it holds them (its capacity, and rows enough),
        else the cache's own on the device until a one-position run takes a session (a prompt's cache that joins a
        running batch never does)."""
        capacity = -(-capacity // ROUNDED) * ROUNDED
        if self._step is not None and self._step.capacity == capacity and self._step.rows >= self.rows:
            return self._filled(arrays, capacity)
        self._let_go()
        return super()._allocated(arrays, capacity)

    def _filled(self, arrays: Mapping[str, np.ndarray], capacity: int) -> dict[str, object]:
        """The step session's buffers with ``arrays`` in their first positions and rows, zeros after."""
        on_host = self._on_host(arrays, capacity)
        for name, value in self._step.buffers.items():
            self._step.copy_in(value, _rows(on_host[name], self._batch_axes[name], self._step.rows, 0))
        return dict(self._step.buffers)

    def _run(self, feeds, width):
        self._room(self.length + width)
        if width == 1 and self._step is None:  # the first step: the cache moves into a step session's buffers
            held = self.arrays()
            self._step = self._runner.take_step(self.generation, self.rows, self.capacity)
            self._buffers = self._filled(held, self.capacity)
        return super()._run(feeds, width)

    def slot_feeds(self, feeds: Mapping[str, np.ndarray], width: int) -> dict[str, object]:
        """The file's feeds (SlotCache's) with the step session's padding rows after this cache's: the pad id, its
        mask over the first slot alone (an all-zero mask row would give the attention nothing to weigh), position
        0."""
        fed = super().slot_feeds(feeds, width)
        rows, gen = self._step.rows if self._step is not None else self.rows, self.generation
        fed[gen.input_ids] = _rows(np.asarray(fed[gen.input_ids]), 0, rows, gen.pad)
        if gen.position_ids:
            fed[gen.position_ids] = _rows(np.asarray(fed[gen.position_ids]), 0, rows, 0)
        if gen.attention_mask:
            mask = _rows(np.asarray(fed[gen.attention_mask]), 0, rows, 0)
            mask[self.rows:, 0] = 1
            fed[gen.attention_mask] = mask
        return fed

    def _run_over(self, feeds: Mapping[str, object]) -> Mapping[str, object]:
        if np.shape(feeds[self.generation.input_ids])[1] != 1 or self._step is None:
            out = dict(super()._run_over(feeds))
        else:
            out = {self.generation.logits: self._step.replay(feeds),
                   **{present: self._buffers[past] for past, present in self.generation.cache}}
        out[self.generation.logits] = np.asarray(out[self.generation.logits])[:self.rows]  # the padding rows' cut
        return out

    def _adopt(self, other) -> None:
        self._let_go()
        super()._adopt(other)
        self._step, other._step = other._step, None

    def release(self) -> None:
        super().release()
        self._let_go()

    def _let_go(self) -> None:
        if self._step is not None:
            self._runner.give_back_step(self._step)
            self._step = None
