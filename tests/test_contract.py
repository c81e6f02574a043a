"""The contract refuses what is malformed or lying, with one line naming the field; predict,
verify and bench all refuse an edited artifact; library inputs are read by shape and dtype."""
import copy
import json

import numpy as np
import onnx
import pytest
from PIL import Image

from ptx.contract import Contract, ContractError
from ptx.contract.metadata import from_strings, to_strings
from ptx.contract.pictures import PIPELINES
from ptx.contract.schema import PICTURE_PIPELINES
from ptx.errors import ArtifactError, InputError
from ptx.infer import load
from ptx.models import get
from ptx_command import ptx


def edited(doc: dict, path: str, value):
    """A deep copy of ``doc`` with the dotted/indexed ``path`` set to ``value``."""
    doc = copy.deepcopy(doc)
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    target = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return doc


BAD_FIELDS = [  # (model, field path, lying value, the field the error must name)
    ("convnet", "preprocessing[2].std", [0.0], "preprocessing[2].std"),
    ("convnet", "preprocessing[2].std", [-1.0], "preprocessing[2].std"),
    ("convnet", "preprocessing[1].factor", float("nan"), "preprocessing[1].factor"),
    ("convnet", "labels", ["0", "1", "2"], "labels"),
    ("convnet", "labels", ["a"] * 10, "labels"),
    ("convnet", "kind", "video", "kind"),
    ("convnet", "task", "ranking", "task"),
    ("convnet", "input.dtype", "float16", "input.dtype"),
    ("convnet", "input.dtype", "int64", "input.dtype"),
    ("convnet", "input.shape", [1, 1, 28, 28], "input.shape"),
    ("convnet", "input.shape", ["batch", 1, 30, 30], "input.shape"),
    ("convnet", "input.shape", ["batch", "batch", 28, 28], "input.shape"),
    ("convnet", "output.shape", [10, "batch"], "output.shape"),
    ("convnet", "preprocessing[0].pipeline", "cifar", "preprocessing[0].pipeline"),
    ("convnet", "preprocessing[0].params.box", 40, "preprocessing[0].params.box"),
    ("convnet", "preprocessing[0].params.colour", 1, "preprocessing[0].params.colour"),
    ("convnet", "tolerances.cpu.atol", -1, "tolerances.cpu.atol"),
    ("convnet", "schema_version", 99, "schema_version"),
    ("lstm", "input.axes", ["row", "batch"], "input.shape"),
    ("lstm", "input.axes", ["row", "batch", 3], "input.axes"),
    ("diabetes", "features", ["a", "b"], "features"),
    ("diabetes", "preprocessing[0].mean", [1.0, 2.0], "preprocessing[0].mean"),
    ("rnn-hello", "preprocessing[0].pad_id", 0, "preprocessing[0].pad_id"),
    ("gru-classifier", "preprocessing[0].pad_id", 300, "preprocessing[0].pad_id"),
    ("gru-classifier", "preprocessing[0].encoding", "utf-8", "preprocessing[0].encoding"),
    ("linreg", "output.name", "logits", "output.name"),
]


@pytest.mark.parametrize("name,path,value,field", BAD_FIELDS, ids=[f"{m}:{p}={v!r}" for m, p, v, _ in BAD_FIELDS])
def test_from_dict_refuses_and_names_the_field(name, path, value, field):
    doc = edited(get(name).contract().to_dict(), path, value)
    with pytest.raises(ContractError) as err:
        Contract.from_dict(doc)
    message = str(err.value)
    assert f"contract field {field}" in message and "\n" not in message


def test_every_picture_pipeline_is_implemented():
    assert set(PIPELINES) == set(PICTURE_PIPELINES)


@pytest.mark.parametrize("name", ["convnet", "lstm", "gru-classifier", "diabetes"])
def test_metadata_strings_round_trip_and_a_changed_value_is_named(name):
    contract = get(name).contract()
    strings = to_strings(contract, {"dataset": "x"})
    assert from_strings(strings).contract == contract
    doc = json.loads(strings["contract"])
    step = next(i for i, s in enumerate(doc["preprocessing"]) if s["op"] in ("normalize", "encode"))
    key = "mean" if doc["preprocessing"][step]["op"] == "normalize" else "unknown_id"
    value = doc["preprocessing"][step][key]
    doc["preprocessing"][step][key] = [v + 0.1 for v in value] if isinstance(value, list) else value + 1
    lying = {**strings, "contract": json.dumps(doc)}
    with pytest.raises(ContractError, match=rf"preprocessing\[{step}\].*changed after export"):
        from_strings(lying)


def _edit_onnx(src, dst, key, change):
    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = change(prop.value)
    onnx.save(proto, str(dst))


def _contract_edit(path, value):
    return lambda text: json.dumps(edited(json.loads(text), path, value))


LIES = {  # what a hand-edit of model.onnx changes -> (metadata key, change, what the error names)
    "mean": ("ptx.contract", _contract_edit("preprocessing[2].mean", [0.5]), "preprocessing[2]"),
    "std": ("ptx.contract", _contract_edit("preprocessing[2].std", [0.0]), "preprocessing[2].std"),
    "shape": ("ptx.contract", _contract_edit("input.shape", ["batch", 784]), "input.shape"),
    "labels": ("ptx.labels", lambda text: "\n".join(text.split("\n")[:9]), "labels"),
    "renamed labels": ("ptx.labels", lambda text: text.replace("7", "seven"), "labels"),
    "kind": ("ptx.contract", _contract_edit("kind", "number"), "kind"),
    "dtype": ("ptx.contract", _contract_edit("input.dtype", "int64"), "input.dtype"),
    "batch axis": ("ptx.contract", _contract_edit("input.shape", [1, "batch", 28, 28]), "input.shape"),
    "malformed JSON": ("ptx.contract", lambda text: text[:-5], "ptx.contract"),
    "checksums": ("ptx.checksums", lambda text: "{}", "changed after export"),
}


@pytest.fixture(scope="module")
def lying_runs(runs, tmp_path_factory):
    """One runs root per lie, each a copy of convnet's run with model.onnx edited."""
    src = runs.trained("convnet")
    roots = {}
    for lie, (key, change, _) in LIES.items():
        root = tmp_path_factory.mktemp("lie")
        (root / "convnet").mkdir()
        for f in ("checkpoint.pt", "model.torchscript.pt"):
            (root / "convnet" / f).write_bytes((src / f).read_bytes())
        _edit_onnx(src / "model.onnx", root / "convnet" / "model.onnx", key, change)
        roots[lie] = root
    return roots


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_artifact_is_refused_by_load_predict_verify_and_bench(lying_runs, lie, tmp_path):
    root, named = lying_runs[lie], LIES[lie][2]
    with pytest.raises(ArtifactError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load("convnet", backend="ort-cpu", root=root)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "d.png")
    commands = {
        "predict": ["predict", str(tmp_path / "d.png"), "--root", str(root)],
        "verify": ["verify", "convnet", "--samples", "20", "--backends", "ort-cpu", "--root", str(root)],
        "bench": ["bench", "convnet", "--backends", "ort-cpu", "--batch-sizes", "1", "--seconds", "0.01",
                  "--root", str(root)],
    }
    for command, args in commands.items():
        result = ptx(*args)
        assert result.returncode != 0, f"{command} accepted the {lie} lie"
        assert "Traceback" not in result.stderr, result.stderr
        where = result.stderr if command != "verify" else result.stdout
        assert named in where, f"{command}: {where}"


def test_verify_fails_when_an_artifact_does_not_load(runs, tmp_path):
    src = runs.trained("convnet")
    (tmp_path / "convnet").mkdir()
    for f in ("checkpoint.pt", "model.torchscript.pt"):
        (tmp_path / "convnet" / f).write_bytes((src / f).read_bytes())
    (tmp_path / "convnet" / "model.onnx").write_bytes((src / "model.onnx").read_bytes()[:2000])  # truncated
    result = ptx("verify", "convnet", "--samples", "20", "--root",
                 str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line.startswith("ort-cpu") and "FAIL" in line for line in result.stdout.splitlines())


# -- library input semantics ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(runs):
    x, y = runs.test_samples("convnet", 40)
    return x, y, load("convnet", backend="ort-cpu", root=runs.ready("convnet"))


def on_paper(digit28: np.ndarray, size: int = 200) -> np.ndarray:
    """A (size, size, 3) uint8 photo: the digit dark on white paper, enlarged, off-centre."""
    ink = Image.fromarray(255 - digit28).resize((140, 140), Image.Resampling.BILINEAR)
    page = Image.new("L", (size, size), 255)
    page.paste(ink, (40, 20))
    return np.asarray(page.convert("RGB"))


def test_an_rgb_photo_array_is_one_picture(digits):
    x, y, predictor = digits
    photo = on_paper(x[0])
    assert photo.shape == (200, 200, 3)
    results = predictor.predict(photo)
    assert len(results) == 1
    assert results[0].label == predictor.predict_raw(x[:1])[0].label


def test_float_pictures_in_0_1_match_uint8(digits):
    x, _, predictor = digits
    as_uint8 = [r.label for r in predictor.predict(x[:20])]
    as_float = [r.label for r in predictor.predict(x[:20].astype(np.float32) / 255.0)]
    assert as_float == as_uint8
    photo = on_paper(x[1])
    assert predictor.predict(photo.astype(np.float64) / 255.0)[0].label == predictor.predict(photo)[0].label


def test_array_shapes_decide_one_or_many(digits):
    x, _, predictor = digits
    assert len(predictor.predict(x[:5])) == 5  # (N, H, W)
    assert len(predictor.predict(x[0])) == 1  # (H, W)
    assert len(predictor.predict(x[:5, :, :, None])) == 5  # (N, H, W, 1)
    assert len(predictor.predict(np.stack([on_paper(d) for d in x[:3]]))) == 3  # (N, H, W, 3)
    rgba = np.concatenate([on_paper(x[2]), np.full((200, 200, 1), 255, np.uint8)], axis=-1)
    assert len(predictor.predict(rgba)) == 1  # (H, W, 4)
    assert len(predictor.predict([x[0], Image.fromarray(x[1])])) == 2


@pytest.mark.parametrize("bad,reason", [
    (np.full((28, 28), 3.0), "outside \\[0, 1\\]"),
    (np.full((28, 28), np.nan), "NaN"),
    (np.full((28, 28), 300, np.int32), "outside 0..255"),
    (np.zeros((2, 2, 28, 28)), "shape"),
    (np.zeros(28), "shape"),
    ([], "nothing to predict"),
    (None, "nothing to predict"),
    (np.zeros((28, 28), np.uint8), "no ink"),
    ([12], "not a picture"),
])
def test_bad_library_inputs_are_input_errors(digits, bad, reason):
    _, _, predictor = digits
    with pytest.raises(InputError, match=reason):
        predictor.predict(bad)


def test_load_refuses_what_is_not_a_name_or_path_and_unknown_devices(runs):
    from ptx.errors import PtxError

    with pytest.raises(PtxError, match="a model name, a run folder, a model file.s path or an nn.Module"):
        load(123)
    with pytest.raises(PtxError, match="unknown device"):
        load("convnet", backend="eager", root=runs.ready("convnet"), device="bogus")


def test_artifacts_written_before_a_new_picture_parameter_still_load():
    """A parameter added later with a default (paper_window) must not make an older artifact's
    checksums fail: they cover the document as stored, and the reader fills in the default."""
    import hashlib

    strings = to_strings(get("convnet").contract())
    doc = json.loads(strings["contract"])
    del doc["preprocessing"][0]["params"]["paper_window"]
    sums = json.loads(strings["checksums"])
    sums["preprocessing[0]"] = hashlib.sha256(json.dumps(doc["preprocessing"][0], sort_keys=True,
                                                         separators=(",", ":")).encode()).hexdigest()[:16]
    older = {**strings, "contract": json.dumps(doc), "checksums": json.dumps(sums)}
    info = from_strings(older)
    assert info.contract.picture.options["paper_window"] == PICTURE_PIPELINES["mnist-digit"]["paper_window"]
    doc["preprocessing"][0]["params"]["box"] = 18  # an edit is still caught
    with pytest.raises(ContractError, match=r"preprocessing\[0\] was changed"):
        from_strings({**older, "contract": json.dumps(doc)})


def test_run_in_batches_chunks_on_the_input_batch_axis_and_joins_outputs_batch_first():
    """Export's int8 judge and verify share it: a seq-first input (lstm: batch on axis 1) must come
    back as one batch-first output, in order."""
    from ptx.contract.transforms import run_in_batches

    x = np.arange(28 * 130 * 3, dtype=np.float32).reshape(28, 130, 3)
    seen = []

    def run(batch):
        seen.append(batch.shape[1])
        return batch[0, :, :1]  # (batch, 1): each sample's first value

    out = run_in_batches(run, x, batch_axis=1, chunk=64)
    assert seen == [64, 64, 2] and out.shape == (130, 1)
    np.testing.assert_array_equal(out[:, 0], x[0, :, 0])
