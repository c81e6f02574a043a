"""The memory plan (issue 74): a command knows the weights' size and the memory it may use, opens one
runtime at a time, and skips in one line what cannot fit, never leaving it for the kernel to kill.
Small models and an artificial limit (PTX_MEMORY_LIMIT, or the available memory patched), so that
the plan's decisions are checked in seconds."""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ptx import machine
from ptx.errors import PtxError
from ptx.infer.model.target import Target
from ptx.infer.runtime import memory_plan
from ptx.infer.verify.verify import verify
from ptx_command import ptx

MB = 1_000_000
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter makes the small file


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    """A 4 MB two-layer MLP, exported by torch with a dynamic batch."""
    path = tmp_path_factory.mktemp("plan") / "mlp.onnx"
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 8000), torch.nn.ReLU(), torch.nn.Linear(8000, 64)).eval()
    torch.onnx.export(module, (torch.rand(2, 64),), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def test_the_limit_is_read_in_bytes_or_with_a_unit(monkeypatch):
    for given, want in (("6G", 6 << 30), ("512M", 512 << 20), ("2.5g", int(2.5 * (1 << 30))), ("1000", 1000),
                        ("3GiB", 3 << 30)):
        monkeypatch.setenv(machine.MEMORY_LIMIT_ENV, given)
        assert machine.memory_limit() == want
    monkeypatch.setenv(machine.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(PtxError, match="PTX_MEMORY_LIMIT=lots: give bytes or a size such as 6G"):
        machine.memory_limit()


def test_an_artificial_limit_bounds_what_is_available_by_what_the_process_holds(monkeypatch):
    monkeypatch.setenv(machine.MEMORY_LIMIT_ENV, "100T")
    assert machine.available_memory() < 100 << 40  # MemAvailable is less
    limit = machine.resident_memory() + 50 * MB
    monkeypatch.setenv(machine.MEMORY_LIMIT_ENV, str(limit))
    assert 0 < machine.available_memory() <= 50 * MB


def test_the_weights_of_an_onnx_file_count_its_external_data(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((500, 500), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 500])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 500])], [weights])
    path = tmp_path / "ext.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True, location="ext.onnx.data")
    assert path.stat().st_size < 10_000
    assert memory_plan.weights_bytes(path) >= 1_000_000


def test_a_shortfall_says_what_is_needed_and_what_is_available():
    said = memory_plan.shortfall("openvino on big.onnx (1.98 GB of weights)", 4.4e9, available=3_100_000_000)
    assert said.startswith("openvino on big.onnx (1.98 GB of weights) needs about 4.84 GB of memory and 3.10 GB is "
                           "available")
    assert memory_plan.shortfall("small", 1e6, available=3_100_000_000) is None


def opened_at_once(monkeypatch) -> list[int]:
    """[the most runtimes open at once]: Target.open and Runner.close counted."""
    from ptx.infer.runtime.runner import Runner

    state = {"open": 0, "most": [0]}
    real_open, real_close = Target.open, Runner.close

    def counted_open(self, *args, **kwargs):
        model = real_open(self, *args, **kwargs)
        state["open"] += 1
        state["most"][0] = max(state["most"][0], state["open"])
        return model

    def counted_close(self, *args, **kwargs):  # close(collect=...) passed on as given
        if not self.closed:
            state["open"] -= 1
        real_close(self, *args, **kwargs)

    monkeypatch.setattr(Target, "open", counted_open)
    monkeypatch.setattr(Runner, "close", counted_close)
    return state["most"]


def test_verify_holds_one_runtime_at_a_time_and_the_reference_as_arrays(onnx_file, monkeypatch):
    most = opened_at_once(monkeypatch)
    report = verify(Target.of(str(onnx_file), verifying=True), backends=["ort-cpu", "openvino"], notice=lambda _: None)
    assert {r.label for r in report.rows} >= {"ort-cpu", "openvino"}
    assert all(r.error is None for r in report.rows), [(r.label, r.error) for r in report.rows]
    assert most[0] == 1


def test_a_row_that_cannot_fit_is_skipped_in_one_line(onnx_file, monkeypatch):
    """The reference fits; then memory runs short: every other row is skipped, saying what it needs and
    what is available, and what did run is still judged."""
    calls = itertools.count()
    monkeypatch.setattr(memory_plan, "available_memory", lambda: 10**12 if next(calls) == 0 else 5 * MB)
    report = verify(Target.of(str(onnx_file), verifying=True), backends=["ort-cpu", "openvino"], notice=lambda _: None)
    why = report.skipped["openvino"]
    assert "openvino on mlp.onnx (4 MB of weights) needs about" in why and "5 MB is available" in why, why
    assert "\n" not in why
    assert [r.label for r in report.rows] == ["ort-cpu"]


def test_a_reference_that_cannot_fit_is_one_line_not_a_kill(onnx_file, monkeypatch):
    monkeypatch.setenv(machine.MEMORY_LIMIT_ENV, "1M")
    done = ptx("verify", onnx_file, "--backends", "ort-cpu")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "needs about" in lines[0] and "is available (PTX_MEMORY_LIMIT" in lines[0], done.stderr


def test_onnx_reference_runs_only_on_models_small_enough_to_finish(onnx_file, monkeypatch):
    from dataclasses import replace

    from ptx.infer.runtime import backends

    small = replace(backends.get("onnx.reference"), model_bytes=1 * MB)
    monkeypatch.setitem(backends._REGISTRY.entries, "onnx.reference", small)
    report = verify(Target.of(str(onnx_file), verifying=True), backends=["ort-cpu", "onnx.reference"],
                    notice=lambda _: None)
    assert report.skipped["onnx.reference"] == ("mlp.onnx holds 4 MB of weights, past the 1 MB onnx.reference "
                                                "evaluates (every node in numpy)")


def test_a_closed_runner_lets_its_runtime_go_and_says_so_when_run(onnx_file):
    from ptx.infer import load

    model = load(str(onnx_file))
    assert model.runner.session is not None
    model.close()
    assert model.runner.session is None
    with pytest.raises(PtxError, match="was closed: open it again"):
        model.run({"x": np.zeros((2, 64), np.float32)})


def test_openvino_keeps_one_compiled_shape_where_memory_is_short(onnx_file, monkeypatch):
    pytest.importorskip("openvino")
    from ptx.infer import load

    monkeypatch.setattr(memory_plan, "available_memory", lambda: 8 * MB)  # a quarter: one copy of 4 MB
    model = load(str(onnx_file), "openvino")
    assert model.runner.shapes_kept == 1
    for batch in (2, 3, 2):
        model.run({"x": np.ones((batch, 64), np.float32)})
        assert len(model.runner._cache) == 1
    monkeypatch.setattr(memory_plan, "available_memory", lambda: 10**12)
    assert load(str(onnx_file), "openvino").runner.shapes_kept == 8


def test_a_static_check_that_cannot_fit_is_said_in_its_row(onnx_file, monkeypatch):
    from ptx.infer.runtime import cuda_placement

    monkeypatch.setattr(memory_plan, "available_memory", lambda: 10**12)
    monkeypatch.setattr(cuda_placement, "require_room", lambda what, need: memory_plan.require_room(what, 10**13))
    report = verify(Target.of(str(onnx_file), verifying=True), backends=["ort-cpu", "ort-cuda"], notice=lambda _: None)
    assert report.static["ort-cuda"].startswith("static check skipped: the static check of mlp.onnx's CUDA placement")


def test_export_keeps_no_file_it_cannot_check_and_says_so(tmp_path, monkeypatch):
    """A format whose check cannot fit is not kept (a file is validated before it is kept): one line, and
    the other formats are written and kept."""
    from ptx.export import module as module_export
    from ptx.export import pipeline
    from ptx.infer.runtime.memory_plan import OutOfMemoryPlan

    def onnx_short(what, need):
        if what.startswith("checking model.onnx") or ".onnx" in what.split(" (")[0]:
            raise OutOfMemoryPlan(f"{what} needs about 9.99 GB of memory and 1.00 GB is available (test)")

    monkeypatch.setattr(module_export, "available_memory", lambda: None)  # files in turn
    monkeypatch.setattr(pipeline, "require_room", onnx_short)
    said: list[str] = []
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10)).eval()
    result = module_export.export_module(module, (torch.rand(2, 3, 4, 4),), tmp_path / "out",
                                         formats=["onnx", "torchscript"], log=said.append)
    assert [f.format for f in result.files] == ["torchscript"]
    assert any(line.startswith("onnx        not kept: checking") and "is available" in line for line in said), said
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.endswith(".npz")) == \
        ["model.torchscript.pt"]


def test_bench_times_the_batch_sizes_that_fit_and_says_which_it_left_out(onnx_file, monkeypatch):
    from ptx.infer.bench.timing import bench

    answers = iter([10**12, 10**12])  # room to hold ort-cpu beside the others and to open it; then 5 MB for the runs
    monkeypatch.setattr(memory_plan, "available_memory", lambda: next(answers, 5 * MB))
    result = bench(Target.of(str(onnx_file)), backends=["ort-cpu"], batch_sizes=[1, 4096], seconds=0.05, warmup=1,
                   rounds=1, bare=False)
    assert {r.batch for r in result.rows} == {1}
    left = [n for n in result.notes if n.startswith("batch 4096: left out")]
    assert left and "of inputs and outputs each) and 5 MB is available" in left[0], result.notes


def test_bench_times_together_only_the_runtimes_memory_holds_at_once(onnx_file, monkeypatch):
    """OpenVINO compiles after it opens: the free memory at each opening is no measure, so bench adds up
    each runtime's planned peak and times the ones that do not fit beside the others in rounds of their own."""
    pytest.importorskip("openvino")
    from ptx.infer.bench.timing import bench

    weights = memory_plan.weights_bytes(onnx_file)
    monkeypatch.setattr(memory_plan, "available_memory", lambda: int(weights * 3.5))  # ort-cpu's 2.5x, not openvino's too
    result = bench(Target.of(str(onnx_file)), backends=["ort-cpu", "openvino"], batch_sizes=[2], seconds=0.05,
                   warmup=1, rounds=1, bare=False)
    assert {r.runner for r in result.rows} >= {"ort-cpu", "openvino"}, [r.runner for r in result.rows]
    said = [n for n in result.notes if n.startswith("memory holds only some of these runtimes at once")]
    assert said and said[0].split("apart): ")[1].startswith("ort-cpu, ort-cpu-int8; openvino;"), result.notes
