"""Every optional extra that is missing is one line naming what needs it and the pip command
(issue 32): each absence is simulated in a child Python whose import of the extra's first module
fails, and the command that needs the extra is run there."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ptx.extras import EXTRAS, install_command
from ptx.trainers.small_data import debian_extract_dir

ROOT = Path(__file__).resolve().parents[1]
# extra -> a ptx command that needs it ({root}, {convnet}: runs roots where that model is trained and exported).
COMMANDS = {
    "serve": ["serve", "convnet", "--http-port", "0"],
    "openvino": ["predict", "--backend", "openvino", "--root", "{root}", "0.5", "--model", "linreg"],
    "diabetes": ["train", "diabetes", "--epochs", "1", "--out", "runs/diabetes"],
    "heif": ["predict", "--root", "{convnet}", "{heic}"],
    "parquet": ["predict", "--root", "{convnet}", "{picture}", "--output", "answers.parquet"],
    "ray": ["predict", "--ray", "--root", "{convnet}", "{picture}", "--output", "answers"],
    "text": ["generate", "{picture}", "--tokenizer", "{tokenizer}", "--prompt", "Hi"],  # asked before FILE is opened
}
# Extras for developing ptx, not for using it: no ptx command imports them.
DEVELOPMENT = {"test", "docs"}

BLOCK = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
from ptx.cli import main
sys.argv = ["ptx", *{args!r}]
main()
"""


def test_every_extra_of_pyproject_is_known_and_tested():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert declared - DEVELOPMENT == set(EXTRAS), "ptx/extras.py and pyproject's extras differ"
    assert set(COMMANDS) == set(EXTRAS), "every extra needs a command that shows its absence"


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_a_missing_extra_is_one_line_with_the_pip_command(extra, runs, tmp_path):
    module = EXTRAS[extra][0][0]
    places = {"{root}": lambda: runs.ready("linreg"), "{convnet}": lambda: runs.ready("convnet"),
              "{heic}": lambda: _heic(tmp_path), "{picture}": lambda: _picture(tmp_path),
              "{tokenizer}": lambda: _tokenizer(tmp_path)}
    args = [str(places[a]()) if a in places else a for a in COMMANDS[extra]]
    code = BLOCK.format(module=module, args=args)
    # A cache of its own, with the Debian data setup unpacked but nothing converted yet (the pima CSV
    # that rdata makes once is not there).
    cache = tmp_path / "cache"
    cache.mkdir()
    if debian_extract_dir().is_dir():
        (cache / "debian").symlink_to(debian_extract_dir())
    env = {**os.environ, "PTX_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env=env)
    # 2: the command cannot run at all; 1: predict's "an input failed" (a HEIC among other pictures).
    assert result.returncode == (1 if extra == "heif" else 2), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert install_command(extra) in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _heic(folder: Path) -> Path:
    """A real HEIC file (written with pillow-heif where it is installed; else only its header, which
    is all ptx reads before it asks for the extra)."""
    path = folder / "photo.heic"
    try:
        import pillow_heif
        from PIL import Image

        pillow_heif.from_pillow(Image.new("RGB", (64, 48), "white")).save(path)
    except ImportError:
        path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    return path


def _tokenizer(folder: Path) -> Path:
    """A tokenizer folder: its tokenizer.json is only looked for before ptx asks for the extra."""
    (folder / "tok").mkdir()
    (folder / "tok" / "tokenizer.json").write_text("{}")
    return folder / "tok"


def _picture(folder: Path) -> Path:
    from PIL import Image

    path = folder / "digit.png"
    Image.new("L", (28, 28), 255).save(path)
    return path
