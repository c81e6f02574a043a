#!/usr/bin/env python3
"""An evaluation set of real-looking digit pictures, and accuracy per kind through `ptx predict`.

    python3 scripts/real_pictures.py build              # writes eval/real-pictures/<kind>/*.png
    python3 scripts/real_pictures.py score convnet      # accuracy per kind of runs/convnet
    python3 scripts/real_pictures.py score convnet --root runs-augment --markdown

None of these pictures is ever used for training (ptx trains on MNIST only). The sources, chosen
because they are offline, real and unlike MNIST's own preparation:

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

No font here is one that ``ptx train --augment`` mixes into training (matplotlib's DejaVu, STIX and
Computer Modern). The pictures are drawn from a fixed seed, so the set is the same on every machine with the same
fonts. ``build`` says which fonts are missing and how to install them.
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
DEBIAN_FONTS = ("fonts-liberation2 fonts-freefont-ttf fonts-crosextra-carlito "
                "fonts-crosextra-caladea fonts-cantarell fonts-lato fonts-comic-neue fonts-dkg-handwriting "
                "fonts-breip fonts-bwht fonts-femkeklaver fonts-humor-sans fonts-kristi")


def fonts(patterns: list[str]) -> list[Path]:
    found = sorted({p for pattern in patterns for p in FONT_DIR.glob(pattern)})
    # A font without the digits renders boxes or nothing: keep only those that draw all ten.
    return [p for p in found if _draws_digits(p)]


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


KINDS = {"handwritten-uci": handwritten_uci, "handwriting-fonts": handwriting_fonts,
         "printed-one-family": printed_one_family, "printed-photographed": printed_photographed,
         "mnist-held-out": mnist_held_out}


def build(out: Path, per_kind: int) -> None:
    for index, (kind, make) in enumerate(KINDS.items()):
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        rng = np.random.default_rng([SEED, index])
        count = 0
        for count, (label, picture) in enumerate(make(rng, per_kind), 1):
            picture.save(folder / f"{count:04d}_label{label}.png")
        print(f"{kind:<22} {count:>4} pictures in {folder}")


def score(model: str, root: str, out: Path, backend: str) -> dict[str, float]:
    results = {}
    for kind in KINDS:
        folder = out / kind
        if not folder.is_dir():
            raise SystemExit(f"{folder} is missing: run `python3 scripts/real_pictures.py build` first")
        done = subprocess.run([sys.executable, "-m", "ptx", "predict", str(folder), "--model", model, "--root", root,
                               "--backend", backend, "--json"], capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"ptx predict failed on {folder}: {done.stderr.strip()}")
        report = json.loads(done.stdout)
        right = sum(Path(r["input"]).stem.endswith(f"label{r['label']}") for r in report["results"])
        total = len(report["results"]) + len(report["errors"])  # a refused picture counts as wrong
        results[kind] = right / total
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="draw the evaluation pictures")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT)
    b.add_argument("--per-kind", type=int, default=PER_KIND)
    s = sub.add_parser("score", help="accuracy per kind through `ptx predict`")
    s.add_argument("model", nargs="?", default="convnet")
    s.add_argument("--root", default="runs", help="where the model's run folder is (ptx's --root)")
    s.add_argument("--out", type=Path, default=DEFAULT_OUT)
    s.add_argument("--backend", default="ort-cpu")
    s.add_argument("--label", help="name of this row in the Markdown table")
    s.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.command == "build":
        build(args.out, args.per_kind)
        return
    results = score(args.model, args.root, args.out, args.backend)
    if args.markdown:
        print(f"| {args.label or args.model + ' (' + args.root + ')'} | "
              + " | ".join(f"{v:.3f}" for v in results.values()) + " |")
    else:
        for kind, accuracy in results.items():
            print(f"{kind:<22} {accuracy:.3f}")


if __name__ == "__main__":
    main()
