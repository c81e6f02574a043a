"""Shared fixtures: every registered model trained a little and exported once per test session.

Models are trained only as much as the checks need (a few hundred real samples, one epoch);
convnet trains longer because the image tests compare recognition rates.
"""
from __future__ import annotations

import os
import pickle
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ptx.machine import usable_cores  # torch-free: read before torch's threads are set


def _threads_per_worker() -> int | None:
    """Each pytest-xdist worker's share of the cores this process may use, or None outside xdist."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    return max(1, usable_cores() // workers) if workers >= 1 else None


# Under xdist every worker's torch and ONNX Runtime would each start one thread per core: on 2 cores two
# workers ran four busy threads (ORT's spin between runs), and a subset of the suite took 7% longer than
# with one thread a worker. A worker gets its share of the cores, its children too (they inherit the
# variables); a value the user set is kept.
SHARE = _threads_per_worker()
if SHARE is not None:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PTX_ORT_THREADS"):
        os.environ.setdefault(variable, str(SHARE))
# AOTInductor compiles each package's C++ wrapper at -O1 with line tables: on 2 cores that was a third of
# a tiny GPT-2's pt2 export (43 s; 27 s at -O0 without line tables). The tests judge what a package
# answers, not how fast its wrapper runs, so they compile it plainly; benchmarks keep torch's defaults.
os.environ.setdefault("AOT_INDUCTOR_COMPILE_WRAPPER_OPT_LEVEL", "O0")
os.environ.setdefault("AOT_INDUCTOR_ENABLE_LINE_TABLES", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

if SHARE is not None:
    torch.set_num_threads(SHARE)  # in case a plugin imported torch before OMP_NUM_THREADS was set

from ptx.export.api import export_model  # noqa: E402
from ptx.child import ChildCrashError  # noqa: E402
from ptx.models import get, list_models  # noqa: E402
from ptx.trainers.data import load_dataset  # noqa: E402
from ptx.trainers.loop import TrainConfig, train  # noqa: E402

# No test may reach the internet: a dataset that is not on the machine falls back or fails, as on an
# offline machine. The download tests serve their files from a loopback server instead.
os.environ["PTX_OFFLINE"] = "1"

SMOKE_LIMIT = 400
# pt2 (torch.export + AOTInductor) compiles for ~20-45 s a model on 2 cores: tests compile these
# representative ones only (batch on axis 0, and on axis 1), not all 17.
PT2_MODELS = ("convnet", "lstm")
EXPORT_RESULTS = "export-results.pickle"  # beside a shared run's files: Runs.export_results
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
        results = export_model(name, checkpoint=run_dir / "checkpoint.pt", log=lambda _: None)
        # What the export returned, for the tests of export itself (the run may be another worker's)
        (run_dir / EXPORT_RESULTS).write_bytes(pickle.dumps(results))

    def export_results(self, name: str) -> list:
        """What export_model returned when it wrote ``name``'s run files (ExportResult, one per format)."""
        return pickle.loads((self.trained(name) / EXPORT_RESULTS).read_bytes())

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


def shared_folder(tmp_path_factory) -> Path | None:
    """This run's folder shared by all its xdist workers (xdist gives them one id per run), beside their own
    base folders; None outside xdist."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return tmp_path_factory.getbasetemp().parent / f"shared-runs-{run_id}" if run_id else None


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder ``name``, filled by ``make(folder)`` once for all the workers of the run (under a lock between
    their processes; a marker in it says it is done), or this worker's own outside xdist (made at each call: call
    it once)."""
    shared = shared_folder(tmp_path_factory)
    root = tmp_path_factory.mktemp(name) if shared is None else shared / name
    with _held(root.parent / f"{name}.lock") if shared is not None else nullcontext():
        if not (root / ".made").is_file():
            root.mkdir(parents=True, exist_ok=True)
            make(root)
            (root / ".made").touch()
    return root


def _exported(folder: Path, root: Path, formats: str) -> None:
    """`ptx export FOLDER --out ROOT/export --format FORMATS`, what it printed kept in ROOT/exported.log."""
    from ptx_command import ptx

    done = ptx("export", folder, "--out", root / "export", "--format", formats)
    assert done.returncode == 0, done.stdout + done.stderr
    (root / "exported.log").write_text(done.stdout)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"), shared_folder(tmp_path_factory))


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

    # Made once for all the workers (four files read it, never write it): each worker's own took 14 s.
    root = made_once(tmp_path_factory, "chat", lambda root: _exported(text_models.chat_folder(root / "chat-llama"),
                                                                      root, "onnx"))
    return {"folder": root / "chat-llama", "file": root / "export" / "model.onnx",
            "log": (root / "exported.log").read_text()}


@pytest.fixture(scope="session")
def tool_chat_export(tmp_path_factory) -> dict:
    """A chat model whose template calls tools (tests/text_models.py: a tiny random Qwen2 and a tokenizer with
    Qwen2.5-Instruct's chat template), exported once per session by `ptx export DIR --out OUT --format onnx`:
    {"folder": DIR, "file": OUT/model.onnx}."""
    import text_models

    root = made_once(tmp_path_factory, "tool-chat",
                     lambda root: _exported(text_models.tool_chat_folder(root / "qwen2-tools"), root, "onnx"))
    return {"folder": root / "qwen2-tools", "file": root / "export" / "model.onnx"}


@pytest.fixture(scope="session")
def tiny_decoders(tmp_path_factory):
    """tests/tiny_decoders.py's decoders, each exported once for all the workers of the run (four files read
    them)."""
    pytest.importorskip("transformers")
    from tiny_decoders import TinyDecoders

    return TinyDecoders(lambda name, make: made_once(tmp_path_factory, f"tiny-decoders-{name}", make))


@pytest.fixture(scope="session")
def embedding_export(tmp_path_factory) -> dict:
    """A sentence-transformers model as users have one (tests/embedding_models.py: all-MiniLM-L6-v2's config with
    random weights, saved by sentence-transformers), exported once per session by `ptx export DIR --out OUT --format
    onnx,torchscript`: {"folder": DIR, "out": OUT, "onnx": OUT/model.onnx, "torchscript": OUT/model.torchscript.pt,
    "log": what export printed}."""
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers (the test extra)")
    import embedding_models

    root = made_once(tmp_path_factory, "embedding", lambda root: _exported(
        embedding_models.sentence_folder(root / "minilm"), root, "onnx,torchscript"))
    out = root / "export"
    return {"folder": root / "minilm", "out": out, "onnx": out / "model.onnx", "torchscript": out / "model.torchscript.pt",
            "log": (root / "exported.log").read_text()}


# The files that take longest, longest first (each file's seconds in a run of the suite on 2 cores, 2026-11-30:
# every file of 5 s or more), then the rest. pytest-xdist hands out whole files (--dist loadfile)
# and by default starts the files with the most tests first, which left long files of few tests for the end:
# one worker ran them alone while the other had nothing left (a minute, 2026-11-27; test_serve_stop.py's 20 s,
# 2026-11-28; test_repeated_layers.py's 42 s, third longest and not listed, 2026-11-30). A file missing from the
# list only starts later.
LONGEST_FILES = ("test_streamed_export.py", "test_weight_only.py", "test_repeated_layers.py", "test_hf_pt2.py",
                 "test_readme_generate.py", "test_agreement.py", "test_lm_families.py", "test_hf_models.py",
                 "test_generate.py", "test_one_verdict.py", "test_embeddings.py", "test_verify_url.py",
                 "test_tool_calls.py", "test_gpu_check.py", "test_serve_stop.py", "test_locate.py",
                 "test_own_verify.py", "test_export_module.py", "test_encoder_decoder.py", "test_triage.py",
                 "test_hostile.py", "test_own_serve.py", "test_detections.py", "test_ort_attention.py",
                 "test_batch_scoring.py", "test_docs.py", "test_augment.py", "test_error_model.py",
                 "test_locate_reduced.py", "test_triton.py", "test_cache.py", "test_openai_tools.py",
                 "test_bench_generate.py", "test_pt2.py", "test_batch_semantics.py", "test_trainer.py",
                 "test_serve.py", "test_export_file.py", "test_readme.py", "test_locate_verdicts.py",
                 "test_max_drop.py", "test_serve_page.py", "test_reduced_precision.py", "test_verify_bench.py",
                 "test_readme_own_model.py", "test_shape_certificate.py", "test_int8_choice.py", "test_layers.py",
                 "test_example_inputs.py", "test_smaller_items.py", "test_grammar.py", "test_serve_generate.py",
                 "test_generation_faults.py", "test_cuda_placement.py", "test_locate_cases.py",
                 "test_picture_chunks.py", "test_precision_opened.py", "test_openvino_attention.py", "test_data.py",
                 "test_speculative.py", "test_export_overlap.py", "test_terminate.py", "test_export.py",
                 "test_static_cache.py", "test_batch_composition.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # keep the order below


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the rest by their number of tests (xdist's own order)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.path.name] = counts.get(item.path.name, 0) + 1

    def rank(item):
        name = item.path.name
        return (LONGEST_FILES.index(name), 0) if name in LONGEST_FILES else (len(LONGEST_FILES), -counts[name])

    items.sort(key=rank)  # stable: a file's own tests keep their order
