"""A picture file or its bytes -> a PIL image decoded at the size the picture pipelines need, with a
bound on what decoding costs (numpy-free, torch-free: Pillow, and pillow-heif when it is there).

The pipelines crop to the ink and scale it to a 20x20 box (or a product to 28 px), so a phone's
12-200 MP photo holds far more pixels than they use. A JPEG is decoded with Pillow's draft mode (the
decoder's DCT scaling by 1/2, 1/4 or 1/8) at the smallest scale whose shorter side is still at least
``DRAFT_SIDE``; its entropy decoding still reads every block, but the image in memory and all later
steps are up to 64 times smaller. docs/photos.md measures the choice of ``DRAFT_SIDE``.

Bounds, each on what a file makes the machine do rather than on what a camera had:

- ``MAX_PIXELS`` (40 MP) on the image as decoded, for every format: decoded whole, a 40 MP RGBA
  picture is 160 MB, and the grey float32 copy and the pipeline's working copies take about 1 GB
  at that size (measured in docs/photos.md). A 48 MP JPEG decoded at 1/8 is 0.75 MP.
- ``MAX_JPEG_PIXELS`` (200 MP) on what a baseline JPEG's header declares: libjpeg decodes it a band
  of rows at a time, so memory stays small, and the time to read 200 MP of blocks stays under
  about 2 s here. A progressive JPEG keeps every DCT coefficient of the whole picture until the
  last scan (about 2-3 bytes per pixel), so it is held to ``MAX_PIXELS`` as if decoded whole.

Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``, an error above about 179 MP) runs inside
``Image.open`` before anyone can ask for a draft, so JPEGs are opened through Pillow's JPEG plugin
directly (same parser, no global setting changed) and bounded here; every other format goes through
``Image.open`` and both checks.

HEIC/HEIF pictures (iPhones) are read through pillow-heif, registered the first time a file is not
recognised and looks like HEIF; it is optional (the torch-free ONNX install works without it).
AVIF is Pillow's own where Pillow was built with it (``PIL.features.check("avif")``).
"""
from __future__ import annotations

import functools
import importlib
import io
import os
import stat
import struct
import sys
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ptx.extras import install_command
from ptx.errors import InputError

MAX_PIXELS = 40_000_000  # decoded size, every format (below Pillow's own ~89 MP warning)
MAX_JPEG_PIXELS = 200_000_000  # declared size of a baseline JPEG that draft decoding reduces
DRAFT_SIDE = 512  # a JPEG is decoded at the smallest DCT scale whose shorter side is still >= this

# What Pillow's parsers raise on a damaged file past its header (fuzzed files of each format met all).
CORRUPT = (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, ZeroDivisionError, struct.error)
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ISO base media 'ftyp' brands of HEIF still pictures (HEVC-coded and the generic image brands).
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
AVIF_BRANDS = {b"avif", b"avis"}
HEIF_INSTALL = f"install pillow-heif to read HEIC pictures: {install_command('heif')}"


def open_image(source, name: str | None = None) -> Image.Image:
    """Open a path or an encoded file's bytes, or take a PIL image; reject what cannot be a single
    still picture or would cost too much to decode; decode it (a JPEG at reduced size, see the
    module's notes) with its EXIF orientation applied."""
    if isinstance(source, Image.Image):
        if getattr(source, "tile", None) and getattr(source, "fp", True) is None:
            # `with Image.open(path) as image: ...` then predict(image): the pixels were never read
            # and the file is closed (Pillow only asserts, with no message).
            raise InputError(f"{name or 'image'}: a PIL image whose file was closed before its pixels were "
                             "read; call image.load() inside the `with` block, or pass the path")
        return _decoded(source, name or "image", owned=False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "image bytes"
        if not len(source):
            raise InputError(f"{name}: empty (no bytes)")
        data = bytes(source)
        return _decoded(_open_file(lambda: io.BytesIO(data), data[:32], name), name, owned=True)
    name = str(Path(source))
    # One stat and one open per file: a folder of small PNGs spends as much in these calls as in
    # decoding them.
    try:
        info = os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(source):
            raise InputError(f"{name}: a symbolic link to {os.readlink(source)}, which does not exist") from None
        raise InputError(f"{name}: no such file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot open ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{name}: a folder with no image files in it")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{name}: not a regular file (a pipe or device would block)")
    if info.st_size == 0:
        raise InputError(f"{name}: empty file")
    try:
        file = open(source, "rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot open ({exc.strerror or exc})") from None
    with file:  # Pillow reads from this file object and leaves closing it to its owner
        prefix = file.read(32)
        return _decoded(_open_file(lambda: (file.seek(0), file)[1], prefix, name), name, owned=True)


def _decoded(image: Image.Image, name: str, owned: bool) -> Image.Image:
    """``image`` checked, decoded and turned upright; an image ptx opened (``owned``) is turned in
    place, a caller's is left as it was (a copy is turned)."""
    try:
        # Counting frames reads every frame's header: a corrupt later frame raises whatever its
        # plugin's parser met (TypeError, IndexError, ... from a damaged TIFF or GIF).
        frames = getattr(image, "n_frames", 1)
    except CORRUPT as exc:
        raise InputError(f"{name}: truncated or corrupt image ({type(exc).__name__}: {exc})") from None
    if frames > 1 and image.format != "MPO":
        # MPO: a camera's JPEG with previews (or a stereo pair) after the primary picture, which
        # is the one opened (frame 0).
        raise InputError(f"{name}: animated or multi-frame image; save the one frame to predict as a PNG")
    if min(image.size) < 2:
        raise InputError(f"{name}: image is {image.width}x{image.height}; a picture needs at least 2x2 pixels")
    _reduce_and_bound(image, name)
    try:
        image.load()
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)
    except CORRUPT as exc:
        raise InputError(f"{name}: truncated or corrupt image ({exc})") from None
    return image


def _reduce_and_bound(image: Image.Image, name: str) -> None:
    """Ask the decoder for the smallest size the pipelines can use (a no-op for formats without
    draft support and for images already decoded), then bound what remains to decode."""
    declared = image.width * image.height
    jpeg = sys.modules.get("PIL.JpegImagePlugin")  # not imported: no JPEG was opened
    if jpeg is not None and isinstance(image, jpeg.JpegImageFile) and image.tile:
        progressive = "progressive" in image.info or "progression" in image.info
        limit = MAX_PIXELS if progressive else MAX_JPEG_PIXELS
        if declared > limit:
            raise InputError(f"{name}: image too large ({image.width}x{image.height}, over {limit:,} pixels "
                             f"for a {'progressive JPEG' if progressive else 'JPEG'})")
        # Pillow picks the largest scale in 1/2, 1/4, 1/8 at which both sides stay >= the size given.
        image.draft(None, (DRAFT_SIDE, DRAFT_SIDE))
    if image.width * image.height > MAX_PIXELS:
        decoded = "" if (image.width * image.height) == declared else " decoded"
        raise InputError(f"{name}: image too large ({image.width}x{image.height}{decoded}, over {MAX_PIXELS:,} "
                         "pixels)")


def _open_file(reopen, prefix: bytes, name: str) -> Image.Image:
    """Pillow's open (it reads the header only), with its refusals as one-line InputErrors.
    ``reopen()`` gives the file again (a path or a fresh BytesIO) for a second attempt."""
    try:
        # A JPEG by Pillow's JPEG plugin as Image.open would pick it, minus the global bomb check, which
        # would refuse a 200 MP photo before it can be drafted; a PNG by its plugin as Image.open would
        # pick it: Image.open first imports Pillow's five common plugins (the JPEG one brings TIFF's,
        # fractions and decimal), about 10 ms of a one-picture `ptx predict` that reads a PNG. Sizes are
        # bounded by our caller.
        for magic, plugin, opener in ((JPEG_MAGIC, "JpegImagePlugin", "jpeg_factory"),
                                      (PNG_MAGIC, "PngImagePlugin", "PngImageFile")):
            if prefix.startswith(magic):
                try:
                    return getattr(importlib.import_module(f"PIL.{plugin}"), opener)(reopen())
                except (SyntaxError, IndexError, TypeError, struct.error):
                    pass  # not that format after all: let Image.open try every format, as before
        try:
            return Image.open(reopen())
        except UnidentifiedImageError:
            if _brand(prefix) not in HEIF_BRANDS or not _register_heif():
                raise
            return Image.open(reopen())
    except UnidentifiedImageError:
        if _brand(prefix) in HEIF_BRANDS:
            raise InputError(f"{name}: a HEIC/HEIF picture; {HEIF_INSTALL}") from None
        if _brand(prefix) in AVIF_BRANDS:
            raise InputError(f"{name}: an AVIF picture and this Pillow was built without AVIF; "
                             "install a Pillow built with AVIF (pip install -U pillow)") from None
        raise InputError(f"{name}: not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise InputError(f"{name}: image too large (over {MAX_PIXELS:,} pixels)") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot open ({exc})") from None
    except ValueError as exc:
        # Pillow's own bound on a PNG's compressed text or colour-profile chunk (a zTXt or iCCP that
        # inflates past MAX_TEXT_CHUNK, a bomb of its kind): the file's fault, so one line for it
        # alone, not a traceback that ends a folder's run (or a 500 from ptx serve).
        raise InputError(f"{name}: cannot open ({exc}); save the picture again without its metadata") from None


def _brand(prefix: bytes) -> bytes:
    return prefix[8:12] if prefix[4:8] == b"ftyp" else b""


@functools.cache
def _register_heif() -> bool:
    """pillow-heif's opener, registered with Pillow once per process; False when not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True
