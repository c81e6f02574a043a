"""README's and docs/' output blocks are what ptx prints today: the fast ones are run here and compared
(scripts/readme_outputs.py refreshes all of them, the slow ones from the demo's real runs)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


readme_outputs = _script("readme_outputs")


def test_readme_checked_output_blocks_match_what_ptx_prints(runs, tmp_path):
    """`ptx models`, `--help`, a refusal and predict on the demo's picture (made as the demo makes
    it), in a workspace holding a trained convnet as the demo leaves one."""
    run = tmp_path / "runs" / "convnet"
    run.mkdir(parents=True)
    for name in ("checkpoint.pt", "model.onnx", "model.torchscript.pt"):
        shutil.copy2(runs.trained("convnet") / name, run / name)
    _script("demo_digit").demo_digit(tmp_path / "runs" / "digit.png")
    # The factories docs/ export (docs/examples/*.py), where the pages' commands find them.
    shutil.copytree(REPO / "docs" / "examples", tmp_path / "docs" / "examples")
    pages = readme_outputs.pages()  # README.md and docs/*.md: every shown output is real
    blocks = [b for page in pages for b in readme_outputs.parse(page.read_text())]
    checked = " ;; ".join(b.label for b in blocks if b.check)
    for wanted in ("ptx models", "ptx --help", "ptx predict runs/digit.png"):
        assert wanted in checked, f"README or docs/ should mark `{wanted}`'s output block check=..."
    problems = [p for page in pages for p in readme_outputs.check_blocks(page, tmp_path, python=sys.executable)]
    assert not problems, "\n\n".join(problems)


def test_elide_keeps_the_first_and_last_of_each_run():
    lines = ["training", "epoch 1/3", "epoch 2/3", "epoch 3/3", "done", "epoch 1/1"]
    assert readme_outputs.elide(lines, re.compile("^epoch ")) == \
        ["training", "epoch 1/3", "...", "epoch 3/3", "done", "epoch 1/1"]


def test_numbers_check_masks_probabilities_not_labels():
    assert readme_outputs.comparable(["runs/digit.png\t9\t0.9989"], "numbers") == ["runs/digit.png\t9\t#"]
