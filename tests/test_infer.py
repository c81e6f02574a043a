import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import GPU, needs_gpu
from images import paper_digit
from ptx.errors import ArtifactError, BackendUnavailableError, InputError, PtxError
from ptx.infer import load
from ptx.contract import PictureStep
from ptx.contract.pictures import MAX_PIXELS, picture_sample
from ptx.models import list_models
from ptx_command import ptx

CPU_BACKENDS = ("eager", "torchscript", "ort-cpu")
MNIST_DIGIT = PictureStep.make("mnist-digit")


def load_image_array(source, raw=False):
    return picture_sample(source, MNIST_DIGIT, raw=raw)
README = Path(__file__).resolve().parent.parent / "README.md"


def image_models():
    from ptx.models import get

    return [n for n in list_models() if get(n).kind == "image"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_backend_predicts_every_model(runs, model_name, backend):
    predictor = load(model_name, backend=backend, root=runs.ready(model_name))
    assert predictor.backend == backend
    x, _ = runs.test_samples(model_name, 7)
    results = predictor.predict_raw(x)
    assert len(results) == 7
    if predictor.contract.per_position:  # a label per position: the answer is a string
        assert all(len(r.label_name) == len(row) for r, row in zip(results, x))
    elif predictor.contract.task != "regression":
        assert all(0 <= r.label < len(predictor.labels) and abs(r.probabilities.sum() - 1) < 1e-5 for r in results)
        assert results[0].label_name == predictor.labels[results[0].label]
    else:
        assert all(isinstance(r.value, float) for r in results)


@needs_gpu
@pytest.mark.parametrize("backend", ["eager", "torchscript", "ort-cuda"])
def test_cuda_backends_agree_with_cpu(runs, backend):
    from ptx.infer import backends

    why = backends.get(backend).unavailable("cuda")  # onnxruntime without its CUDA provider: a skip, not a failure
    if why:
        pytest.skip(f"{backend} cannot run on cuda here: {why}")
    x, _ = runs.test_samples("convnet", 64)
    cpu = load("convnet", backend="eager", root=runs.ready("convnet")).predict_raw(x)
    gpu = load("convnet", backend=backend, root=runs.ready("convnet"), device="cuda").predict_raw(x)
    assert [r.label for r in cpu] == [r.label for r in gpu]


@pytest.mark.skipif(GPU, reason="checks the error on a machine without a GPU")
def test_ort_cuda_without_a_gpu_is_a_clear_error_not_a_silent_cpu_fallback(runs):
    with pytest.raises(BackendUnavailableError, match="ort-cuda"):
        load("convnet", backend="ort-cuda", root=runs.ready("convnet"))


def test_load_from_a_file_alone(runs):
    run_dir = runs.trained("convnet")
    assert load(run_dir / "model.onnx").backend == "ort-cpu"
    assert load(str(run_dir / "model.torchscript.pt")).backend == "torchscript"
    assert load(run_dir / "checkpoint.pt").backend == "eager"
    with pytest.raises(PtxError, match="backend torchscript does not run an ONNX file; these do: ort-cpu, openvino"):
        load(run_dir / "model.onnx", backend="torchscript")


def test_missing_artifacts_say_which_command_to_run(tmp_path, runs):
    with pytest.raises(ArtifactError, match=r"run `ptx train convnet` then `ptx export convnet`"):
        load("convnet", root=tmp_path)
    (tmp_path / "convnet").mkdir()
    (tmp_path / "convnet" / "checkpoint.pt").write_bytes((runs.trained("convnet") / "checkpoint.pt").read_bytes())
    with pytest.raises(ArtifactError, match=r"run `ptx export convnet` first"):
        load("convnet", backend="torchscript", root=tmp_path)


def test_layouts_come_from_the_metadata(runs):
    for name, shape in (("convnet", (3, 1, 28, 28)), ("logreg", (3, 784)), ("lstm", (28, 3, 28))):
        seen = []
        predictor = load(name, backend="ort-cpu", root=runs.ready(name))
        real = predictor.run
        predictor.run = lambda feeds, real=real: (seen.append(feeds[predictor.head.input_name].shape), real(feeds))[1]
        predictor.predict_raw(runs.test_samples(name, 3)[0])
        assert seen == [shape]


def test_ort_path_never_imports_torch(runs, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from PIL import Image
        import numpy as np
        from ptx.infer import load
        stroke = np.zeros((28, 28), np.uint8)
        stroke[6:22, 12:16] = 255
        Image.fromarray(stroke).save("d.png")
        p = load("convnet", backend="ort-cpu", root={str(runs.ready("convnet"))!r})
        p.predict("d.png")
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "ok", result.stderr
    cli = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptx", "predict", "d.png", "--root", str(runs.ready("convnet", "lstm", "linreg"))],
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert not re.search(r"\|\s+torch$", cli.stderr, re.M), "ptx predict imported torch"
    # rich lays out `ptx models`' tables; its import (about 30 ms) stays off the predict path's cold start.
    assert not re.search(r"\|\s+rich$", cli.stderr, re.M), "ptx predict imported rich"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_threads_get_the_single_thread_answers(runs, backend):
    predictor = load("convnet", backend=backend, root=runs.ready("convnet"))
    x, _ = runs.test_samples("convnet", 8)
    expected = [predictor.predict_raw(x[i:i + 1])[0].logits for i in range(8)]
    mismatches = []

    def worker(i):
        for _ in range(200):
            got = predictor.predict_raw(x[i:i + 1])[0].logits
            if not np.allclose(got, expected[i], atol=1e-6):
                mismatches.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


def test_paper_digits_are_recognised_as_well_as_the_originals(runs):
    predictor = load("convnet", backend="ort-cpu", root=runs.ready("convnet"))
    x, y = runs.test_samples("convnet", 200)
    original = np.array([r.label for r in predictor.predict_raw(x)])
    paper = np.array([r.label for r in predictor.predict([paper_digit(d) for d in x])])
    moved = np.array([r.label for r in predictor.predict([paper_digit(d, offset=(0, 60)).convert("RGB") for d in x])])
    assert (original == y).mean() > 0.8, "the fixture model should be trained well enough to compare"
    assert (paper == y).mean() >= (original == y).mean() - 0.03
    assert (moved == y).mean() >= (original == y).mean() - 0.03


def _digit(runs):
    return runs.test_samples("convnet", 1)[0][0]


def test_every_image_mode_gives_the_same_digit(runs, tmp_path):
    page = paper_digit(_digit(runs))
    reference = load_image_array(page)
    rgba = page.convert("RGBA")
    transparent = Image.new("RGBA", page.size, (0, 0, 0, 0))
    transparent.putalpha(Image.eval(page, lambda v: 255 - v))  # black ink where the paper was dark, clear paper
    variants = {
        "RGB": page.convert("RGB"), "RGBA": rgba, "P": page.convert("RGB").convert("P"),
        "I;16": Image.fromarray((np.asarray(page, dtype=np.uint16) * 257)),
        "1": page.point(lambda v: 255 if v > 128 else 0).convert("1"), "alpha-ink": transparent,
    }
    for mode, image in variants.items():
        got = load_image_array(image).astype(int)
        tolerance = 60 if mode == "1" else 12
        assert np.abs(got - reference).mean() < tolerance, mode


def test_inversion_and_centring(runs):
    digit = _digit(runs)
    light_on_dark = load_image_array(Image.fromarray(digit))
    dark_on_light = load_image_array(paper_digit(digit, offset=(55, 5)))
    for arr in (light_on_dark, dark_on_light):
        mass = arr.astype(float)
        cy, cx = (np.indices(arr.shape) * mass).reshape(2, -1).sum(1) / mass.sum()
        assert abs(cy - 14) < 1 and abs(cx - 14) < 1
        assert arr[0].max() == 0 and arr[:, 0].max() == 0  # dark border, light ink
        rows = np.flatnonzero(arr.max(1) > 50)
        assert rows[-1] - rows[0] <= 21  # fits the 20x20 box
    assert np.abs(light_on_dark.astype(int) - dark_on_light.astype(int)).mean() < 15


def test_exif_orientation_is_applied(runs, tmp_path):
    page = paper_digit(_digit(runs))
    rotated = page.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate 90 degrees clockwise: undoes the counter-clockwise rotation above
    rotated.save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert np.abs(load_image_array(tmp_path / "r.jpg").astype(int) - load_image_array(page).astype(int)).mean() < 15


def test_raw_needs_28x28(runs, tmp_path):
    Image.fromarray(_digit(runs)).save(tmp_path / "ok.png")
    assert np.array_equal(load_image_array(tmp_path / "ok.png", raw=True), _digit(runs))
    paper_digit(_digit(runs)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="28x28"):
        load_image_array(tmp_path / "big.png", raw=True)


def bad_files(tmp_path: Path) -> dict[str, str]:
    """file name -> the reason its error must give."""
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    Image.new("L", (40, 40), 255).save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    Image.new("L", (1, 1)).save(tmp_path / "tiny.png")
    Image.new("1", (7000, 7000)).save(tmp_path / "huge.png")
    frames = [Image.new("L", (28, 28), v) for v in (0, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "no-images").mkdir()
    return {"empty.png": "empty file", "text.png": "not an image", "truncated.png": "truncated",
            "tiny.png": "1x1", "huge.png": "too large", "anim.gif": "multi-frame", "missing.png": "no such file",
            "no-images": "no image files"}


def test_bad_files_each_get_a_reason(tmp_path):
    assert MAX_PIXELS < 7000 * 7000
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(InputError, match=reason):
            load_image_array(tmp_path / name)


def test_cli_predict_same_labels_on_every_cpu_backend(runs, tmp_path):
    x, _ = runs.test_samples("convnet", 6)
    for i, digit in enumerate(x):
        Image.fromarray(digit).save(tmp_path / f"{i}.png")
    labels = {}
    for backend in CPU_BACKENDS:
        for name in ("convnet", "lstm"):
            result = ptx("predict", str(tmp_path), "--model", name, "--backend", backend, "--json",
                         "--root", str(runs.ready("convnet", "lstm", "linreg")), cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            doc = json.loads(result.stdout)
            assert doc["backend"] == backend and len(doc["results"]) == 6
            labels.setdefault(name, set()).add(tuple(r["label"] for r in doc["results"]))
    assert all(len(v) == 1 for v in labels.values()), labels


def test_cli_predict_reports_bad_files_and_predicts_the_rest(runs, tmp_path):
    reasons = bad_files(tmp_path)
    Image.fromarray(_digit(runs)).save(tmp_path / "good.png")
    result = ptx("predict", *reasons, "good.png", "--topk", "3", "--root", str(runs.ready("convnet", "lstm", "linreg")), cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("good.png\t") and out[0].count(":") == 3
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(reasons) and "Traceback" not in result.stderr
    for name, reason in reasons.items():
        assert any(name in line and reason in line for line in errors), name


@pytest.mark.skipif(GPU, reason="checks the error on a machine without a GPU")
def test_cli_predict_ort_cuda_without_gpu(runs, tmp_path):
    Image.fromarray(_digit(runs)).save(tmp_path / "d.png")
    result = ptx("predict", "d.png", "--backend", "ort-cuda", "--root", str(runs.ready("convnet", "lstm", "linreg")), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "ort-cuda cannot run here" in result.stderr and "GPU" in result.stderr


def test_cli_predict_numbers_for_linreg(runs, tmp_path):
    runs.trained("linreg")
    result = ptx("predict", "--model", "linreg", "0.5", "1.5", "--root", str(runs.ready("convnet", "lstm", "linreg")), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    values = [float(line.split("y=")[1]) for line in result.stdout.splitlines()]
    assert len(values) == 2 and values[1] > values[0]


def test_cli_predict_missing_artifact(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "d.png")
    result = ptx("predict", "d.png", "--root", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "ptx train convnet" in result.stderr and result.stderr.count("\n") == 1


def test_readme_library_snippet_runs_as_written(runs, tmp_path):
    snippet = (README.parent / "docs" / "predict.md").read_text().split("<!-- snippet:embed -->")[1].split("```python")[1].split("```")[0]
    assert len(snippet.strip().splitlines()) <= 10
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "convnet").symlink_to(runs.trained("convnet"))
    Image.fromarray(_digit(runs)).save(tmp_path / "runs" / "digit.png")  # where the demo writes it
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_cli_predict_csv_rows_and_files_for_diabetes(runs, tmp_path):
    root = runs.ready("diabetes")
    (tmp_path / "patients.csv").write_text("pregnant,glucose,pressure,triceps,insulin,mass,pedigree,age\n"
                                           "6,148,72,35,0,33.6,0.627,50\n1,85,66,29,0,26.6,0.351,31\n")
    result = ptx("predict", "--model", "diabetes", "2,100,70,20,80,30,0.5,30", "patients.csv", "1,2",
                 "--json", "--root", str(root), cwd=tmp_path)
    assert result.returncode == 1  # the short row
    doc = json.loads(result.stdout)
    assert [r["input"] for r in doc["results"]] == ["2,100,70,20,80,30,0.5,30", "6,148,72,35,0,33.6,0.627,50",
                                                    "1,85,66,29,0,26.6,0.351,31"]
    assert all(r["label_name"] in ("neg", "pos") and 0.5 <= r["probability"] <= 1 for r in doc["results"])
    assert "2 values, diabetes takes 8" in result.stderr


def test_cli_predict_words(runs, tmp_path):
    result = ptx("predict", "--model", "gru-classifier", "bonjour", "gracias", "--topk", "2",
                 "--root", str(runs.ready("gru-classifier")), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["bonjour", "gracias"]
    assert all(line.split("\t")[1] in ("english", "german", "french", "italian", "spanish", "dutch") for line in lines)
    hello = ptx("predict", "--model", "rnn-hello", "hello", "hex", "--root", str(runs.ready("rnn-hello")), cwd=tmp_path)
    assert hello.returncode == 1 and hello.stdout.startswith("hello\t") and len(hello.stdout.split("\t")[1]) == 5
    assert "not in rnn-hello's vocabulary" in hello.stderr


def test_artifact_from_an_older_ptx_asks_for_a_re_export(runs, tmp_path):
    import onnx

    proto = onnx.load(str(runs.trained("convnet") / "model.onnx"))
    kept = [p for p in proto.metadata_props if p.key != "ptx.checksums"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(ArtifactError, match=r"lacks ptx.checksums.*ptx export convnet"):
        load(tmp_path / "old.onnx")


def _in_uneven_light(page: Image.Image) -> Image.Image:
    """The page photographed under a lamp from one side, with a soft shadow across a corner."""
    values = np.asarray(page.convert("L"), dtype=np.float32)
    h, w = values.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    shade = (1 - 0.35 * xx) * (1 - 0.3 / (1 + np.exp(-(yy + xx - 1.3) / 0.05)))
    tinted = np.stack([values * shade * f for f in (0.95, 0.9, 0.8)], -1)
    return Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8), "RGB")


def test_shadows_and_uneven_light_are_paper_not_ink(runs):
    """mnist-digit flattens the paper's light before it looks for ink: a shadow or a lamp's
    gradient must not be cropped in as part of the digit."""
    predictor = load("convnet", backend="ort-cpu", root=runs.ready("convnet"))
    step = predictor.contract.picture
    x, y = runs.test_samples("convnet", 200)
    pages = [paper_digit(d, offset=(20, 30)) for d in x]
    clean = np.array([picture_sample(p, step) for p in pages]).astype(int)
    lit = np.array([picture_sample(_in_uneven_light(p), step) for p in pages]).astype(int)
    assert np.abs(clean - lit).mean() < 6  # 30 when the paper was one flat colour, 8.6 by subtraction alone
    assert lit[:, 0].max() == 0 and lit[:, :, 0].max() == 0  # the shadow's corner stayed black
    original = np.array([r.label for r in predictor.predict_raw(x)])
    shadowed = np.array([r.label for r in predictor.predict([_in_uneven_light(p) for p in pages])])
    assert (shadowed == y).mean() >= (original == y).mean() - 0.03


def test_a_list_of_one_rows_numbers_is_one_row_as_its_array_is(runs):
    # predict([6, 148, 72, 35, 0, 33.6, 0.627, 50]) was eight inputs of one number each, all refused
    # ("6: 1 values, diabetes takes 8"), where the same numbers as an array are one patient.
    predictor = load("diabetes", backend="ort-cpu", root=runs.ready("diabetes"))
    row = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
    (want,) = predictor.predict(np.array(row))
    for given in (row, tuple(row), [np.float32(v) for v in row]):
        (got,) = predictor.predict(given)
        assert got.label == want.label and got.probability == pytest.approx(want.probability)
    assert len(predictor.predict([row, row])) == 2
    with pytest.raises(InputError, match="1 values"):
        predictor.predict([6, 148])  # not one row's width: still a batch of numbers, each refused
