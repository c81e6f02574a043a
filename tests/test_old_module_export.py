"""A module export folder written before issue 67's cuts still loads, predicts and verifies.

data/module-269a354 is what ptx at commit 269a354 wrote for ``ptx export --module tiny.py:tiny --format
onnx,torchscript,onnx-int8`` (tiny.py beside it): each file checked, bound to its weights by the digest
taken then (a TorchScript file saved three times then, twice now), its shape certificate and, for the
int8 file, its verdicts in both the forms written then (ptx.verdict, and the one-string ptx.judgement);
and model.reference.npz with eager's answers. Today's code reads all of it as it did."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ptx.contract.reference import load_reference, reference_path
from ptx.contract.shape_certificate import CERTIFICATE_KEY
from ptx.contract.verdict import recorded_verdicts
from ptx.infer import load
from ptx_command import ptx

OLD = Path(__file__).resolve().parent / "data" / "module-269a354"


@pytest.fixture()
def folder(tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(OLD, copy)
    return copy


@pytest.mark.parametrize("file_name", ["model.onnx", "model.torchscript.pt", "model.int8.onnx"])
def test_each_old_file_loads_bound_to_its_weights_and_answers_as_its_reference(folder, file_name):
    model = load(folder / file_name)
    assert model.metadata.get("weights_sha256") and CERTIFICATE_KEY in model.metadata
    reference = load_reference(reference_path(folder / "model.onnx"))
    for case in reference.cases:
        got = model.run(case.feeds)["output"]
        tolerance = 0.05 if "int8" in file_name else 1e-4
        np.testing.assert_allclose(got, case.outputs["output"], atol=tolerance, rtol=1e-3)


def test_the_old_int8_files_verdict_is_read_and_verify_passes_the_folder(folder):
    int8 = load(folder / "model.int8.onnx")
    verdicts = recorded_verdicts(int8.metadata)
    assert verdicts["ort-cpu-int8"].status == "PASS" and verdicts["ort-cpu-int8"].by == "export"
    assert int8.metadata["judgement"] == "PASS"  # the older form, still in a file written then
    for file_name in ("model.onnx", "model.torchscript.pt"):
        result = ptx("verify", folder / file_name, cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
    result = ptx("verify", folder / "model.onnx", "--against", folder / "model.int8.onnx", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_predict_reads_the_old_files(folder):
    np.save(folder / "x.npy", np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32))
    answers = [ptx("predict", folder / name, folder / "x.npy", "--json", cwd=folder)
               for name in ("model.onnx", "model.torchscript.pt")]
    for result in answers:
        assert result.returncode == 0, result.stdout + result.stderr
    onnx_answer, torchscript_answer = (json.loads(result.stdout)["results"][0]["outputs"]["output"]
                                       for result in answers)
    assert onnx_answer["shape"] == [2, 5] and onnx_answer["argmax"] == torchscript_answer["argmax"]
    np.testing.assert_allclose(onnx_answer["values"], torchscript_answer["values"], atol=1e-5)
