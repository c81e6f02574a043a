"""Batch scoring (issue 29): streaming predict in input order and bounded memory, files of answers in
each format read back, --resume after a killed run, errors as rows, the faster paper flattening giving
the same samples, and the Ray Data path against `ptx predict`."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from ptx.cli import cli
from ptx.contract import pictures
from ptx.infer import open_artifact
from ptx.infer.predict.stream import CHUNK, IN_FLIGHT_PER_WORKER, Input, stream_answers

ROOT = Path(__file__).resolve().parents[1]
PTX = [sys.executable, "-m", "ptx"]


def _digit_pictures(folder: Path, runs, n: int, size: int = 64) -> list[str]:
    """``n`` test digits drawn dark on white, ``size`` px: what a scanner gives."""
    folder.mkdir(exist_ok=True)
    x, _ = runs.test_samples("convnet", n)
    paths = []
    for i, sample in enumerate(x):
        path = folder / f"d{i:05d}.png"
        Image.fromarray(255 - sample).resize((size, size), Image.Resampling.BILINEAR).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def convnet(runs):
    return runs.trained("convnet")


@pytest.fixture(scope="module")
def folder(convnet, runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "digits"
    _digit_pictures(path, runs, 400)
    return path


def test_answers_stream_in_input_order_with_bounded_memory(convnet):
    """A generator of many inputs: the first answers come out while it has yielded only the chunks in
    flight, and every answer is the one predict() gives, in input order, errors in their place."""
    predictor = open_artifact(convnet / "model.onnx", "ort-cpu")
    rng = np.random.default_rng(0)
    strokes = []
    for _ in range(20):
        a = np.zeros((40, 40), np.uint8)
        r, c = rng.integers(5, 20, 2)
        a[r:r + 15, c:c + 4] = 255
        strokes.append(a)
    pulled = [0]
    n = 800
    workers = 2

    def many():
        for i in range(n):
            pulled[0] += 1
            if i % 97 == 5:
                yield Input(np.zeros((40, 40), np.uint8), f"blank{i}")  # no ink: an error row
            else:
                yield Input(strokes[i % 20], f"s{i}")

    answers = stream_answers(predictor, many(), workers=workers)
    first = next(answers)
    bound = CHUNK * (workers * IN_FLIGHT_PER_WORKER + 1) + 1
    assert pulled[0] <= bound, f"{pulled[0]} inputs read ahead of the first answer (bound {bound})"
    rest = [first]
    for answer in answers:
        rest.append(answer)
        assert pulled[0] - len(rest) <= bound  # never more than the chunks in flight are held
    assert [a.source for a in rest] == [f"blank{i}" if i % 97 == 5 else f"s{i}" for i in range(n)]
    expected = {f"s{i}": p.label for i, p in enumerate(predictor.predict(strokes))}
    for a in rest:
        if a.source.startswith("blank"):
            assert a.prediction is None and "no ink" in a.error
        else:
            assert a.prediction.label == expected[f"s{int(a.source[1:]) % 20}"]


def test_output_in_each_format_reads_back_with_errors_as_rows(convnet, folder, tmp_path):
    root = str(convnet.parent)
    some = sorted(str(p) for p in folder.iterdir())[:5] + [str(tmp_path / "missing.png")]
    runner = CliRunner()
    plain = runner.invoke(cli, ["predict", *some, "--root", root, "--json", "--topk", "2"])
    assert plain.exit_code == 1, plain.output
    expected = json.loads(plain.stdout)
    rows = expected["results"] + expected["errors"]
    rows = sorted(rows, key=lambda r: some.index(r["input"]))
    for suffix in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"answers.{suffix}"
        result = runner.invoke(cli, ["predict", *some, "--root", root, "--output", str(out), "--topk", "2"])
        assert result.exit_code == 1, result.output
        if suffix == "jsonl":
            got = [json.loads(line) for line in out.read_text().splitlines()]
        elif suffix == "csv":
            with open(out, newline="") as fh:
                got = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
            for row in got:
                for key in ("logits", "topk"):
                    if key in row:
                        row[key] = json.loads(row[key])
                if "label" in row:
                    row.update(label=int(row["label"]), probability=float(row["probability"]),
                               low_confidence=row["low_confidence"] == "True")
        else:
            import pyarrow.parquet as pq

            got = [{k: v for k, v in row.items() if v is not None} for row in pq.read_table(out).to_pylist()]
        assert [r["input"] for r in got] == some
        assert got[-1] == {"input": some[-1], "error": f"{some[-1]}: no such file"}
        for want, row in zip(rows[:-1], got[:-1]):
            assert row["label_name"] == want["label_name"] and row["topk"] == want["topk"]
            assert row["probability"] == pytest.approx(want["probability"], rel=1e-12)
            assert np.allclose(row["logits"], want["logits"], rtol=0, atol=0)


@pytest.mark.parametrize("suffix,how", [("jsonl", signal.SIGKILL), ("parquet", signal.SIGTERM),
                                        ("jsonl", signal.SIGINT)])
def test_resume_after_a_killed_run_answers_every_input_once(convnet, folder, tmp_path, suffix, how):
    """A run killed part-way (kill -9 for JSON Lines, with a row cut short; kill for Parquet, which
    closes the open part; Ctrl-C) and then --resume'd holds every input once, with the answers of one
    run. A kill the command sees says how many answers the file keeps, exactly, and that --resume
    goes on from there."""
    root = str(convnet.parent)
    out = tmp_path / f"answers.{suffix}"
    env = {**os.environ, "PTX_PARQUET_PART_ROWS": "16"}
    args = [*PTX, "predict", str(folder), "--root", root, "--output", str(out), "--workers", "0", "-q"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        written = out.is_file() and out.stat().st_size > 0 if suffix == "jsonl" else any(out.glob("part-*.parquet"))
        if written:
            break
        time.sleep(0.05)
    proc.send_signal(how)
    proc.wait(timeout=30)
    if how != signal.SIGKILL:
        said = proc.stderr.read().decode().strip().splitlines()[-1]
        kept = re.fullmatch(rf"interrupted: ([\d,]+) answers are kept in {re.escape(str(out))}; the same command "
                            r"with --resume goes on from there", said)
        assert kept, said
        if suffix == "jsonl":
            held = len(out.read_text().splitlines())
        else:
            import pyarrow.parquet as pq

            held = pq.read_table(out).num_rows
        assert int(kept.group(1).replace(",", "")) == held > 0
    if how == signal.SIGKILL:
        with open(out, "a") as fh:
            fh.write('{"input": "half a ro')  # a write cut short by the kill
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if suffix == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    names = sorted(str(p) for p in folder.iterdir())
    assert sorted(r["input"] for r in rows) == names  # every input, once
    predictor = open_artifact(convnet / "model.onnx", "ort-cpu")
    labels = {a.source: a.prediction.label_name for a in stream_answers(predictor, [Input(n, n) for n in names[:50]])}
    assert {r["input"]: r["label_name"] for r in rows if r["input"] in labels} == labels


def _flatten_paper_by_sliding_windows(gray, window, lit_paper=False):
    """ptx's paper flattening before issue 29 (numpy reductions over sliding windows), kept here as
    the reference the faster one must match."""
    h, w = gray.shape
    scale = min(1.0, pictures.PAPER_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))
    k = max(3, 2 * int(window * max(size) / 2) + 1)
    r = k // 2
    paper = np.pad(small, 2 * r, mode="reflect", reflect_type="odd")
    for rank in (np.min, np.max):
        paper = rank(sliding_window_view(paper, k, axis=0), axis=-1)
        paper = rank(sliding_window_view(paper, k, axis=1), axis=-1)
    paper = Image.fromarray(np.ascontiguousarray(paper, dtype=np.float32), mode="F")
    paper = np.asarray(paper.resize((w, h), Image.Resampling.BILINEAR))
    ink = np.clip(gray - paper, 0, None)
    if lit_paper:
        ink = ink * (255.0 / np.clip(255.0 - paper, 255.0 / pictures.MAX_LIGHT_GAIN, None))
    return ink


def _real_picture_sets():
    spec = importlib.util.spec_from_file_location("real_pictures", ROOT / "scripts" / "real_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found, missing = [], []
    for kind, draw in module.KINDS.items():
        try:
            found += [picture for _, picture in draw(np.random.default_rng(29), 4)]
        except SystemExit as why:  # a font package or data file this machine lacks
            missing.append(f"{kind}: {why}")
    return found, missing


def test_faster_paper_flattening_gives_the_same_samples(monkeypatch, runs, tmp_path):
    """The doubling min/max gives the sliding windows' paper to the bit, so the samples are equal: on
    the real-picture sets (those this machine has the fonts and data for), the README's demo digit
    (dark on white, 200x200, off-centre), and odd sizes."""
    found, missing = _real_picture_sets()
    assert len(found) >= 16, missing
    spec = importlib.util.spec_from_file_location("demo_digit", ROOT / "scripts" / "demo_digit.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    digit, _ = demo.demo_digit(tmp_path / "digit.png")
    found.append(Image.open(digit))
    rng = np.random.default_rng(1)
    found += [Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)) for h, w in [(3, 200), (31, 7), (65, 64)]]
    # Version 1: the version that flattens the paper at full size (version 2's opening on the search
    # copy is checked against the same sliding windows in tests/test_picture_chunks.py).
    step = pictures.PictureStep.make("mnist-digit", version=1)
    fast = [pictures.picture_sample(p, step) for p in found]
    for window in (0.34, 0.1, 0.9):
        gray = pictures.to_grayscale(found[0])
        assert np.array_equal(pictures.flatten_paper(gray, window, True),
                              _flatten_paper_by_sliding_windows(gray, window, True))
    monkeypatch.setattr(pictures, "flatten_paper", _flatten_paper_by_sliding_windows)
    slow = [pictures.picture_sample(p, step) for p in found]
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_ray_data_answers_as_ptx_predict(convnet, folder, tmp_path):
    """A local Ray (started by `ptx predict --ray`, one CPU per core ptx may use: 2 here) scores 200
    pictures with Ray Data: the same answers as `ptx predict`, written as Parquet. Bounded in time."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    import pyarrow.parquet as pq

    root = str(convnet.parent)
    names = sorted(str(p) for p in folder.iterdir())[:200]
    sub = tmp_path / "some"
    sub.mkdir()
    for name in names:
        os.symlink(name, sub / Path(name).name)
    out = tmp_path / "ray.parquet"
    ray = subprocess.run([*PTX, "predict", "--ray", str(sub), "--root", root, "--output", str(out)],
                         capture_output=True, text=True, timeout=420)  # slow on a loaded machine; never hangs
    assert ray.returncode == 0, ray.stderr[-3000:]
    rows = {Path(r["input"]).name: r for r in pq.read_table(out).to_pylist()}
    predictor = open_artifact(convnet / "model.onnx", "ort-cpu")  # what `ptx predict` answers, in-process
    want = {Path(a.source).name: a.to_dict() for a in stream_answers(predictor, [Input(n, n) for n in names])}
    assert sorted(rows) == sorted(want) and len(rows) == 200
    for name, row in want.items():
        assert rows[name]["label_name"] == row["label_name"]
        assert np.allclose(rows[name]["logits"], row["logits"], atol=1e-5)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_an_output_in_a_folder_that_is_not_there_is_one_line_and_writes_nothing(tmp_path, suffix):
    # `ptx predict scans --output results/answers.csv` before `mkdir results` ended in a traceback.
    from ptx.errors import PtxError
    from ptx.infer.predict.outputs import columns_for, open_output

    out = tmp_path / "results" / f"answers.{suffix}"
    with pytest.raises(PtxError, match=r"answers\.\w+: cannot write it \(No such file or directory\); name a file"):
        open_output(out, columns_for(False, 0))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_a_file_name_that_is_not_utf8_is_written_and_resumed_not_a_traceback(tmp_path, suffix):
    # scans/caf\xe9.png (a Latin-1 name from an old share): `--output answers.csv` ended in a
    # UnicodeEncodeError traceback after the rows before it, Parquet before writing any part.
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    from ptx.infer.predict.outputs import columns_for, done_inputs, open_output
    from ptx.infer.predict.scoring import skip_done
    from ptx.infer.predict.stream import Input

    name = os.fsdecode(b"scans/caf\xe9.png")  # Python's form of the name: the byte as a surrogate
    out = tmp_path / f"answers.{suffix}"
    writer = open_output(out, columns_for(False, 0))
    writer.write({"input": "scans/a.png", "label": 1, "label_name": "1", "probability": 0.5,
                  "low_confidence": False, "logits": [0.0, 1.0]})
    writer.write({"input": name, "error": f"{name}: not an image Pillow can read"})
    writer.close()
    done = done_inputs(out)
    assert sum(done.values()) == 2
    skipped = [0]
    assert list(skip_done([Input(name, name), Input("scans/b.png", "scans/b.png")], done, skipped)) == [
        Input("scans/b.png", "scans/b.png")]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_resume_into_answers_with_other_columns_is_refused_not_appended(tmp_path, suffix):
    # A run's answers.csv, then the same command with --resume --topk 3: rows with a topk column were
    # appended under the first header (Parquet: a reader kept the first part's columns, dropping labels).
    if suffix == "parquet":
        pytest.importorskip("pyarrow")
    from ptx.errors import PtxError
    from ptx.infer.predict.outputs import columns_for, open_output

    out = tmp_path / f"answers.{suffix}"
    row = {"input": "a.png", "label": 1, "label_name": "1", "probability": 0.5, "low_confidence": False,
           "logits": [0.0, 1.0]}
    writer = open_output(out, columns_for(False, 0))
    writer.write(row)
    writer.close()
    for columns in (columns_for(False, 3), columns_for(True, 0)):
        with pytest.raises(PtxError, match=r"--resume: .* holds the columns input, .*label.*, this run writes "
                                           r".*resume with the first run.s"):
            open_output(out, columns, resume=True)
    writer = open_output(out, columns_for(False, 0), resume=True)  # the same options: resumed
    writer.write(row)
    writer.close()
