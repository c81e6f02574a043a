"""README's and docs/' output blocks are what ptx prints today: the fast ones are run here and compared
(scripts/readme_outputs.py refreshes all of them, the slow ones from the demo's real runs)."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from repo_scripts import script

REPO = Path(__file__).resolve().parent.parent


readme_outputs = script("readme_outputs")


# The pages whose blocks export language models and detectors (minutes on 2 cores) are checked in files
# of their own, so that pytest-xdist's workers (one file each) check them beside the rest.
CHECKED_ELSEWHERE = {"generate.md": "test_readme_generate.py", "own-model.md": "test_readme_own_model.py"}


def workspace(runs, root: Path) -> Path:
    """A workspace as the demo leaves one: a trained convnet in runs/convnet, the demo's picture in
    runs/digit.png, and the factories docs/ export (docs/examples/*.py), where the pages' commands find them."""
    run = root / "runs" / "convnet"
    run.mkdir(parents=True)
    for name in ("checkpoint.pt", "model.onnx", "model.torchscript.pt"):
        shutil.copy2(runs.trained("convnet") / name, run / name)
    script("demo_digit").demo_digit(root / "runs" / "digit.png")
    shutil.copytree(REPO / "docs" / "examples", root / "docs" / "examples")
    return root


def problems_of(pages: list[Path], runs, root: Path) -> list[str]:
    """What each checked block of ``pages`` prints now that it does not show, run in a fresh workspace."""
    where = workspace(runs, root)
    return [p for page in pages for p in readme_outputs.check_blocks(page, where, python=sys.executable,
                                                                     run_ptx=_in_process)]


def _in_process(args, cwd, env, merged):
    """A page's plain `ptx ARGS` command run in this process (tests/ptx_command.py), not a new interpreter that
    imports torch again: some 2 s a command, over the pages' fifty."""
    from ptx_command import ptx

    return ptx(*args, cwd=cwd, env=env, merged=merged)


def test_readme_checked_output_blocks_match_what_ptx_prints(runs, tmp_path):
    """`ptx models`, `--help`, a refusal and predict on the demo's picture, and every other page's
    checked blocks but those ``CHECKED_ELSEWHERE`` (README.md and docs/*.md: every shown output is real)."""
    pages = readme_outputs.pages()
    blocks = [b for page in pages for b in readme_outputs.parse(page.read_text())]
    checked = " ;; ".join(b.label for b in blocks if b.check)
    for wanted in ("ptx models", "ptx --help", "ptx predict runs/digit.png"):
        assert wanted in checked, f"README or docs/ should mark `{wanted}`'s output block check=..."
    for page, file in CHECKED_ELSEWHERE.items():
        assert (REPO / "docs" / page).is_file() and (REPO / "tests" / file).is_file(), (page, file)
    problems = problems_of([p for p in pages if p.name not in CHECKED_ELSEWHERE], runs, tmp_path)
    assert not problems, "\n\n".join(problems)


def test_elide_keeps_the_first_and_last_of_each_run():
    lines = ["training", "epoch 1/3", "epoch 2/3", "epoch 3/3", "done", "epoch 1/1"]
    assert readme_outputs.elide(lines, re.compile("^epoch ")) == \
        ["training", "epoch 1/3", "...", "epoch 3/3", "done", "epoch 1/1"]


def test_numbers_check_masks_probabilities_not_labels():
    assert readme_outputs.comparable(["runs/digit.png\t9\t0.9989"], "numbers") == ["runs/digit.png\t9\t#"]


def test_a_ptx_command_run_in_process_prints_what_its_own_process_prints_and_a_change_is_caught(tmp_path):
    """The pages' plain `ptx ARGS` commands run in the test's process (_in_process): a block written by the
    refresh, which runs each command in a shell of its own, is what the in-process run prints; a block that
    says something else is caught."""
    page = tmp_path / "page.md"
    page.write_text("<!-- output: ptx models # check=exact -->\n```\nnot what it prints\n```\n")
    assert readme_outputs.check_blocks(page, tmp_path, run_ptx=_in_process)
    assert readme_outputs.refresh(page, tmp_path) == 1  # each command in bash, as a reader runs it
    assert "not what it prints" not in page.read_text()
    assert readme_outputs.check_blocks(page, tmp_path, run_ptx=_in_process) == []
    assert readme_outputs.plain_ptx("ptx models") == (["models"], False)
    assert readme_outputs.plain_ptx("ptx serve m > log &") is None and readme_outputs.plain_ptx("ptx --help") is None
