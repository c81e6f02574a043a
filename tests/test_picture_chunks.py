"""A folder's pictures are prepared a chunk at a time (issue 37): mnist-digit version 2 searches
pictures of one size as a stack, and every picture gets the sample it gets alone, to the bit."""
from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw

from ptx.contract import PictureStep, morphology, pictures
from ptx.errors import InputError
from ptx.infer.model.inputs import expand_inputs
from ptx.infer.model.head import prepare_picture, prepare_pictures

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def _opening_by_sliding_windows(a: np.ndarray, k: int) -> np.ndarray:
    """The grey opening as docs/artifact-format.md defines it, one picture, by numpy's sliding windows."""
    r = k // 2
    paper = np.pad(a, 2 * r, mode="reflect", reflect_type="odd")
    for rank in (np.min, np.max):
        paper = rank(sliding_window_view(paper, k, axis=0), axis=-1)
        paper = rank(sliding_window_view(paper, k, axis=1), axis=-1)
    return paper


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_the_opening_of_a_stack_is_each_pictures_opening(dtype):
    rng = np.random.default_rng(37)
    for h, w, k in [(50, 50, 17), (64, 21, 23), (5, 9, 3), (2, 40, 9), (33, 64, 33), (16, 16, 21), (82, 7, 5)]:
        stack = rng.integers(-255, 511, (5, h, w)).astype(dtype)
        opened = morphology.opening(stack, k)
        assert opened.shape == stack.shape
        for picture, got in zip(stack, opened):
            want = _opening_by_sliding_windows(picture, k)
            assert np.array_equal(got, want), (h, w, k)
            assert np.array_equal(morphology.opening(picture, k), want), (h, w, k)


def _digit_on_paper(size: tuple[int, int], scale: int, at: tuple[int, int], light: bool, shadow: float,
                    rng: np.random.Generator) -> np.ndarray:
    """A stroke drawn like a 7 at ``scale`` px, on light or dark paper with a shadow across it and noise."""
    w, h = size
    canvas = Image.new("L", size, 0)
    x, y = at
    ImageDraw.Draw(canvas).line([(x, y), (x + scale, y), (x + scale // 3, y + 2 * scale)], fill=255,
                                width=max(1, scale // 5))
    ink = np.asarray(canvas, dtype=np.float32)
    light_falls = 1 - shadow * np.linspace(0, 1, w)[None, :]
    picture = (235 - ink * 205 / 255) * light_falls if light else ink * light_falls
    return np.clip(np.round(picture + rng.normal(0, 4, picture.shape)), 0, 255).astype(np.uint8)


def _pictures(tmp_path: Path) -> list:
    """Pictures of every kind a folder may hold: the real-picture sets this machine can draw, the ones
    tests/data keeps for older pipelines, runs of one size on light and dark paper (stacked
    together), digits small in a large picture (the finer fit), flat ones (no ink), and inputs that
    are no picture at all."""
    rng = np.random.default_rng(2026)
    items: list = []
    spec = importlib.util.spec_from_file_location("real_pictures", ROOT / "scripts" / "real_pictures.py")
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    for draw in real.KINDS.values():
        try:
            items += [picture for _, picture in draw(np.random.default_rng(37), 6)]
        except SystemExit:  # a font package or data file this machine lacks: the others still run
            pass
    kept = np.load(DATA / "pipeline-v1-pictures.npz")
    items += [kept[name].tobytes() if name.startswith("jpeg") else kept[name] for name in kept.files]
    for size in [(200, 200), (200, 200), (64, 48), (640, 480), (37, 300), (1000, 750)]:
        for scale in (3, 12, 40):
            w, h = size
            if 2 * scale + 4 > h or scale + 4 > w:
                continue
            for light in (True, False):
                at = (int(rng.integers(0, w - scale - 3)), int(rng.integers(0, h - 2 * scale - 3)))
                items.append(_digit_on_paper(size, scale, at, light, float(rng.choice([0.0, 0.6])), rng))
    for i, picture in enumerate(items[:8]):  # files too, as a folder holds them
        path = tmp_path / f"picture{i}.png"
        (Image.fromarray(picture) if isinstance(picture, np.ndarray) else
         Image.open(io.BytesIO(picture)) if isinstance(picture, bytes) else picture).save(path)
        items.append(str(path))
    items += [np.full((60, 80), 200, np.uint8), np.zeros((50, 50), np.uint8), str(tmp_path / "missing.png"),
              b"not a picture", 3.5, "x" * 5000]
    return items


def _alone(item, step):
    try:
        return prepare_picture(item, step)
    except InputError as exc:
        return exc


@pytest.mark.parametrize("params,held", [({}, None), ({}, 300_000), ({"paper_window": 0.0}, None), ({"version": 1}, None)],
                         ids=["v2", "v2-few-pixels-held", "v2-no-paper", "v1"])
def test_a_chunk_gives_each_picture_the_sample_it_gets_alone(tmp_path, monkeypatch, params, held):
    """``held``: the decoded pixels a chunk may hold before its pipeline runs (a chunk of large
    pictures runs in parts, each picture still getting its sample)."""
    if held:
        monkeypatch.setattr(pictures, "BATCH_PIXELS", held)
    step = PictureStep.from_dict({"op": "picture", "pipeline": "mnist-digit", "params": {"version": 2, **params}}, "p")
    items = _pictures(tmp_path)
    alone = [_alone(item, step) for item in items]
    assert sum(isinstance(a, np.ndarray) for a in alone) >= 60
    assert sum(isinstance(a, InputError) for a in alone) >= 5  # flat pictures and non-pictures refused alike
    order = np.random.default_rng(5).permutation(len(items))
    for start in range(0, len(order), 64):
        chunk = [int(i) for i in order[start:start + 64]]
        made = prepare_pictures([(items[i], None) for i in chunk], step)
        for i, got in zip(chunk, made):
            want = alone[i]
            if isinstance(want, InputError):
                assert isinstance(got, InputError) and str(got) == str(want)
            else:
                assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and np.array_equal(got, want), \
                    f"picture {i}: {np.count_nonzero(got != want)} pixels differ from its sample alone"


def _listing_by_paths(folder: Path) -> tuple[list[str], int, list[str]]:
    """What expand_inputs listed before it read a folder with one scandir: Paths, sorted."""
    from ptx.infer.model.inputs import IMAGE_SUFFIXES

    entries = sorted(folder.iterdir())
    # Named as a picture and no folder: a broken link or a link loop too, so that its error says why
    # it was not read (it used to vanish from the run and from the folder's notice).
    pictures = [str(p) for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
    others = [p.name for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
    return pictures, sum(1 for p in entries if p.is_dir()), others


def test_a_folder_lists_as_it_did_with_paths(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    names = ["b.png", "A.PNG", "a.jpg", "..png", ".png", "a.", "notes.txt", "Z.webp", "z.tif", "2.png", "10.png",
             "ä.png", "e.JPEG", "no_suffix"]
    for name in names:
        (folder / name).write_bytes(b"")
    (folder / "sub.png").mkdir()
    (folder / "inner").mkdir()
    os.symlink(folder / "b.png", folder / "link.png")
    os.symlink(folder / "inner", folder / "dirlink.png")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    os.symlink(folder / "loop-b.png", folder / "loop-a.png")  # a loop: scandir raises where Path said False
    os.symlink(folder / "loop-a.png", folder / "loop-b.png")
    pictures, subfolders, others = _listing_by_paths(folder)
    expanded = expand_inputs([str(folder)])
    assert expanded.items == pictures
    (arg, listed, skipped), = expanded.folders
    assert listed == pictures
    assert skipped == [f"{subfolders} subfolders (--recursive reads them)",
                       f"{len(others)} files without a picture suffix ({', '.join(others[:3])}, ...)"]


def test_the_current_folder_names_its_pictures_as_it_did(tmp_path, monkeypatch):
    """`ptx predict .` named its pictures "x.png" (Path('.') / 'x.png'), not "./x.png"."""
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "y.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for arg in (".", "./", ""):
        assert expand_inputs([arg]).items == _listing_by_paths(Path(arg))[0] == ["x.png"], arg
    assert expand_inputs(["sub/.."]).items == _listing_by_paths(Path("sub/.."))[0] == ["sub/../x.png"]
    assert expand_inputs(["./sub"]).items == ["sub/y.png"]
    assert expand_inputs(["."], recursive=True).items == ["sub/y.png", "x.png"]


@pytest.mark.parametrize("recursive", [False, True])
def test_a_broken_link_named_as_a_picture_is_an_error_not_left_out_unsaid(tmp_path, recursive):
    # `ptx predict scans/` with scans/7.png a link to a moved file said nothing of it and exited 0.
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.new("L", (8, 8), 255).save(folder / "a.png")
    os.symlink(folder / "moved.png", folder / "7.png")
    os.symlink(folder / "loop-b.png", folder / "loop-a.png")
    os.symlink(folder / "loop-a.png", folder / "loop-b.png")
    expanded = expand_inputs([str(folder)], recursive=recursive)
    assert expanded.items == [str(folder / n) for n in ("7.png", "a.png", "loop-a.png", "loop-b.png")]
    assert expand_inputs([str(folder / "*.png")]).items == expanded.items
    with pytest.raises(InputError, match=r"7.png: a symbolic link to .*moved.png, which does not exist"):
        pictures.open_image(folder / "7.png")
    with pytest.raises(InputError, match="loop-a.png: cannot open"):
        pictures.open_image(folder / "loop-a.png")


def test_jpegs_named_as_windows_saves_them_are_pictures_of_a_folder(tmp_path):
    # A folder of digits saved from a browser on Windows (.jfif) was "a folder with no image files".
    for name in ("a.jfif", "b.JPE"):
        Image.new("L", (8, 8), 255).save(tmp_path / name, format="JPEG")
    assert expand_inputs([str(tmp_path)]).items == [str(tmp_path / "a.jfif"), str(tmp_path / "b.JPE")]
