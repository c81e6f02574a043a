"""`ptx predict --model FILE INPUTS` on users' own models (tests/own_models.py), through the CLI as
a user runs it: each input kind, --json, --output .npz and .parquet, and the bad inputs, one line
each, while the good files still run."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import own_models as zoo
from ptx.contract.tensor_inputs import make_feeds, plan_inputs
from ptx.infer import load
from ptx_command import ptx


def feeds(model, batch, seed, **shapes):
    return make_feeds(model.signature, plan_inputs(model.signature, shapes=shapes), batch, seed)


@pytest.fixture(scope="module")
def two_io(own_models):
    return load(own_models["two_io"], probe=False)


def test_one_case_in_an_npz_is_summarised_per_output(own_models, two_io, tmp_path):
    inputs = feeds(two_io, 3, 1)
    np.savez(tmp_path / "in.npz", **inputs)
    want = two_io.run(inputs)
    done = ptx("predict", "--model", own_models["two_io"], tmp_path / "in.npz")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("]")[0] + "]" for line in lines] == ["in.npz: scores float32 [3, 4]", "in.npz: joint float32 [3, 16]"]
    argmax = re.search(r"argmax per row ([\d ]+),", lines[0]).group(1).split()
    assert list(map(int, argmax)) == want["scores"].argmax(-1).tolist()
    mean = float(re.search(r"mean (\S+),", lines[1]).group(1))
    assert mean == pytest.approx(float(want["joint"].mean()), rel=1e-5)


def test_the_model_file_may_come_first_as_every_command_takes_it(own_models, tmp_path):
    """`ptx predict model.onnx in.npz` is `ptx predict --model model.onnx in.npz` (issue 43): the first
    argument is the model where it is a model file; a picture first is still an input."""
    two_io = load(own_models["two_io"], probe=False)
    np.savez(tmp_path / "in.npz", **feeds(two_io, 3, 1))
    first = ptx("predict", own_models["two_io"], tmp_path / "in.npz")
    named = ptx("predict", "--model", own_models["two_io"], tmp_path / "in.npz")
    assert first.returncode == 0, first.stderr
    assert (first.stdout, first.stderr) == (named.stdout, named.stderr)
    twice = ptx("predict", own_models["two_io"], tmp_path / "in.npz", "--model", own_models["two_io"])
    assert twice.returncode == 2 and "give one" in twice.stderr
    alone = ptx("predict", own_models["two_io"])
    assert alone.returncode == 2 and "Missing argument 'INPUTS...'" in alone.stderr


def test_several_cases_npy_and_json_give_the_librarys_answers_to_the_bit(own_models, two_io, tmp_path):
    cases = [feeds(two_io, 2, 2, ids="2x3"), feeds(two_io, 4, 3, ids="4x7")]  # another token count per case
    np.savez(tmp_path / "cases.npz", **{f"{n}:{k}": v for k, case in enumerate(cases) for n, v in case.items()})
    done = ptx("predict", "--model", own_models["two_io"], tmp_path / "cases.npz", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["backend"], [r["input"] for r in doc["results"]]) == ("ort-cpu", ["cases.npz:0", "cases.npz:1"])
    for case, result in zip(cases, doc["results"]):
        for name, value in two_io.run(case).items():
            got = result["outputs"][name]
            assert got["shape"] == list(value.shape) and got["dtype"] == "float32"
            assert np.array_equal(np.array(got["values"], np.float32), value)  # JSON floats carry float32 exactly

    residual = load(own_models["residual"], probe=False)
    image = feeds(residual, 2, 4)["image"]
    np.save(tmp_path / "image.npy", image)
    stateful = load(own_models["stateful"], probe=False)
    state = {**feeds(stateful, 3, 5), "mode": np.array(0, np.int64)}
    (tmp_path / "state.json").write_text(json.dumps({n: v.tolist() for n, v in state.items()}))
    for path, model, given in ((own_models["residual"], residual, {"image": image}),
                               (own_models["stateful"], stateful, state)):
        source = tmp_path / ("image.npy" if model is residual else "state.json")
        done = ptx("predict", "--model", path, source, "--output", tmp_path / f"{source.stem}.npz")
        assert done.returncode == 0, done.stderr
        with np.load(tmp_path / f"{source.stem}.npz") as written:
            want = model.run(given)
            assert sorted(written.files) == sorted(want)  # one case: the outputs by name
            for name, value in want.items():
                assert written[name].dtype == value.dtype and np.array_equal(written[name], value)


def test_output_npz_numbers_cases_across_files_and_parquet_has_a_row_per_sample(own_models, two_io, tmp_path):
    first, second = feeds(two_io, 3, 6), feeds(two_io, 2, 7)
    np.savez(tmp_path / "a.npz", **first)
    np.savez(tmp_path / "b.npz", **second)
    done = ptx("predict", "--model", own_models["two_io"], "a.npz", "b.npz", "--output", "out.npz", cwd=tmp_path)
    assert done.returncode == 0 and "NAME:K" in done.stderr, done.stderr
    with np.load(tmp_path / "out.npz") as written:
        assert sorted(written.files) == ["joint:0", "joint:1", "scores:0", "scores:1"]
        assert np.array_equal(written["scores:1"], two_io.run(second)["scores"])
    done = ptx("predict", "--model", own_models["two_io"], "a.npz", "b.npz", "--output", "out.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [(r["input"], r["row"]) for r in table] == [("a.npz", 0), ("a.npz", 1), ("a.npz", 2), ("b.npz", 0),
                                                      ("b.npz", 1)]
    want = two_io.run(first)
    assert np.array_equal(np.array([r["joint"] for r in table[:3]], np.float32), want["joint"])
    assert np.array_equal(np.array(table[4]["scores"], np.float32), two_io.run(second)["scores"][1])
    # A batch on axis 1 (the GRU's state) is split along its own axis.
    stateful = load(own_models["stateful"], probe=False)
    state = feeds(stateful, 3, 8)
    np.savez(tmp_path / "state.npz", **state)
    done = ptx("predict", "--model", own_models["stateful"], "state.npz", "--output", "state.parquet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(tmp_path / "state.parquet").to_pylist()
    assert np.array_equal(np.array(rows[2]["h"], np.float32), stateful.run(state)["h"][:, 2])


@pytest.mark.parametrize("name", ["residual", "mobile", "two_io", "stateful", "fixed1", "half"])
def test_each_zoo_model_predicts_a_bare_sessions_answers_to_the_bit(own_models, tmp_path, name):
    """Issue 36's acceptance: predict for each own model; --output keeps each output's dtype and bits."""
    import onnxruntime

    model = load(own_models[name], probe=False)
    given = feeds(model, 3, 12)
    np.savez(tmp_path / "in.npz", **given)
    done = ptx("predict", "--model", own_models[name], "in.npz", "--output", "out.npz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    session = onnxruntime.InferenceSession(str(own_models[name]))
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, given)))
    with np.load(tmp_path / "out.npz") as written:
        assert sorted(written.files) == sorted(want)
        for out, value in want.items():
            assert written[out].dtype == value.dtype and np.array_equal(written[out], value), out


def test_outputs_parquet_cannot_hold_and_other_suffixes_are_refused_before_running(own_models, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 12), np.float32))
    done = ptx("predict", "--model", own_models["fixed1"], "x.npy", "--output", "y.parquet", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "output 'probs' has no batch axis" in done.stderr and "FILE.npz" in done.stderr
    done = ptx("predict", "--model", own_models["fixed1"], "x.npy", "--output", "y.csv", cwd=tmp_path)
    assert done.returncode == 2 and ".npz" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "y.parquet").exists() and not (tmp_path / "y.csv").exists()


def test_bad_input_files_are_one_line_each_and_the_good_ones_still_run(own_models, two_io, tmp_path):
    good = feeds(two_io, 3, 9)
    np.savez(tmp_path / "good.npz", **good)
    np.savez(tmp_path / "unknown.npz", **good, extra=good["ids"])
    np.savez(tmp_path / "dtype.npz", picture=good["picture"], ids=good["ids"].astype(np.float32))
    np.savez(tmp_path / "shape.npz", picture=good["picture"][:, :, :8], ids=good["ids"])
    np.savez(tmp_path / "batch.npz", picture=good["picture"], ids=good["ids"][:2])
    (tmp_path / "notes.txt").write_text("not tensors")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:500])  # a copy cut short: not a zip
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    bad = {"unknown.npz": "holds an array 'extra', and the model has no input of that name", "dtype.npz": "'ids' of dtype.npz is float32; it takes int64",
           "shape.npz": "axis 2 must be 16", "batch.npz": "one batch for every input",
           "cut.npz": "cannot read it (File is not a zip file); save it again with numpy.savez",
           "notes.txt": "inputs come as .npz", "digit.png": "a picture; two_io is your own model and takes tensors",
           "missing.npz": "no such file"}
    done = ptx("predict", "--model", own_models["two_io"], "good.npz", *bad, cwd=tmp_path)
    assert done.returncode == 2
    errors = done.stderr.splitlines()
    assert len(errors) == len(bad), done.stderr
    for line, (name, words) in zip(errors, bad.items()):
        assert line.startswith("error: ") and name in line and words in line, line
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["good.npz", "good.npz"]
    # With --output, nothing is written when a file does not fit (its cases would renumber the others').
    done = ptx("predict", "--model", own_models["two_io"], "good.npz", "dtype.npz", "--output", "o.npz", cwd=tmp_path)
    assert done.returncode == 2 and "nothing written to o.npz" in done.stderr and not (tmp_path / "o.npz").exists()


def test_a_runtime_refusing_inputs_that_fit_is_one_line(own_models, tmp_path):
    """The batch the exporter specialised (3) runs; another does not: the runtime's one line."""
    np.save(tmp_path / "three.npy", np.zeros((3, 8), np.float32))
    np.save(tmp_path / "five.npy", np.zeros((5, 8), np.float32))
    done = ptx("predict", "--model", own_models["specialised"], "three.npy", "five.npy", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout.startswith("three.npy: y float32 [3, 4]")
    assert done.stderr.count("\n") == 1 and "five.npy: ort-cpu failed running specialised" in done.stderr


def test_torchscript_with_declared_inputs_and_options_for_the_tutorial_models_only(own_models, two_io, tmp_path):
    inputs = feeds(two_io, 2, 10)
    np.savez(tmp_path / "in.npz", **inputs)
    declared = [a for d in zoo.catalog()["two_io"].declarations for a in ("--input", d)]
    done = ptx("predict", "--model", own_models["two_io.pt"], "in.npz", *declared, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)["results"][0]["outputs"]["output_0"]
    assert got["argmax"] == two_io.run(inputs)["scores"].argmax(-1).tolist()
    # --topk was refused here too until issue 58 (a file's scores have a top k: tests/test_smaller_items.py)
    done = ptx("predict", "--model", own_models["two_io"], "in.npz", "--raw", cwd=tmp_path)
    assert done.returncode == 2 and "--raw is for the tutorial models" in done.stderr
    done = ptx("predict", "digit.png", "--input", "x=batchx3", cwd=tmp_path)
    assert done.returncode == 2 and "--input declares a model file's inputs; a tutorial model's contract declares" \
        in done.stderr


def test_artifact_takes_a_tutorial_export_and_sends_your_own_model_to_model(runs, own_models, tmp_path):
    """--artifact reads a tutorial model's export (its head: pictures, labels). Your own model's file
    there, foreign or from ptx export --module, has no head: one line naming --model, not a traceback."""
    from PIL import Image, ImageDraw

    picture = Image.new("L", (28, 28), 255)
    ImageDraw.Draw(picture).line([(14, 5), (14, 22)], fill=0, width=3)  # a dark 1 on white
    picture.save(tmp_path / "digit.png")
    exported = runs.ready("convnet") / "convnet" / "model.onnx"
    done = ptx("predict", "digit.png", "--artifact", exported, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("digit.png"), done.stdout + done.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 12), np.float32))
    for own in (own_models["fixed1"], own_models["two_io.pt"]):
        done = ptx("predict", "--artifact", own, "x.npy", cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"predict with it by its tensors: `ptx predict --model {own} INPUTS.npz`" in done.stderr


def test_predicting_with_an_onnx_file_never_imports_torch(own_models, two_io, tmp_path):
    np.savez(tmp_path / "in.npz", **feeds(two_io, 2, 11))
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ptx", "predict", "--model",
                           str(own_models["two_io"]), "in.npz"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not re.search(r"\|\s+torch$", done.stderr, re.M), "ptx predict --model FILE.onnx imported torch"


def test_predict_output_onto_a_folder_is_one_line_and_the_folder_is_left_alone(tmp_path):
    """`ptx predict model.onnx x.npy --output answers.npz` where answers.npz is a folder ended in
    IsADirectoryError's traceback from the final rename."""
    from ptx.atomic import atomic_path
    from ptx.errors import PtxError

    (tmp_path / "answers.npz").mkdir()
    with pytest.raises(PtxError, match=r"cannot write .*answers.npz: it is a folder; give a file name"):
        with atomic_path(tmp_path / "answers.npz") as tmp:
            tmp.write_bytes(b"never")
    assert (tmp_path / "answers.npz").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["answers.npz"]


def test_an_npz_keyed_by_a_tf2onnx_input_name_with_a_colon_is_one_case(tmp_path):
    """A tf2onnx model's input is called `x:0`; `ptx predict tf.onnx in.npz` with the array saved
    under exactly that name was refused, the key read as NAME:K ("holds an array 'x', and the model
    has no input of that name; its inputs are x:0"). Keys `x:0:0`, `x:0:1` are still two cases."""
    from ptx.contract.tensor_inputs import load_input_file
    from ptx.contract.tensors import Signature, TensorSig

    sig = Signature((TensorSig("x:0", "float32", ("N", 3), 0),), (TensorSig("Identity:0", "float32", ("N", 3), 0),))
    np.savez(tmp_path / "one.npz", **{"x:0": np.ones((1, 3), np.float32)})
    assert [c["x:0"].shape for c in load_input_file(tmp_path / "one.npz", sig)] == [(1, 3)]
    np.savez(tmp_path / "two.npz", **{"x:0:0": np.ones((1, 3), np.float32), "x:0:1": np.ones((2, 3), np.float32)})
    assert [c["x:0"].shape for c in load_input_file(tmp_path / "two.npz", sig)] == [(1, 3), (2, 3)]


def test_standard_input_for_your_own_model_says_what_to_give_instead():
    """`ptx predict model.onnx - < x.npy` answered "-: no such file": `-` reads standard input for
    the tutorial models only, which the line now says, with the files to give instead."""
    from ptx.contract.tensors import Signature, TensorSig
    from ptx.infer.predict.named_outputs import read_inputs

    sig = Signature((TensorSig("x", "float32", ("batch", 4), 0),), (TensorSig("y", "float32", ("batch", 4), 0),))
    cases, errors = read_inputs(sig, ["-"], "net")
    assert cases == [] and errors == ["-: standard input is read for the tutorial models; net is your own model: give "
                                      "its inputs as .npz (arrays by input name), .npy (one input) or .json files"]
