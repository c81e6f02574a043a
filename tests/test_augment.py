"""--augment: batched picture augmentation on the device, deterministic for a seed, resumable."""
import dataclasses
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ptx.contract.transforms import normalize
from ptx.models import get, list_models
from ptx.trainers.augment import Augmentation, Augmenter
from ptx.trainers.checkpoint import load_checkpoint
from ptx.trainers.data import load_dataset
from ptx_command import ptx

PICTURE_MODELS = [n for n in list_models() if get(n).contract().picture is not None]
STILL = Augmentation(**{f.name: 0.0 for f in dataclasses.fields(Augmentation) if f.name != "strength"})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist-sample").x_test[:64]


def batch_for(name, digits):
    contract = get(name).contract()
    return contract, torch.from_numpy(normalize(digits, contract))


def ink_of(augmenter, x):
    """Batch -> (N, canvas, canvas) in ink units, the pad ring cut off."""
    p, c = augmenter.pad, augmenter.canvas
    pictures = x.reshape(len(x), augmenter.side, augmenter.side)[:, p:p + c, p:p + c]
    return (pictures - augmenter.paper) / (augmenter.ink - augmenter.paper)


@pytest.mark.parametrize("name", PICTURE_MODELS)
def test_every_picture_model_gets_varied_pictures_of_its_own_layout(name, digits):
    contract, x = batch_for(name, digits)
    augmenter = Augmenter(Augmentation(), contract, torch.device("cpu"), seed=1)
    out = augmenter(x)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    ink = ink_of(augmenter, out)
    assert ink.min() >= -1e-5 and ink.max() <= 1 + 1e-5  # still paper-to-ink, in the model's units
    changed = (ink - ink_of(augmenter, x)).abs().flatten(1).amax(1)
    assert (changed > 0.1).all()  # every picture varied
    if augmenter.pad:  # lenet: the zero padding the contract adds stays as it was
        ring = torch.ones(augmenter.side, augmenter.side, dtype=torch.bool)
        ring[augmenter.pad:-augmenter.pad, augmenter.pad:-augmenter.pad] = False
        pictures = out.reshape(len(x), augmenter.side, augmenter.side)
        assert torch.equal(pictures[:, ring], x.reshape(len(x), augmenter.side, augmenter.side)[:, ring])


def test_the_same_seed_gives_the_same_pictures(digits):
    contract, x = batch_for("convnet", digits)
    a, b, c = (Augmenter(Augmentation(), contract, torch.device("cpu"), seed=s) for s in (7, 7, 8))
    first = a(x)
    assert torch.equal(first, b(x)) and not torch.equal(first, c(x))
    assert not torch.equal(first, a(x))  # the next batch draws anew
    state = b.state()
    again = b(x)
    b.restore(state)
    assert torch.equal(b(x), again)


def _mass_centre(ink):
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = ink.sum((1, 2))
    return torch.stack([(ink * ys).sum((1, 2)) / mass, (ink * xs).sum((1, 2)) / mass], 1)


def _longest_side(ink):
    inked = ink > 0.2
    index = torch.arange(28)
    rows, cols = inked.any(2), inked.any(1)
    height = torch.where(rows, index, -1).amax(1) - torch.where(rows, index, 28).amin(1) + 1
    width = torch.where(cols, index, -1).amax(1) - torch.where(cols, index, 28).amin(1) + 1
    return torch.maximum(height, width)


def test_zero_ranges_only_refit_the_digit_as_the_pipeline_does(digits):
    contract, x = batch_for("convnet", digits)
    augmenter = Augmenter(STILL, contract, torch.device("cpu"), seed=1)
    before, after = ink_of(augmenter, x), ink_of(augmenter, augmenter(x))
    assert (after - before).abs().mean() < 0.03  # MNIST digits are fitted already: nearly unchanged
    assert (_mass_centre(after) - 14).abs().max() < 0.3


def test_rotated_and_sheared_digits_are_fitted_again(digits):
    """A warp changes the digit's shape, never where or how large it sits: the picture pipeline
    always fits a user's digit to the 20-pixel box and centres its mass, so training must too."""
    contract, x = batch_for("convnet", digits)
    augmenter = Augmenter(dataclasses.replace(STILL, rotate_degrees=25, shear_degrees=25, elastic_pixels=2),
                          contract, torch.device("cpu"), seed=1)
    before, after = ink_of(augmenter, x), ink_of(augmenter, augmenter(x))
    assert (after - before).abs().flatten(1).amax(1).min() > 0.3  # every shape changed
    assert (_mass_centre(after) - 14).abs().max() < 0.5
    assert ((_longest_side(after) - 20).abs() <= 1).float().mean() > 0.95


def test_warps_move_and_resize_the_ink_as_asked(digits):
    contract, x = batch_for("convnet", digits)
    before = ink_of(Augmenter(STILL, contract, torch.device("cpu"), 1), x).clamp(0, 1)

    shifted = Augmenter(dataclasses.replace(STILL, translate_pixels=2.0), contract, torch.device("cpu"), 1)
    moved = (_mass_centre(ink_of(shifted, shifted(x))) - 14).abs()  # from where the pipeline centres
    assert moved.max() <= 2.0 + 0.3 and moved.max() > 1.0
    zoomed = Augmenter(dataclasses.replace(STILL, scale=0.3), contract, torch.device("cpu"), 1)
    ratio = ink_of(zoomed, zoomed(x)).sum((1, 2)) / before.sum((1, 2))
    assert ratio.min() < 0.85 and ratio.max() > 1.15  # ink area grows and shrinks with the zoom
    thick = Augmenter(dataclasses.replace(STILL, thickness=1.0), contract, torch.device("cpu"), 1)
    area = (ink_of(thick, thick(x)) > 0.5).sum((1, 2)).float() / (before > 0.5).sum((1, 2))
    assert area.min() < 0.9 and area.max() > 1.2  # thinner and thicker pens


def test_bad_strength_and_non_pictures_are_refused():
    from ptx.errors import PtxError

    with pytest.raises(PtxError, match="at most 3"):
        Augmentation(strength=4)
    for damaged in ({"strength": "strong"}, {"unknown": 1.0}, ["not", "a", "dict"], {"noise": float("nan")}):
        with pytest.raises(PtxError, match="augment settings"):
            Augmentation.from_dict(damaged)
    assert Augmentation.from_dict(Augmentation(strength=2).to_dict()) == Augmentation(strength=2)
    with pytest.raises(PtxError, match="varies pictures"):
        Augmenter(Augmentation(), get("diabetes").contract(), torch.device("cpu"), 1)


@pytest.mark.parametrize("args, message", [
    (["linreg", "--augment"], "--augment varies pictures; linreg takes number input"),
    (["convnet", "--augment-strength", "9"], "augment strength 9 must be above 0 and at most 3"),
    (["convnet", "--augment-strength", "0"], "'0' must be > 0"),
])
def test_cli_refusals_are_one_line(tmp_path, args, message):
    result = ptx("train", *args, "--out", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr  # a refusal (usage or PtxError): exit 2, not a crash
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "checkpoint.pt").exists()


def _train_args(out, epochs):
    return ["train", "convnet", "--dataset", "mnist-sample", "--augment", "--limit", "200", "--epochs", str(epochs),
            "--out", str(out)]


def _train_cmd(out, epochs):
    return [sys.executable, "-m", "ptx", *_train_args(out, epochs)]


def test_sigkill_then_resume_with_augment_is_bit_identical(tmp_path):
    """The augmentation stream is part of the checkpoint: a killed and resumed run ends with the
    weights of an uninterrupted one, to the bit."""
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, 400), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if (killed / "checkpoint.pt").exists() and load_checkpoint(killed / "checkpoint.pt")["epoch"] >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    epoch = load_checkpoint(killed / "checkpoint.pt")["epoch"]
    assert 2 <= epoch < 400
    target = epoch + 1
    resumed = subprocess.run(_train_cmd(killed, target)[:-2] + ["--out", str(killed), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "augment strength 1" in resumed.stdout  # the saved settings came back with the run
    whole = subprocess.run(_train_cmd(tmp_path / "whole", target), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    a = load_checkpoint(killed / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == target
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["config"]["augment"] == Augmentation().to_dict()


def test_augment_is_recorded_in_the_artifact(tmp_path):
    import json

    import onnx

    run = tmp_path / "run"
    trained = ptx(*_train_args(run, 1), "--augment-strength", "0.5")
    assert trained.returncode == 0, trained.stderr
    exported = ptx("export", "convnet", "--format", "onnx", "--checkpoint", run / "checkpoint.pt")
    assert exported.returncode == 0, exported.stderr
    props = {p.key: p.value for p in onnx.load(run / "model.onnx").metadata_props}
    assert json.loads(props["ptx.augment"])["strength"] == 0.5
    assert np.isclose(json.loads(props["ptx.augment"])["rotate_degrees"], Augmentation().rotate_degrees)


def test_printed_digits_replace_a_fraction_of_the_batch_with_the_same_labels(digits):
    contract, x = batch_for("convnet", digits)
    labels = torch.from_numpy(load_dataset("mnist-sample").y_test[:64])
    every = Augmenter(dataclasses.replace(STILL, printed=1.0), contract, torch.device("cpu"), seed=3)
    bank, starts, counts = every.printed
    assert len(every.fonts) >= 10 and set(np.unique(counts.numpy())) != {0}
    out = every(x, labels)
    bank_labels = torch.repeat_interleave(torch.arange(10), counts)
    nearest = torch.cdist(out.flatten(1), bank.flatten(1), p=1).argmin(1)
    assert torch.equal(bank_labels[nearest], labels)  # each became a printed digit of its own label
    some = Augmenter(dataclasses.replace(STILL, printed=0.25), contract, torch.device("cpu"), seed=3)
    still = Augmenter(STILL, contract, torch.device("cpu"), seed=3)
    replaced = (some(x, labels) - still(x)).flatten(1).abs().amax(1) > 0.5
    assert 0 < replaced.sum() < 40


def test_no_printed_digits_for_pictures_that_are_not_digits():
    contract = get("mlp").contract("fashion-mnist")
    augmenter = Augmenter(Augmentation(), contract, torch.device("cpu"), seed=1)
    assert augmenter.printed is None
    assert not augmenter.refits  # fashion-product does not centre by mass: warps are not refitted as digits


def test_resuming_an_augmented_run_on_another_kind_of_device_is_one_clear_line():
    """A CUDA generator's state means nothing to a CPU generator (and back): the resume names the
    device to use instead of failing inside torch."""
    from ptx.errors import CheckpointError
    from ptx.trainers.loop import _restore_rng, _rng_state

    spec = get("convnet")
    contract = spec.contract("mnist-sample")
    augmenter = Augmenter(Augmentation(printed=0), contract, torch.device("cpu"), seed=1)
    shuffle = torch.Generator().manual_seed(1)
    state = _rng_state(shuffle, augmenter)
    assert state["augment_device"] == "cpu"
    _restore_rng(state, shuffle, augmenter)  # the same device: restored
    with pytest.raises(CheckpointError, match="trained with --augment on cuda.*resume with --device cuda"):
        _restore_rng({**state, "augment_device": "cuda"}, shuffle, augmenter)
    # A checkpoint from before the device was kept, holding a CUDA generator's 16-byte state.
    older = {k: v for k, v in state.items() if k != "augment_device"}
    with pytest.raises(CheckpointError, match="does not fit this device's generator"):
        _restore_rng({**older, "augment": torch.zeros(16, dtype=torch.uint8)}, shuffle, augmenter)
