#!/usr/bin/env python3
"""Phone photos through the picture pipeline: what draft decoding of JPEGs changes and costs.

    python3 scripts/bench_photos.py agree --root runs        # answers, full decode vs draft sides
    python3 scripts/bench_photos.py speed --root runs        # 12/48/200 MP: pipeline and whole command

``agree``: the digit sets of scripts/real_pictures.py (the kinds whose fonts or data this machine
has), each picture made into two large JPEG photos (quality 88): enlarged to fill a 3024x3024
frame, and enlarged to 756 px inside a 4032x3024 page of its own paper colour (a digit photographed
from farther away). Each photo is predicted decoded whole and decoded with draft at several
``DRAFT_SIDE`` values; the table counts label changes and the largest change in probability.

``speed``: a dark 7 on off-white paper photographed at 12, 48 and 200 MP (JPEG quality 88).
In-process, the pipeline (open_image + picture_sample) decoded whole (the bound lifted) against
draft decoding, as a ratio within one run; then the whole ``ptx predict`` command in a child
process under /usr/bin/time: its wall time and peak memory (maximum resident set size).
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ptx.contract import decode

ROOT = Path(__file__).resolve().parent.parent


def real_pictures_module():
    spec = importlib.util.spec_from_file_location("real_pictures", ROOT / "scripts" / "real_pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_digits(per_kind: int, kinds: list[str] | None = None) -> list[tuple[str, int, Image.Image]]:
    """(kind, label, picture) from scripts/real_pictures.py's digit kinds this machine can draw."""
    real = real_pictures_module()
    out = []
    for index, (kind, make) in enumerate(real.KINDS.items()):
        if kinds and kind not in kinds:
            continue
        rng = np.random.default_rng([real.SEED, index])
        try:
            out += [(kind, label, picture) for label, picture in make(rng, per_kind)]
        except SystemExit:  # a font package or data file missing here: the kind is left out
            continue
    return out


def as_photos(picture: Image.Image, fill: int = 3024, page: tuple[int, int] = (4032, 3024),
              inset: int = 756, quality: int = 88) -> dict[str, bytes]:
    """One small picture -> large JPEG photos: filling the frame, and (``inset`` > 0) small inside a
    page of its paper's colour."""
    rgb = picture.convert("RGB")
    photos = {"fills the frame": jpeg(rgb.resize((fill, fill), Image.Resampling.BICUBIC), quality)}
    if inset:
        corners = np.asarray(rgb)[[0, 0, -1, -1], [0, -1, 0, -1]]
        sheet = Image.new("RGB", page, tuple(int(v) for v in np.median(corners, axis=0)))
        sheet.paste(rgb.resize((inset, inset), Image.Resampling.BICUBIC), ((page[0] - inset) // 2, (page[1] - inset) // 2))
        photos["small in the frame"] = jpeg(sheet, quality)
    return photos


def jpeg(image: Image.Image, quality: int = 88) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@contextmanager
def decoding(draft_side: int | None, max_pixels: int | None = None):
    """Decode with another DRAFT_SIDE (None: whole, as before draft decoding) and pixel bound."""
    saved = decode.DRAFT_SIDE, decode.MAX_PIXELS
    decode.DRAFT_SIDE = draft_side or 1 << 30  # a side no picture reaches: Pillow keeps scale 1
    decode.MAX_PIXELS = max_pixels or decode.MAX_PIXELS
    try:
        yield
    finally:
        decode.DRAFT_SIDE, decode.MAX_PIXELS = saved


def predictions(predictor, photos: list[bytes], draft_side: int | None):
    with decoding(draft_side, max_pixels=10**9):
        samples = [predictor.prepare_one(data, name=f"photo {i}") for i, data in enumerate(photos)]
    return predictor.predict_samples(samples)


def agree(args) -> None:
    from ptx.infer import load

    predictor = load(args.model, backend="ort-cpu", root=args.root)
    pictures = real_digits(args.per_kind)
    photos = {}
    for kind, label, picture in pictures:
        for where, data in as_photos(picture).items():
            photos.setdefault(where, []).append((kind, label, data))
    print(f"{len(pictures)} pictures from {len({k for k, _, _ in pictures})} kinds, {args.model} through ort-cpu")
    print("| photos | DRAFT_SIDE | decoded size | labels changed | largest probability change | right (whole / draft) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for where, items in photos.items():
        data = [d for _, _, d in items]
        truth = np.array([label for _, label, _ in items])
        whole = predictions(predictor, data, None)
        for side in args.sides:
            drafted = predictions(predictor, data, side)
            with decoding(side, 10**9):
                size = decode.open_image(data[0]).size
            changed = sum(a.label != b.label for a, b in zip(whole, drafted))
            delta = max(float(np.abs(a.probabilities - b.probabilities).max()) for a, b in zip(whole, drafted))
            right = (sum(int(p.label == t) for p, t in zip(whole, truth)), sum(int(p.label == t) for p, t in zip(drafted, truth)))
            print(f"| {where} ({Image.open(io.BytesIO(data[0])).size[0]}x{Image.open(io.BytesIO(data[0])).size[1]}) "
                  f"| {side} | {size[0]}x{size[1]} | {changed} of {len(data)} | {delta:.4f} | {right[0]} / {right[1]} |")


def seven_photo(width: int, height: int, quality: int = 88) -> bytes:
    """A dark 7, half the frame tall, on off-white paper, as a camera's RGB JPEG."""
    image = Image.new("L", (width, height), 232)
    ImageDraw.Draw(image).text((width // 2, height // 2), "7", fill=30, anchor="mm",
                               font=ImageFont.load_default(size=height // 2))
    return jpeg(image.convert("RGB"), quality)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(args) -> None:
    from ptx.contract.pictures import picture_sample
    from ptx.infer import load

    predictor = load(args.model, backend="ort-cpu", root=args.root)
    step = predictor.contract.picture
    sizes = {"12 MP (4000x3000)": (4000, 3000), "48 MP (8000x6000)": (8000, 6000), "200 MP (16320x12240)": (16320, 12240)}
    print(f"{args.model} through ort-cpu; best of {args.repeat}")
    print("| photo | pipeline, whole decode | pipeline, draft | ratio | command wall time | command peak memory | answer |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        small = Path(folder) / "startup.png"
        Image.open(io.BytesIO(seven_photo(280, 210))).save(small)
        wall, peak, answer = command(small, args)
        print(f"| 280x210 PNG (the command's own start-up) | - | - | - | {wall:.2f} s | {peak:.0f} MB | {answer} |")
        for name, (w, h) in sizes.items():
            path = Path(folder) / f"{w}x{h}.jpg"
            path.write_bytes(seven_photo(w, h))
            with decoding(None, max_pixels=10**9):
                whole = best_of(lambda: picture_sample(str(path), step), args.repeat) if w * h <= 60_000_000 else None
            drafted = best_of(lambda: picture_sample(str(path), step), args.repeat)
            wall, peak, answer = command(path, args)
            ratio = f"{whole / drafted:.1f}x" if whole else "-"
            whole_text = f"{whole * 1000:.0f} ms" if whole else "not run (over 60 MP whole)"
            print(f"| {name} | {whole_text} | {drafted * 1000:.0f} ms | {ratio} | {wall:.2f} s | {peak:.0f} MB | {answer} |")


def command(path: Path, args) -> tuple[float, float, str]:
    """The whole `ptx predict` in a child, under /usr/bin/time (forked from a small process, so that
    its peak RSS is the command's own, not this process's copied at fork): best wall time of
    args.repeat, the largest peak RSS, the answer."""
    walls, peak, out = [], 0.0, ""
    for _ in range(args.repeat):
        with tempfile.NamedTemporaryFile("r") as report:
            done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", report.name, sys.executable, "-m", "ptx",
                                   "predict", str(path), "--model", args.model, "--root", args.root, "--backend",
                                   "ort-cpu"], capture_output=True, text=True)
            wall, kilobytes = report.read().split()[-2:]
        walls.append(float(wall))
        peak = max(peak, int(kilobytes) / 1024)
        out = (done.stdout.strip().split("\t", 1)[-1] if done.returncode == 0 else done.stderr.strip()).replace("\t", " ")
    return min(walls), peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("agree")
    a.add_argument("--per-kind", type=int, default=20)
    a.add_argument("--sides", type=int, nargs="+", default=[256, 512, 1024])
    s = sub.add_parser("speed")
    s.add_argument("--repeat", type=int, default=3)
    for p in (a, s):
        p.add_argument("--model", default="convnet")
        p.add_argument("--root", default="runs")
    args = parser.parse_args()
    agree(args) if args.what == "agree" else speed(args)


if __name__ == "__main__":
    main()
