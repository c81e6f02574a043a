"""`ptx serve --backend auto`: the fastest backend that passed verify on this machine, for the batch
sizes the batcher forms, else ort-cpu, always with the reason."""
from __future__ import annotations

import json
import shutil

import pytest

from ptx.contract.names import VERIFY_RECORD_FILE
from ptx.errors import PtxError
from ptx.infer.bench.timing import BenchRow
from ptx.infer.bench.choice import choose_backend
from ptx.infer.model.records import record_bench, record_verify, verified
from ptx.infer.verify.report import Report, Row


@pytest.fixture
def run(runs, tmp_path):
    run = tmp_path / "convnet"
    run.mkdir()
    for name in ("checkpoint.pt", "model.onnx"):
        shutil.copy2(runs.trained("convnet") / name, run / name)
    return run


def passed(backend, precision="f32", sizes=(1, 7, 64), **kw):
    return Row(backend, "cpu", precision, batch_sizes=list(sizes), argmax_agreement=1.0, accuracy=0.9, **kw)


def record(run, *verdicts, speeds=None):
    record_verify(Report("convnet", rows=list(verdicts)), run)
    if speeds:
        record_bench([BenchRow(label, "cpu", batch, 1.0, 1.0, 1.0, rate, 10)
                      for label, by_batch in speeds.items() for batch, rate in by_batch.items()], run)


def test_without_a_verify_record_it_is_ort_cpu_and_says_how_to_get_a_choice(run):
    choice = choose_backend("convnet", run, max_batch_size=64)
    assert (choice.backend, choice.precision) == ("ort-cpu", "f32")
    assert "no verify record" in choice.reason and "ptx verify convnet" in choice.reason


def test_the_fastest_verified_by_the_bench_record_wins(run):
    record(run, passed("eager"), passed("ort-cpu"), passed("openvino"),
           speeds={"eager-cpu": {1: 5e3, 64: 2e4}, "ort-cpu": {1: 3e4, 64: 9e4}, "openvino": {1: 3e4, 64: 1.5e5},
                   "openvino-bf16": {1: 9e5, 64: 9e5}})  # fastest of all, but never verified
    choice = choose_backend("convnet", run, max_batch_size=64)
    assert choice.backend == "openvino" and "by ptx bench at batch 1, 64" in choice.reason


def test_the_default_stays_unless_another_is_clearly_faster(run):
    record(run, passed("ort-cpu"), passed("openvino"),
           speeds={"ort-cpu": {1: 3e4, 64: 9e4}, "openvino": {1: 3.1e4, 64: 9.3e4}})  # 3% faster: noise
    choice = choose_backend("convnet", run, max_batch_size=64)
    assert choice.backend == "ort-cpu" and "openvino" in choice.reason and "not 10% faster" in choice.reason


def test_a_precision_below_its_gate_is_never_chosen(run):
    record(run, passed("ort-cpu"), passed("openvino", "bf16", unusable=["labels agree on 98.5% (< 99%)"]),
           speeds={"ort-cpu": {1: 3e4, 64: 9e4}, "openvino-bf16": {1: 9e5, 64: 9e5}})
    # asked for by name, and every row of it judged here: refused, never served (before: ort-cpu "at bf16")
    with pytest.raises(PtxError, match=r"--backend auto --precision bf16: `ptx verify convnet` judged openvino-bf16 "
                       r"NOT USABLE on this machine, and no other bf16 row serves here \(nothing passed verify at bf16"
                       r".*\): serve it at f32 \(drop --precision\)"):
        choose_backend("convnet", run, max_batch_size=64, precision="bf16")
    assert choose_backend("convnet", run, max_batch_size=64).backend == "ort-cpu"  # f32 still chooses


def test_the_default_at_a_precision_verify_judged_not_usable_is_not_the_fallback(run):
    # ort-cpu-int8 NOT USABLE here, openvino-int8 passed for batches up to 16 only: a server forming batches of
    # 64 has no verified int8 row, and the fallback was ort-cpu-int8, the one verify judged
    shutil.copy2(run / "model.onnx", run / "model.int8.onnx")
    shutil.copy2(run / "model.onnx", run / "model.openvino-int8.onnx")
    record(run, passed("ort-cpu"), passed("ort-cpu", "int8", unusable=["labels agree on 90% (< 99%)"]),
           passed("openvino", "int8", sizes=(1, 7, 16)), speeds={"openvino-int8": {1: 1e4, 16: 3e4}})
    assert choose_backend("convnet", run, max_batch_size=16, precision="int8").backend == "openvino"
    with pytest.raises(PtxError, match=r"judged ort-cpu-int8 NOT USABLE on this machine, and no other int8 row serves"):
        choose_backend("convnet", run, max_batch_size=64, precision="int8")


def test_a_record_counts_only_for_the_artifact_judged_and_the_batches_verified(run):
    record(run, passed("ort-cpu", sizes=(1, 7, 16)), speeds={"ort-cpu": {1: 3e4, 16: 9e4}})
    assert "for batches up to 64" in choose_backend("convnet", run, max_batch_size=64).reason
    assert "fastest that passed verify" in choose_backend("convnet", run, max_batch_size=16).reason
    (run / "model.onnx").write_bytes((run / "model.onnx").read_bytes() + b"\0")  # re-exported since
    assert verified(run) == {}
    assert "nothing passed verify" in choose_backend("convnet", run, max_batch_size=16).reason


def test_a_record_from_another_machine_does_not_count(run):
    record(run, passed("ort-cpu"))
    doc = json.loads((run / VERIFY_RECORD_FILE).read_text())
    doc["machine"]["cpu"] = "some other CPU"
    (run / VERIFY_RECORD_FILE).write_text(json.dumps(doc))
    assert verified(run) == {}


def test_without_a_bench_record_the_torch_free_candidates_are_timed(run):
    record(run, passed("eager"), passed("ort-cpu"))
    choice = choose_backend("convnet", run, max_batch_size=8)
    assert choice.backend == "ort-cpu" and "timed now at batch 1" in choice.reason


def cuda_row(precision, **kw):
    return Row("ort-cuda", "cuda", precision, batch_sizes=[1, 7, 64], argmax_agreement=1.0, accuracy=0.9, **kw)


def test_auto_takes_tf32_only_verified_and_faster(run, monkeypatch):
    """tf32 competes with f32 when no precision is named; NOT USABLE or a named f32 keeps it out."""
    from ptx.infer.bench import choice as choice_module

    monkeypatch.setattr(choice_module, "_runs_here", lambda row: True)  # as on a GPU machine
    speeds = {"ort-cpu": {1: 3e4, 64: 9e4}, "ort-cuda": {1: 2e4, 64: 4e5}, "ort-cuda-tf32": {1: 2e4, 64: 9e5}}
    record(run, passed("ort-cpu"), cuda_row("f32"), cuda_row("tf32"), speeds=speeds)
    picked = choose_backend("convnet", run, max_batch_size=64)
    assert (picked.backend, picked.device, picked.precision) == ("ort-cuda", "cuda", "tf32")
    assert choose_backend("convnet", run, max_batch_size=64, precision="f32").precision == "f32"
    record(run, passed("ort-cpu"), cuda_row("f32"), cuda_row("tf32", unusable=["labels agree on 98.0% (< 99%)"]),
           speeds=speeds)
    assert choose_backend("convnet", run, max_batch_size=64).precision == "f32"


def test_auto_takes_a_cuda_graph_backend_only_verified_and_faster(run, monkeypatch):
    """ort-cuda-graph is one more row: chosen where it passed verify and bench measured it faster
    than ort-cuda over the batcher's sizes; a failed or slower one leaves ort-cuda chosen."""
    from ptx.infer.bench import choice as choice_module

    monkeypatch.setattr(choice_module, "_runs_here", lambda row: True)  # as on a GPU machine

    def graph(**kw):
        return Row("ort-cuda-graph", "cuda", batch_sizes=[1, 7, 64], argmax_agreement=1.0, accuracy=0.9, **kw)

    faster = {"ort-cpu": {1: 3e4, 64: 9e4}, "ort-cuda": {1: 2e4, 64: 4e5}, "ort-cuda-graph": {1: 9e4, 64: 4e5}}
    record(run, passed("ort-cpu"), cuda_row("f32"), graph(), speeds=faster)
    assert choose_backend("convnet", run, max_batch_size=64).backend == "ort-cuda-graph"
    record(run, passed("ort-cpu"), cuda_row("f32"), graph(error="batch 7: 3 values past atol"), speeds=faster)
    assert choose_backend("convnet", run, max_batch_size=64).backend == "ort-cuda"
    slower = {**faster, "ort-cuda-graph": {1: 1e4, 64: 3e5}}
    record(run, passed("ort-cpu"), cuda_row("f32"), graph(), speeds=slower)
    assert choose_backend("convnet", run, max_batch_size=64).backend == "ort-cuda"
