#!/usr/bin/env python3
"""Evaluation sets of real-looking pictures, and accuracy per kind through `ptx predict`.

    python3 scripts/real_pictures.py build              # writes eval/real-pictures/<kind>/*.png
    python3 scripts/real_pictures.py score convnet      # accuracy per kind of runs/convnet
    python3 scripts/real_pictures.py score convnet --root runs-augment --markdown
    python3 scripts/real_pictures.py build --set fashion && python3 scripts/real_pictures.py score mlp --set fashion

The digit set (the default). None of these pictures is ever used for training (ptx trains on MNIST
only). The sources, chosen because they are offline, real and unlike MNIST's own preparation:

- ``handwritten-uci``: UCI's optical recognition of handwritten digits (43 writers, none of
  them MNIST's; the copy scikit-learn ships as sklearn/datasets/data/digits.csv.gz, read as a file,
  scikit-learn is never imported). Each is an 8x8 grid of ink counts, so they are enlarged
  smoothly and printed dark on light paper, as a low-resolution scan.
- ``handwriting-fonts``: digits in fonts drawn from people's handwriting (Debian's fonts-breip,
  fonts-bwht, fonts-dkg-handwriting, fonts-femkeklaver, fonts-humor-sans, fonts-comic-neue,
  fonts-kristi), scanned: slight rotation, pen colour, paper tint, blur, noise.
- ``printed-one-family``: Liberation Sans (Arial's metrics; regular, bold, italic), clean scans.
- ``printed-photographed``: eight font families (Liberation Serif and Mono, FreeSans, FreeSerif,
  FreeMono, Carlito, Caladea, Cantarell, Lato), photographed: tinted paper, uneven light and a shadow,
  perspective, rotation, blur, sensor noise and JPEG compression.
- ``mnist-held-out``: MNIST digits from the mnist-sample test split (never trained on), printed
  dark on tinted paper at 80-240 px, off-centre, blurred and noisy, as a phone photo of a print.
- ``unseen-typefaces``: 44 more type families (UNSEEN_FAMILIES: sans, serif, slab, monospace,
  signage, OCR, old-style figures), a family drawn uniformly, then one of its styles, photographed
  as ``printed-photographed`` is.
- ``low-res-scans``: digits scanned at low resolution: handwriting (mnist-sample's test split and
  the handwriting fonts) and the unseen typefaces, drawn 8-16 px tall, sampled by the scanner (an
  area average), half of them as black-and-white scans, then enlarged 4-10x by repeating pixels, so
  strokes are blocks.

No font here is one that ``ptx train --augment`` mixes into training (trainers/printed.py:
matplotlib's DejaVu, STIX and Computer Modern, Pillow's Aileron), nor a design derived from one
(RELATED_TO_TRAINING);
tests/test_pictures.py checks the split. The pictures are drawn from a fixed seed, so the set is the
same on every machine with the same fonts. ``build`` says which fonts are missing and which Debian
packages to install.

The Fashion set (``--set fashion``) measures the ``fashion-product`` pipeline: the first 1,000
Fashion-MNIST test images as the 28x28 samples they are (scored with ``--raw``, as raw arrays, and
through the pipeline), and as shops show products: dark on white enlarged to 112 px with bicubic
resampling, and on a light grey backdrop enlarged to 200 px with Lanczos, as a JPEG.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "eval" / "real-pictures"
FONT_DIR = Path("/usr/share/fonts")
PER_KIND = 400
SEED = 2026

HANDWRITING_FONTS = ["truetype/breip/*.ttf", "opentype/bwht/*.otf", "truetype/fifthhorseman/*.ttf",
                     "truetype/femkeklaver/*.ttf", "truetype/humor-sans/*.ttf", "opentype/comic-neue/*.otf",
                     "truetype/kristi/*.ttf"]
# No DejaVu, STIX or Computer Modern: --augment trains on those (trainers/printed.py), and these
# kinds measure fonts the model has never seen.
ONE_FAMILY_FONTS = ["truetype/liberation2/LiberationSans-*.ttf"]
MANY_FONTS = ["truetype/liberation2/LiberationSerif-*.ttf", "truetype/liberation2/LiberationMono-*.ttf",
              "truetype/freefont/*.ttf", "truetype/crosextra/*.ttf", "opentype/cantarell/*.otf",
              "truetype/lato/Lato-[BHLMRST]*.ttf"]
# Type families for ``unseen-typefaces`` (and the printed part of ``low-res-scans``): the family name
# the font files give (a prefix of it: "Go" is Go, Go Mono, ...), where Debian puts them, and the
# package. Chosen for variety (humanist, geometric and grotesque sans, DIN and signage faces, old-style
# and modern serifs, slabs, monospaces, OCR-B) among the families Debian packages, none of them
# trained on and none a clone of a trained family.
UNSEEN_FAMILIES = {
    "Roboto": ("truetype/roboto/unhinted/RobotoTTF/Roboto-*.ttf", "fonts-roboto-unhinted"),
    "Roboto Slab": ("opentype/roboto/slab/*.otf", "fonts-roboto-slab"),
    "Open Sans": ("truetype/open-sans/*.ttf", "fonts-open-sans"),
    "Inter": ("opentype/inter/Inter-*.otf", "fonts-inter"),
    "Cabin": ("opentype/cabin/*.otf", "fonts-cabin"),
    "Karla": ("truetype/karla/*.otf", "fonts-karla"),
    "Go": ("fonts-go/*.ttf", "fonts-go"),
    "Oxygen": ("truetype/oxygen/*.ttf", "fonts-oxygen"),
    "B612": ("opentype/b612/*.otf", "fonts-b612"),
    "Clear Sans": ("truetype/clear-sans/*.ttf", "fonts-clear-sans"),
    "Andika": ("truetype/andika/*.ttf", "fonts-sil-andika"),
    "Comfortaa": ("truetype/comfortaa/*.ttf", "fonts-comfortaa"),
    "Quicksand": ("truetype/quicksand/*.ttf", "fonts-quicksand"),
    "Manrope": ("truetype/manrope/*.ttf", "fonts-manrope"),
    "Sora": ("opentype/sora/*.otf", "fonts-sora"),
    "League Spartan": ("opentype/league-spartan/*.otf", "fonts-league-spartan"),
    "Dosis": ("opentype/dosis/*.otf", "fonts-dosis"),
    "Jura": ("opentype/jura/*.otf", "fonts-jura"),
    "Play": ("opentype/play/*.otf", "fonts-play"),
    "Nimbus Sans": ("opentype/urw-base35/NimbusSans*.otf", "fonts-urw-base35"),
    "URW Gothic": ("opentype/urw-base35/URWGothic-*.otf", "fonts-urw-base35"),
    "Tiresias": ("truetype/tiresias/*.ttf", "fonts-tiresias"),
    "OSP-DIN": ("truetype/opendin/*.ttf", "fonts-opendin"),
    "National Park": ("opentype/national-park/*.otf", "fonts-national-park"),
    "Bebas Neue": ("opentype/bebas-neue/*.otf", "fonts-bebas-neue"),
    "OCR B": ("opentype/ocr-b/*.otf", "fonts-ocr-b"),
    "C059": ("opentype/urw-base35/C059-*.otf", "fonts-urw-base35"),
    "P052": ("opentype/urw-base35/P052-*.otf", "fonts-urw-base35"),
    "URW Bookman": ("opentype/urw-base35/URWBookman-*.otf", "fonts-urw-base35"),
    "Linux": ("opentype/linux-libertine/*.otf", "fonts-linuxlibertine"),
    "EB Garamond": ("opentype/ebgaramond/*.otf", "fonts-ebgaramond"),
    "Vollkorn": ("truetype/vollkorn/*.ttf", "fonts-vollkorn"),
    "Charis SIL": ("truetype/charis/*.ttf", "fonts-sil-charis"),
    "Gentium": ("truetype/gentiumplus/*.ttf", "fonts-sil-gentiumplus"),
    "Old Standard": ("truetype/fonts-oldstandard/*.ttf", "fonts-oldstandard"),
    "Quattrocento": ("opentype/quattrocento/*.otf", "fonts-quattrocento"),
    "Inconsolata": ("truetype/inconsolata/*.otf", "fonts-inconsolata"),
    "JetBrains Mono": ("truetype/jetbrains-mono/*.ttf", "fonts-jetbrains-mono"),
    "Fira Code": ("truetype/firacode/*.ttf", "fonts-firacode"),
    "Anonymous Pro": ("truetype/anonymous-pro/*.ttf", "fonts-anonymous-pro"),
    "Courier Prime": ("opentype/courier-prime/*.otf", "fonts-courier-prime"),
    "Nimbus Mono": ("opentype/urw-base35/NimbusMonoPS-*.otf", "fonts-urw-base35"),
    "Fantasque Sans Mono": ("opentype/fantasque-sans/NoLoopK/OTF/*.otf", "fonts-fantasque-sans"),
    "mononoki": ("truetype/mononoki/*.ttf", "fonts-mononoki"),
}
# The families --augment trains on (trainers/printed.py: DejaVu, STIX with its mathematical sans and
# mono digits, Computer Modern's cm*, Pillow's Aileron) and designs derived from them (DejaVu is
# Bitstream Vera, Hack is Vera Sans Mono; Latin Modern, CMU and TeX Gyre are Computer Modern and its
# companions): never evaluated. tests/test_pictures.py checks that every trained family is here.
RELATED_TO_TRAINING = ("DejaVu", "Bitstream Vera", "Hack", "Latin Modern", "LM ", "CMU ", "TeX Gyre", "STIX", "cm",
                       "Aileron")
# Styles that are not a printed digit as people meet one: outlines, inverted faces, hairlines,
# keycaps, decorated initials.
NOT_PRINT = ("Outline", "Inverted", "Thin", "Hairline", "ExtraLight", "Extra Light", "Keyboard", "Initials")
DEBIAN_FONTS = " ".join(dict.fromkeys(
    "fonts-liberation2 fonts-freefont-ttf fonts-crosextra-carlito fonts-crosextra-caladea fonts-cantarell fonts-lato "
    "fonts-comic-neue fonts-dkg-handwriting fonts-breip fonts-bwht fonts-femkeklaver fonts-humor-sans "
    "fonts-kristi".split() + [package for _, package in UNSEEN_FAMILIES.values()]))


def fonts(patterns: list[str]) -> list[Path]:
    found = sorted({p for pattern in patterns for p in FONT_DIR.glob(pattern)})
    # A font without the digits renders boxes or nothing: keep only those that draw all ten.
    return [p for p in found if _draws_digits(p)]


def font_family(path: Path) -> tuple[str, str]:
    """(family, style) as the font file names them."""
    return ImageFont.truetype(str(path), 16).getname()


def unseen_families() -> dict[str, list[Path]]:
    """UNSEEN_FAMILIES -> the installed files of each, print styles only; a file whose own family
    name is not the declared one is refused, so the split cannot drift with a package's contents."""
    found, missing = {}, []
    for family, (pattern, package) in UNSEEN_FAMILIES.items():
        files = []
        for path in fonts([pattern]):
            name, style = font_family(path)
            if not name.startswith(family):
                raise SystemExit(f"{path} is family {name!r}, not {family!r}: fix UNSEEN_FAMILIES")
            if not any(word in f"{name} {style}" for word in NOT_PRINT):
                files.append(path)
        if files:
            found[family] = files
        else:
            missing.append(package)
    if missing:
        raise SystemExit(f"unseen-typefaces needs fonts that are missing: apt-get install {' '.join(dict.fromkeys(missing))}")
    return found


def _draws_digits(path: Path) -> bool:
    try:
        font = ImageFont.truetype(str(path), 64)
    except OSError:
        return False
    boxes = [font.getbbox(str(d)) for d in range(10)]
    masks = [np.asarray(_glyph(font, str(d))) for d in range(10)]
    return all(b[2] > b[0] and b[3] > b[1] for b in boxes) and len({m.tobytes() for m in masks}) == 10


def _glyph(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """The text as white ink on black, cropped to the ink."""
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(image).text((4 - left, 4 - top), text, fill=255, font=font)
    return image.crop(image.getbbox() or (0, 0, 1, 1))


# -- the camera: ink (white on black, 0..255) -> a picture of it on paper ---------------------------

def photograph(ink: Image.Image, rng: np.random.Generator, *, size: tuple[int, int], tilt: float, perspective: float,
               blur: float, noise: float, light: float, jpeg: bool, margin: float = 0.35) -> Image.Image:
    """Print ``ink`` on tinted paper and take a picture of it, ``size`` pixels tall or wide (a range).
    Every strength is an upper bound drawn per picture."""
    size = int(rng.integers(*size))
    ink = ink.rotate(rng.uniform(-tilt, tilt), resample=Image.Resampling.BICUBIC, expand=True)
    scale = size / max(ink.size)
    ink = ink.resize((max(2, round(ink.width * scale)), max(2, round(ink.height * scale))), Image.Resampling.LANCZOS)
    side = round(size * (1 + 2 * margin * rng.uniform(0.6, 1.0)))
    page = Image.new("L", (side, side), 0)
    x = int(rng.integers(0, side - ink.width + 1))
    y = int(rng.integers(0, side - ink.height + 1))
    page.paste(ink, (x, y))
    if perspective:
        page = _tilt_plane(page, rng, perspective)
    coverage = np.asarray(page, dtype=np.float32)[..., None] / 255.0
    paper = np.array([235, 230, 220]) + rng.uniform(-25, 20, 3)  # white, cream, grey or tinted paper
    pen = np.array([25, 25, 35]) + rng.uniform(-20, 40, 3)  # black, blue or pencil grey
    picture = paper * (1 - coverage) + pen * coverage
    if light:  # uneven light: a gradient across the page, and half the time a soft-edged shadow
        yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
        angle = rng.uniform(0, 2 * np.pi)
        along = np.cos(angle) * xx + np.sin(angle) * yy  # -0.7..0.7 across the page
        shade = 1 - light * rng.uniform(0.3, 1.0) * (along + 0.75) / 1.5
        if rng.random() < 0.5:  # a phone or hand between the lamp and the page
            angle = rng.uniform(0, 2 * np.pi)
            edge = np.cos(angle) * xx + np.sin(angle) * yy - rng.uniform(-0.3, 0.3)
            shade = shade * (1 - light * rng.uniform(0.3, 0.8) / (1 + np.exp(-edge / rng.uniform(0.03, 0.1))))
        picture = picture * shade[..., None]
    picture = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")
    if blur:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * blur * side / 100))
    if noise:
        values = np.asarray(picture, dtype=np.float32) + rng.normal(0, rng.uniform(0.3, 1.0) * noise, (side, side, 3))
        picture = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "RGB")
    if jpeg:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=int(rng.integers(55, 90)))
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return picture


def _tilt_plane(page: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """A camera not quite square to the paper: the four corners pulled by up to ``strength``."""
    side = page.width
    jitter = rng.uniform(-strength, strength, (4, 2)) * side
    corners = np.array([[0, 0], [side, 0], [side, side], [0, side]], dtype=np.float64)
    source = corners + jitter
    rows = []
    for (x, y), (u, v) in zip(corners, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coefficients = np.linalg.solve(np.array(rows), source.reshape(-1))
    return page.transform(page.size, Image.Transform.PERSPECTIVE, tuple(coefficients), Image.Resampling.BICUBIC)


# -- the kinds ----------------------------------------------------------------------------------------

def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise SystemExit("handwritten-uci needs scikit-learn's data file: pip install --no-deps scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(gzip.open(path), delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def handwritten_uci(rng, n):
    grids, labels = uci_digits()
    for i in rng.choice(len(grids), n, replace=False):
        # 8x8 ink counts (0-16) from 4x4 blocks of a 32x32 bitmap: enlarge back smoothly, then
        # sharpen the edge a little as a scanner's threshold would.
        cells = Image.fromarray((grids[i] * (255 / 16)).astype(np.uint8))
        big = np.asarray(cells.resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float32)
        ink = Image.fromarray(np.clip((big - 40) * 1.6, 0, 255).astype(np.uint8))
        yield labels[i], photograph(ink, rng, size=(60, 160), tilt=4, perspective=0, blur=0.6,
                                    noise=6, light=0.05, jpeg=False)


def _font_digits(rng, n, font_files, **camera):
    if not font_files:
        raise SystemExit(f"no fonts found: apt-get install {DEBIAN_FONTS}")
    for k in range(n):
        digit = k % 10
        font = ImageFont.truetype(str(font_files[rng.integers(len(font_files))]), 96)
        yield digit, photograph(_glyph(font, str(digit)), rng, **camera)


def handwriting_fonts(rng, n):
    yield from _font_digits(rng, n, fonts(HANDWRITING_FONTS), size=(70, 170), tilt=8,
                            perspective=0.02, blur=0.6, noise=5, light=0.1, jpeg=False)


def printed_one_family(rng, n):
    yield from _font_digits(rng, n, fonts(ONE_FAMILY_FONTS), size=(60, 180), tilt=2,
                            perspective=0, blur=0.4, noise=3, light=0, jpeg=False)


def printed_photographed(rng, n):
    yield from _font_digits(rng, n, fonts(MANY_FONTS), size=(50, 200), tilt=10,
                            perspective=0.06, blur=1.0, noise=8, light=0.35, jpeg=True)


def mnist_held_out(rng, n):
    from ptx.trainers.data import load_mnist_sample

    data = load_mnist_sample()
    for i in rng.choice(len(data.x_test), n, replace=False):
        ink = Image.fromarray(data.x_test[i]).crop(Image.fromarray(data.x_test[i]).getbbox())
        yield int(data.y_test[i]), photograph(ink, rng, size=(80, 240), tilt=5, perspective=0.03,
                                              blur=0.8, noise=6, light=0.2, jpeg=True)


def unseen_typefaces(rng, n):
    families = unseen_families()
    names = sorted(families)
    for k in range(n):
        digit = k % 10
        files = families[names[rng.integers(len(names))]]
        font = ImageFont.truetype(str(files[rng.integers(len(files))]), 96)
        yield digit, photograph(_glyph(font, str(digit)), rng, size=(50, 200), tilt=10, perspective=0.06,
                                blur=1.0, noise=8, light=0.35, jpeg=True)


def low_res_scans(rng, n):
    from ptx.trainers.data import load_mnist_sample

    data = load_mnist_sample()
    handwriting = fonts(HANDWRITING_FONTS)
    families = unseen_families()
    names = sorted(families)
    for k in range(n):
        digit = k % 10
        source = k // 10 % 3  # MNIST handwriting, handwriting fonts, unseen typefaces in turn
        if source == 0:
            candidates = np.flatnonzero(data.y_test == digit)
            ink = Image.fromarray(data.x_test[candidates[rng.integers(len(candidates))]])
            ink = ink.crop(ink.getbbox())
        else:
            files = handwriting if source == 1 else families[names[rng.integers(len(names))]]
            ink = _glyph(ImageFont.truetype(str(files[rng.integers(len(files))]), 96), str(digit))
        yield digit, scan_low_resolution(ink, rng)


def scan_low_resolution(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scan ``ink`` so that the digit is 8-16 pixels tall: the page slightly askew on the glass, each
    scanner pixel the average of the paper under it, grey or (half the time) black and white, then
    enlarged 4-10x by repeating pixels, as a viewer or a fax shows a small scan."""
    ink = ink.rotate(rng.uniform(-4, 4), resample=Image.Resampling.BICUBIC, expand=True)
    height = int(rng.integers(8, 17))
    scale = height / ink.height
    margin = int(rng.integers(3, 8))
    # A random sub-pixel position on the scanner's grid: draw at 8x, then average 8x8 blocks.
    fine = 8
    side_w = round(ink.width * scale * fine) + 2 * margin * fine
    side_h = height * fine + 2 * margin * fine
    page = Image.new("L", (side_w + fine, side_h + fine), 0)
    page.paste(ink.resize((max(1, round(ink.width * scale * fine)), height * fine), Image.Resampling.LANCZOS),
               (margin * fine + int(rng.integers(fine)), margin * fine + int(rng.integers(fine))))
    page = page.resize((page.width // fine, page.height // fine), Image.Resampling.BOX)
    coverage = np.asarray(page, dtype=np.float32) / 255.0
    paper, pen = rng.uniform(200, 250), rng.uniform(10, 80)
    scan = paper * (1 - coverage) + pen * coverage + rng.normal(0, rng.uniform(1, 4), coverage.shape)
    if rng.random() < 0.5:
        # A black-and-white scan. Its threshold is set as a scanner's text mode sets it, towards the
        # paper: a pixel a quarter covered by ink turns black (halfway would erase the thin strokes of
        # a digit this small, and no one could read it).
        scan = np.where(scan < paper - 0.25 * (paper - pen), pen, paper)
    small = Image.fromarray(np.clip(scan, 0, 255).astype(np.uint8))
    factor = int(rng.integers(4, 11))
    return small.resize((small.width * factor, small.height * factor), Image.Resampling.NEAREST)


KINDS = {"handwritten-uci": handwritten_uci, "handwriting-fonts": handwriting_fonts,
         "printed-one-family": printed_one_family, "printed-photographed": printed_photographed,
         "mnist-held-out": mnist_held_out, "unseen-typefaces": unseen_typefaces, "low-res-scans": low_res_scans}


# -- the Fashion set -------------------------------------------------------------------------------

def _fashion_test(n):
    from ptx.trainers.data import load_dataset

    data = load_dataset("fashion-mnist")
    return data.x_test[:n], data.y_test[:n]


def fashion_test_images(rng, n):
    for sample, label in zip(*_fashion_test(n)):
        yield int(label), Image.fromarray(sample)


def fashion_shop_white(rng, n):
    """Dark product on white, enlarged to 112 px with bicubic resampling, as a shop shows a thumbnail."""
    for sample, label in zip(*_fashion_test(n)):
        yield int(label), Image.fromarray(255 - sample).resize((112, 112), Image.Resampling.BICUBIC)


def fashion_shop_grey(rng, n):
    """The product on light grey (a studio backdrop), enlarged to 200 px with Lanczos, 10-40 px of
    backdrop around it, saved as a JPEG."""
    for sample, label in zip(*_fashion_test(n)):
        product = np.asarray(Image.fromarray(sample).resize((200, 200), Image.Resampling.LANCZOS), dtype=np.float32)
        grey = int(rng.integers(215, 246))
        shot = Image.fromarray(np.clip(grey * (1 - product / 255), 0, 255).astype(np.uint8))
        page = Image.new("L", (200 + 2 * int(rng.integers(10, 41)), 200 + 2 * int(rng.integers(10, 41))), grey)
        page.paste(shot, ((page.width - 200) // 2, (page.height - 200) // 2))
        buffer = io.BytesIO()
        page.save(buffer, "JPEG", quality=int(rng.integers(75, 95)))
        yield int(label), Image.open(io.BytesIO(buffer.getvalue())).convert("L")


FASHION_KINDS = {"test-images": fashion_test_images, "shop-white-112": fashion_shop_white,
                 "shop-grey-jpeg": fashion_shop_grey}
# name -> (kinds, pictures per kind, folder, kinds also scored with --raw as the samples they are)
SETS = {"digits": (KINDS, PER_KIND, DEFAULT_OUT, ()),
        "fashion": (FASHION_KINDS, 1000, ROOT / "eval" / "fashion-pictures", ("test-images",))}


def build(kinds: dict, out: Path, per_kind: int, only: list[str] | None = None) -> None:
    for index, (kind, make) in enumerate(kinds.items()):
        if only and kind not in only:
            continue
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        rng = np.random.default_rng([SEED, index])
        count = 0
        for count, (label, picture) in enumerate(make(rng, per_kind), 1):
            picture.save(folder / f"{count:04d}_label{label}.png")
        print(f"{kind:<22} {count:>4} pictures in {folder}")


def score(model: str, root: str, out: Path, backend: str, kinds: dict, raw_kinds=()) -> dict[str, float]:
    """Accuracy per kind through `ptx predict` (and, for ``raw_kinds``, `ptx predict --raw` first)."""
    results = {}
    runs = [(f"{kind} (--raw)", kind, ["--raw"]) for kind in raw_kinds] + [(kind, kind, []) for kind in kinds]
    for name, kind, flags in runs:
        folder = out / kind
        if not folder.is_dir():
            raise SystemExit(f"{folder} is missing: run `python3 scripts/real_pictures.py build` first")
        done = subprocess.run([sys.executable, "-m", "ptx", "predict", str(folder), "--model", model, "--root", root,
                               "--backend", backend, "--json", *flags], capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"ptx predict failed on {folder}: {done.stderr.strip()}")
        report = json.loads(done.stdout)
        right = sum(Path(r["input"]).stem.endswith(f"label{r['label']}") for r in report["results"])
        total = len(report["results"]) + len(report["errors"])  # a refused picture counts as wrong
        results[name] = right / total
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="draw the evaluation pictures")
    b.add_argument("--set", choices=SETS, default="digits")
    b.add_argument("--out", type=Path, help="default: eval/real-pictures (digits), eval/fashion-pictures")
    b.add_argument("--per-kind", type=int, help="default: 400 (digits), 1000 (fashion)")
    b.add_argument("--kinds", help="comma-separated: build only these kinds")
    s = sub.add_parser("score", help="accuracy per kind through `ptx predict`")
    s.add_argument("model", nargs="?", default="convnet")
    s.add_argument("--set", choices=SETS, default="digits")
    s.add_argument("--root", default="runs", help="where the model's run folder is (ptx's --root)")
    s.add_argument("--out", type=Path, help="default: eval/real-pictures (digits), eval/fashion-pictures")
    s.add_argument("--backend", default="ort-cpu")
    s.add_argument("--label", help="name of this row in the Markdown table")
    s.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    kinds, per_kind, out, raw_kinds = SETS[args.set]
    out = args.out or out
    if args.command == "build":
        only = args.kinds.split(",") if args.kinds else None
        unknown = set(only or ()) - set(kinds)
        if unknown:
            parser.error(f"unknown kinds {', '.join(sorted(unknown))}; the {args.set} set has {', '.join(kinds)}")
        build(kinds, out, args.per_kind or per_kind, only)
        return
    results = score(args.model, args.root, out, args.backend, kinds, raw_kinds)
    if args.markdown:
        print(f"| {args.label or args.model + ' (' + args.root + ')'} | "
              + " | ".join(f"{v:.3f}" for v in results.values()) + " |")
    else:
        for kind, accuracy in results.items():
            print(f"{kind:<22} {accuracy:.3f}")


if __name__ == "__main__":
    main()
