"""Issue 28's inference paths, proven on the CPU: reused (page-locked on a GPU) host buffers, IO
binding on them, and the CUDA-graph backends (ort-cuda-graph, eager-cuda-graph) with everything
around the graph (padded shapes, buffers, graph ids, the uncaptured path) run on the CPU, where the
provider does not capture and a stand-in replays the torch forward. On a GPU the agreement suite
runs both backends for real (they are registry entries)."""
from __future__ import annotations

import asyncio
import functools
import threading

import numpy as np
import pytest
import torch

from conftest import outputs
from ptx.contract import compare
from ptx.contract.transforms import to_model_input
from ptx.errors import BackendUnavailableError
from ptx.infer import backends, load
from ptx.infer.runtime.graph_shapes import GRAPH_MAX_BATCH, GraphSlots, fill_padded, first_rows, graph_batch
from ptx.infer.runtime.host_memory import PAGE, CudaRuntimePinner, HostBuffers, aligned_empty
from ptx.infer.model.opening import model_of, opening_of
from ptx.infer.runtime.ort_graph import OrtGraphRunner
from ptx.infer.runtime.ort_runner import run_bound_host
from ptx.infer.runtime.torch_graph import TorchGraphRunner


def on_runner(runner_class, path, device="cpu", **options):
    """A tutorial export on ``runner_class`` as load() opens it, on a device the registry would not
    give a CUDA-graph runner: on the CPU its buffers, padding and bindings run without capture."""
    opening, info = opening_of(path)
    return model_of(runner_class.open(path, device, opening=opening, **options), info)


def open_graph_artifact(path, device="cuda"):
    return on_runner(OrtGraphRunner, path, device)


def open_graph_checkpoint(path, device="cuda", graphs=None):
    return on_runner(TorchGraphRunner, path, device, graphs=graphs)
from ptx.serve.batcher import Batcher, Merge
from ptx.trainers.step import EagerGraphs

# image (batch first), image (seq-first: batch on axis 1), text of varying length (batch on axis 1,
# per-position output on axis 0), text with one answer per word
MODELS = ("cnn", "lstm", "rnn-hello", "gru-classifier")
BATCHES = (1, 3, 7, 64, GRAPH_MAX_BATCH + 4)


class FakePinner:
    def __init__(self, ok: bool = True):
        self.ok, self.pinned, self.unpinned = ok, [], []

    def pin(self, array):
        self.pinned.append(array.ctypes.data)
        return self.ok

    def unpin(self, array):
        self.unpinned.append(array.ctypes.data)


# -- host buffers ---------------------------------------------------------------------------------
def test_a_buffer_is_page_aligned_pinned_once_and_reused():
    pinner = FakePinner()
    buffers = HostBuffers(pinner)
    with buffers.lease((64, 1, 28, 28), np.float32) as first:
        assert first.ctypes.data % PAGE == 0 and first.shape == (64, 1, 28, 28) and first.dtype == np.float32
        address = first.ctypes.data
    with buffers.lease((64, 1, 28, 28), np.float32) as again:
        assert again.ctypes.data == address
    assert pinner.pinned == [address]  # page-locking is paid once, not per batch
    buffers.close()
    assert pinner.unpinned == [address]


def test_concurrent_leases_never_share_a_buffer():
    buffers = HostBuffers(FakePinner())
    with buffers.lease((4, 3), np.int64) as a, buffers.lease((4, 3), np.int64) as b:
        assert a.ctypes.data != b.ctypes.data
    seen, lock = set(), threading.Lock()

    def worker():
        for _ in range(50):
            with buffers.lease((8,), np.float32) as x:
                x[:] = threading.get_ident() % 1000
                with lock:
                    assert x.ctypes.data not in seen
                    seen.add(x.ctypes.data)
                assert np.all(x == threading.get_ident() % 1000)  # nobody wrote into it meanwhile
                with lock:
                    seen.discard(x.ctypes.data)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_the_pool_keeps_to_its_budget_and_unpins_what_it_drops():
    pinner = FakePinner()
    buffers = HostBuffers(pinner, max_bytes=3 * 4096)
    for n in range(1, 5):  # four shapes of 4 KiB: the oldest is released for the fourth
        with buffers.lease((1024 * 1,), np.float32) if n == 1 else buffers.lease((1024, n), np.uint8):
            pass
    assert len(pinner.unpinned) == 1 and buffers._bytes <= 3 * 4096
    pinned_before = len(pinner.pinned)
    with buffers.lease((8192,), np.uint8) as a, buffers.lease((8192,), np.uint8) as b:
        # with everything in use the second cannot be kept: a one-off, never pinned, never pooled
        assert a.ctypes.data != b.ctypes.data
    assert len(pinner.pinned) == pinned_before + 1 and buffers._bytes <= 3 * 4096


def test_a_buffer_that_cannot_be_pinned_still_serves():
    pinner = FakePinner(ok=False)
    buffers = HostBuffers(pinner)
    with buffers.lease((5,), np.float32) as x:
        x[:] = 1
    assert buffers.pin_failures == 1
    buffers.close()
    assert pinner.unpinned == []  # only what was pinned is unpinned


def test_the_cuda_runtime_pinner_registers_the_buffer_it_is_given():
    calls = []

    class Runtime:  # torch.cuda.cudart()'s shape: cudaHostRegister(ptr, size, flags) -> error code
        def cudaHostRegister(self, ptr, size, flags):
            calls.append(("register", ptr, size, flags))
            return 0

        def cudaHostUnregister(self, ptr):
            calls.append(("unregister", ptr))
            return 0

    pinner = CudaRuntimePinner(Runtime())
    array = aligned_empty((3, 5), np.float32)
    assert pinner.pin(array)
    pinner.unpin(array)
    assert calls == [("register", array.ctypes.data, 60, 1), ("unregister", array.ctypes.data)]


# -- padded graph shapes --------------------------------------------------------------------------
@pytest.mark.parametrize("rows, batch", [(1, 1), (2, 2), (3, 4), (7, 8), (64, 64), (65, 128),
                                         (GRAPH_MAX_BATCH, GRAPH_MAX_BATCH), (GRAPH_MAX_BATCH + 1, None), (0, None)])
def test_batches_round_up_to_a_power_of_two_up_to_the_graph_limit(rows, batch):
    assert graph_batch(rows) == batch


def test_padding_puts_the_rows_first_and_zeros_after_on_any_axis():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
    out = np.full((2, 4, 4), 7, np.float32)
    fill_padded(out, x, axis=1)
    assert np.array_equal(out[:, :3], x) and not out[:, 3].any()
    assert np.array_equal(first_rows(out, 1, 3), x)


def test_graph_slots_stop_at_their_limit():
    made = []
    slots = GraphSlots(lambda shape, number: made.append((shape, number)) or number, limit=2)
    assert [slots.get((1,)), slots.get((2,)), slots.get((1,)), slots.get((4,))] == [1, 2, 1, None]
    assert made == [((1,), 1), ((2,), 2)]


# -- ONNX Runtime: IO binding on host buffers and the graph backend's plumbing ----------------------
def model_inputs(runs, name, rows):
    raw, _ = runs.test_samples(name, rows)
    return to_model_input(raw, trained_contract(runs, name))


@functools.lru_cache(maxsize=None)
def trained_contract(runs, name):
    """The contract of the run's export (one session load per model, not one per batch)."""
    return load(name, backend="ort-cpu", root=runs.ready(name)).contract


@pytest.mark.parametrize("name", MODELS)
def test_io_binding_on_host_buffers_gives_session_runs_answers(runs, name):
    root = runs.ready(name)
    predictor = load(name, backend="ort-cpu", root=root)
    runner = predictor.runner
    runner.host = HostBuffers(FakePinner())  # as on CUDA: the output lands in a reused buffer
    name_in, name_out = predictor.graph_input.name, predictor.contract.output.name
    for rows in (1, 7):
        x = model_inputs(runs, name, rows)
        want = runner.session.run(None, {name_in: x})[0]
        got = run_bound_host(runner, {name_in: x})[name_out]
        assert np.array_equal(got, want)
        again = run_bound_host(runner, {name_in: x})[name_out]
        assert np.array_equal(again, want) and again.ctypes.data != got.ctypes.data  # the caller's own copy


@pytest.mark.parametrize("name", MODELS)
def test_the_ort_graph_backend_answers_as_ort_does_at_every_batch_size(runs, name):
    root = runs.ready(name)
    plain = load(name, backend="ort-cpu", root=root)
    graph = open_graph_artifact(root / name / "model.onnx", device="cpu")
    for rows in BATCHES:
        x = model_inputs(runs, name, rows)
        want, got = outputs(plain, x), outputs(graph, x)
        assert got.shape == want.shape
        assert compare(got, want, plain.contract).ok, f"batch {rows}"
    padded = {dict(key)[graph.graph_input.name][graph.graph_input.batch_axis] for key in graph.runner._slots.slots}
    assert padded == {1, 4, 8, 64}  # 3 and 7 padded; GRAPH_MAX_BATCH + 4 ran uncaptured
    assert compare(outputs(graph, model_inputs(runs, name, 3)), outputs(plain, model_inputs(runs, name, 3)),
                   plain.contract).ok  # a replayed slot, after a larger batch used it


def test_the_ort_graph_backend_reads_uint8_pictures_and_its_bare_peer_runs(runs, tmp_path):
    import shutil

    from ptx.export.api import export_model

    run_dir = tmp_path / "cnn"
    run_dir.mkdir()
    shutil.copy2(runs.trained("cnn") / "checkpoint.pt", run_dir / "checkpoint.pt")
    export_model("cnn", ["onnx"], checkpoint=run_dir / "checkpoint.pt", out=run_dir, input_dtype="uint8",
                 log=lambda _: None)
    plain = load(run_dir / "model.onnx")
    graph = open_graph_artifact(run_dir / "model.onnx", device="cpu")
    pictures = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    assert np.allclose(graph.predict_pictures(pictures), plain.predict_pictures(pictures), atol=1e-5)
    name_in = graph.graph_input.name
    label, call = graph.bare({name_in: pictures[:4]})
    assert "CUDA graph" in label and np.allclose(call()[0], plain.predict_pictures(pictures[:4]), atol=1e-5)
    label, call = graph.bare({name_in: pictures})  # 5 rows: ptx pads them, its peer runs them uncaptured
    assert "uncaptured" in label and np.allclose(call()[0], plain.predict_pictures(pictures), atol=1e-5)


# -- torch: CUDA graphs, with a stand-in that replays the forward on the CPU -------------------------
@pytest.mark.parametrize("name", MODELS)
def test_the_torch_graph_backend_answers_as_eager_does_at_every_batch_size(runs, name):
    root = runs.ready(name)
    eager = load(root / name / "checkpoint.pt")
    stand_ins = []

    def graphs():
        stand_ins.append(EagerGraphs())
        return stand_ins[-1]

    graph = open_graph_checkpoint(root / name / "checkpoint.pt", device="cpu", graphs=graphs)
    for rows in BATCHES:
        x = model_inputs(runs, name, rows)
        want, got = outputs(eager, x), outputs(graph, x)
        assert got.shape == want.shape
        assert compare(got, want, eager.contract).ok, f"batch {rows}"
    assert len(stand_ins) == 4 and all(g.captures == 1 for g in stand_ins)  # one capture per padded shape
    x = model_inputs(runs, name, 4)
    label, call = graph.bare({graph.graph_input.name: x})
    assert label == "bare CUDA graph replay" and compare(call()[0], outputs(eager, x), eager.contract).ok
    label, _ = graph.bare({graph.graph_input.name: model_inputs(runs, name, 5)})
    assert "uncaptured" in label


def test_a_model_that_cannot_be_captured_is_refused_in_one_line(runs):
    root = runs.ready("cnn")
    graph = open_graph_checkpoint(root / "cnn" / "checkpoint.pt", device="cpu",
                                  graphs=lambda: EagerGraphs(fail=RuntimeError("operation not permitted when stream is capturing\nmore")))
    with pytest.raises(BackendUnavailableError, match=r"cannot be captured as a CUDA graph \(operation not permitted") as err:
        outputs(graph, model_inputs(runs, "cnn", 2))
    assert "\n" not in str(err.value) and "--backend eager" in str(err.value)


def test_a_capture_that_fails_once_is_tried_again_on_a_fresh_graph(runs):
    """lstm's first f32 capture failed on an H100 where a later one of the same shape succeeded: one
    failure is followed by one more try on a fresh graph, whose replay then answers."""
    root = runs.ready("cnn")
    made = []

    def graphs():
        made.append(EagerGraphs(fail=RuntimeError("operation failed due to a previous error during capture"))
                    if not made else EagerGraphs())
        return made[-1]

    graph = open_graph_checkpoint(root / "cnn" / "checkpoint.pt", device="cpu", graphs=graphs)
    x = model_inputs(runs, "cnn", 2)
    with pytest.warns(RuntimeWarning, match=r"capture at input shapes .* failed once \(operation failed due to a "
                                            r"previous error during capture\) and succeeded on a fresh graph"):
        got = outputs(graph, x)
    assert compare(got, outputs(load(root / "cnn" / "checkpoint.pt"), x), graph.contract).ok
    assert [g.captures for g in made] == [1, 1]


def test_the_torch_graph_backend_without_a_gpu_says_so(runs):
    with pytest.raises(BackendUnavailableError, match="runs on cuda only"):
        open_graph_checkpoint(runs.ready("cnn") / "cnn" / "checkpoint.pt", device="cpu")


def test_both_graph_backends_are_registry_rows_on_cuda_only():
    for name in ("ort-cuda-graph", "eager-cuda-graph"):
        backend = backends.get(name)
        assert backend.devices == ("cuda",) and backend.precision_names == ("f32", "tf32")
    labels = {b.label(d, p) for b, d, p in backends.variants()}
    assert {"ort-cuda-graph", "ort-cuda-graph-tf32", "eager-cuda-graph", "eager-cuda-graph-tf32"} <= labels
    if not torch.cuda.is_available():
        assert backends.get("eager-cuda-graph").unavailable("cuda") == "no CUDA GPU visible to torch"


# -- serve's batcher joins requests straight into a host buffer -----------------------------------
def test_the_batcher_joins_requests_into_a_reused_host_buffer():
    pinner = FakePinner()
    buffers = HostBuffers(pinner)
    seen = []

    def run(batch):  # requests and answers are arrays by name (the batcher's one served model)
        seen.append(batch["x"].ctypes.data)
        return {"y": batch["x"].sum(axis=1, keepdims=True)}

    async def main():
        batcher = Batcher(run, merge=Merge({"x": 0}, {"y": 0}), max_batch_size=8, max_delay_s=0.05, host=buffers)
        first = await asyncio.gather(*[batcher.submit({"x": np.full((1, 3), i, np.float32)}) for i in range(4)])
        second = await asyncio.gather(*[batcher.submit({"x": np.full((1, 3), i, np.float32)}) for i in range(4)])
        batcher.close()
        return first, second

    first, second = asyncio.run(main())
    for answers in (first, second):
        assert [float(a["y"][0, 0]) for a in answers] == [0.0, 3.0, 6.0, 9.0]
    joined = [address for address in seen if address in pinner.pinned]
    assert joined and len(set(joined)) <= 2  # the same buffers again, not a new array per batch


def test_ragged_requests_join_into_a_buffer_as_they_join_without_one():
    merge = Merge({"x": 1}, {"y": 1}, {"x": (0, 0)})
    xs = [{"x": np.arange(3, dtype=np.int64).reshape(3, 1) + 1}, {"x": np.arange(5, dtype=np.int64).reshape(5, 1) + 1}]
    (shape, dtype), = merge.joined_shapes(xs).values()
    out = {"x": np.full(shape, -1, dtype)}
    assert np.array_equal(merge.join(xs, out=out)["x"], merge.join(xs)["x"]) and shape == (5, 2)


@pytest.mark.parametrize("name", MODELS)
def test_verify_says_statically_whether_a_graph_can_be_captured(runs, name, tmp_path):
    from onnx import TensorProto, helper

    from ptx.infer.runtime.cuda_placement import graph_static_summary

    line = graph_static_summary(runs.ready(name) / name / "model.onnx")
    assert line.startswith("static placement: ") and line.endswith("capturable as a CUDA graph (no If, Loop, Scan nodes)")
    # a graph with a host-side decision in it cannot be replayed as one sequence of kernels
    then = helper.make_graph([helper.make_node("Identity", ["X"], ["T"])], "then", [],
                             [helper.make_tensor_value_info("T", TensorProto.FLOAT, [1])])
    cond = helper.make_tensor_value_info("C", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])
    node = helper.make_node("If", ["C"], ["Y"], then_branch=then, else_branch=then)
    model = helper.make_model(helper.make_graph([node], "g", [cond, x], [y]), opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8)
    path = tmp_path / "if.onnx"
    path.write_bytes(model.SerializeToString())
    assert graph_static_summary(path).endswith("not capturable as a CUDA graph (If nodes)")


def test_pinning_is_given_up_after_a_failure_and_a_closed_pool_unpins_what_comes_back():
    pinner = FakePinner(ok=False)
    buffers = HostBuffers(pinner)
    with buffers.lease((3,), np.float32):
        pass
    with buffers.lease((4,), np.float32):  # no second try: a failure is out of lockable memory
        pass
    assert len(pinner.pinned) == 1 and buffers.pin_failures == 1
    pinner = FakePinner()
    buffers = HostBuffers(pinner)
    with buffers.lease((6,), np.float32) as x:
        buffers.close()
        x[:] = 1  # still the caller's until the block ends
    assert pinner.unpinned == pinner.pinned and buffers._free == {}


def test_a_failed_registration_clears_the_runtimes_last_error():
    cleared = []

    class Runtime:
        def cudaHostRegister(self, ptr, size, flags):
            return 2  # cudaErrorMemoryAllocation

        def cudaHostUnregister(self, ptr):
            return 0

        def cudaGetLastError(self):
            cleared.append(True)
            return 2

    assert not CudaRuntimePinner(Runtime()).pin(aligned_empty((4,), np.float32))
    assert cleared == [True]  # else torch would report it as the next kernel's failure


def test_graph_runs_from_many_threads_never_mix_their_buffers(runs):
    name = "cnn"
    root = runs.ready(name)
    plain = load(name, backend="ort-cpu", root=root)
    graph = open_graph_artifact(root / name / "model.onnx", device="cpu")
    batches = [model_inputs(runs, name, rows) for rows in (1, 3, 4, 5, 300)]
    wants = [outputs(plain, x) for x in batches]
    failures = []

    def worker(offset):
        for i in range(20):
            k = (i + offset) % len(batches)
            if not compare(outputs(graph, batches[k]), wants[k], plain.contract).ok:
                failures.append(k)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_runs_on_bound_gpu_tensors_are_never_captured(runs):
    root = runs.ready("cnn")
    graph = open_graph_artifact(root / "cnn" / "model.onnx", device="cpu")
    assert graph.runner._binding_run_options().get_run_config_entry("gpu_graph_id") == "-1"
    assert load(root / "cnn" / "model.onnx").runner._binding_run_options() is None  # ort-cuda: no graphs
    from ptx.infer.runtime.ort_runner import run_with_binding

    x = torch.from_numpy(model_inputs(runs, "cnn", 3))
    # the binding ort-cuda-graph runs on a GPU
    out = run_with_binding(graph.runner, {graph.graph_input.name: x}, "cpu", graph.runner._binding_run_options())
    out = out[graph.contract.output.name]
    assert compare(out.numpy(), outputs(graph, x.numpy()), graph.contract).ok


def test_a_model_onnx_runtime_cannot_capture_is_refused_in_one_line(runs, monkeypatch):
    import onnxruntime

    from ptx.infer.runtime import ort_runner

    def refuse(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : This session cannot use the CUDA Graph feature as requested "
                           "by the user as the model has control flow nodes which can't be supported by CUDA Graph.\nmore")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_runner, "preload_cuda_libraries", lambda ort: [])
    with pytest.raises(BackendUnavailableError, match=r"^ort-cuda-graph: ONNX Runtime \S+ cannot run model.onnx as a "
                                                      r"CUDA graph \(.*control flow nodes.*\); use --backend ort-cuda$"):
        open_graph_artifact(runs.ready("cnn") / "cnn" / "model.onnx", device="cuda")


def test_a_live_modules_graph_rows_are_replayed_not_answered_by_the_runs_that_learned_its_outputs():
    """The eager runs that learn a live module's outputs (seed 0 at batch 3, as verify's first generated case)
    are kept to answer those inputs again (issue 67): the graph runner must replay its graph for them, so a
    module that cannot be captured is refused at batch 3 too, not answered eagerly as if it had been."""
    from ptx.contract.tensor_inputs import make_feeds, plan_inputs
    from ptx.contract.tensors import Signature, TensorSig
    from ptx.errors import PtxError

    inputs = (TensorSig("x", "float32", ("batch", 8), 0),)
    graph = TorchGraphRunner(torch.nn.Linear(8, 4).eval(), inputs, None, device="cpu", backend="eager",
                             graphs=lambda: EagerGraphs(fail=RuntimeError("operation not permitted when stream is capturing")))
    signature = Signature(inputs, ())
    for batch in (3, 5):
        with pytest.raises(PtxError, match="cannot be captured"):
            graph.run(make_feeds(signature, plan_inputs(signature), batch, 0))
