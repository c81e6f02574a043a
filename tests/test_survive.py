"""One model's failure never stops a run over many, and a runtime that crashes is one line
(issue 26: `ptx verify --all` died with a traceback at gru-classifier; torch's aoti_load_package
segfaulted inside `ptx export --format pt2 --device cuda`)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from ptx.atomic import atomic_path
from ptx.cli import cli
from ptx.child import ChildCrashError, run_child
from ptx.export.formats import pt2
from ptx.infer.runtime import torch_runner
from ptx.infer.model.target import Target

MODELS = ("linreg", "logreg")


@pytest.fixture
def root(runs, tmp_path):
    for name in MODELS:  # copies: verify writes its record into each run folder
        shutil.copytree(runs.trained(name), tmp_path / name)
    return tmp_path


def test_verify_all_goes_on_past_a_backend_that_raises_and_a_model_that_fails(root, monkeypatch):
    real_forward = torch_runner.TorchRunner._forward

    def broken(self, feeds):
        if self.name == "logreg" and self.backend == "torchscript":
            raise RuntimeError("Expected all tensors to be on the same device,\n but found cuda:0 and cpu")
        return real_forward(self, feeds)

    monkeypatch.setattr(torch_runner.TorchRunner, "_forward", broken)
    args = ["verify", "--all", "--root", str(root), "--backends", "eager,torchscript", "--samples", "20",
            "--batch-sizes", "1,7"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("torchscript (cpu)")]
    assert len(rows) == 2  # both models verified: the failure of one did not stop the other
    assert "FAIL: RuntimeError: Expected all tensors to be on the same device," in result.output
    assert "Traceback" not in result.output

    real = Target.load  # what every model verify opens goes through

    def fails_for_linreg(self, *a, **kw):
        if self.name == "linreg":
            raise RuntimeError("the reference blew up")
        return real(self, *a, **kw)

    monkeypatch.setattr(Target, "load", fails_for_linreg)
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 1
    docs = json.loads(result.output[result.output.index("["):])
    assert [d["model"] for d in docs] == list(MODELS)
    assert docs[0]["error"] == "RuntimeError: the reference blew up" and docs[1]["rows"]


def test_a_segfault_in_the_pt2_loader_is_one_line_and_leaves_no_file(tmp_path):
    final = tmp_path / "model.pt2"
    with pytest.raises(ChildCrashError) as caught, atomic_path(final) as tmp:
        tmp.write_bytes(b"a compiled package")
        pt2.probe_load(tmp, "cuda", "convnet", code="import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    message = str(caught.value)
    assert "\n" not in message and "SIGSEGV" in message and "torch " in message and "aoti_load_package" in message
    assert "no model.pt2 was kept" in message
    assert os.listdir(tmp_path) == []  # neither the package nor a temporary file


def test_a_child_that_fails_says_its_last_line():
    with pytest.raises(ChildCrashError, match=r"the loader failed \(ValueError: bad package\)"):
        run_child("raise ValueError('bad package')", what="the loader")
    run_child("pass", what="the loader")  # a clean exit is no error
