"""A run knows what it is (issue 30): commands read the model from the run, never from its folder's
name; `ptx runs` lists runs from their side files alone; a model that learned nothing is named;
`--device cuda:N` is parsed and refused where that GPU is not; choices take any case."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile_data import ptx_here
from ptx_command import ptx

EXPORTS = ("model.onnx", "model.torchscript.pt")


@pytest.fixture(scope="module")
def root(runs, tmp_path_factory) -> Path:
    """Runs in folders named after no model: alpha (linreg) and beta (logistic), both exported."""
    where = tmp_path_factory.mktemp("named") / "experiments"
    shutil.copytree(runs.trained("linreg"), where / "alpha")
    shutil.copytree(runs.trained("logistic"), where / "beta")
    return where


def test_verify_all_covers_runs_whatever_their_folders_are_called(root):
    result = ptx_here("verify", "--all", "--root", root, "--backends", "ort-cpu", "--samples", "20", "--json",
                      cwd=root)
    assert result.returncode == 0, result.stderr
    assert sorted(doc["model"] for doc in json.loads(result.stdout)) == ["linreg", "logistic"]
    assert (root / "alpha" / "verify.json").is_file() and (root / "beta" / "verify.json").is_file()


def test_predict_export_and_bench_take_the_model_from_the_run(root, tmp_path):
    result = ptx_here("predict", "0.5", "--run", root / "alpha", cwd=tmp_path)  # no --model: the run says linreg
    assert result.returncode == 0 and result.stdout.startswith("0.5\ty="), result.stderr
    copy = shutil.copytree(root / "alpha", tmp_path / "quick")
    for name in EXPORTS:
        (copy / name).unlink()
    exported = ptx_here("export", "--run", copy, "--format", "ONNX", cwd=tmp_path)  # NAME from the run, any case
    assert exported.returncode == 0, exported.stderr
    assert (copy / "model.onnx").is_file() and not (copy / "model.torchscript.pt").exists()


def test_a_model_that_contradicts_the_run_is_refused_with_the_right_advice(root, tmp_path):
    alpha = root / "alpha"
    predict = ptx_here("predict", "0.5", "--run", alpha, "--model", "convnet", cwd=tmp_path)
    assert predict.returncode == 2
    assert predict.stderr == (f"error: {alpha} holds a run of linreg, not convnet: leave out --model (the run says "
                              "its model), or give --run a folder that holds a convnet run (`ptx runs` lists them)\n")
    for command in (("export", "convnet"), ("verify", "convnet"), ("bench", "convnet")):
        result = ptx_here(*command, "--run", alpha, cwd=tmp_path)
        assert result.returncode == 2 and "holds a run of linreg, not convnet: leave out NAME" in result.stderr
    # Looked for by name under the root, the run is found by what it holds.
    missing = ptx_here("predict", "0.5", "--model", "linreg", "--root", root, cwd=tmp_path)
    assert missing.returncode == 2 and f"{root / 'alpha'} holds one: give --run {root / 'alpha'}" in missing.stderr


@pytest.fixture(scope="module")
def listed(runs, root, tmp_path_factory) -> Path:
    """A root with a trained-only, an exported, a verified, a stale and two broken runs."""
    where = tmp_path_factory.mktemp("listed")
    shutil.copytree(root / "alpha", where / "verified")  # verify.json written by the test above or below
    exported = shutil.copytree(runs.trained("linreg"), where / "exported")
    # The shared run may hold what another test's verify or bench recorded there: exported only here.
    for record in ("verify.json", "bench.json"):
        (exported / record).unlink(missing_ok=True)
    trained = shutil.copytree(runs.trained("logistic"), where / "trained-only")
    for name in EXPORTS:
        (trained / name).unlink()
    stale = shutil.copytree(runs.trained("linreg"), where / "stale")
    later = (stale / "model.onnx").stat().st_mtime + 60
    os.utime(stale / "checkpoint.pt", (later, later))  # trained again after the export
    (where / "no-metrics").mkdir()
    (where / "no-metrics" / "checkpoint.pt").write_bytes(b"half a checkpoint")
    (where / "bad-json").mkdir()
    (where / "bad-json" / "metrics.json").write_text("{not json")
    (where / "not-a-run").mkdir()  # nothing ptx wrote: not listed
    return where


LIST = """
import json, sys, time
from click.testing import CliRunner
from ptx.cli import cli
started = time.perf_counter()
result = CliRunner().invoke(cli, ["runs", "--root", sys.argv[1], "--json"])
took = time.perf_counter() - started
text = CliRunner().invoke(cli, ["runs", "--root", sys.argv[1]]).output
print(json.dumps({"rows": json.loads(result.output), "text": text, "seconds": took,
                  "torch": "torch" in sys.modules}))
"""


def test_runs_lists_every_kind_of_run_from_side_files_without_torch(listed, root):
    if not (root / "alpha" / "verify.json").is_file():
        assert ptx_here("verify", "--run", root / "alpha", "--backends", "ort-cpu", "--samples", "20",
                        cwd=root).returncode == 0
    shutil.copy(root / "alpha" / "verify.json", listed / "verified" / "verify.json")
    out = subprocess.run([sys.executable, "-c", LIST, str(listed)], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["torch"] is False  # metrics.json, verify.json and file dates only: no checkpoint is loaded
    assert doc["seconds"] < 2.0  # well under a second on an idle machine; this one is shared
    rows = {Path(r["folder"]).name: r for r in doc["rows"]}
    assert sorted(rows) == ["bad-json", "exported", "no-metrics", "stale", "trained-only", "verified"]
    assert rows["trained-only"]["model"] == "logistic" and rows["trained-only"]["exports"] == []
    assert rows["exported"]["exports"] == list(EXPORTS) and rows["exported"]["verify"] is None
    assert rows["exported"]["test_mse"] is not None and rows["exported"]["flags"] == []
    assert rows["verified"]["verify"].startswith("pass ")
    assert any(f.startswith("stale: onnx, torchscript exported before the last training") for f in rows["stale"]["flags"]), rows["stale"]
    assert "no metrics.json beside checkpoint.pt" in rows["no-metrics"]["problem"]
    assert rows["bad-json"]["problem"].startswith("metrics.json is not readable JSON")
    assert "  broken: metrics.json is not readable JSON" in doc["text"]
    assert doc["text"].splitlines()[0].split()[:3] == ["folder", "model", "dataset"]


# -- a model that learned nothing is named --------------------------------------------------------------

def test_diabetes_recipe_is_named_as_learning_nothing(tmp_path):
    """The seed's recipe (sigmoids, SGD lr 0.01) ends at the majority class; a few epochs show it."""
    result = ptx_here("train", "diabetes", "--epochs", "3", "--limit", "200", "--out", tmp_path / "pima-try",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("warning: "))
    assert re.match(r"warning: diabetes predicts '(neg|pos)' for 100% of the test samples \(test accuracy 0\.", line)
    assert "it has learned nothing useful yet; train the recipe's 100 epochs (this run had 3: add --resume " \
           "--epochs 100 to continue it), or try a larger --lr" in line
    listing = ptx_here("runs", "--root", tmp_path, cwd=tmp_path)
    assert re.search(r"\n  learned nothing: predicts '(neg|pos)' for 100% of the test samples", listing.stdout)


def test_one_epoch_lstm_is_named_as_learning_nothing(runs, tmp_path):
    from ptx.models import get
    from ptx.trainers.loop import TrainConfig, train

    spec, log = get("lstm"), []
    train(spec, runs.dataset("lstm"), TrainConfig(epochs=1, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr,
                                                  device="cpu", limit=100), tmp_path / "l", log=log.append)
    warned = [ln for ln in log if ln.startswith("warning: lstm ")]
    assert len(warned) == 1 and "learned nothing useful yet; train the recipe's" in warned[0], log


def test_a_model_that_learned_is_not_named(runs):
    from ptx.contract.degenerate import degenerate
    from ptx.contract.runs import read_metrics

    last = read_metrics(runs.trained("convnet"))["epochs"][-1]  # 4 epochs on 4,000 digits: ~0.9
    assert last["test_top_share"] < 0.5 and degenerate(last) is None


# -- --device cuda:N ----------------------------------------------------------------------------------------

@pytest.mark.skipif(Path("/proc/driver/nvidia/gpus").is_dir() and len(os.listdir("/proc/driver/nvidia/gpus")) > 1,
                    reason="this machine has a GPU 1")
@pytest.mark.parametrize("command", [("predict", "0.5"), ("train", "linreg"), ("serve", "linreg"),
                                     ("export", "linreg", "--format", "pt2")])
def test_device_cuda_1_is_parsed_and_refused_without_that_gpu(command, tmp_path):
    result = ptx_here(*command, "--device", "CUDA:1", cwd=tmp_path)
    assert result.returncode == 2
    assert ("cuda:1: this machine has no NVIDIA GPU that CUDA can use; use --device cpu" in result.stderr
            or "cuda:1: no such GPU; this machine has 1 (cuda:0)" in result.stderr)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.skipif(Path("/proc/driver/nvidia/gpus").is_dir() and len(os.listdir("/proc/driver/nvidia/gpus")) > 1,
                    reason="this machine has a GPU 1")
def test_device_cuda_1_refusal_is_one_line(tmp_path):
    result = ptx("predict", "0.5", "--device", "cuda:1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: Invalid value for '--device': cuda:1: ")


def test_device_cuda_n_reaches_the_backend_as_the_gpu_number():
    from ptx.infer.model.opening import check_device
    from ptx.infer.runtime.ort_session import cuda_device_id

    assert check_device("ort-cuda", "cuda:1") == "cuda:1" and cuda_device_id("cuda:1") == 1


def test_predict_folder_counts_the_pictures_it_read_not_the_files_named_like_pictures(runs, tmp_path):
    from images import paper_digit

    x, _ = runs.test_samples("convnet", 1)
    (tmp_path / "pics").mkdir()
    paper_digit(x[0]).save(tmp_path / "pics" / "a.png")
    (tmp_path / "pics" / "b.png").write_text("not a picture")
    result = ptx_here("predict", "pics", "--run", runs.trained("convnet"), cwd=tmp_path)
    assert result.returncode == 1
    # Answers stream, so the count comes once the folder is done: after the refusal it counts.
    assert result.stderr.splitlines() == ["error: pics/b.png: not an image Pillow can read",
                                          "notice: pics: 1 picture read, 1 file with a picture suffix refused (each in "
                                          "its error)"], result.stderr
