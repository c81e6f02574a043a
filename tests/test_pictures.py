"""Picture pipelines on the pictures people have, and the evaluation set's split from training.

The accuracy these lead to is measured by scripts/real_pictures.py (docs/models.md); here, what a
pipeline makes of a picture is compared with the dataset sample it was made from, pixel by pixel.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ptx.contract import PictureStep
from ptx.contract.pictures import fashion_product, picture_sample
from ptx.errors import InputError
from ptx.trainers.data import load_dataset
from ptx.trainers.printed import training_faces

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 300


@pytest.fixture(scope="module")
def fashion():
    data = load_dataset("fashion-mnist")
    return data.x_test[:SAMPLES]


def _distance(pictures, originals) -> float:
    """Mean absolute difference, 0-255, between what the pipeline makes of ``pictures`` and the samples."""
    made = np.stack([fashion_product(np.asarray(p, dtype=np.float32)) for p in pictures])
    return float(np.abs(made.astype(np.float64) - originals).mean())


def test_fashion_samples_come_back_as_they_are(fashion):
    # A 28x28 sample through the pipeline: nothing to resize unless the trim finds a faint edge.
    same = np.mean([np.array_equal(fashion_product(x.astype(np.float32)), x) for x in fashion])
    assert same >= 0.85, f"only {same:.0%} of Fashion-MNIST test images come back unchanged"


@pytest.mark.parametrize("backdrop", [255, 230])
def test_an_enlarged_product_picture_lands_on_the_dataset_pixels(fashion, backdrop):
    # As a shop shows it: dark on white (or a light grey backdrop), enlarged 4x with bicubic
    # resampling. Subsampling and sharpening left 16.5 (white) and 27.5 (grey) of difference here.
    enlarged = [np.asarray(Image.fromarray(x).resize((112, 112), Image.Resampling.BICUBIC), dtype=np.float32)
                for x in fashion]
    shots = [np.round(np.clip(backdrop * (1 - e / 255), 0, 255)) for e in enlarged]
    assert _distance(shots, fashion) < 12.5


def test_an_odd_margin_puts_its_extra_pixel_first():
    # Fashion-MNIST centres a product 13 pixels wide at column 8 (15 spare: 8 before, 7 after).
    product = np.zeros((28, 28), dtype=np.float32)
    product[:, 8:21] = 200
    assert np.array_equal(fashion_product(product), product.astype(np.uint8))
    wide = np.asarray(Image.fromarray(255 - product.astype(np.uint8)).resize((112, 112), Image.Resampling.NEAREST))
    columns = np.flatnonzero(fashion_product(wide.astype(np.float32)).any(axis=0))
    assert (columns[0], columns[-1]) == (8, 20)


def _real_pictures():
    spec = importlib.util.spec_from_file_location("real_pictures", ROOT / "scripts" / "real_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_evaluation_typefaces_are_none_that_training_draws():
    real = _real_pictures()
    related = real.RELATED_TO_TRAINING
    trained = {family for _, family, _, _ in training_faces()}
    assert trained, "no training faces found"
    # Every family --augment draws is named in the evaluation's exclusions...
    assert all(family.startswith(related) for family in trained), sorted(f for f in trained if not f.startswith(related))
    # ...and no evaluated family is one of them, or shares its first word with one.
    first_words = {family.split()[0] for family in trained}
    for family in real.UNSEEN_FAMILIES:
        assert not family.startswith(related) and family.split()[0] not in first_words, family


def test_the_installed_evaluation_fonts_are_the_families_declared():
    real = _real_pictures()
    patterns = (real.HANDWRITING_FONTS + real.ONE_FAMILY_FONTS + real.MANY_FONTS
                + [pattern for pattern, _ in real.UNSEEN_FAMILIES.values()])
    files = sorted({path for pattern in patterns for path in real.FONT_DIR.glob(pattern)})
    if not files:
        pytest.skip(f"no evaluation fonts installed (apt-get install {real.DEBIAN_FONTS})")
    for path in files:
        family = ImageFont.truetype(str(path), 16).getname()[0]
        assert not family.startswith(real.RELATED_TO_TRAINING), f"{path} is {family}, a family --augment trains on"


def test_printed_digits_weigh_every_training_family_alike():
    from ptx.models import get
    from ptx.trainers.printed import printed_digits

    samples, labels, faces, families = printed_digits(get("convnet").contract("mnist-sample").picture)
    assert len(samples) == len(labels) == len(families) and set(labels) == set(range(10))
    counts = {family: families.count(family) for family in set(families)}
    # Designs with a footless "1" that only one face draws are there, and not drowned by DejaVu's styles.
    assert {"Aileron", "STIX sans", "STIX mono"} <= set(counts), sorted(counts)
    assert max(counts.values()) <= 2 * min(counts.values()), counts


def _paper_digit_picture() -> Image.Image:
    """A dark stroke digit ("7") on white paper, 120x120, no dataset needed."""
    page = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(page).line([(30, 25), (90, 25), (50, 100)], fill=0, width=9)
    return page


@pytest.mark.parametrize("version", [1, 2])
def test_a_cielab_tiff_gives_the_digit_its_rgb_twin_gives(tmp_path, version):
    # A CIELab TIFF (scanners and Photoshop write them) opens in Pillow's mode LAB, which converts to
    # no other mode: `ptx predict` on a folder holding one ended in a ValueError traceback.
    page = _paper_digit_picture().convert("RGB")
    page.convert("LAB").save(tmp_path / "lab.tif")
    assert Image.open(tmp_path / "lab.tif").mode == "LAB"
    step = PictureStep.make("mnist-digit", version=version)
    lab = picture_sample(tmp_path / "lab.tif", step).astype(int)
    rgb = picture_sample(page, step).astype(int)
    assert np.abs(lab - rgb).mean() < 6


def test_a_mode_pillow_cannot_make_grey_is_one_input_error():
    premultiplied = _paper_digit_picture().convert("LA").convert("La")
    with pytest.raises(InputError, match="cannot make a La picture grey"):
        picture_sample(premultiplied, PictureStep.make("mnist-digit"), name="la.png")


@pytest.mark.parametrize("version", [1, 2])
def test_white_ink_on_a_clear_background_is_read_as_the_digit(version):
    # A white brush on a drawing app's transparent canvas: composited on white paper it vanished, and
    # `ptx predict` said "no ink found: the picture is one flat colour".
    page = _paper_digit_picture()
    ink = Image.new("RGBA", page.size, (255, 255, 255, 0))
    ink.putalpha(Image.eval(page, lambda v: 255 - v))  # opaque white where the paper digit is dark
    step = PictureStep.make("mnist-digit", version=version)
    assert np.array_equal(picture_sample(ink, step), picture_sample(Image.eval(page, lambda v: 255 - v), step))
    dark = Image.new("RGBA", page.size, (0, 0, 0, 0))
    dark.putalpha(Image.eval(page, lambda v: 255 - v))  # black ink on clear: still composited on white
    assert np.array_equal(picture_sample(dark, step), picture_sample(page, step))
