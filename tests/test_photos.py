"""Photos as phones take them: large JPEGs decoded at the size the pipeline needs (draft), bombs of
every format refused, HEIC through pillow-heif (ptx.contract.decode; docs/photos.md)."""
from __future__ import annotations

import importlib.util
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, features

from ptx.contract import decode
from ptx.errors import InputError
from ptx.infer import load
from ptx_command import ptx

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_photos", ROOT / "scripts" / "bench_photos.py")
bench_photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_photos)
as_photos, decoding, real_digits = bench_photos.as_photos, bench_photos.decoding, bench_photos.real_digits

# Largest change in any class probability between whole and draft decoding allowed on the
# real-picture photos (measured: 0.005 on 48 photos filling the frame, docs/photos.md).
PROBABILITY_TOLERANCE = 0.05


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def seven(width: int, height: int, mode: str = "L") -> Image.Image:
    """A dark 7, half the frame tall, on off-white paper."""
    image = Image.new(mode, (width, height), 232 if mode == "L" else (236, 232, 222))
    ImageDraw.Draw(image).text((width // 2, height // 2), "7", fill=30 if mode == "L" else (30, 30, 40), anchor="mm",
                               font=ImageFont.load_default(size=height // 2))
    return image


@pytest.fixture(scope="session")
def big_photos(tmp_path_factory) -> dict[str, Path]:
    """A 48 MP colour JPEG and a 200 MP grey one (quality 50), written once per session."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name, (w, h), mode in (("48mp.jpg", (8000, 6000), "RGB"), ("200mp.jpg", (16320, 12240), "L")):
        image = seven(w, h, mode)
        image.save(folder / name, "JPEG", quality=50)
        out[name] = folder / name
        del image
    return out


@pytest.fixture(scope="module")
def convnet(runs):
    return load("convnet", backend="ort-cpu", root=runs.ready("convnet"))


def test_48_and_200_megapixel_jpegs_are_decoded_small_and_predicted(convnet, big_photos):
    for name, path in big_photos.items():
        image = decode.open_image(path)
        assert min(image.size) >= decode.DRAFT_SIDE and max(image.size) <= 2100, (name, image.size)
        (answer,) = convnet.predict([str(path)])
        assert answer.label_name == "7", (name, answer.label_name, answer.probability)


def test_the_whole_command_predicts_a_48_megapixel_photo(runs, big_photos):
    done = ptx("predict", str(big_photos["48mp.jpg"]), "--model", "convnet",
               "--root", str(runs.ready("convnet")), "--backend", "ort-cpu")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[1] == "7", done.stdout


def test_draft_decoding_gives_the_answers_of_whole_decoding_on_the_real_picture_sets(convnet):
    pictures = real_digits(2, ["handwriting-fonts", "printed-photographed", "mnist-held-out"])
    assert len(pictures) == 6, "the real-picture kinds could not be drawn"
    # 4096 px: decoded at 1/8 (512); 2048 px: at 1/4 (512). Decoding whole is what takes the time.
    photos = [as_photos(picture, fill=4096 if i == 0 else 2048, inset=0)["fills the frame"]
              for i, (_, _, picture) in enumerate(pictures)]
    with decoding(None, max_pixels=10**9):
        whole = convnet.predict_samples([convnet.prepare_one(data) for data in photos])
        assert decode.open_image(photos[0]).size == (4096, 4096)
    drafted = convnet.predict_samples([convnet.prepare_one(data) for data in photos])
    assert decode.open_image(photos[0]).size == (512, 512) and decode.open_image(photos[1]).size == (512, 512)
    for (kind, label, _), a, b in zip(pictures, whole, drafted):
        assert a.label == b.label, f"{kind} {label}: whole decoding says {a.label}, draft {b.label}"
        assert np.abs(a.probabilities - b.probabilities).max() <= PROBABILITY_TOLERANCE, (kind, label)


def test_exif_orientation_is_applied_after_draft_decoding(convnet):
    upright = seven(3000, 4000)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise: a viewer turns it clockwise
    data = encoded(upright.rotate(90, expand=True), "JPEG", quality=80, exif=exif)
    image = decode.open_image(data)
    assert image.size == (750, 1000)  # drafted at 1/4 from 4000x3000, then turned upright
    assert convnet.predict([data])[0].label_name == "7"


def test_a_progressive_jpeg_over_the_whole_decoding_bound_is_refused_in_one_line():
    data = bytearray(encoded(Image.new("L", (16, 16), 230), "JPEG", progressive=True))
    at = data.index(b"\xff\xc2")  # SOF2 (progressive): marker, length, precision, height, width
    data[at + 5:at + 9] = struct.pack(">HH", 6000, 8000)
    with pytest.raises(InputError, match=r"too large \(8000x6000, over 40,000,000 pixels for a progressive JPEG\)"):
        decode.open_image(bytes(data))


def test_a_camera_jpeg_with_a_preview_picture_mpo_reads_its_primary_picture(convnet):
    primary, preview = seven(1600, 1200, "RGB"), Image.new("RGB", (160, 120), (0, 0, 0))
    data = encoded(primary, "MPO", save_all=True, append_images=[preview])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert convnet.predict([data])[0].label_name == "7"


@pytest.mark.parametrize("chunk_type,body", [(b"zTXt", b"Comment\x00\x00"), (b"iCCP", b"icc\x00\x00")])
def test_a_png_whose_text_or_profile_chunk_inflates_past_pillows_bound_is_one_input_error(chunk_type, body):
    # A zTXt or iCCP chunk of 64 MB of one letter, 64 KB compressed: Pillow's MAX_TEXT_CHUNK refuses
    # it with a ValueError, which ended `ptx predict FOLDER` in a traceback and was a 500 from ptx serve.
    data = encoded(Image.new("L", (16, 16), 200), "PNG")
    payload = chunk_type + body + zlib.compress(b"A" * (64 << 20))
    chunk = struct.pack(">I", len(payload) - 4) + payload + struct.pack(">I", zlib.crc32(payload))
    at = data.index(b"IHDR") + 4 + 13 + 4  # after IHDR's type, 13 bytes of data and its CRC
    with pytest.raises(InputError, match="cannot open .*MAX_TEXT_CHUNK.*without its metadata"):
        decode.open_image(data[:at] + chunk + data[at:])


def test_a_multi_page_tiff_whose_second_page_is_damaged_is_one_input_error():
    # Counting the pages (to refuse a multi-frame file) read the damaged page's header, and Pillow's
    # TypeError ("Missing dimensions") ended `ptx predict FOLDER` in a traceback; fuzzed GIFs gave
    # an IndexError the same way.
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 200).save(buffer, "TIFF", save_all=True, append_images=[Image.new("L", (16, 16), 9)])
    data = bytearray(buffer.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]  # "II": little-endian offsets
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for k in range(struct.unpack_from("<H", data, second)[0]):
        at = second + 2 + 12 * k
        if struct.unpack_from("<H", data, at)[0] in (256, 257):  # ImageWidth, ImageLength: renamed away
            struct.pack_into("<H", data, at, 0xFFF0 + k)
    with pytest.raises(InputError, match=r"truncated or corrupt image \(TypeError: Missing dimensions\)"):
        decode.open_image(bytes(data))


# -- bombs: headers that claim far more pixels than the file holds ---------------------------------------

def bomb_jpeg(side: int = 65535) -> bytes:
    data = bytearray(encoded(Image.new("L", (16, 16), 200), "JPEG"))
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[at + 5:at + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def bomb_png(side: int = 65535) -> bytes:
    data = bytearray(encoded(Image.new("L", (16, 16), 200), "PNG"))
    at = data.index(b"IHDR")
    data[at + 4:at + 12] = struct.pack(">II", side, side)
    data[at + 17:at + 21] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


def bomb_gif(side: int = 65535) -> bytes:
    data = bytearray(encoded(Image.new("L", (16, 16), 200), "GIF"))
    data[6:10] = struct.pack("<HH", side, side)  # the logical screen
    at = data.index(b"\x2c")  # the image descriptor: separator, left, top, width, height
    data[at + 5:at + 9] = struct.pack("<HH", side, side)
    return bytes(data)


def bomb_tiff(side: int = 65535) -> bytes:
    data = bytearray(encoded(Image.new("L", (16, 16), 200), "TIFF"))
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd:ifd + 2])
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", data[at:at + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            data[at + 8:at + 12] = struct.pack("<HH", side, 0) if kind == 3 else struct.pack("<I", side)
    return bytes(data)


def bomb_webp(side: int = 16383) -> bytes:
    frames = [Image.new("RGB", (16, 16), (200, 200, 200)), Image.new("RGB", (16, 16))]
    data = bytearray(encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    at = data.index(b"VP8X")  # chunk header (8), flags (4), canvas width - 1 (3), height - 1 (3)
    data[at + 12:at + 18] = (side - 1).to_bytes(3, "little") * 2
    return bytes(data)


BOMBS = {"bomb.jpg": bomb_jpeg, "bomb.png": bomb_png, "bomb.gif": bomb_gif, "bomb.tif": bomb_tiff,
         "bomb.webp": bomb_webp}


def test_bombs_of_every_format_are_refused_in_one_line(runs, tmp_path):
    for name, make in BOMBS.items():
        with pytest.raises(InputError, match="too large") as refused:
            decode.open_image(make(), name)
        assert "\n" not in str(refused.value)
        (tmp_path / name).write_bytes(make())
    done = ptx("predict", *sorted(BOMBS), "--model", "convnet", "--root",
               str(runs.ready("convnet")), "--backend", "ort-cpu", cwd=tmp_path)
    assert done.returncode == 1 and not done.stdout.strip()  # every input failed, each named: 1, as predict says
    lines = done.stderr.strip().splitlines()
    for name in BOMBS:
        assert sum(name in line and "too large" in line for line in lines) == 1, done.stderr
    assert "Traceback" not in done.stderr


# -- HEIC / HEIF (pillow-heif) and AVIF (Pillow's own) ----------------------------------------------------

def test_a_heic_photo_is_predicted(convnet, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed (scripts/setup.sh installs it)")
    heif = pillow_heif.from_pillow(seven(800, 600, "RGB"))
    heif.save(tmp_path / "IMG_0001.HEIC", quality=70)
    from ptx.infer.model.inputs import expand_inputs

    assert expand_inputs([str(tmp_path)]).items == [str(tmp_path / "IMG_0001.HEIC")]
    (answer,) = convnet.predict([str(tmp_path / "IMG_0001.HEIC")])
    assert answer.label_name == "7"
    assert convnet.predict([(tmp_path / "IMG_0001.HEIC").read_bytes()])[0].label_name == "7"


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow was built without AVIF")
def test_an_avif_photo_is_predicted(convnet):
    assert convnet.predict([encoded(seven(1200, 900, "RGB"), "AVIF", quality=60)])[0].label_name == "7"


def test_a_heic_without_pillow_heif_is_refused_in_one_line(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed here to write the file")
    pillow_heif.from_pillow(seven(64, 48, "RGB")).save(tmp_path / "photo.heic")
    code = ("import sys; sys.modules['pillow_heif'] = None  # as if not installed: import raises ImportError\n"
            "from ptx.contract.decode import open_image\n"
            "from ptx.errors import InputError\n"
            f"try:\n    open_image({str(tmp_path / 'photo.heic')!r})\nexcept InputError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"{tmp_path / 'photo.heic'}: a HEIC/HEIF picture; install pillow-heif to read HEIC pictures: "
        "pip install 'ptx[heif]' (from a clone: pip install -e '.[heif]')"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_pil_image_whose_file_was_closed_unread_is_one_input_error(tmp_path, fmt):
    # `with Image.open(path) as image: pass` then predict(image) was a bare AssertionError.
    path = tmp_path / f"seven.{fmt.lower()}"
    seven(64, 64).save(path, fmt)
    with Image.open(path) as image:
        pass
    with pytest.raises(InputError, match=r"file was closed before its pixels were read; call image.load\(\)"):
        decode.open_image(image)
    with Image.open(path) as image:
        image.load()
    assert decode.open_image(image).size == (64, 64)
    assert decode.open_image(seven(64, 64)).size == (64, 64)  # an image made in memory has no file at all
