"""Every export runs on every device it claims: no device is baked into an exported graph, and
ptx's CUDA calls run f32 as f32 (TF32 off) without touching the caller's settings. All on the CPU:
a CPU machine cannot run CUDA, but it can read the graphs and the settings asked for (issue 26)."""
from __future__ import annotations

import warnings

import onnx
import pytest
import torch

from ptx.cuda_math import RNN_WEIGHT_WARNING, current, fp32_math, quiet_rnn_weight_warning
from ptx.infer import backends as registry
from ptx.infer.runtime.torch_files import load_torchscript
from ptx.infer.runtime import ort_runner
from ptx.infer.runtime import ort_session
from ptx.infer.runtime import torch_runner
from ptx.infer.model.target import load, open_artifact
from ptx.contract import Tolerance
from ptx.contract.comparison import OutputAgreement
from ptx.contract.accuracy_rule import judge_reduced_precision
from ptx.infer.verify.report import Report, Row
from ptx.infer.model.target import Target


def device_constants(module) -> list[str]:
    """The Device-typed constants of a TorchScript module's graph (submodules inlined), and the
    lines of its code that name a device: what a trace bakes in (``device=torch.device("cpu")``)."""
    found = [str(n).strip() for n in module.inlined_graph.nodes()
             if n.kind() == "prim::Constant" and n.output().type().kind() == "DeviceObjType"]
    found += [line.strip() for line in module.code.splitlines() if "torch.device(" in line]
    return found


def test_every_models_torchscript_and_onnx_hold_no_device(runs, model_name):
    run = runs.trained(model_name)
    module, _ = load_torchscript(run / "model.torchscript.pt")
    assert device_constants(module) == [], f"{model_name}'s TorchScript graph is bound to a device"
    graph = onnx.load(run / "model.onnx").graph
    bound = [f"{n.op_type} {a.name}" for n in graph.node for a in n.attribute if "device" in a.name.lower()]
    assert bound == [] and {n.domain for n in graph.node} <= {"", "ai.onnx"}


def test_the_check_finds_a_traced_device_constant():
    """The check above can fail: a trace of torch.zeros(..., device=x.device) bakes the device."""
    class Baked(torch.nn.Module):
        def forward(self, x):
            return x + torch.zeros(1, 3, device=x.device)

    class Follows(torch.nn.Module):
        def forward(self, x):
            return x + x.new_zeros(1, 3)

    x = torch.ones(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert device_constants(torch.jit.trace(Baked(), x))
        assert device_constants(torch.jit.trace(Follows(), x)) == []


# --- f32 means f32 on CUDA -------------------------------------------------------------------

def test_fp32_math_sets_tf32_off_and_restores_the_callers_settings():
    before = current()
    off, on = ("ieee", "tf32") if "fp32_precision" in next(iter(before)) else (False, True)
    with fp32_math():
        assert set(current().values()) == {off}
    with fp32_math(tf32=True):
        assert set(current().values()) == {on}
    assert current() == before
    with pytest.raises(RuntimeError), fp32_math():
        raise RuntimeError("a failing call")
    assert current() == before  # restored after an exception too


def test_torch_cuda_calls_run_inside_fp32_math_and_cpu_calls_do_not(runs, monkeypatch):
    """math_mode: fp32_math around a CUDA call (tf32 only at tf32), nothing on the CPU; and every
    torch runner's call goes through it (eager, torchscript, aoti share TorchRunner)."""
    seen = []
    monkeypatch.setattr(torch_runner, "fp32_math", lambda tf32=False: seen.append(tf32) or fp32_math(tf32))
    before = current()
    with torch_runner.math_mode(torch.device("cpu"), "f32"):
        assert current() == before
    with torch_runner.math_mode(torch.device("cuda"), "f32"):
        assert set(current().values()) <= {"ieee", False}
    with torch_runner.math_mode(torch.device("cuda:0"), "tf32"):
        assert set(current().values()) <= {"tf32", True}
    assert seen == [False, True] and current() == before

    calls = []
    real = torch_runner.math_mode
    monkeypatch.setattr(torch_runner, "math_mode", lambda d, p: calls.append((d.type, p)) or real(d, p))
    x, _ = runs.test_samples("convnet", 2)
    for backend in ("eager", "torchscript"):
        predictor = load(runs.trained("convnet") / ("checkpoint.pt" if backend == "eager" else "model.torchscript.pt"),
                         backend, "cpu")
        before_call = len(calls)
        predictor.predict_raw(x)
        assert len(calls) > before_call, f"{backend}'s call did not go through math_mode"
    assert set(calls) == {("cpu", "f32")}


def test_ort_cuda_sessions_ask_for_tf32_off_at_f32_and_on_at_tf32(runs, monkeypatch):
    """The provider options an ort-cuda session is created with, caught on the CPU machine."""
    created = []
    path = runs.trained("convnet") / "model.onnx"  # before ORT is faked: training exports through it

    class FakeSession:
        def __init__(self, path, options, providers, **_):
            created.append(providers)
            raise RuntimeError("stop here: only the options are checked")

    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort_runner, "preload_cuda_libraries", lambda ort: [])
    for precision in ("f32", "tf32"):
        with pytest.raises(Exception):
            ort_runner.OrtRunner(path, "cuda", precision)
    assert [p[0][1]["use_tf32"] for p in created] == ["0", "1"]
    assert all(p[0][0] == "CUDAExecutionProvider" and len(p) == 1 for p in created)
    assert ort_session.cuda_provider(0)[1]["use_tf32"] == "0"


def test_rnn_weight_warning_is_silenced_and_no_other():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_rnn_weight_warning()
        warnings.warn(RNN_WEIGHT_WARNING + ". This means they need to be compacted at every call", UserWarning)
        warnings.warn("RNN something else", UserWarning)
    assert [str(w.message) for w in caught] == ["RNN something else"]


# --- tf32: a precision of its own on the CUDA backends ----------------------------------------

def test_tf32_rows_exist_on_cuda_backends_only():
    labels = {b.label(d, p) for b, d, p in registry.variants()}
    assert {"eager-cuda-tf32", "torchscript-cuda-tf32", "ort-cuda-tf32", "aoti-cuda-tf32"} <= labels
    assert not {label for label in labels if label.endswith("tf32") and "cuda" not in label}
    assert [p for _, _, p in registry.variants(["ort-cuda-tf32"])] == ["tf32"]


def test_tf32_on_the_cpu_is_refused_in_one_line(runs):
    with pytest.raises(Exception, match="tf32 needs cuda"):
        open_artifact(runs.trained("convnet") / "model.torchscript.pt", "torchscript", "cpu", "tf32")


def test_tf32_rows_are_judged_by_labels_and_accuracy_like_bf16():
    assert judge_reduced_precision(0.995, 0.901, 0.903) == []
    assert "labels agree on 98.0%" in judge_reduced_precision(0.98, 0.90, 0.90)[0]
    assert "below the reference" in judge_reduced_precision(0.999, 0.89, 0.90)[0]
    logits = OutputAgreement("logits", Tolerance(1e-3, 1e-2), 1, 2e-4, 1e-2)
    usable = Row("ort-cuda", "cuda", "tf32", against="eager-cuda", outputs=[logits], argmax_agreement=0.999,
                 accuracy=0.90)
    below = Row("ort-cuda", "cuda", "tf32", against="eager-cuda", outputs=[logits], argmax_agreement=0.98,
                accuracy=0.90, unusable=judge_reduced_precision(0.98, 0.90, 0.90))
    assert (usable.label, usable.status, below.status) == ("ort-cuda-tf32", "PASS", "NOT USABLE")
    report = Report("convnet", rows=[usable, below], samples=1000, data="mnist-sample", head=True,
                    tolerances={"cuda": {"atol": 1e-3, "rtol": 1e-2}})
    lines = report.table().splitlines()
    assert lines[2] == "pass: f32 |diff| <= 0.001 + 0.01 x the largest |reference| in its row (cuda)"
    assert lines[3].startswith("tf32: labels agree on >= 99%")
    # each row says what it was held to: eager on the same GPU, at f32 with TF32 off
    assert all(line.split()[3] == "eager-cuda" for line in lines if line.startswith("ort-cuda (cuda)"))
    assert "NOT USABLE" in "\n".join(lines) and report.exit_status == 0


def test_verify_on_a_cpu_machine_says_the_cuda_tf32_rows_did_not_run(runs):
    from ptx.infer.verify.verify import verify

    report = verify(Target.of("convnet", root=runs.ready("convnet"), verifying=True),
                    backends=["eager", "ort-cpu", "ort-cuda"], samples=50,
                    notice=lambda _: None)
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the tf32 rows run")
    cuda_rows = {"eager-cuda", "eager-cuda-tf32", "ort-cuda", "ort-cuda-tf32", "ort-cuda-int4"}
    assert cuda_rows <= set(report.skipped) and set(report.unrunnable) == cuda_rows
    # The CPU rows ran against eager on the CPU, which goes without saying; the CUDA rows are one line.
    assert "eager-cpu" not in report.table().splitlines()[0]
    assert any(line.startswith("5 CUDA rows: not run: ") and "--all-rows" in line for line in report.table().splitlines())
    assert "ort-cuda-tf32: not run: " in report.table(all_rows=True)
