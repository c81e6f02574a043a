"""Picture pipelines have versions (issue 37): an artifact keeps the pipeline it names, to the bit; a
new export writes the newest; version 2 of mnist-digit reads real pictures as version 1 does."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ptx.contract import ContractError, PictureStep
from ptx.contract.metadata import from_strings
from ptx.contract.pictures import picture_sample
from ptx.contract.schema import PICTURE_VERSIONS
from ptx.errors import InputError
from ptx.infer import open_artifact

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def test_an_artifact_written_before_versions_keeps_its_pipelines_samples_to_the_bit():
    """pipeline-v1-contracts.json holds the ptx.* contract strings of a convnet (mnist-digit) and an
    mlp (fashion-product) exported by ptx at commit 67cc138, before pipelines had versions;
    pipeline-v1-pictures.npz a picture of every real-picture kind (scripts/real_pictures.py, the
    Fashion set too), the README's demo digit, light ink on black, RGBA on transparent, 16-bit,
    noise at odd sizes and a 1400x1400 JPEG's bytes (decoded in draft); pipeline-v1-samples.npz what
    that ptx made of each with each contract (Pillow 13.0, numpy 2.4). Read now, each contract is
    version 1, writes back the document it was, and gives those samples."""
    contracts = json.loads((DATA / "pipeline-v1-contracts.json").read_text())
    pictures = np.load(DATA / "pipeline-v1-pictures.npz")
    want = np.load(DATA / "pipeline-v1-samples.npz")
    compared = 0
    for model, strings in contracts.items():
        step = from_strings(strings).contract.picture
        assert step.version == 1
        stored = json.loads(strings["contract"])["preprocessing"][0]
        assert step.to_dict() == stored, "a version 1 step must write back what older ptx wrote"
        for name in pictures.files:
            item = pictures[name].tobytes() if name.startswith("jpeg") else pictures[name]
            got = picture_sample(item, step, name=name)
            differ = np.flatnonzero(got != want[f"{model}|{name}"])
            assert not differ.size, f"{model} ({step.pipeline} 1), {name}: {differ.size} pixels differ from the " \
                                    "samples ptx made before versions (made with Pillow 13.0 and numpy 2.4)"
            compared += 1
    assert compared == len(want.files) == 36


def test_a_new_step_takes_the_newest_version_and_a_newer_one_is_refused():
    assert PictureStep.make("mnist-digit").version == PICTURE_VERSIONS["mnist-digit"][-1] == 2
    assert PictureStep.make("mnist-digit").to_dict()["params"]["version"] == 2
    assert "version" not in PictureStep.make("fashion-product").to_dict()["params"]  # 1: as older ptx wrote it
    assert PictureStep.from_dict({"op": "picture", "pipeline": "mnist-digit", "params": {}}, "p").version == 1
    for value, why in [(3, "mnist-digit version 3 is newer than this ptx computes (1, 2): upgrade ptx"),
                       ("2", "'2' is not a version number"), (True, "True is not a version number"),
                       (0, "0 is not a version number")]:
        with pytest.raises(ContractError, match="p.params.version: " + why.replace("(", r"\(").replace(")", r"\)")):
            PictureStep.from_dict({"op": "picture", "pipeline": "mnist-digit", "params": {"version": value}}, "p")
    with pytest.raises(ContractError, match="fashion-product version 2 is newer"):
        PictureStep.make("fashion-product", version=2)


def test_a_new_export_names_version_2_and_predicts_with_it(runs):
    """The test session's convnet is a run trained now: its export names version 2, and `predict`
    gives version 2's samples (which differ from version 1's on a photo-like picture)."""
    predictor = open_artifact(runs.trained("convnet") / "model.onnx", "ort-cpu")
    step = predictor.contract.picture
    assert step.version == 2
    demo = np.load(DATA / "pipeline-v1-pictures.npz")["demo-digit"]
    sample = predictor.prepare_one(demo)
    assert np.array_equal(sample, picture_sample(demo, step))
    assert not np.array_equal(sample, picture_sample(demo, PictureStep.make("mnist-digit", version=1)))


def _real_picture_kinds(per_kind: int):
    spec = importlib.util.spec_from_file_location("real_pictures", ROOT / "scripts" / "real_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn, missing = {}, []
    for index, (kind, draw) in enumerate(module.KINDS.items()):
        try:  # the script's own seeds: the first pictures of each kind the evaluation set holds
            drawn[kind] = list(draw(np.random.default_rng([module.SEED, index]), per_kind))
        except SystemExit as why:  # a font package or data file this machine lacks
            missing.append(f"{kind}: {why}")
    return drawn, missing


def test_version_2_reads_the_real_pictures_as_version_1_does(runs):
    """Acceptance of issue 37: on the real-picture sets (the first 40 pictures of each kind the
    evaluation set holds), version 2 gives version 1's label to nearly every picture version 1 reads
    right, and reads no kind and not the whole set worse beyond borderline pictures. The test
    session's convnet (4 epochs, no --augment) misreads a fifth of these, so more of its answers sit
    on a border than the demo model's: with it version 2 kept 220 of the 228 labels version 1 got
    right and read 225 right where version 1 read 228 (8 lost, 5 won); with the demo's model it
    lost 1 and won none, and docs/artifact-format.md's table has the whole sets."""
    drawn, missing = _real_picture_kinds(40)
    assert len(drawn) >= 5, missing
    predictor = open_artifact(runs.trained("convnet") / "model.onnx", "ort-cpu")
    steps = [PictureStep.make("mnist-digit", version=v) for v in (1, 2)]
    kept, right, total = 0, [0, 0], 0
    for kind, pictures in drawn.items():
        truth = np.array([label for label, _ in pictures])
        labels = []
        for step in steps:
            samples = np.stack([picture_sample(picture, step) for _, picture in pictures])
            labels.append(np.array([p.label for p in predictor.predict_raw(samples)]))
        before, after = (labels[0] == truth), (labels[1] == truth)
        kept += int((before & (labels[1] == labels[0])).sum())
        right = [right[0] + int(before.sum()), right[1] + int(after.sum())]
        total += len(truth)
        assert after.sum() >= before.sum() - 3, f"{kind}: version 2 reads {after.sum()} of {len(truth)} right, " \
                                                f"version 1 {before.sum()}"
    assert kept >= 0.95 * right[0], f"version 2 keeps {kept} of the {right[0]} labels version 1 got right"
    assert right[1] >= right[0] - 0.02 * total, f"version 2 reads {right[1]} of {total} right, version 1 {right[0]}"


def test_version_2_refuses_what_version_1_refuses():
    blank = np.full((50, 70), 200, np.uint8)
    for version in (1, 2):
        with pytest.raises(InputError, match="no ink found"):
            picture_sample(blank, PictureStep.make("mnist-digit", version=version), name="blank")
