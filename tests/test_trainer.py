import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from ptx.errors import CheckpointError
from ptx.models import get
from ptx.trainers.checkpoint import load_checkpoint
from ptx.trainers.data import load_dataset
from ptx.trainers.loop import TrainConfig, train
from ptx_command import ptx

QUIET = dict(log=lambda _: None)


@pytest.fixture(scope="module")
def sample():
    return load_dataset("mnist-sample")


def small_config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 50, "lr": 0.01, "device": "cpu", "limit": 300, **kw})


def test_smoke_run_writes_the_three_files(tmp_path, sample):
    metrics = train(get("convnet"), sample, small_config(), tmp_path, **QUIET)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "metrics.json", "curves.png"}
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert [e["epoch"] for e in on_disk["epochs"]] == [1, 2]
    assert {"loss", "test_accuracy", "seconds", "images_per_s"} <= set(on_disk["epochs"][0])
    assert 0 <= on_disk["final_test_accuracy"] <= 1
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_self_describing_and_weights_only(tmp_path, sample):
    train(get("lstm"), sample, small_config(epochs=1), tmp_path, **QUIET)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["model"] == "lstm" and ckpt["epoch"] == 1
    assert {"state_dict", "optimizer", "rng", "recipe", "metrics", "versions", "contract", "samples"} <= set(ckpt)
    assert ckpt["contract"]["input"]["shape"] == [28, "batch", 28] and ckpt["recipe"]["optimizer"] == "sgd"


def test_same_seed_gives_the_same_weights(tmp_path, sample):
    a = train(get("convnet"), sample, small_config(), tmp_path / "a", **QUIET)
    b = train(get("convnet"), sample, small_config(), tmp_path / "b", **QUIET)
    assert a["epochs"][-1]["loss"] == b["epochs"][-1]["loss"]
    sa, sb = (load_checkpoint(tmp_path / d / "checkpoint.pt")["state_dict"] for d in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_matches_an_uninterrupted_run(tmp_path, sample):
    spec = get("convnet")  # has dropout: the RNG state must be restored too
    train(spec, sample, small_config(epochs=3), tmp_path / "full", **QUIET)
    train(spec, sample, small_config(epochs=1), tmp_path / "split", **QUIET)
    metrics = train(spec, sample, small_config(epochs=3), tmp_path / "split", resume=True, **QUIET)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["state_dict"]
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["state_dict"]
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_resume_with_nothing_left_to_do(tmp_path, sample):
    train(get("convnet"), sample, small_config(epochs=1), tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="larger --epochs"):
        train(get("convnet"), sample, small_config(epochs=1), tmp_path, resume=True, **QUIET)


def test_linreg_learns_w_close_to_2(tmp_path):
    spec = get("linreg")
    config = TrainConfig(epochs=100, batch_size=10, lr=0.01, device="cpu")
    metrics = train(spec, load_dataset("line"), config, tmp_path, **QUIET)
    assert abs(metrics["final_w"] - 2) < 0.1


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ptx-pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["corrupt", "foreign", "pickle-exploit", "not-a-dict"])
def test_bad_checkpoints_are_one_line_errors_never_executed(tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a zip")
    elif kind == "foreign":
        torch.save({"state_dict": {}}, path)
    elif kind == "pickle-exploit":
        path.write_bytes(pickle.dumps({"format": "ptx-checkpoint", "x": Exploit()}))
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected_model="convnet")
    assert "\n" not in str(err.value) and "ptx train convnet" in str(err.value)
    assert not os.path.exists("/tmp/ptx-pwned")


def test_checkpoint_of_another_model(tmp_path, sample):
    train(get("convnet"), sample, small_config(epochs=1), tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="not 'lstm'"):
        load_checkpoint(tmp_path / "checkpoint.pt", expected_model="lstm")


def test_sigkill_mid_training_then_resume(tmp_path):
    """A killed run leaves the last complete epoch's checkpoint; --resume goes on from there."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ptx", "train", "convnet", "--dataset", "mnist-sample", "--epochs", "400",
           "--limit", "1000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "checkpoint.pt").exists() and load_checkpoint(out / "checkpoint.pt")["epoch"] >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    epoch = load_checkpoint(out / "checkpoint.pt", expected_model="convnet")["epoch"]
    assert 2 <= epoch < 400
    assert not list(out.glob("*.tmp")) or all(p.name.startswith(".") for p in out.glob("*.tmp"))
    # No --dataset: a resumed run goes on with the data it started on, not the model's default.
    resumed = subprocess.run(cmd[:5] + ["--epochs", str(epoch + 1), "--out", str(out), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming convnet from epoch {epoch}" in resumed.stdout
    assert "data: mnist-sample" in resumed.stdout and "notice" not in resumed.stdout
    assert "| 1000 train /" in resumed.stdout  # --limit came back from the checkpoint too
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == epoch + 1


def test_cli_train_reports_data_source_and_accuracy(tmp_path):
    result = ptx("train", "convnet", "--dataset", "mnist-sample",
                 "--epochs", "1", "--limit", "200", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "data: mnist-sample" in result.stdout and "test accuracy" in result.stdout


def test_cli_explicit_mnist_without_data_exits_2_in_one_line(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PTX_DATA_DIR": ""}
    result = ptx("train", "convnet", "--dataset", "mnist", "--out",
                 str(tmp_path / "run"), env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--data-dir" in result.stderr


def test_linreg_with_bias_is_the_linear_model_of_lecture_5(tmp_path):
    config = TrainConfig(epochs=100, batch_size=10, lr=0.01, device="cpu", model_args={"bias": True})
    metrics = train(get("linreg"), load_dataset("line"), config, tmp_path, **QUIET)
    assert abs(metrics["final_w"] - 2) < 0.1 and abs(metrics["final_b"]) < 0.2
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["model_args"] == {"bias": True} and "linear.bias" in ckpt["state_dict"]
    with pytest.raises(Exception, match="has no option bias"):
        train(get("convnet"), load_dataset("mnist-sample"), small_config(model_args={"bias": True}), tmp_path / "c", **QUIET)


@pytest.mark.parametrize("name", ["convnet", "mlp-dropout"])  # the recipe's SGD and Adam
def test_fused_optimizer_is_asked_of_torch_and_a_build_without_it_trains_with_the_standard_one(monkeypatch, name):
    from ptx.trainers.loop import make_optimizer

    spec = get(name)
    model = spec.build(**spec.model_args)
    assert make_optimizer(spec, model, 0.01).defaults.get("fused") is True  # this torch has them on CPU

    real = torch.optim.SGD if spec.recipe.optimizer.value == "sgd" else torch.optim.Adam

    class NoFused(real):  # what torch says where a device has no fused kernel
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                                   "supported devices: ['cuda']")
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, real.__name__, NoFused)
    notices = []
    optimizer = make_optimizer(spec, model, 0.01, notice=notices.append)
    assert isinstance(optimizer, NoFused) and not optimizer.defaults.get("fused")
    assert len(notices) == 1 and "no fused" in notices[0] and "standard" in notices[0]


@pytest.mark.parametrize("dataset, said", [("words", "lenet takes 28x28 pictures with 10 classes, but words gives"),
                                           ("wordz", "unknown dataset 'wordz'; did you mean words?")])
def test_a_dataset_that_cannot_train_the_model_is_refused_before_torch_is_imported(dataset, said):
    """The one-line refusal came after `import torch` (2.5-5 s); it needs only the torch-free catalog."""
    code = ("import sys\nfrom ptx.cli import main\n"
            f"sys.argv = ['ptx', 'train', 'lenet', '--dataset', {dataset!r}]\n"
            "try:\n    main()\nexcept SystemExit as done:\n    print(done.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_dataset_that_fits_goes_on_to_train(tmp_path):
    """The early check refuses misfits only: lenet on mnist-sample trains (its own spec checks the pair again)."""
    result = ptx("train", "lenet", "--dataset", "mnist-sample", "--epochs", "1", "--limit", "64", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
