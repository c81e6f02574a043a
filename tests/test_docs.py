"""The documentation site builds with `mkdocs build --strict`: a broken link or anchor, a page missing
from the nav's files, a command or docstring the reference cannot find fails the build."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINS = ("mkdocs", "material", "mkdocstrings")


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in PLUGINS),
                    reason="the docs extra is not installed: pip install -e '.[docs]' (scripts/setup.sh does)")
def test_mkdocs_build_strict_passes(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                            "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("cli/train", "cli/export", "cli/predict", "cli/verify", "cli/bench", "cli/serve", "cli/runs",
                 "library", "predict", "training"):
        assert (site / page / "index.html").is_file(), page
    assert "--device" in (site / "cli" / "predict" / "index.html").read_text()  # generated from click


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().split("\n")
    assert len(lines) <= 350
    head = "\n".join(lines[:40])
    assert "./scripts/setup.sh && ./scripts/demo.sh" in head and "./scripts/setup.sh && python3 -m pytest -q" in head
