"""Every model x every dataset: each pair either trains, or is refused in one line (exit 2, no
traceback, no run folder left behind) before any data is read. Issue 27: 51 of 80 such pairs ended
in a traceback, and three trained on data that meant nothing to the model and said "done"."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ptx.cli import cli
from ptx.contract import catalog
from ptx.contract.datasets import (DATASET_INFO, DATASETS, FOLDER, FOLDER_PREFIX, DataKind, check_fit, datasets_for)
from ptx.errors import DataError, DataMismatchError
from ptx.models import get, list_models
from ptx.trainers import data as trainers_data
from ptx.trainers import small_data
from ptx.trainers.data import check_data_fits

PICTURE_MODELS = [m for m in list_models() if get(m).kind.value == "image"]
# What fits what, written out by hand: the oracle the declared kinds are judged by.
EXPECTED_FITS = {
    **{model: {"mnist", "fashion-mnist", "mnist-sample", FOLDER} for model in PICTURE_MODELS},
    "linreg": {"line"}, "logistic": {"hours"}, "diabetes": {"pima"}, "rnn-hello": {"hello"},
    "gru-classifier": {"words"},
}
# The pairs trained through the CLI (below says why not all): every model once, on the cheapest data
# that fits it, and every dataset once; full MNIST is absent on CI (PTX_OFFLINE=1, tests/conftest.py),
# so its pairs end in the one-line "no mnist data found" refusal, which must leave no run folder either.
TRAINED = {("convnet", "mnist-sample"), ("mlp", "fashion-mnist"), ("lenet", "folder"), ("logreg", "mnist"),
           ("linreg", "line"), ("logistic", "hours"), ("diabetes", "pima"), ("rnn-hello", "hello"),
           ("gru-classifier", "words")}
TRAIN_LIMIT = 8
DIGITS = tuple(str(d) for d in range(10))


@pytest.fixture(scope="module")
def picture_folder(runs, tmp_path_factory) -> str:
    """12 real digits as PNG files with labels.csv: the folder:PATH dataset."""
    folder = tmp_path_factory.mktemp("pictures")
    x, y = runs.test_samples("convnet", 12)
    rows = ["file,label"]
    for i in range(12):
        Image.fromarray(x[i]).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{y[i]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return f"{FOLDER_PREFIX}{folder}"


def dataset_names(folder: str) -> list[str]:
    return [folder if name == FOLDER else name for name in DATASETS]


def short(name: str) -> str:
    return "folder" if name.startswith(FOLDER_PREFIX) else name


def test_every_dataset_says_what_it_gives_and_its_loader_exists():
    for name, info in DATASET_INFO.items():
        assert isinstance(info.gives, DataKind), name
        assert callable(getattr(trainers_data, info.loader, None)), f"{name}: no loader {info.loader}"
        assert DataKind.from_dict(info.gives.to_dict()) == info.gives


def test_every_model_says_what_it_takes_in_the_catalog_too():
    for model in list_models():
        assert catalog.takes(model) == get(model).takes, f"{model}: run `python3 scripts/model_catalog.py`"
        assert set(datasets_for(get(model).takes)) == EXPECTED_FITS[model], model
    assert get("lenet").takes.size == (28, 28)  # the dataset's pictures, padded to 32x32 by the model
    assert get("rnn-hello").takes.alphabet == "ehlo"


def accepted(model: str, dataset: str, folder: str) -> bool:
    """The oracle: the hand-written table, and for the digit folder its labels (0-9): mlp's folder
    pictures carry its default dataset's labels (Fashion-MNIST's), none of which labels.csv names."""
    if dataset == folder:
        return FOLDER in EXPECTED_FITS[model] and get(model).contract(dataset).labels == DIGITS
    return dataset in EXPECTED_FITS[model]


def test_the_refusal_check_judges_every_pair(picture_folder):
    """The library check `ptx train` calls, for all model x dataset pairs: a refusal is one line that
    says what the model takes and names exactly the datasets that fit it."""
    for model, dataset in itertools.product(list_models(), dataset_names(picture_folder)):
        spec = get(model)
        if accepted(model, dataset, picture_folder):
            check_data_fits(spec, dataset)
            continue
        with pytest.raises(DataMismatchError) as caught:
            check_data_fits(spec, dataset)
        message = str(caught.value)
        assert "\n" not in message and caught.value.exit_code == 2
        if dataset == picture_folder and FOLDER in EXPECTED_FITS[model]:  # the kinds fit; the labels do not
            labels = spec.contract(dataset).labels
            assert message == (f"{dataset}'s labels.csv names none of {model}'s 10 classes ({', '.join(labels)}) "
                               f"but 9, 1, 2, 8, 3, 4, 6: label its pictures with {model}'s classes"), message
            continue
        shown = FOLDER if dataset == picture_folder else dataset
        assert message.startswith(f"{model} takes {spec.takes.describe()}, but {shown} gives"), message
        assert set(message.split(": train it on ")[1].replace(", or ", ", ").split(", ")) == EXPECTED_FITS[model]


def test_the_three_pairs_that_trained_on_nonsense_are_refused():
    for model in ("gru-classifier", "rnn-hello", "diabetes"):
        with pytest.raises(DataMismatchError, match=f"^{model} takes .*, but hours gives one number with a 0/1 label"):
            check_fit(model, get(model).takes, "hours")
    assert str(pytest.raises(DataMismatchError, check_fit, "convnet", get("convnet").takes, "words").value) == (
        "convnet takes 28x28 pictures with 10 classes, but words gives Latin-1 words with 6 classes: "
        "train it on mnist, fashion-mnist, mnist-sample, or folder:PATH")


def test_an_unknown_dataset_gets_did_you_mean():
    with pytest.raises(DataError, match="unknown dataset 'wordz'; did you mean words"):
        check_fit("gru-classifier", get("gru-classifier").takes, "wordz")


def invoke(tmp_path: Path, model: str, dataset: str, *extra: str):
    out = tmp_path / "runs" / f"{model}-{short(dataset)}"
    result = CliRunner().invoke(cli, ["train", model, "--dataset", dataset, "--out", str(out), "--device", "cpu",
                                      "--epochs", "1", "--limit", str(TRAIN_LIMIT), *extra])
    return result, out


def assert_refused_in_one_line(result, tmp_path: Path) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not (tmp_path / "runs").exists(), "a refused `ptx train` left a run folder behind"


def test_ptx_train_refuses_every_pair_that_does_not_fit(picture_folder, tmp_path):
    """All refused pairs through the CLI (in-process: no data is read, so each takes milliseconds)."""
    refused = 0
    for model, dataset in itertools.product(list_models(), dataset_names(picture_folder)):
        if not accepted(model, dataset, picture_folder):
            result, _ = invoke(tmp_path, model, dataset)
            assert_refused_in_one_line(result, tmp_path)
            assert f"{model} takes " in result.output or "labels.csv names none of" in result.output, result.output
            refused += 1
    assert refused == len(list_models()) * len(DATASETS) - sum(map(len, EXPECTED_FITS.values())) + 1  # + mlp's folder


@pytest.mark.parametrize("model,dataset", sorted(TRAINED), ids=[f"{m}-{d}" for m, d in sorted(TRAINED)])
def test_ptx_train_trains_the_pairs_that_fit(picture_folder, tmp_path, monkeypatch, model, dataset):
    """Representative accepted pairs, trained through the CLI (a few samples, one epoch). Not all 53:
    after the check every pair runs the same loader and loop, and the pairs left out differ from these
    only in the model (each model trains here once) or in a dataset trained here with another model of
    the same kind; training all of them took minutes on 2 cores (each evaluates its whole test set:
    10,000 pictures for fashion-mnist). The check, the only thing that decides between training and
    refusing, is run for every pair above."""
    name = picture_folder if dataset == "folder" else dataset
    extra = []
    if dataset == "mnist":  # an empty cache whatever this machine has downloaded: full MNIST is absent
        monkeypatch.setenv("PTX_CACHE_DIR", str(tmp_path / "empty-cache"))
    if dataset == "words":  # the real loader on small lists: 6 x 5,000 words take most of a minute here
        extra = ["--data-dir", str(small_word_lists(tmp_path / "dict", monkeypatch))]
    result, out = invoke(tmp_path, model, name, *extra)
    if dataset == "mnist":
        assert_refused_in_one_line(result, tmp_path)
        assert "no mnist data found" in result.output
        return
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "done: " in result.output and (out / "checkpoint.pt").is_file()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["dataset"]["name"] == name and saved["model"] == model


def small_word_lists(folder: Path, monkeypatch, per_language: int = 12) -> Path:
    """Word lists in --data-dir (read before /usr/share/dict's), each language's words its own, and a
    split of 8 to train on and 4 to test on for each."""
    monkeypatch.setattr(small_data, "WORDS_TRAIN", 8)
    monkeypatch.setattr(small_data, "WORDS_TEST", 4)
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (file_name, _) in enumerate(small_data.WORD_LISTS.values()):
        words = {"abcdef"[index] + "".join(rng.choice(list("klmnoprstu"), 6)) for _ in range(per_language)}
        (folder / file_name).write_text("\n".join(sorted(words)) + "\n")
    return folder


def test_a_folder_whose_labels_do_not_fit_the_model_is_refused_before_a_run_folder(runs, tmp_path):
    folder = tmp_path / "pets"
    folder.mkdir()
    x, _ = runs.test_samples("convnet", 4)
    for i in range(4):
        Image.fromarray(x[i]).save(folder / f"{i}.png")
    (folder / "labels.csv").write_text("0.png,cat\n1.png,dog\n2.png,cat\n3.png,dog\n")
    result, _ = invoke(tmp_path, "convnet", f"folder:{folder}")
    assert_refused_in_one_line(result, tmp_path)
    assert "labels.csv names none of convnet's 10 classes (0, 1, 2" in result.output and "cat, dog" in result.output
    (folder / "labels.csv").write_text("".join(f"{i % 4}.png,L{i}\n" for i in range(12)) + "0.png,1\n")
    result, _ = invoke(tmp_path, "convnet", f"folder:{folder}")
    assert_refused_in_one_line(result, tmp_path)
    assert "labels.csv names 13 labels" in result.output and "convnet tells 10 classes apart" in result.output
    result, _ = invoke(tmp_path, "gru-classifier", f"folder:{folder}")  # pictures for a word model
    assert_refused_in_one_line(result, tmp_path)
    assert "but folder:PATH gives pictures" in result.output


def test_a_failed_train_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    """Issue 30 point 7: `ptx train convnet --dataset mnist --out runs/x` offline made runs/x and
    left it empty. A folder that was there before stays."""
    monkeypatch.setenv("PTX_CACHE_DIR", str(tmp_path / "empty-cache"))
    deep = tmp_path / "a" / "b" / "x"
    result = CliRunner().invoke(cli, ["train", "convnet", "--dataset", "mnist", "--offline", "--out", str(deep)])
    assert result.exit_code == 2 and "no mnist data found" in result.output
    assert not (tmp_path / "a").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    result = CliRunner().invoke(cli, ["train", "convnet", "--dataset", "mnist", "--offline", "--out", str(kept)])
    assert result.exit_code == 2 and kept.is_dir()


def test_export_and_predict_refuse_a_run_an_older_ptx_trained_on_mismatched_data(runs, tmp_path):
    """Such runs exist: before the check, `ptx train linreg --dataset hours` trained and said done.
    Made here by relabelling a real linreg run's checkpoint and artifact as trained on hours."""
    import onnx

    run = runs.trained("linreg")
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    checkpoint["dataset"]["name"] = "hours"
    old = tmp_path / "old"
    old.mkdir()
    torch.save(checkpoint, old / "checkpoint.pt")
    graph = onnx.load(run / "model.onnx")
    for prop in graph.metadata_props:
        if prop.key == "ptx.dataset":
            prop.value = "hours"
    onnx.save(graph, old / "model.onnx")
    why = "it holds linreg trained on hours, which it cannot learn from (linreg takes one number with a value"
    for args in (["export", "linreg", "--checkpoint", str(old / "checkpoint.pt"), "--out", str(tmp_path / "x")],
                 ["predict", "0.5", "--model", "linreg", "--run", str(old), "--backend", "eager"],
                 ["predict", "0.5", "--model", "linreg", "--artifact", str(old / "model.onnx")],
                 ["train", "linreg", "--out", str(old), "--resume", "--epochs", "2"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert why in result.output and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path / "x").exists()


def test_models_and_data_list_show_the_same_facts():
    runner = CliRunner()
    table = runner.invoke(cli, ["models"], env={"COLUMNS": "160"}).output.splitlines()  # wide: no cell wraps
    assert "takes" in table[0]
    assert any(line.startswith("gru-classifier ") and "Latin-1 words -> 6 classes" in line for line in table)
    listed = runner.invoke(cli, ["data", "list"]).output.splitlines()
    assert any(line.startswith("words ") and "Latin-1 words -> 6 classes" in line and "gru-classifier" in line
               for line in listed)
    import json

    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["models", "--json"]).output)}
    assert rows["diabetes"]["trains_on"] == ["pima"] and rows["diabetes"]["takes"]["size"] == [8]
    kinds = {r["dataset"]: r for r in json.loads(runner.invoke(cli, ["data", "list", "--json"]).output)}
    assert kinds["pima"]["models"] == ["diabetes"] and kinds["pima"]["loader"] == "load_pima"
    assert np.array_equal(sorted(kinds["mnist-sample"]["models"]), sorted(PICTURE_MODELS))


def test_the_library_train_refuses_a_mismatch_before_making_its_folder(tmp_path):
    from ptx.trainers.small_data import load_hours
    from ptx.trainers.loop import TrainConfig, train

    config = TrainConfig(epochs=1, batch_size=3, lr=0.01, device="cpu")
    with pytest.raises(DataMismatchError, match="^gru-classifier takes Latin-1 words"):
        train(get("gru-classifier"), load_hours(), config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run").exists()
