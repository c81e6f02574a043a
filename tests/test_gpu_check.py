"""scripts/gpu_check.sh's own CPU mode: the phases the GPU lease runs (train in one process,
verify --all, the summary) end to end on a tiny model, so the script is known to work before a
GPU machine is lent for it (issue 26); and, as on the lease, two calls one after the other: the
second call's archive holds the first call's results too, and a phase that fails ends only
itself (issue 39: one unguarded command had ended the whole check on the H100)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(tmp_path, out, *phases, **env):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PTX_GPU_DEVICE": "cpu", "PTX_GPU_INSTALL": "0", "PTX_GPU_MODELS": "logistic", "PTX_GPU_EPOCHS": "1",
           "PTX_GPU_VERIFY_SAMPLES": "20", "PTX_GPU_VERIFY_BACKENDS": "eager,ort-cpu",
           "PTX_GPU_WORK": str(tmp_path / "work"), "OUT": str(out), **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *phases],
                          env=env, capture_output=True, text=True, timeout=300)


def kept(out: Path) -> dict[str, str]:
    """What a call sent back in keep.tgz: file name -> text."""
    with tarfile.open(out / "keep.tgz") as archive:
        return {Path(m.name).as_posix().removeprefix("./"): archive.extractfile(m).read().decode()
                for m in archive.getmembers() if m.isfile()}


def test_the_gpu_check_dry_run_writes_one_summary_and_keeps_every_calls_results(tmp_path):
    out = tmp_path / "out"
    done = gpu_check(tmp_path, out, "train", "verify", "summary")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "phase train took" in done.stdout and "phase verify took" in done.stdout
    # Two files come back, within the device tool's 8: the summary and the archive of all results.
    assert sorted(p.name for p in out.iterdir()) == ["keep.tgz", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "| train |" in summary and "| verify |" in summary  # seconds per phase
    train_row = next(line for line in summary.splitlines() if line.startswith("| logistic | cpu |"))
    assert train_row.endswith("| ok |")  # with its train and export seconds
    assert "| logistic | ort-cpu | f32 |" in summary and "1 of 1 models pass" in summary
    assert "## Bench" in summary and "## Tests" in summary
    first = kept(out)
    assert {"train.md", "verify.md", "verify.json", "phases.md", "summary.md", "gpu_check.log"} <= set(first)
    assert first["summary.md"] == summary
    # What comes back names no folder of the machine (docs/gpu-runs/ keeps it as it comes): the runs are
    # the check folder's, runs/logistic.
    assert [name for name, text in first.items() if str(tmp_path) in text] == []
    assert "runs/logistic" in first["verify.md"]

    # The next call, as the lease's next device call: a new OUT, the same machine's work folder, and
    # the runs gone. verify fails as a whole (ptx verify gives no JSON); bench's one model fails as
    # a step, said in its section; the summary after them still runs.
    shutil.rmtree(tmp_path / "work" / "runs")
    out2 = tmp_path / "out2"
    again = gpu_check(tmp_path, out2, "verify", "bench", "summary", PTX_GPU_BENCH_MODELS="logistic")
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert "phase verify FAILED (exit 1)" in again.stdout and "phase bench FAILED (1 step)" in again.stdout
    assert "phase summary took" in again.stdout and "phases that failed: verify bench" in again.stderr
    second = kept(out2)
    phases = [line.split("|")[1].strip() for line in second["phases.md"].splitlines()]
    assert phases == ["train", "verify", "summary", "verify (FAILED, exit 1)", "bench (FAILED, 1 step)", "summary"]
    assert "FAILED: ptx bench logistic" in second["bench/logistic.md"]
    assert second["bench-gpu.md"] == second["bench/logistic.md"]  # the sections joined: one model here
    # The first call's tables are still there, the failed verify's half-written ones are not.
    assert second["train.md"] == first["train.md"] and second["verify.md"] == first["verify.md"]
    assert not any(name.endswith(".new") for name in second)
    assert "| logistic | ort-cpu | f32 |" in (out2 / "summary.md").read_text()


def test_the_gpu_check_runs_a_users_models_and_the_locate_phase_to_the_end(tmp_path):
    """Issue 45, proven without a GPU: the `own` phase exports a user's BERT-like module (two
    dynamic axes, int64 inputs) with `ptx export --module`, verifies its ONNX and TorchScript files
    with the CUDA rows offered (they say they cannot run here), benches it and serves it, one
    request answered as the file answers in-process; the `locate` phase runs verify --locate on
    every model. Both land in the summary."""
    out = tmp_path / "out"
    done = gpu_check(tmp_path, out, "train", "own", "locate", "summary", PTX_GPU_OWN_MODELS="bert_like",
                     PTX_GPU_OWN_BATCHES="1,4", PTX_GPU_OWN_SECONDS="0.2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    own = summary.split("## A user's own models")[1].split("## Where the CUDA rows")[0]
    assert "module: bert_like (BertLike" in own and "input_ids int64 [batch, seq]" in own
    assert own.count("CUDA rows: not run: no GPU on this machine") == 2  # the ONNX file's and the TorchScript file's
    assert own.count("all agree:") == 2 and "FAILED" not in own
    assert "| ort-cpu | cpu | 4 |" in own  # the bench table, batch 4
    assert "ptx serve model.onnx --backend ort-cpu: one request (attention_mask [3, 8], input_ids [3, 8]) " \
           "answered as ort-cpu answers it here" in own
    located = summary.split("## Where the CUDA rows part from the CPU (--locate)")[1]
    assert "### logistic" in located and "not run: no GPU on this machine" in located
    assert [line.split("|")[1].strip() for line in kept(out)["phases.md"].splitlines()] == \
        ["train", "own", "locate", "summary"]


def test_relative_paths_names_the_check_folder_and_the_checkout_never_the_machine():
    """What the 2026-11-23 check wrote, made relative; a folder that only starts like one is left alone."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_summary import relative_paths

    def relative(text):
        return relative_paths(text, "/tmp/ptx-gpu", "/work/main", "/root")

    assert relative("no MNIST IDX files in /tmp/ptx-gpu/data; no MNIST IDX files in /root/.cache/ptx/datasets") == \
        "no MNIST IDX files in data; no MNIST IDX files in ~/.cache/ptx/datasets"
    assert relative("SKIPPED [1] ../../work/main/tests/test_gpu.py:146: ort-cuda cannot run here") == \
        "SKIPPED [1] tests/test_gpu.py:146: ort-cuda cannot run here"
    assert relative("run `ptx export cnn --format pt2 --run /tmp/ptx-gpu/runs/cnn` first") == \
        "run `ptx export cnn --format pt2 --run runs/cnn` first"
    assert relative("in /tmp/ptx-gpu: done") == "in .: done"
    legit = "/tmp/ptx-gpu2/runs /tmp/root/x runs/cnn ~/.cache/ptx https://example.org/work/main"
    assert relative(legit) == legit
