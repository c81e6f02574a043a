"""The torch-free model catalog (ptx/contract/catalog.py) is the registry's, and what reads it
(`ptx models`, a mistyped name's "did you mean") stays torch-free and fast."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repo_scripts import script

from ptx.contract import catalog
from ptx.models import get, list_models
from ptx_command import ptx

REPO = Path(__file__).resolve().parent.parent


def _generator():
    return script("model_catalog")


def test_catalog_is_what_the_registry_says_now():
    generator = _generator()
    assert catalog.MODELS == generator.rows(), "the registry changed: run `python3 scripts/model_catalog.py`"
    assert (REPO / "ptx" / "contract" / "catalog.py").read_text() == generator.source(), \
        "run `python3 scripts/model_catalog.py`"


def test_catalog_parameter_counts_are_the_built_modules():
    """The params column is data, so it must be the real models' count (the spec's declared figure
    is checked against the builder in test_registry; this pins the catalog to both)."""
    assert catalog.names() == list_models()
    for row in catalog.MODELS:
        assert row["params"] == sum(p.numel() for p in get(row["name"]).build().parameters()), row["name"]


def test_known_to_fit_says_what_the_dataset_table_says():
    """Opening an artifact skips the dataset check for a pair the catalog knows to fit (infer/model/head.py:
    the dataset table stays unloaded on predict's start); every other pair gets the table's reason."""
    from ptx.contract.datasets import DATASET_INFO, recorded_mismatch

    for name in catalog.names():
        assert catalog.known_to_fit(name, get(name).dataset), name
        for dataset in DATASET_INFO:
            if not dataset.startswith("folder:"):
                fits = recorded_mismatch(name, catalog.takes(name), dataset) is None
                assert catalog.known_to_fit(name, dataset) == fits, (name, dataset)
    assert not catalog.known_to_fit("convnet", "folder:/some/pictures")
    assert not catalog.known_to_fit("not-a-model", "mnist")


def test_ptx_models_imports_no_torch():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptx", "models"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("model ") and "convnet" in result.stdout
    assert not re.search(r"\|\s+torch$", result.stderr, re.M), "ptx models imported torch"


@pytest.mark.parametrize("columns", [80, 100])
def test_ptx_models_fits_the_terminal_and_explains_its_columns(columns):
    """It was 185 columns wide: now every line fits the terminal's width (COLUMNS), cells wrap."""
    result = ptx("models", timeout=60, env={**os.environ, "COLUMNS": str(columns)})
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and max(map(len, lines)) <= columns, result.stdout
    assert lines[0].split() == ["model", "takes", "default", "data", "from", "tutorial", "exports"]
    assert any(line.startswith("gru-classifier ") and line.rstrip().endswith("all but pt2") for line in lines)
    # The tutorial references ("000 §2") and "all" are explained under the table.
    assert "exports: all = onnx, torchscript, onnx-int8, openvino-int8, pt2, triton, kserve" in lines
    assert any(line.startswith("000  the main PyTorch tutorial") for line in lines)


DID_YOU_MEAN = "error: unknown model 'convnett'; did you mean convnet? (see `ptx models`)"


@pytest.mark.parametrize("command", [["predict", "x.png", "--model", "convnett"], ["verify", "convnett"],
                                     ["bench", "convnett"], ["serve", "convnett", "--http-port", "0"],
                                     ["export", "convnett", "--out", "out"]])
def test_a_mistyped_model_name_gets_did_you_mean(command, tmp_path):
    result = ptx(*command, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    if command[0] == "export":  # a model file, or the user's own module
        assert result.stderr == (f"{DID_YOU_MEAN}; or give a model file's path (`ptx export model.onnx --format "
                                 "triton --out REPO`; your nn.Module: `ptx export --module FILE.py:FACTORY --out "
                                 "DIR`)\n")
        assert not (tmp_path / "out").exists()
        return
    # each of these takes a model file too (issue 36), and says how
    usage = {"predict": "ptx predict --model model.onnx INPUTS.npz"}.get(command[0], f"ptx {command[0]} model.onnx")
    assert result.stderr == f"{DID_YOU_MEAN}; or give a model file's path (`{usage}`)\n"


def test_load_answers_a_mistyped_name_with_did_you_mean(tmp_path):
    from ptx.errors import UnknownModelError
    from ptx.infer import load

    with pytest.raises(UnknownModelError, match=r"unknown model 'lstmm'; did you mean lstm\?"):
        load("lstmm", root=tmp_path)


def test_a_model_the_catalog_does_not_know_still_loads_from_its_run_folder(runs, tmp_path):
    """A user's own registered model is not in the catalog: its run folder decides, not the name."""
    import shutil

    from ptx.errors import PtxError
    from ptx.infer import load

    shutil.copytree(runs.trained("linreg"), tmp_path / "mylinreg")
    with pytest.raises(PtxError) as caught:
        load("mylinreg", root=tmp_path)
    assert "unknown model" not in str(caught.value)  # refused for holding linreg's model, not for its name
