"""The library's and the CLI's rough edges a new user hit (issue 21): each as the user types it."""
from __future__ import annotations

import os
import subprocess
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptx.cli import cli
from ptx.errors import PtxError


def ptx_here(*args, cwd: Path, stdin: bytes | str | None = None) -> subprocess.CompletedProcess:
    """`ptx ARGS` run in this process (a subprocess costs a second of imports per call); an exception
    the CLI lets through shows as a traceback on stderr, as it would in a terminal."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, [str(a) for a in args], input=stdin, env={"PTX_DATA_DIR": None})
    finally:
        os.chdir(previous)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, stderr)


# -- --device is refused where the backend does not run on it, never ignored ----------------------------

CUDA_ON_ORT_CPU = ("backend ort-cpu runs on cpu only, not cuda: --device cuda goes with eager, torchscript, aoti, "
                   "or use --backend ort-cuda")


def test_predict_device_cuda_on_the_default_ort_cpu_is_refused_in_one_line(tmp_path):
    result = ptx_here("predict", "x.png", "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {CUDA_ON_ORT_CPU}\n"


def test_library_refuses_a_device_the_backend_does_not_run_on(tmp_path):
    from ptx.infer import load

    with pytest.raises(PtxError, match=f"^{CUDA_ON_ORT_CPU}$"):
        load("convnet", device="cuda", root=tmp_path)
    with pytest.raises(PtxError, match="backend ort-cuda runs on cuda only, not cpu: .* --backend ort-cpu or openvino"):
        load("convnet", backend="ort-cuda", device="cpu", root=tmp_path)


def test_serve_refuses_device_with_backend_auto(tmp_path):
    from ptx.serve.server import load as serve_load

    with pytest.raises(PtxError, match="--backend auto chooses the device itself"):
        serve_load(None, ["convnet"], root=tmp_path, backend="auto", precision=None, device="cuda", log=print)


def test_export_device_without_pt2_is_refused(tmp_path):
    result = ptx_here("export", "convnet", "--format", "onnx", "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("error: --device cuda is the device pt2 compiles for; onnx is portable: add --format pt2 "
                             "or drop --device\n")
