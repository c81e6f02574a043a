"""The library's and the CLI's rough edges a new user hit (issue 21): each as the user types it."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_hostile_data import ptx_here  # `ptx ARGS` in this process: a subprocess costs a second of imports

from ptx.errors import PtxError


# -- --device is refused where the backend does not run on it, never ignored ----------------------------

CUDA_ON_ORT_CPU = ("backend ort-cpu runs on cpu only, not cuda: --device cuda goes with eager, torchscript, aoti, "
                   "or use --backend ort-cuda, ort-cuda-graph or eager-cuda-graph")


def test_predict_device_cuda_on_the_default_ort_cpu_is_refused_in_one_line(tmp_path):
    result = ptx_here("predict", "x.png", "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {CUDA_ON_ORT_CPU}\n"


def test_library_refuses_a_device_the_backend_does_not_run_on(tmp_path):
    from ptx.infer import load

    with pytest.raises(PtxError, match=f"^{CUDA_ON_ORT_CPU}$"):
        load("convnet", device="cuda", root=tmp_path)
    with pytest.raises(PtxError, match="backend ort-cuda runs on cuda only, not cpu: .* --backend ort-cpu, openvino"):
        load("convnet", backend="ort-cuda", device="cpu", root=tmp_path)


def test_serve_refuses_device_with_backend_auto(tmp_path):
    from ptx.infer.model.target import Target
    from ptx.serve.server import load as serve_load

    with pytest.raises(PtxError, match="--backend auto chooses the device itself"):
        serve_load(None, [Target.of("convnet", root=tmp_path)], backend="auto", precision=None, device="cuda",
                   log=print)


def test_export_device_without_pt2_is_refused(tmp_path):
    result = ptx_here("export", "convnet", "--format", "onnx", "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("error: --device cuda is the device pt2 compiles for; onnx is portable: add --format pt2 "
                             "or drop --device\n")
    triton = ptx_here("export", "convnet", "--format", "triton", "--out", "repo", "--device", "cuda", cwd=tmp_path)
    assert triton.returncode == 2 and "--format triton writes a portable folder: drop --device" in triton.stderr


# -- the library: topk without labels, bytes and file objects, short refusals ---------------------------

@pytest.fixture(scope="module")
def digit(runs, tmp_path_factory) -> Path:
    """A test digit drawn dark on white paper, as a photo of one is."""
    from images import paper_digit

    x, _ = runs.test_samples("convnet", 1)
    path = tmp_path_factory.mktemp("pictures") / "digit.png"
    paper_digit(x[0]).save(path)
    return path


def test_topk_needs_no_labels_passed(runs, digit):
    from ptx.infer import load

    predictor = load("convnet", root=runs.ready("convnet"))
    result = predictor.predict(str(digit))[0]
    top = result.topk(2)
    assert top == result.topk(2, predictor.labels)
    assert [name for name, _ in top][0] == result.label_name and top[0][1] >= top[1][1]


def test_picture_bytes_and_file_objects_predict_as_the_file(runs, digit):
    import io

    from ptx.infer import load

    predictor = load("convnet", root=runs.ready("convnet"))
    data = digit.read_bytes()
    want = predictor.predict(str(digit))[0]
    with open(digit, "rb") as file:
        results = predictor.predict([data, io.BytesIO(data), file])
    assert [r.label for r in results] == [want.label] * 3
    assert [r.source for r in results] == [f"bytes ({len(data):,})", "BytesIO", str(digit)]
    assert predictor.predict(io.BytesIO(data))[0].probability == pytest.approx(want.probability)


@pytest.mark.parametrize("bad", [b"\x00garbage" * 20_000, "not-a-path " * 2_000], ids=["bytes", "text"])
def test_a_refused_input_is_described_not_printed_whole(runs, bad):
    from ptx.errors import InputError
    from ptx.infer import load

    predictor = load("convnet", root=runs.ready("convnet"))
    with pytest.raises(InputError) as caught:
        predictor.predict(bad)
    message = str(caught.value)
    assert len(message) < 200 and "\n" not in message
    assert ("160,000" if isinstance(bad, bytes) else "22,000 characters") in message


def test_text_models_read_bytes_of_text_one_input_per_line(runs):
    import io

    from ptx.infer import load

    linreg = load("linreg", root=runs.ready("linreg"))
    assert [r.source for r in linreg.predict(b"0.5\n1.5\n")] == ["0.5", "1.5"]
    assert linreg.predict(b"0.5")[0].value == pytest.approx(linreg.predict("0.5")[0].value)
    diabetes = load("diabetes", root=runs.ready("diabetes"))
    csv = "pregnant,glucose,pressure,triceps,insulin,mass,pedigree,age\n6,148,72,35,0,33.6,0.627,50\n"
    (result,) = diabetes.predict(io.BytesIO(csv.encode()))
    assert result.source == "6,148,72,35,0,33.6,0.627,50"
    assert result.label_name == diabetes.predict("6,148,72,35,0,33.6,0.627,50")[0].label_name


# -- ptx predict -: one input from standard input -------------------------------------------------------

def test_predict_stdin_reads_a_picture_file(runs, digit, tmp_path):
    root = runs.ready("convnet")
    from_file = ptx_here("predict", digit, "--root", root, cwd=tmp_path)
    from_stdin = ptx_here("predict", "-", "--root", root, cwd=tmp_path, stdin=digit.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout.replace(str(digit), "-")


def test_predict_stdin_reads_text_for_text_models(runs, tmp_path):
    result = ptx_here("predict", "--model", "linreg", "-", "--root", runs.ready("linreg"), cwd=tmp_path,
                      stdin="0.5\n1.5\n")
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["0.5", "1.5"]


def test_predict_stdin_empty_or_twice_is_one_error(runs, tmp_path):
    root = runs.ready("convnet")
    empty = ptx_here("predict", "-", "--root", root, cwd=tmp_path, stdin=b"")
    assert (empty.returncode, empty.stderr) == (1, "error: -: empty (no bytes)\n")
    twice = ptx_here("predict", "-", "-", "--root", root, cwd=tmp_path, stdin=b"")
    assert twice.returncode == 2 and "`-` (standard input) can be read once" in twice.stderr


# -- folders and patterns -------------------------------------------------------------------------------

def test_predict_folder_says_what_it_skipped_and_recursive_reads_subfolders(runs, digit, tmp_path):
    import shutil

    root = runs.ready("convnet")
    (tmp_path / "pics" / "more").mkdir(parents=True)
    (tmp_path / "pics" / "empty").mkdir()
    shutil.copy(digit, tmp_path / "pics" / "a.png")
    shutil.copy(digit, tmp_path / "pics" / "more" / "b.png")
    (tmp_path / "pics" / "notes.txt").write_text("hi")
    flat = ptx_here("predict", "pics", "--root", root, cwd=tmp_path)
    assert flat.returncode == 0, flat.stderr
    assert [line.split("\t")[0] for line in flat.stdout.splitlines()] == [str(Path("pics") / "a.png")]
    assert flat.stderr == ("notice: pics: 1 picture read; skipped 2 subfolders (--recursive reads them) and 1 file "
                           "without a picture suffix (notes.txt)\n")
    deep = ptx_here("predict", "pics", "--recursive", "--root", root, cwd=tmp_path)
    assert [line.split("\t")[0] for line in deep.stdout.splitlines()] == [
        str(Path("pics") / "a.png"), str(Path("pics") / "more" / "b.png")]


def test_a_pattern_that_matches_nothing_says_so(runs, tmp_path):
    (tmp_path / "pics").mkdir()
    result = ptx_here("predict", "pics/*.jpg", "--root", runs.ready("convnet"), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, "error: no file matches pics/*.jpg\n")


# -- export --format pt2 says what it is doing before its long compile ----------------------------------

def test_pt2_export_says_it_is_compiling_before_the_compile(runs, tmp_path, monkeypatch):
    """The compile itself is test_pt2's; here pt2's write stops at once, after the line was logged."""
    import dataclasses

    from ptx.export import formats
    from ptx.export.api import export_model

    def compile_starts(*args, **kwargs):
        log.append("compile started")
        raise PtxError("stopped before compiling")

    pt2 = formats.get("pt2")
    monkeypatch.setitem(formats._REGISTRY.entries, "pt2", dataclasses.replace(pt2, write=compile_starts))
    log: list[str] = []
    with pytest.raises(PtxError, match="stopped before compiling"):
        export_model("convnet", ["pt2"], checkpoint=runs.trained("convnet") / "checkpoint.pt", out=tmp_path,
                     log=log.append)
    assert log[-2].startswith("pt2         torch.export, then AOTInductor compiles C++ for cpu (about 20-40 s")
    assert log[-1] == "compile started"


# -- bench: one ratio, and noisy rows flagged --------------------------------------------------------------

def _rows():
    from ptx.infer.bench.timing import BenchRow, speed_ratio

    ours = BenchRow("ort-cpu", "cpu", 1, 104.0, 110.0, 120.0, 9615.4, 100)
    bare = BenchRow("bare InferenceSession.run (ort-cpu)", "cpu", 1, 100.0, 105.0, 110.0, 10000.0, 100,
                    peer_of="ort-cpu")
    ours.overhead, ours.vs_bare = 1.04, speed_ratio(ours, bare)
    return [ours, bare]


def test_bench_summary_and_row_give_one_ratio_for_the_same_pair():
    from ptx.infer.bench.timing import describe_fastest, fastest, to_text

    rows = _rows()
    (verdict,) = fastest(rows, {"ort-cpu"})
    assert verdict.vs_peer == rows[0].vs_bare == 0.962
    assert "0.96x the fastest bare peer" in describe_fastest([verdict], {})[0]
    assert to_text("convnet", rows, {}).splitlines()[3].endswith("0.96x")


def test_bench_flags_a_row_whose_rounds_disagree():
    import numpy as np

    from ptx.infer.bench.timing import noisy_warning, round_spread

    calm = [np.full(10, 240e-6), np.full(10, 250e-6)]
    busy = [np.full(10, 51_883e-6), np.full(10, 240e-6)]
    assert round_spread(calm) < 1.1 and round_spread(busy) > 200
    rows = _rows()
    assert noisy_warning(rows) is None
    rows[0].round_spread = round(round_spread(busy), 2)
    assert noisy_warning(rows).startswith("1 of 2 rows are noisy, their p50 moving 2x or more between rounds "
                                          "(ort-cpu batch 1 216.2x)")


# -- a confidence threshold marks low-confidence answers ------------------------------------------------

def test_min_confidence_marks_answers_below_it(runs, digit):
    from ptx.errors import InputError
    from ptx.infer import load

    predictor = load("convnet", root=runs.ready("convnet"))
    (plain,) = predictor.predict(str(digit))
    assert not plain.low_confidence
    (above,) = predictor.predict(str(digit), min_confidence=plain.probability)
    (below,) = predictor.predict(str(digit), min_confidence=min(1.0, plain.probability + 1e-6))
    assert not above.low_confidence and below.low_confidence
    assert below.label == plain.label and below.to_dict()["low_confidence"] is True
    with pytest.raises(InputError, match="not a probability"):
        predictor.predict(str(digit), min_confidence=float("nan"))
    linreg = load("linreg", root=runs.ready("linreg"))
    assert not linreg.predict("0.5", min_confidence=0.99)[0].low_confidence  # a value has no probability


def test_predict_min_confidence_shows_a_question_mark(runs, digit, tmp_path):
    import json

    root = runs.ready("convnet")
    result = ptx_here("predict", digit, "--min-confidence", "1", "--root", root, cwd=tmp_path)
    source, label, probability = result.stdout.rstrip("\n").split("\t")
    assert result.returncode == 0 and label.startswith("? (low confidence: ") and float(probability) < 1
    doc = json.loads(ptx_here("predict", digit, "--min-confidence", "0", "--json", "--root", root, cwd=tmp_path).stdout)
    assert doc["results"][0]["low_confidence"] is False
