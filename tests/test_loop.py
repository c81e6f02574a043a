"""The train -> export -> verify loop as users live it: no false alarms, no silent overwrites, the
right checkpoint, and errors that say where ptx looked and what was meant."""
from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ptx.cli import cli
from ptx.contract import Tolerance, compare
from ptx.contract.datasets import DATASETS
from ptx.errors import CheckpointError, MissingArtifactError, NothingToCompareError, StaleArtifactWarning
from ptx.export.api import export_model
from ptx.files import file_sha256
from ptx.infer import load
from ptx.contract.comparison import OutputAgreement
from ptx.infer.verify.report import RULE, Report, Row
from ptx.infer.verify.verify import verify
from ptx.infer.model.target import Target
from ptx.models import get
from ptx.trainers.checkpoint import checkpoint_bytes
from ptx.trainers.loop import TrainConfig, train
from ptx_command import ptx


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def copy_run(runs, name, dest, files=("checkpoint.pt", "model.onnx")):
    src = runs.trained(name)
    dest.mkdir(parents=True)
    for f in files:
        shutil.copy2(src / f, dest / f)
    return dest


# -- verify's rule ------------------------------------------------------------------------------------

def test_a_decision_that_flips_on_a_tie_within_tolerance_is_counted_not_failed():
    contract = get("convnet").contract()
    tol = Tolerance(atol=1e-4, rtol=1e-3)
    want = np.array([[2.0, 2.00001] + [-5.0] * 8], dtype=np.float32)  # eager picks 1, by 1e-5
    got = want.copy()
    got[0, 0] += 2e-5  # within atol of eager's value, and now 0 wins
    result = compare(got, want, contract, tolerance=tol)
    assert result.ok, result.failures
    assert (result.ties, result.same_decisions, result.decisions) == (1, 0, 1)
    # A decision that flips where eager had a clear winner is no tie: it fails, with the values.
    clear = np.array([[2.0, 3.0] + [-5.0] * 8], dtype=np.float32)
    far = clear.copy()
    far[0, 0] = 4.0
    failures = compare(far, clear, contract, tolerance=tol).failures
    assert any("beyond atol" in f for f in failures) and any("decision differs on 1 of 1" in f for f in failures)


def test_a_probability_on_the_threshold_is_a_tie_for_binary_models():
    contract = get("logistic").contract()
    tol = Tolerance(atol=1e-4, rtol=1e-3)
    want = np.array([[0.50002], [0.9]], dtype=np.float32)
    got = np.array([[0.49999], [0.9]], dtype=np.float32)
    result = compare(got, want, contract, tolerance=tol)
    assert result.ok and result.ties == 1
    assert not compare(np.array([[0.2], [0.9]]), want, contract, tolerance=tol).ok


def verdict(max_abs=0.1, ties=0, problem=None, **kw):
    logits = OutputAgreement("logits", Tolerance(1e-4, 1e-3), 1, max_abs, 1.0, ties=ties, problem=problem)
    base = dict(backend="openvino", device="cpu", batch_sizes=[1, 7, 64], argmax_agreement=0.985, accuracy=0.9,
                precision="bf16", outputs=[logits])
    return Row(**{**base, **kw})


def test_a_reduced_precision_row_below_its_gate_is_not_usable_unless_it_was_asked_for():
    eager = verdict(backend="eager", precision="f32", max_abs=0.0, argmax_agreement=1.0)
    ort = verdict(backend="ort-cpu", precision="f32", max_abs=1e-6, argmax_agreement=0.999, ties=1)
    bf16 = verdict(unusable=["labels agree on 98.5% (< 99%)"])
    report = Report("convnet", rows=[eager, ort, bf16])
    assert bf16.status == "NOT USABLE" and not bf16.ok  # bench and serve never pick it
    assert report.ok and report.exit_status == 0
    assert "not usable at their precision: openvino-bf16" in report.summary() and "1 tie" in report.summary()
    doc = report.to_dict()
    assert doc["exit_status"] == 0 and doc["rule"] == RULE
    assert [v["status"] for v in doc["rows"]] == ["PASS", "PASS", "NOT USABLE"]
    asked = Report("convnet", rows=[eager, ort, verdict(unusable=["x"], required=True)])
    assert not asked.ok and asked.exit_status == 1
    broken = Report("convnet", rows=[eager, verdict(problem="3 NaN/Inf values")])
    assert broken.exit_status == 1 and broken.rows[1].failures == ["3 NaN/Inf values"]
    alone = Report("convnet", rows=[eager])
    assert not alone.ok and alone.exit_status == 2


def test_verify_before_any_export_says_what_to_export_and_exits_2(runs, tmp_path):
    copy_run(runs, "cnn-basic", tmp_path / "cnn-basic", files=("checkpoint.pt",))
    with pytest.raises(NothingToCompareError, match=r"holds no export yet; run `ptx export cnn-basic`"):
        verify(Target.of("cnn-basic", root=tmp_path, verifying=True), samples=20, notice=lambda _: None)
    result = ptx("verify", "cnn-basic", "--root", tmp_path, "--samples", "20")
    assert result.returncode == 2 and "all agree" not in result.stdout
    assert "run `ptx export cnn-basic` first" in one_error_line(result)


def test_verify_help_states_the_rule_and_the_exit_status():
    text = CliRunner().invoke(cli, ["verify", "--help"], terminal_width=200).output
    flat = " ".join(text.split())
    for entry in RULE.values():
        assert " ".join(entry.split()) in flat


# -- runs and checkpoints -----------------------------------------------------------------------------

def linreg_config(epochs=2):
    spec = get("linreg")
    return spec, TrainConfig(epochs=epochs, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu")


def test_training_over_a_run_is_refused_unless_resumed_or_overwritten_and_overwrite_keeps_it(runs, tmp_path):
    spec, config = linreg_config()
    data = runs.dataset("linreg")
    run = tmp_path / "linreg"
    train(spec, data, config, run, log=lambda _: None)
    first = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=r"already holds a run of linreg \(2 epochs.*--resume.*--overwrite"):
        train(spec, data, config, run, log=lambda _: None)
    assert (run / "checkpoint.pt").read_bytes() == first
    export_model("linreg", ["onnx"], checkpoint=run / "checkpoint.pt", log=lambda _: None)
    log = []
    train(spec, data, linreg_config(epochs=1)[1], run, overwrite=True, log=log.append)
    assert (run / "previous" / "checkpoint.pt").read_bytes() == first
    assert (run / "previous" / "model.onnx").is_file() and not (run / "model.onnx").exists()
    assert any("kept the run this one replaces" in line for line in log)


def test_training_says_how_long_the_other_epochs_take_after_the_first(runs, tmp_path):
    """A long run says how long it will take at this machine's rate (the demo's 60 epochs took 14
    minutes on a busy machine that the docs said would take one)."""
    spec, config = linreg_config(epochs=4)
    log = []
    train(spec, runs.dataset("linreg"), config, tmp_path / "linreg", log=log.append)
    estimates = [line for line in log if line.startswith("the other ")]
    assert len(estimates) == 1 and log.index(estimates[0]) == 1 + next(i for i, line in enumerate(log)
                                                                         if line.startswith("epoch 1/4"))
    assert re.fullmatch(r"the other 3 epochs take about \d+ s at this rate \(Ctrl-C stops; --resume continues "
                        r"from the last whole epoch\)", estimates[0])
    log.clear()
    train(spec, runs.dataset("linreg"), linreg_config(epochs=2)[1], tmp_path / "short", log=log.append)
    assert not any(line.startswith("the other ") for line in log)  # one epoch left: nothing to wait for


def test_resuming_a_run_says_its_exports_are_stale(runs, tmp_path):
    spec, config = linreg_config(epochs=1)
    run = tmp_path / "linreg"
    train(spec, runs.dataset("linreg"), config, run, log=lambda _: None)
    export_model("linreg", ["onnx"], checkpoint=run / "checkpoint.pt", log=lambda _: None)
    log = []
    train(spec, runs.dataset("linreg"), linreg_config(epochs=2)[1], run, resume=True, log=log.append)
    assert any(line.startswith("notice: model.onnx") and "re-run `ptx export linreg`" in line for line in log)


def test_cli_train_over_a_finished_run_is_one_line(runs, tmp_path):
    copy_run(runs, "linreg", tmp_path / "linreg", files=("checkpoint.pt",))
    before = (tmp_path / "linreg" / "checkpoint.pt").read_bytes()
    result = ptx("train", "linreg", "--out", tmp_path / "linreg", "--epochs", "1")
    assert result.returncode == 2
    assert "--overwrite" in one_error_line(result)
    assert (tmp_path / "linreg" / "checkpoint.pt").read_bytes() == before


def test_an_artifact_exported_from_another_checkpoint_is_served_with_a_warning(runs, tmp_path):
    run = copy_run(runs, "convnet", tmp_path / "convnet")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["epoch"] += 1  # trained again since the export
    (run / "checkpoint.pt").write_bytes(checkpoint_bytes({k: v for k, v in ckpt.items() if k != "format"}))
    with pytest.warns(StaleArtifactWarning, match="exported from another checkpoint"):
        predictor = load("convnet", root=tmp_path)
    assert "re-run `ptx export convnet`" in predictor.stale
    Image.fromarray(255 - runs.test_samples("convnet", 1)[0][0]).save(tmp_path / "digit.png")
    result = ptx("predict", tmp_path / "digit.png", "--root", tmp_path)
    assert result.returncode == 0
    assert result.stderr.startswith("warning: ") and "exported from another checkpoint" in result.stderr
    with warnings.catch_warnings():  # the run's own export: no warning
        warnings.simplefilter("error")
        assert load("convnet", root=runs.ready("convnet")).stale is None


def test_export_into_a_run_folder_exports_that_run_and_verify_finds_it_with_run(runs, tmp_path):
    quick = copy_run(runs, "logreg", tmp_path / "elsewhere" / "quick", files=("checkpoint.pt",))
    log = []
    export_model("logreg", ["onnx"], out=quick, log=log.append)
    assert log[0].startswith(f"checkpoint: {quick / 'checkpoint.pt'} (")
    predictor = load("logreg", run=quick)
    assert predictor.info.get("checkpoint_sha256") == file_sha256(quick / "checkpoint.pt")
    report = verify(Target.of("logreg", run=quick, verifying=True),
                    backends=["ort-cpu"], samples=50, notice=lambda _: None)
    assert report.ok and [v.backend for v in report.rows] == ["ort-cpu"]


def test_a_missing_run_says_where_ptx_looked_and_how_to_point_it(tmp_path):
    (tmp_path / "runs" / "lstm").mkdir(parents=True)
    (tmp_path / "runs" / "lstm" / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(MissingArtifactError) as caught:
        load("convnet", root=tmp_path / "runs")
    message = str(caught.value)
    assert str(tmp_path / "runs" / "convnet") in message and "runs of lstm" in message
    assert "--root (library: root=)" in message
    result = ptx("predict", "digit.png", cwd=tmp_path / "runs" / "lstm")
    line = one_error_line(result)
    assert str(tmp_path / "runs" / "lstm" / "runs" / "convnet") in line and "--root" in line
    with pytest.raises(MissingArtifactError, match="no run folder"):
        load("convnet", run=tmp_path / "nowhere")


# -- names and help ----------------------------------------------------------------------------------

def test_a_mistyped_model_name_gets_did_you_mean():
    from ptx.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match="did you mean convnet"):
        get("convnett")
    result = ptx("train", "convnett")
    assert "did you mean convnet?" in one_error_line(result)


def test_train_help_lists_every_dataset_and_what_the_tutorial_references_mean():
    text = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    for name in DATASETS:
        assert name in text
    assert "000" in text and "§N" in text and "lecture N" in text
    assert "Random seed for initial weights" in text
