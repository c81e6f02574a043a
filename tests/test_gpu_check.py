"""scripts/gpu_check.sh's own CPU mode: the phases the GPU lease runs (train in one process,
verify --all, the summary) end to end on a tiny model, so the script is known to work before a
GPU machine is lent for it (issue 26)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_writes_one_summary(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PTX_GPU_DEVICE": "cpu", "PTX_GPU_INSTALL": "0", "PTX_GPU_MODELS": "logistic", "PTX_GPU_EPOCHS": "1",
           "PTX_GPU_VERIFY_SAMPLES": "20", "PTX_GPU_VERIFY_BACKENDS": "eager,ort-cpu",
           "PTX_GPU_WORK": str(tmp_path / "work"), "OUT": str(out)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "train", "verify", "summary"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "phase train took" in done.stdout and "phase verify took" in done.stdout
    summary = (out / "summary.md").read_text()
    assert "| train |" in summary and "| verify |" in summary  # seconds per phase
    train_row = next(line for line in summary.splitlines() if line.startswith("| logistic | cpu |"))
    assert train_row.endswith("| ok |")  # with its train and export seconds
    assert "| logistic | ort-cpu | f32 |" in summary and "1 of 1 models pass" in summary
    assert "## Bench" in summary and "## Tests" in summary
