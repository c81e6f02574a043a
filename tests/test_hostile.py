"""Hostile inputs and faults: every one is refused with one clear line and an exit code, and never
damages a good run.

Exit codes: 2 for a usage error or a refused input, file or artifact (one `error:` line on stderr);
1 for `predict` when some inputs failed (one `error:` line each, the good ones still predicted),
for `verify` when a backend disagrees or an artifact fails to load, and for a training run whose
loss becomes non-finite. No case may print a traceback, and files that were there before (a good
checkpoint.pt, model.onnx, metrics.json) must be byte-identical afterwards.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GPU
from ptx.contract.names import BENCH_RECORD_FILE, VERIFY_RECORD_FILE
from images import paper_digit
from ptx.errors import PtxError
from ptx.infer import load
from ptx_command import ptx as run_ptx

TIMEOUT = 120  # seconds: a hang ends the worker (tests/ptx_command.py) instead of blocking the suite
QUICK = ["--dataset", "mnist-sample", "--epochs", "1", "--limit", "200"]
DIABETES_ROW = "6,148,72,35,0,33.6,0.627,50"


# -- helpers -------------------------------------------------------------------------------------------

def ptx(*args, cwd, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """`ptx ARGS` run from ``cwd`` without the suite's shared data folder: each case finds its own data."""
    env = {k: v for k, v in os.environ.items() if k != "PTX_DATA_DIR"}
    return run_ptx(*args, cwd=cwd, env=env, timeout=timeout)


def shown(r) -> str:
    return f"exit {r.returncode}\n--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}"


def error_lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if re.match(r"\s*error", ln, re.IGNORECASE)]


def assert_clean(r, code: int) -> None:
    assert r.returncode == code, shown(r)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, shown(r)


def assert_refused(r, *words: str, code: int = 2) -> str:
    """Exit ``code`` with exactly one `error:` line on stderr that names each of ``words``."""
    assert_clean(r, code)
    errors = error_lines(r)
    assert len(errors) == 1 and errors[0].startswith("error:"), "want ONE line 'error: ...'\n" + shown(r)
    assert not any(ln.startswith("Usage:") for ln in r.stderr.splitlines()), "want one line, not click's usage\n" + shown(r)
    for word in words:
        assert word.lower() in errors[0].lower(), f"the error should name {word!r}\n" + shown(r)
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strict_json(text: str):
    """JSON as the standard defines it: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def copy_run(runs, name: str, root: Path, as_name: str | None = None) -> Path:
    """The trained run as training and export left it: the verdicts and timings another test on this
    worker recorded into the shared run (verify.json, served.json, bench.json) are not copied."""
    dest = root / (as_name or name)
    shutil.copytree(runs.trained(name), dest,
                    ignore=shutil.ignore_patterns(VERIFY_RECORD_FILE, "served.json", BENCH_RECORD_FILE))
    return dest


def digit_png(runs, path: Path) -> Path:
    x, _ = runs.test_samples("convnet", 1)
    paper_digit(x[0]).save(path)
    return path


@pytest.fixture
def run_root(runs, tmp_path) -> Path:
    """A private runs root holding a copy of the trained convnet run (safe to break)."""
    copy_run(runs, "convnet", tmp_path / "runs")
    return tmp_path / "runs"


# -- 1. verify: a present artifact that does not load is a FAIL, never a skip ---------------------------

def _plain_onnx(path: Path) -> None:
    """A valid ONNX model of convnet's shape, made by hand: no ptx metadata at all."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    w = numpy_helper.from_array(np.zeros((784, 10), np.float32), "W")
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["flat"]),
                               helper.make_node("MatMul", ["flat", "W"], ["logits"])], "plain", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _plain_torchscript(path: Path, extra_files: dict | None = None) -> None:
    """convnet's own module saved with torch.jit.save: no ptx.json extra file, or ``extra_files``."""
    from ptx.models import get

    torch.jit.save(torch.jit.trace(get("convnet").build().eval(), torch.zeros(2, 1, 28, 28)), str(path),
                   _extra_files=extra_files or {})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BROKEN_ARTIFACTS = {  # case -> (backend, file, how to break it, a word the failure must name)
    "onnx-truncated": ("ort-cpu", "model.onnx", lambda p, runs: _truncate(p), "model.onnx"),
    "onnx-random-bytes": ("ort-cpu", "model.onnx",
                          lambda p, runs: p.write_bytes(np.random.default_rng(0).bytes(50_000)), "model.onnx"),
    "onnx-without-ptx-metadata": ("ort-cpu", "model.onnx", lambda p, runs: _plain_onnx(p), "model.onnx"),
    "onnx-of-lstm": ("ort-cpu", "model.onnx",
                     lambda p, runs: shutil.copy(runs.trained("lstm") / "model.onnx", p), "lstm"),
    "torchscript-without-ptx.json": ("torchscript", "model.torchscript.pt", lambda p, runs: _plain_torchscript(p),
                                     "model.torchscript.pt"),
    "torchscript-ptx.json-a-list": ("torchscript", "model.torchscript.pt",
                                    lambda p, runs: _plain_torchscript(p, {"ptx.json": "[1, 2]"}), "JSON object"),
}


@pytest.mark.parametrize("case", list(BROKEN_ARTIFACTS))
def test_verify_an_artifact_that_fails_to_load_is_a_fail_not_a_skip(runs, run_root, tmp_path, case):
    backend, file_name, breaker, named = BROKEN_ARTIFACTS[case]
    breaker(run_root / "convnet" / file_name, runs)
    before = snapshot(run_root / "convnet")
    r = ptx("verify", "convnet", "--root", run_root, "--samples", "20", "--backends", f"eager,{backend}", cwd=tmp_path)
    assert_clean(r, 1)
    lines = r.stdout.splitlines()
    assert not any(re.match(rf"{backend}\s+skipped", ln) for ln in lines), "a broken artifact is never 'skipped'\n" + shown(r)
    assert any(ln.startswith(f"{backend} (cpu)") and "FAIL" in ln and named in ln for ln in lines), \
        f"want a FAIL line for {backend} naming {named}\n" + shown(r)
    assert r.stdout.splitlines()[-1].startswith(f"DISAGREE: {backend}"), shown(r)
    # Verify adds its own record of the verdicts (serve's backend choice reads it) and touches
    # nothing else: the failed row is recorded as failed, so nothing will pick that artifact.
    after = snapshot(run_root / "convnet")
    record = after.pop(VERIFY_RECORD_FILE)
    assert after == before and record
    rows = json.loads((run_root / "convnet" / VERIFY_RECORD_FILE).read_text())["rows"]
    assert [row["status"] for row in rows.values() if row["backend"] == backend] == ["FAIL"], rows
    from ptx.infer.model.records import verified
    assert not any(row["backend"] == backend for row in verified(run_root / "convnet").values())


def test_verify_json_reports_a_truncated_onnx_as_a_failed_verdict(run_root, tmp_path):
    _truncate(run_root / "convnet" / "model.onnx")
    r = ptx("verify", "convnet", "--root", run_root, "--samples", "20", "--backends", "eager,ort-cpu", "--json",
            cwd=tmp_path)
    assert_clean(r, 1)
    doc = strict_json(r.stdout)
    verdict = next(v for v in doc["rows"] if v["backend"] == "ort-cpu")
    assert not verdict["ok"] and "model.onnx" in " ".join(verdict["failures"]) and "ort-cpu" not in doc["skipped"]
    assert doc["ok"] is False


@pytest.mark.parametrize("option,value", [("--atol", "nan"), ("--rtol", "nan"), ("--atol", "inf"), ("--atol", "-1"),
                                          ("--rtol", "inf"), ("--rtol", "-0.5")])
def test_verify_refuses_a_tolerance_that_is_not_a_finite_non_negative_number(runs, tmp_path, option, value):
    r = ptx("verify", "convnet", "--root", runs.ready("convnet"), "--samples", "20", f"{option}={value}", cwd=tmp_path)
    assert_refused(r, option.lstrip("-"))


@pytest.mark.skipif(GPU, reason="checks the skip on a machine without a GPU; this one has one")
def test_verify_skips_ort_cuda_with_its_reason_when_there_is_no_gpu(runs, tmp_path):
    r = ptx("verify", "convnet", "--root", runs.ready("convnet"), "--samples", "20", "--backends",
            "eager,ort-cpu,ort-cuda", "--json", cwd=tmp_path)
    assert_clean(r, 0)
    doc = strict_json(r.stdout)
    assert doc["ok"] and len(doc["skipped"].get("ort-cuda", "")) > 10, shown(r)
    assert all(v["backend"] != "ort-cuda" for v in doc["rows"])


@pytest.mark.parametrize("args", [["--backends", "eager,bogus"], ["--samples", "0"], ["--batch-sizes", "0"],
                                  ["--batch-sizes", "1,x"], ["--batch-sizes", "-7"]],
                         ids=["unknown-backend", "samples-0", "batch-0", "batch-not-int", "batch-negative"])
def test_verify_refuses_bad_options_in_one_line(runs, tmp_path, args):
    r = ptx("verify", "convnet", "--root", runs.ready("convnet"), *args, cwd=tmp_path)
    assert_refused(r)


def test_verify_with_no_run_says_what_to_run(tmp_path):
    (tmp_path / "empty").mkdir()
    r = ptx("verify", "convnet", "--root", tmp_path / "empty", cwd=tmp_path)
    assert_refused(r, "ptx train convnet")


# -- 2. numbers are checked where they enter ------------------------------------------------------------

@pytest.mark.parametrize("lr", ["nan", "inf", "-inf", "-1", "0", "1e999"])
def test_train_refuses_a_learning_rate_that_is_not_a_positive_finite_number(run_root, tmp_path, lr):
    before = snapshot(run_root / "convnet")
    r = ptx("train", "convnet", *QUICK, f"--lr={lr}", "--out", run_root / "convnet", cwd=tmp_path)
    assert_refused(r, "lr")
    assert snapshot(run_root / "convnet") == before


@pytest.mark.parametrize("option,value", [("--epochs", "0"), ("--batch-size", "0"), ("--limit", "0"),
                                          ("--limit", "-3"), ("--epochs", "ten")])
def test_train_refuses_counts_that_are_not_positive_integers(run_root, tmp_path, option, value):
    before = snapshot(run_root / "convnet")
    r = ptx("train", "convnet", "--dataset", "mnist-sample", f"{option}={value}", "--out", run_root / "convnet",
            cwd=tmp_path)
    assert_refused(r, option.lstrip("-"))
    assert snapshot(run_root / "convnet") == before


@pytest.mark.parametrize("args", [["--opset", "99"], ["--opset", "5"], ["--opset", "40", "--exporter", "legacy"]],
                         ids=["opset-99", "opset-5", "opset-40-legacy"])
def test_export_refuses_an_opset_outside_what_onnx_supports_and_writes_nothing(run_root, tmp_path, args):
    folder = run_root / "convnet"
    before = snapshot(folder)
    r = ptx("export", "convnet", "--checkpoint", folder / "checkpoint.pt", *args, cwd=tmp_path)
    assert_refused(r, "opset")
    assert snapshot(folder) == before


@pytest.mark.parametrize("atol", ["nan", "inf", "-1"])
def test_export_refuses_a_tolerance_that_is_not_a_finite_non_negative_number(run_root, tmp_path, atol):
    folder = run_root / "convnet"
    before = snapshot(folder)
    r = ptx("export", "convnet", "--checkpoint", folder / "checkpoint.pt", f"--atol={atol}", cwd=tmp_path)
    assert_refused(r, "atol")
    assert snapshot(folder) == before


# -- 3. training never makes a good run worse -----------------------------------------------------------

@pytest.mark.parametrize("name,args", [("convnet", [*QUICK, "--lr", "1e30"]), ("linreg", ["--epochs", "2", "--lr", "1e10"])])
def test_a_diverging_run_exits_1_naming_epoch_and_batch_and_keeps_the_good_run(runs, tmp_path, name, args):
    folder = copy_run(runs, name, tmp_path / "runs")
    before = snapshot(folder)
    r = ptx("train", name, *args, "--out", folder, "--overwrite", cwd=tmp_path)
    line = assert_refused(r, "epoch", "batch", code=1)
    assert re.search(r"epoch \d+", line) and re.search(r"batch \d+", line), shown(r)
    assert snapshot(folder) == before, "a diverged run replaced the good checkpoint/metrics"


# -- 4. nothing overwrites another model's files --------------------------------------------------------

def test_train_refuses_another_models_run_folder(run_root, tmp_path):
    folder = run_root / "convnet"
    before = snapshot(folder)
    r = ptx("train", "lstm", *QUICK, "--out", folder, cwd=tmp_path)
    assert_refused(r, "convnet")
    assert snapshot(folder) == before


def test_train_into_another_models_folder_with_force_replaces_it(run_root, tmp_path):
    folder = run_root / "convnet"
    r = ptx("train", "lstm", *QUICK, "--out", folder, "--force", cwd=tmp_path)
    assert_clean(r, 0)
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["model"] == "lstm"


def test_export_refuses_to_replace_another_models_artifacts(runs, run_root, tmp_path):
    folder = run_root / "convnet"
    before = snapshot(folder)
    r = ptx("export", "lstm", "--checkpoint", runs.trained("lstm") / "checkpoint.pt", "--out", folder, cwd=tmp_path)
    assert_refused(r, "convnet")
    assert snapshot(folder) == before


def test_export_into_another_models_folder_with_force_replaces_it(runs, run_root, tmp_path):
    folder = run_root / "convnet"
    r = ptx("export", "lstm", "--format", "torchscript", "--checkpoint", runs.trained("lstm") / "checkpoint.pt",
            "--out", folder, "--force", cwd=tmp_path)
    assert_clean(r, 0)
    assert load(folder / "model.torchscript.pt").contract.model == "lstm"


@pytest.mark.parametrize("backend,file_name", [("ort-cpu", "model.onnx"), ("torchscript", "model.torchscript.pt"),
                                               ("eager", "checkpoint.pt")])
def test_predict_refuses_an_artifact_that_holds_another_model(runs, run_root, tmp_path, backend, file_name):
    shutil.copy(runs.trained("lstm") / file_name, run_root / "convnet" / file_name)
    digit = digit_png(runs, tmp_path / "d.png")
    r = ptx("predict", digit, "--model", "convnet", "--backend", backend, "--root", run_root, cwd=tmp_path)
    assert_refused(r, "lstm")
    assert r.stdout.strip() == "", "nothing may be predicted through another model's artifact\n" + shown(r)


def test_bench_refuses_an_artifact_that_holds_another_model(runs, run_root, tmp_path):
    shutil.copy(runs.trained("lstm") / "model.onnx", run_root / "convnet" / "model.onnx")
    r = ptx("bench", "convnet", "--root", run_root, "--backends", "ort-cpu", "--batch-sizes", "1", "--seconds", "0.05",
            "--warmup", "1", cwd=tmp_path)
    assert_refused(r, "lstm")


# -- 5. data is validated where it is read --------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def idx_folder(folder: Path, n_train=30, n_test=10, **override) -> Path:
    """A small MNIST in IDX files; ``override`` replaces an array (or the raw bytes) of one file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 255, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 255, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for stem, array in arrays.items():
        value = override.get(stem.replace("-", "_"), array)
        if isinstance(value, bytes):
            (folder / f"{stem}.gz").write_bytes(value)
        else:
            write_idx(folder / f"{stem}.gz", value)
    return folder


def _labels_with(n, bad):
    labels = np.random.default_rng(1).integers(0, 10, n)
    labels[3] = bad
    return labels


IDX_CASES = {  # case -> (overrides, extra CLI args, the file the error must name)
    "label-200": (dict(train_labels_idx1_ubyte=_labels_with(30, 200)), [], "train-labels-idx1-ubyte"),
    "images-32x32": (dict(train_images_idx3_ubyte=np.zeros((30, 32, 32))), [], "train-images-idx3-ubyte"),
    "zero-images": (dict(train_images_idx3_ubyte=np.zeros((0, 28, 28)), train_labels_idx1_ubyte=np.zeros(0)), [],
                    "train-"),
    "corrupt-gz": (dict(train_images_idx3_ubyte=b"\x1f\x8b\x08\x00" + bytes(range(200))), [], "train-images-idx3-ubyte"),
    "count-mismatch": (dict(train_labels_idx1_ubyte=np.zeros(29)), [], "train-"),
    "count-mismatch-with-limit": (dict(train_labels_idx1_ubyte=np.zeros(29)), ["--limit", "10"], "train-"),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_train_refuses_bad_idx_files_naming_the_file(tmp_path, case):
    overrides, extra, named = IDX_CASES[case]
    data = idx_folder(tmp_path / "mnist", **overrides)
    out = tmp_path / "out"
    r = ptx("train", "convnet", "--dataset", "mnist", "--data-dir", data, "--epochs", "1", *extra, "--out", out,
            cwd=tmp_path)
    assert_refused(r, named)
    assert not (out / "checkpoint.pt").exists()


def test_train_on_good_idx_files_works(tmp_path):
    """The control for the IDX cases above: the same folder, unbroken, trains."""
    data = idx_folder(tmp_path / "mnist")
    r = ptx("train", "convnet", "--dataset", "mnist", "--data-dir", data, "--epochs", "1", "--out", tmp_path / "out",
            cwd=tmp_path)
    assert_clean(r, 0)
    assert (tmp_path / "out" / "checkpoint.pt").is_file()


def pima_rows(n=768) -> list[str]:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.integers(0, 15, n), rng.integers(50, 200, n), rng.integers(40, 110, n),
                         rng.integers(0, 60, n), rng.integers(0, 400, n), rng.uniform(18, 50, n).round(1),
                         rng.uniform(0.08, 2.4, n).round(3), rng.integers(21, 80, n)])
    y = (x[:, 1] > 130).astype(int)
    return [",".join(f"{v:g}" for v in row) + f",{label}" for row, label in zip(x, y)]


PIMA_HEADER = "Pregnancies,Glucose,BloodPressure,SkinThickness,Insulin,BMI,DiabetesPedigreeFunction,Age,Outcome"


def _replace_row(rows, index, row):
    rows = list(rows)
    rows[index] = row
    return rows


DIABETES_BAD = {  # case -> the bytes of diabetes.csv
    "text-values": "\n".join(_replace_row(pima_rows(), 5, "six,148,72,35,0,33.6,0.627,50,1")).encode(),
    "5-columns": "\n".join(",".join(r.split(",")[:5]) for r in pima_rows()).encode(),
    "empty": b"",
    "latin-1-bytes": "\n".join(_replace_row(pima_rows(), 7, "6,148,72,35,0,33.6,0.627,50é,1")).encode("latin-1"),
    "binary-garbage": np.random.default_rng(5).bytes(4096),
}


@pytest.mark.parametrize("case", list(DIABETES_BAD))
def test_train_diabetes_refuses_a_bad_csv_in_one_line(tmp_path, case):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "diabetes.csv").write_bytes(DIABETES_BAD[case])
    r = ptx("train", "diabetes", "--data-dir", tmp_path / "data", "--epochs", "1", "--out", tmp_path / "out",
            cwd=tmp_path)
    assert_refused(r, "diabetes.csv")
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("case", ["header-row", "bom-no-header"])
def test_train_diabetes_reads_every_row_of_a_good_csv(tmp_path, case):
    rows = pima_rows()
    text = {"header-row": PIMA_HEADER + "\n" + "\n".join(rows) + "\n",
            "bom-no-header": "\ufeff" + "\n".join(rows) + "\n"}[case]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "diabetes.csv").write_bytes(text.encode("utf-8"))
    r = ptx("train", "diabetes", "--data-dir", tmp_path / "data", "--epochs", "1", "--out", tmp_path / "out",
            cwd=tmp_path)
    assert_clean(r, 0)
    assert "768 rows" in r.stdout, "every row must be kept (none taken for a header)\n" + shown(r)


def test_predict_diabetes_csv_with_a_bom_and_no_header_predicts_every_row(runs, tmp_path):
    rows = pima_rows(5)
    patients = tmp_path / "patients.csv"
    patients.write_bytes(("\ufeff" + "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n").encode("utf-8"))
    r = ptx("predict", "--model", "diabetes", patients, "--root", runs.ready("diabetes"), cwd=tmp_path)
    assert_clean(r, 0)
    assert len(r.stdout.splitlines()) == 5, "each of the 5 rows must be predicted\n" + shown(r)


@pytest.mark.parametrize("bad", ["6,nan,72,35,0,33.6,0.627,50", "6,148,NaN,35,0,33.6,0.627,50",
                                 "6,148,72,inf,0,33.6,0.627,50", "6,148,72,35,0,33.6,0.627"],
                         ids=["nan", "NaN", "inf", "7-values"])
def test_predict_diabetes_a_bad_row_is_an_input_error_and_the_rest_are_predicted(runs, tmp_path, bad):
    patients = tmp_path / "patients.csv"
    patients.write_text(f"{DIABETES_ROW}\n{bad}\n{DIABETES_ROW}\n")
    r = ptx("predict", "--model", "diabetes", patients, "--root", runs.ready("diabetes"), cwd=tmp_path)
    line = assert_refused(r, code=1)
    lines = r.stdout.splitlines()
    assert len(lines) == 2, shown(r)
    assert not any(re.search(r"nan|inf", ln.split("\t", 1)[-1], re.IGNORECASE) for ln in lines), shown(r)
    if "nan" in bad.lower():
        assert "NaN" in line, shown(r)


# -- 6. files: FIFOs, unwritable places, a full disk ----------------------------------------------------

@pytest.mark.parametrize("fifo_name", ["pipe.png", "pipe"])
def test_predict_a_fifo_returns_promptly_naming_it(runs, tmp_path, fifo_name):
    fifo = tmp_path / fifo_name
    os.mkfifo(fifo)
    digit = digit_png(runs, tmp_path / "d.png")
    start = time.monotonic()
    r = ptx("predict", fifo, digit, "--root", runs.ready("convnet"), cwd=tmp_path, timeout=60)
    assert time.monotonic() - start < 60
    assert_refused(r, fifo_name, code=1)
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith(str(digit)), shown(r)


def test_predict_diabetes_a_fifo_csv_returns_promptly_naming_it(runs, tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    r = ptx("predict", "--model", "diabetes", fifo, DIABETES_ROW, "--root", runs.ready("diabetes"), cwd=tmp_path,
            timeout=60)
    assert_refused(r, "pipe.csv", code=1)
    assert len(r.stdout.splitlines()) == 1, shown(r)


def _digit_folder(runs, folder: Path, fifo: str | None) -> Path:
    folder.mkdir()
    x, y = runs.test_samples("convnet", 6)
    rows = ["file,label"]
    for i in range(6):
        Image.fromarray(x[i]).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{y[i]}")
    if fifo:
        os.mkfifo(folder / fifo)
        rows.append(f"{fifo},3")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_folder_dataset_refuses_a_fifo_listed_in_labels_csv_without_hanging(runs, tmp_path):
    folder = _digit_folder(runs, tmp_path / "digits", fifo="pipe.png")
    r = ptx("train", "convnet", "--dataset", f"folder:{folder}", "--epochs", "1", "--out", tmp_path / "out",
            cwd=tmp_path, timeout=60)
    assert_refused(r, "pipe.png")
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_folder_dataset_whose_labels_csv_is_a_fifo_is_refused_without_hanging(runs, tmp_path):
    folder = _digit_folder(runs, tmp_path / "digits", fifo=None)
    (folder / "labels.csv").unlink()
    os.mkfifo(folder / "labels.csv")
    r = ptx("train", "convnet", "--dataset", f"folder:{folder}", "--epochs", "1", "--out", tmp_path / "out",
            cwd=tmp_path, timeout=60)
    assert_refused(r, "labels.csv")


def test_verify_save_inputs_under_a_regular_file_is_one_line(runs, tmp_path):
    (tmp_path / "somefile").write_text("a regular file")
    target = tmp_path / "somefile" / "inputs.npz"
    r = ptx("verify", "convnet", "--root", runs.ready("convnet"), "--samples", "20", "--backends", "eager",
            "--save-inputs", target, cwd=tmp_path)
    assert_refused(r)
    assert (tmp_path / "somefile").read_text() == "a regular file"


def test_train_out_under_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "somefile").write_text("x")
    r = ptx("train", "convnet", *QUICK, "--out", tmp_path / "somefile" / "run", cwd=tmp_path)
    assert_refused(r, "somefile")


@pytest.fixture
def tiny_disk(tmp_path):
    """mount(size) -> a fresh folder on a tmpfs of that size (root only), unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tiny{len(mounted)}"
        point.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("the disk-full cases mount a small tmpfs, which needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()}); the disk-full cases need one")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _no_half_files(folder: Path) -> None:
    if not folder.exists():  # a run folder that a failed train made is removed while empty: nothing is left
        return
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert not leftovers, f"half-written files left behind: {leftovers}"


def test_training_onto_a_full_disk_is_one_line_and_leaves_no_half_file(tiny_disk, tmp_path):
    disk = tiny_disk("200k")
    r = ptx("train", "convnet", *QUICK, "--out", disk / "run", cwd=tmp_path)
    assert_refused(r, "no space left")
    assert not (disk / "run" / "checkpoint.pt").exists()
    _no_half_files(disk / "run")


def test_training_onto_a_full_disk_keeps_the_good_run_there(runs, tiny_disk, tmp_path):
    good = runs.trained("convnet")
    # Room for the good run, not for a second checkpoint beside it (sized from the checkpoint,
    # which holds int8 calibration samples as well as weights).
    disk = tiny_disk(f"{(good / 'checkpoint.pt').stat().st_size * 3 // 2 // 1024}k")
    (disk / "run").mkdir()
    for name in ("checkpoint.pt", "metrics.json"):
        shutil.copy(good / name, disk / "run" / name)
    before = snapshot(disk / "run")
    r = ptx("train", "convnet", *QUICK, "--out", disk / "run", "--overwrite", cwd=tmp_path)
    assert_refused(r, "no space left")
    assert snapshot(disk / "run") == before


def test_export_onto_a_full_disk_is_one_line_and_leaves_no_half_file(runs, tiny_disk, tmp_path):
    disk = tiny_disk("150k")
    r = ptx("export", "convnet", "--checkpoint", runs.trained("convnet") / "checkpoint.pt", "--out", disk,
            cwd=tmp_path)
    assert_refused(r, "no space left")
    _no_half_files(disk)
    if (disk / "model.onnx").exists():  # what was renamed into place is whole
        assert load(disk / "model.onnx").contract.model == "convnet"
    assert not (disk / "model.torchscript.pt").exists()



def test_a_module_exported_onto_a_full_disk_is_one_line_and_leaves_no_half_folder(tiny_disk):
    """export_module builds its folder under a temporary name (atomic_folder): a disk that fills while a
    file is written (the ONNX file, on the writer's thread; a TorchScript ptx.json replaced in place) was
    the OSError's traceback, where a tutorial model's file (atomic_path) says it in one line."""
    from ptx.export.module import export_module

    disk = tiny_disk("300k")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 1100)).eval()  # two files of 215 KB
    with pytest.raises(PtxError, match="No space left on device") as caught:
        export_module(module, (torch.rand(2, 3, 4, 4),), disk / "out", formats=["onnx", "torchscript"],
                      log=lambda _: None)
    assert "\n" not in str(caught.value)
    assert not list(disk.iterdir())

def test_a_module_exported_onto_a_mount_point_or_through_a_link_lands_in_that_folder(tiny_disk, tmp_path):
    """--out a volume's mount point (docker run -v ...:/out) cannot be renamed: the export fills it in place, an
    older export's files replaced and the ones it no longer writes removed, where it failed with a traceback after
    all its work ("Device or resource busy"). --out a link to a folder: the files land in that folder and the link
    stays (it was replaced by a folder, a temporary link left beside it); a link to nothing is one line."""
    from ptx.export.module import export_module

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3)).eval()
    example = (torch.rand(2, 3, 4, 4),)
    volume = tiny_disk("20m")
    export_module(module, example, volume, name="net", formats=["onnx", "torchscript"], log=lambda _: None)
    export_module(module, example, volume, name="net", formats=["onnx"], log=lambda _: None)
    assert os.path.ismount(volume) and sorted(p.name for p in volume.iterdir()) == ["model.onnx", "model.reference.npz"]
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    export_module(module, example, link, name="net", formats=["onnx"], log=lambda _: None)
    assert link.is_symlink() and (real / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "tiny0"]  # nothing more beside them
    (tmp_path / "nowhere").symlink_to(tmp_path / "gone")
    with pytest.raises(PtxError, match="is a link to .*gone, which is no folder: make that folder") as caught:
        export_module(module, example, tmp_path / "nowhere", name="net", formats=["onnx"], log=lambda _: None)
    assert "\n" not in str(caught.value)


# -- 7. images people have ------------------------------------------------------------------------------

def _float_tiff(path, bad):
    x = np.zeros((64, 64), np.float32)
    x[20:44, 28:36] = 255.0
    x[30, 30] = bad
    Image.fromarray(x, mode="F").save(path)


def _transparent_png(path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[20:44, 28:36, :3] = 255  # a stroke in the colour channels, but alpha 0 everywhere
    Image.fromarray(rgba, "RGBA").save(path)


def _animated_gif(path):
    frames = [Image.new("L", (40, 40), c) for c in (0, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _truncated_png(path, runs):
    digit_png(runs, path)
    path.write_bytes(path.read_bytes()[:120])


BAD_IMAGES = {  # case -> (file name, maker)
    "float-tiff-nan": ("nan.tif", lambda p, runs: _float_tiff(p, np.nan)),
    "float-tiff-inf": ("inf.tif", lambda p, runs: _float_tiff(p, np.inf)),
    "fully-transparent": ("clear.png", lambda p, runs: _transparent_png(p)),
    "blank-white": ("white.png", lambda p, runs: Image.new("L", (64, 64), 255).save(p)),
    "blank-black": ("black.png", lambda p, runs: Image.new("L", (64, 64), 0).save(p)),
    "empty-file": ("empty.png", lambda p, runs: p.write_bytes(b"")),
    "truncated-png": ("cut.png", _truncated_png),
    "text-as-png": ("text.png", lambda p, runs: p.write_text("not a picture")),
    "1x1": ("dot.png", lambda p, runs: Image.new("L", (1, 1), 0).save(p)),
    "48-megapixels": ("huge.png", lambda p, runs: Image.new("1", (8000, 6000), 1).save(p)),
    "animated-gif": ("anim.gif", lambda p, runs: _animated_gif(p)),
    "missing": ("missing.png", lambda p, runs: None),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_predict_a_bad_image_is_one_error_line_and_the_good_one_is_still_predicted(runs, tmp_path, case):
    file_name, maker = BAD_IMAGES[case]
    maker(tmp_path / file_name, runs)
    digit = digit_png(runs, tmp_path / "good.png")
    r = ptx("predict", tmp_path / file_name, digit, "--root", runs.ready("convnet"), cwd=tmp_path)
    assert_refused(r, file_name, code=1)
    assert len(r.stdout.splitlines()) == 1 and r.stdout.startswith(str(digit)), shown(r)


def test_file_names_with_tabs_and_newlines_give_one_line_each(runs, tmp_path):
    names = ["tab\there.png", "new\nline.png", "carriage\rreturn.png", "plain.png"]
    paths = [digit_png(runs, tmp_path / n) for n in names]
    r = ptx("predict", *paths, "--root", runs.ready("convnet"), cwd=tmp_path)
    assert_clean(r, 0)
    lines = r.stdout.split("\n")[:-1]
    assert len(lines) == len(names), shown(r)
    assert all(len(ln.split("\t")) == 3 for ln in lines), "a name must not add fields\n" + shown(r)


def test_a_missing_file_with_a_newline_in_its_name_is_one_error_line(runs, tmp_path):
    digit = digit_png(runs, tmp_path / "good.png")
    r = ptx("predict", tmp_path / "no\nsuch.png", digit, "--root", runs.ready("convnet"), cwd=tmp_path)
    assert_refused(r, "such.png", code=1)
    assert len(r.stderr.strip().splitlines()) == 1, shown(r)


# -- 8. --json always parses --------------------------------------------------------------------------

def test_predict_rnn_hello_json(runs, tmp_path):
    r = ptx("predict", "--model", "rnn-hello", "hello", "hell", "--json", "--root", runs.ready("rnn-hello"), cwd=tmp_path)
    assert_clean(r, 0)
    doc = strict_json(r.stdout)
    assert [x["input"] for x in doc["results"]] == ["hello", "hell"] and doc["errors"] == []


JSON_CASES = {  # case -> (model, inputs, how many of them are bad)
    "convnet-good-and-bad": ("convnet", ["@good", "@missing.png", "@white"], 2),
    "tab-and-newline-names": ("convnet", ["@tab\tname", "@new\nname"], 0),
    "diabetes-nan-row": ("diabetes", [DIABETES_ROW, "6,nan,72,35,0,33.6,0.627,50"], 1),
    "linreg-huge": ("linreg", ["1e308", "0.5"], None),
    "linreg-nan-inf": ("linreg", ["nan", "inf", "0.5"], 2),
    "rnn-hello-foreign-letters": ("rnn-hello", ["hello", "xyz", ""], 2),
    "gru-odd-words": ("gru-classifier", ["bonjour", "", "日本語", "a" * 500], None),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_predict_json_always_parses_and_accounts_for_every_input(runs, tmp_path, case):
    model, inputs, n_bad = JSON_CASES[case]
    args = []
    for item in inputs:
        if item.startswith("@"):  # a picture file made here
            path = tmp_path / (item[1:] if item.endswith(".png") else item[1:] + ".png")
            if item == "@white":
                Image.new("L", (64, 64), 255).save(path)
            elif item != "@missing.png":
                digit_png(runs, path)
            item = str(path)
        args.append(item)
    r = ptx("predict", "--model", model, "--json", "--root", runs.ready(model), "--", *args, cwd=tmp_path)
    assert "Traceback" not in r.stderr, shown(r)
    doc = strict_json(r.stdout)
    assert len(doc["results"]) + len(doc["errors"]) == len(args), shown(r)
    if n_bad is not None:
        assert len(doc["errors"]) == n_bad, shown(r)
    assert r.returncode == (1 if doc["errors"] else 0), shown(r)
    assert len(error_lines(r)) == len(doc["errors"]), shown(r)


def test_bench_and_models_json_parse(runs, tmp_path):
    r = ptx("bench", "convnet", "--root", runs.ready("convnet"), "--backends", "ort-cpu", "--batch-sizes", "1",
            "--seconds", "0.05", "--warmup", "1", "--json", cwd=tmp_path)
    assert_clean(r, 0)
    assert strict_json(r.stdout)["rows"]
    r = ptx("models", "--json", cwd=tmp_path)
    assert_clean(r, 0)
    assert len(strict_json(r.stdout)) >= 17


# -- bench and predict options ----------------------------------------------------------------------------

@pytest.mark.parametrize("option,value,named", [("--seconds", "inf", "seconds"), ("--seconds", "nan", "seconds"),
                                                ("--batch-sizes", "0", "batch"), ("--backends", "bogus", "bogus"),
                                                ("--warmup", "-1", "warmup")],
                         ids=["seconds-inf", "seconds-nan", "batch-0", "unknown-backend", "warmup-negative"])
def test_bench_refuses_bad_options_in_one_line_without_hanging(runs, tmp_path, option, value, named):
    base = {"--seconds": "0.05", "--batch-sizes": "1", "--backends": "ort-cpu", "--warmup": "1", option: value}
    r = ptx("bench", "convnet", "--root", runs.ready("convnet"), *[f"{k}={v}" for k, v in base.items()],
            cwd=tmp_path, timeout=60)
    assert_refused(r, named)


def test_bench_refuses_a_truncated_onnx_in_one_line(run_root, tmp_path):
    _truncate(run_root / "convnet" / "model.onnx")
    r = ptx("bench", "convnet", "--root", run_root, "--backends", "ort-cpu", "--batch-sizes", "1", "--seconds", "0.05",
            cwd=tmp_path)
    assert_refused(r, "model.onnx")


@pytest.mark.parametrize("case", ["topk-0", "unknown-model", "missing-artifact", "truncated-artifact", "root-is-a-file"])
def test_predict_usage_errors_are_one_line(runs, run_root, tmp_path, case):
    digit = digit_png(runs, tmp_path / "d.png")
    (tmp_path / "somefile").write_text("x")
    _truncate(run_root / "convnet" / "model.onnx")
    args = {"topk-0": ["--topk", "0", "--root", runs.ready("convnet")],
            "unknown-model": ["--model", "no-such-model", "--root", runs.ready("convnet")],
            "missing-artifact": ["--artifact", tmp_path / "nope" / "model.onnx"],
            "truncated-artifact": ["--artifact", run_root / "convnet" / "model.onnx"],
            "root-is-a-file": ["--root", tmp_path / "somefile"]}[case]
    r = ptx("predict", digit, *args, cwd=tmp_path)
    assert_refused(r)
    assert r.stdout.strip() == "", shown(r)


# -- 9. the library raises PtxError, never TypeError/ValueError/AssertionError --------------------------

BACKENDS = ("ort-cpu", "torchscript", "eager")
_predictors: dict[str, object] = {}


@pytest.fixture
def predictor(runs, request):
    backend = request.param
    if backend not in _predictors:
        _predictors[backend] = load("convnet", backend=backend, root=runs.ready("convnet"))
    return _predictors[backend]


BAD_LIBRARY_INPUTS = {
    "empty-list": lambda tmp: [],
    "none": lambda tmp: None,
    "float-array-out-of-range": lambda tmp: np.full((28, 28), 7.0),
    "missing-file": lambda tmp: str(tmp / "missing.png"),
    "nan-array": lambda tmp: np.full((28, 28), np.nan),
    "empty-batch": lambda tmp: np.zeros((0, 28, 28), np.uint8),
    "five-channels": lambda tmp: np.zeros((28, 28, 5), np.uint8),
    "1-d-array": lambda tmp: np.zeros(5, np.uint8),
    "complex-array": lambda tmp: np.zeros((28, 28), np.complex64),
    "object": lambda tmp: object(),
    "bytes": lambda tmp: b"\x89PNG\r\n",
    "list-with-a-number": lambda tmp: [np.zeros((28, 28), np.uint8), 3],
}
CORE_INPUTS = ["empty-list", "none", "float-array-out-of-range", "missing-file"]


def _check_ptx_error(call):
    try:
        call()
    except PtxError as exc:
        assert "\n" not in str(exc), f"one line, not: {exc}"
        return
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a bug
        pytest.fail(f"raised {type(exc).__name__} ({exc}), not a PtxError")
    pytest.fail("no error raised")


@pytest.mark.parametrize("predictor", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", CORE_INPUTS)
def test_library_predict_bad_input_raises_ptx_error_on_every_backend(predictor, tmp_path, case):
    _check_ptx_error(lambda: predictor.predict(BAD_LIBRARY_INPUTS[case](tmp_path)))


@pytest.mark.parametrize("predictor", ["ort-cpu"], indirect=True)
@pytest.mark.parametrize("case", [c for c in BAD_LIBRARY_INPUTS if c not in CORE_INPUTS])
def test_library_predict_odd_input_raises_ptx_error(predictor, tmp_path, case):
    _check_ptx_error(lambda: predictor.predict(BAD_LIBRARY_INPUTS[case](tmp_path)))


@pytest.mark.parametrize("predictor", BACKENDS, indirect=True)
def test_library_run_of_the_wrong_shape_raises_ptx_error(predictor):
    _check_ptx_error(lambda: predictor.run(predictor.head.feeds(np.zeros((1, 3, 28, 28), np.float32))))


LOAD_CASES = {
    "int": lambda root, tmp: load(123),
    "none": lambda root, tmp: load(None),
    "bogus-device": lambda root, tmp: load("convnet", device="bogus", root=root),
    "bogus-backend": lambda root, tmp: load("convnet", backend="bogus", root=root),
    "unknown-model": lambda root, tmp: load("no-such-model", root=root),
    # A run folder is a target (load("runs/convnet") works like --run); any other folder is refused.
    "a-folder": lambda root, tmp: load(tmp),
    "random-bytes-onnx": lambda root, tmp: load(_write(tmp / "x.onnx", np.random.default_rng(2).bytes(1000))),
    "truncated-torchscript": lambda root, tmp: load(_write(tmp / "model.torchscript.pt",
                                                          (root / "convnet" / "model.torchscript.pt").read_bytes()[:5000])),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_library_load_bad_arguments_raise_ptx_error(runs, tmp_path, case):
    _check_ptx_error(lambda: LOAD_CASES[case](runs.ready("convnet"), tmp_path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_threads_sharing_one_predictor_give_identical_answers(runs, backend):
    predictor = load("convnet", backend=backend, root=runs.ready("convnet"))
    x, _ = runs.test_samples("convnet", 64)
    want = np.stack([r.logits for r in predictor.predict_raw(x)])
    got, errors = [], []

    def work():
        try:
            for _ in range(5):
                got.append(np.stack([r.logits for r in predictor.predict_raw(x)]))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert not errors and len(got) == 40
    assert all(np.array_equal(g, want) for g in got)


# -- 10. checkpoints: damaged, foreign or hostile --------------------------------------------------------

class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _edited_checkpoint(good: Path, path: Path, edit) -> None:
    ckpt = torch.load(good, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)


CHECKPOINT_CASES = {
    "no-samples": lambda c: c.pop("samples"),
    "garbage-contract": lambda c: c.update(contract={"schema_version": "x", "labels": 5, "input": []}),
    "unknown-model-args": lambda c: c.update(model_args={"width": 3}),
    "weights-of-the-wrong-shape": lambda c: c["state_dict"].update({"fc.0.weight": torch.zeros(3, 3)}),
}


@pytest.mark.parametrize("case", [*CHECKPOINT_CASES, "pickle-exploit", "lstm-checkpoint"])
def test_export_refuses_a_bad_checkpoint_and_writes_nothing(runs, run_root, tmp_path, case):
    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    marker = tmp_path / "pwned"
    good = runs.trained("convnet") / "checkpoint.pt"
    if case in CHECKPOINT_CASES:
        _edited_checkpoint(good, bad, CHECKPOINT_CASES[case])
    elif case == "pickle-exploit":
        bad.write_bytes(pickle.dumps({"format": "ptx-checkpoint", "model": "convnet", "x": Exploit(marker)}))
    else:
        shutil.copy(runs.trained("lstm") / "checkpoint.pt", bad)
    out = run_root / "convnet"
    before = snapshot(out)
    r = ptx("export", "convnet", "--checkpoint", bad, "--out", out, cwd=tmp_path)
    assert_refused(r, "lstm" if case == "lstm-checkpoint" else "checkpoint")
    assert snapshot(out) == before, "nothing may be written from a bad checkpoint"
    assert not marker.exists(), "the checkpoint ran code"


# -- 11. verify's real samples cover every class ----------------------------------------------------------

@pytest.mark.parametrize("name", ["gru-classifier"])
def test_verify_real_samples_cover_every_class(runs, tmp_path, name):
    saved = tmp_path / "inputs.npz"
    r = ptx("verify", name, "--root", runs.ready(name), "--samples", "200", "--backends", "eager,ort-cpu", "--json",
            "--save-inputs", saved, cwd=tmp_path)
    assert_clean(r, 0)
    doc = strict_json(r.stdout)
    labels = np.load(saved)["labels"].reshape(-1)
    n_classes = len(load(name, root=runs.ready(name)).labels)
    assert len(labels) == 200
    assert sorted(set(labels.tolist())) == list(range(n_classes)), \
        f"200 real samples of {name} cover only classes {sorted(set(labels.tolist()))}"
    assert doc["rows"][0]["accuracy"] is not None


# -- 12. faults: SIGKILL, concurrency ---------------------------------------------------------------------

@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_sigkill_during_export_keeps_the_good_model_onnx(run_root, tmp_path, delay):
    folder = run_root / "convnet"
    before = snapshot(folder)
    proc = subprocess.Popen([sys.executable, "-m", "ptx", "export", "convnet", "--checkpoint", folder / "checkpoint.pt"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and set(os.listdir(folder)) == set(before) and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the export starts writing (a new, temporary file appears)
        time.sleep(delay)
        if proc.poll() is not None:
            pytest.fail(f"export finished (exit {proc.returncode}) before it could be killed: lower the delay")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = snapshot(folder)
    for name in ("model.onnx", "model.torchscript.pt", "checkpoint.pt", "metrics.json"):
        assert after[name] == before[name], f"{name} changed after SIGKILL"
    assert load(folder / "model.onnx").contract.model == "convnet"


def test_two_concurrent_exports_to_one_folder_leave_valid_artifacts(run_root, tmp_path):
    ckpt = run_root / "convnet" / "checkpoint.pt"
    out = tmp_path / "deploy"
    env = {k: v for k, v in os.environ.items() if k != "PTX_DATA_DIR"}
    procs = [subprocess.Popen([sys.executable, "-m", "ptx", "export", "convnet", "--checkpoint", ckpt, "--out", out],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("a concurrent export hung")
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    for r in results:
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, shown(r)
        if r.returncode == 2:
            assert_refused(r)
    assert any(r.returncode == 0 for r in results), "at least one export must succeed"
    assert load(out / "model.onnx").contract.model == "convnet"
    assert load(out / "model.torchscript.pt").contract.model == "convnet"


# -- other refusals of train ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["unknown-dataset", "resume-without-run"])
def test_train_refusals_are_one_line_and_write_nothing(tmp_path, case):
    out = tmp_path / "out"
    args = {"unknown-dataset": ["convnet", "--dataset", "cifar-1000", "--epochs", "1"],
            "resume-without-run": ["convnet", *QUICK, "--resume"]}[case]
    r = ptx("train", *args, "--out", out, cwd=tmp_path)
    assert_refused(r)
    assert not (out / "checkpoint.pt").exists()
