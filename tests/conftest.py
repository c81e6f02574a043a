"""Shared fixtures: every registered model trained a little and exported once per test session.

Models are trained only as much as the checks need (a few hundred real samples, one epoch);
convnet trains longer because the image tests compare recognition rates.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from ptx.export.api import export_model
from ptx.child import ChildCrashError
from ptx.models import get, list_models
from ptx.trainers.data import load_dataset
from ptx.trainers.loop import TrainConfig, train

# No test may reach the internet: a dataset that is not on the machine falls back or fails, as on an
# offline machine. The download tests serve their files from a loopback server instead.
os.environ["PTX_OFFLINE"] = "1"

SMOKE_LIMIT = 400
# pt2 (torch.export + AOTInductor) compiles for ~20-45 s a model on 2 cores: tests compile these
# representative ones only (batch on axis 0, and on axis 1), not all 17.
PT2_MODELS = ("convnet", "lstm")
WELL_TRAINED = {"convnet": 4}  # epochs on all 4,000 mnist-sample digits: ~0.9 test accuracy
GPU = torch.cuda.is_available()


def outputs(model, x):
    """A tutorial model's output for a batch in its input layout: ``run``, fed as its head feeds the
    graph (an --input uint8 export gets the pictures back)."""
    return model.run(model.head.feeds(x))[model.head.output_name]


def needs_gpu(test):
    """Marks a test gpu (`pytest -m gpu` selects it) and skips it, with the reason, without one."""
    return pytest.mark.gpu(pytest.mark.skipif(not GPU, reason="needs a CUDA GPU; none is visible to torch here")(test))


@contextmanager
def skip_if_torch_loader_crashes(device: str):
    """A pt2 export for a GPU whose package torch's own loader kills is a skip with export's one line.

    torch 2.11.0+cu130's aoti_load_package segfaulted loading every CUDA package it was given on
    the H100s (2026-11-22; 2026-11-23: convnet's and lstm's): export probes the package in a child
    and raises ChildCrashError, whose line says the crash is torch's. That is no verdict on ptx, so the aoti-cuda tests report it as a
    skip with that line. On the CPU, where the loader has worked, a crash still fails the test, and
    every other error fails it everywhere."""
    try:
        yield
    except ChildCrashError as exc:
        if device == "cpu":
            raise
        pytest.skip(str(exc))


def needs_ort_cuda(test):
    """A gpu test of ONNX Runtime's CUDA provider: skips with ort-cuda's own reason where it cannot run."""
    from ptx.infer.runtime.ort_session import cuda_unavailable

    why = cuda_unavailable()
    return pytest.mark.gpu(pytest.mark.skipif(bool(why), reason=f"ort-cuda cannot run here: {why}")(test))


def smoke_dataset_name(name: str) -> str:
    """The real data each model is tested on: mnist-sample stands in for the full MNIST on CI."""
    dataset = get(name).dataset
    return "mnist-sample" if dataset == "mnist" else dataset


@contextmanager
def _held(lock: Path):
    """An exclusive lock on ``lock`` between processes (xdist's workers), where the OS has flock."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): each worker makes its own
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Runs:
    """Trained and exported runs, one folder per model in ``root`` (this worker's own, so that a test
    may change its files). Under xdist, a model is trained (and its pt2 compiled) once for all the
    workers of the run, in ``shared``, and copied: both workers would otherwise train the same models."""

    def __init__(self, root: Path, shared: Path | None = None):
        self.root = root
        self.shared = shared
        self._done: set[str] = set()
        self._data: dict[str, object] = {}

    def dataset(self, name: str):
        key = smoke_dataset_name(name)
        if key not in self._data:
            self._data[key] = load_dataset(key, labels=get(name).labels, picture=get(name).contract(key).picture)
        return self._data[key]

    def trained(self, name: str) -> Path:
        """runs/<name> with checkpoint.pt, model.onnx and model.torchscript.pt."""
        run_dir = self.root / name
        if name not in self._done:
            if self.shared is None:
                self._train(name, run_dir)
            else:
                made = self.shared / name
                with _held(self.shared / f"{name}.lock"):
                    if not (made / "trained").is_file():
                        self._train(name, made)
                        (made / "trained").touch()
                    # under the lock: a pt2 compile writes its temporary file into the shared folder
                    shutil.copytree(made, run_dir, ignore=shutil.ignore_patterns("trained", "model.pt2", ".*"),
                                    dirs_exist_ok=True)
            self._done.add(name)
        return run_dir

    def _train(self, name: str, run_dir: Path) -> None:
        spec = get(name)
        epochs = WELL_TRAINED.get(name, 1)
        config = TrainConfig(epochs=epochs, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr,
                             device="cpu", limit=None if name in WELL_TRAINED else SMOKE_LIMIT)
        train(spec, self.dataset(name), config, run_dir, log=lambda _: None)
        export_model(name, checkpoint=run_dir / "checkpoint.pt", log=lambda _: None)

    def with_pt2(self, name: str, device: str = "cpu") -> Path:
        """runs/<name> as trained() gives it, plus model.pt2 compiled for ``device`` (once per test
        session). A package runs on the device it was compiled for only, so a CUDA one lives in a
        run folder of its own (pt2-cuda/<name>, the checkpoint copied) beside the CPU one."""
        run_dir = self.trained(name)
        if device != "cpu":
            own = self.root.parent / f"pt2-{device}" / name
            own.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / "checkpoint.pt", own / "checkpoint.pt")
            run_dir = own
        if not (run_dir / "model.pt2").is_file():
            if self.shared is None or device != "cpu":
                export_model(name, ["pt2"], checkpoint=run_dir / "checkpoint.pt", device=device, log=lambda _: None)
            else:  # compiled once for every worker, from the shared checkpoint this run's is a copy of
                made = self.shared / name
                with _held(self.shared / f"{name}.lock"):
                    if not (made / "model.pt2").is_file():
                        export_model(name, ["pt2"], checkpoint=made / "checkpoint.pt", log=lambda _: None)
                    shutil.copy2(made / "model.pt2", run_dir / "model.pt2")
        return run_dir

    def ready(self, *names: str) -> Path:
        """The runs root, once ``names`` are trained and exported in it."""
        for name in names:
            self.trained(name)
        return self.root

    def test_samples(self, name: str, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
        data = self.dataset(name)
        # Small test sets (logistic has 3 points) are cycled so every batch size can be asked for.
        index = np.arange(n) % len(data.y_test)
        return data.x_test[index], data.y_test[index]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    # xdist gives its workers one id per run: their shared folder, beside their own base folders.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    shared = tmp_path_factory.getbasetemp().parent / f"shared-runs-{run_id}" if run_id else None
    return Runs(tmp_path_factory.mktemp("runs"), shared)


@pytest.fixture(params=list_models())
def model_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def own_models(tmp_path_factory) -> dict[str, Path]:
    """Users' own models (tests/own_models.py), exported once per session: NAME -> NAME.onnx, and
    NAME.pt -> its TorchScript file where it declares inputs."""
    import own_models as zoo

    return zoo.export_all(tmp_path_factory.mktemp("own"))


@pytest.fixture(scope="session")
def chat_export(tmp_path_factory) -> dict:
    """A chat model as users have one (tests/text_models.py: a save_pretrained folder of a tiny Llama and its
    tokenizer with a chat template), exported once per session by `ptx export DIR --out OUT --format onnx`:
    {"folder": DIR, "file": OUT/model.onnx, "log": what export printed}."""
    import text_models
    from ptx_command import ptx

    root = tmp_path_factory.mktemp("chat")
    folder = text_models.chat_folder(root / "chat-llama")
    done = ptx("export", folder, "--out", root / "export", "--format", "onnx")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"folder": folder, "file": root / "export" / "model.onnx", "log": done.stdout}
