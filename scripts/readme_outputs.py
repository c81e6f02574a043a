#!/usr/bin/env python3
"""README's and docs/' output blocks, made by running their commands: refresh them all, or check the fast ones.

A block is marked by an HTML comment on the line before its fence:

    <!-- output: ptx models # check=exact -->
    ```
    (what `ptx models` prints, written here by this script)
    ```

The part before ` # ` is one or more shell commands separated by ` ;; `, run in order with bash in
the workspace (the repository, where scripts/demo.sh leaves runs/); stdout and stderr are shown
together, as a terminal shows them. A command starting with `@` runs without showing its output
(setup, such as an export a later command needs). Options after ` # `:

    check=exact    tests/test_readme.py runs it and compares the text (fast, state-free commands)
    check=numbers  the same, with decimal numbers masked (a prediction whose probability depends
                   on how long the model trained)
    prompt         show `$ COMMAND` before each command's output
    elide=REGEX    keep the first and last of each run of consecutive lines matching REGEX, with
                   `...` between (the epoch lines of a 60-epoch training)
    ran="DATE, MACHINE"   written by this script when it refreshes a block without check=: the day
                   and the machine the output comes from (the site shows it under the block)

Blocks without check= are refreshed by this script only (training, verify, bench: minutes, and
machine-dependent numbers). Blocks run in README order, so a block may rely on the state an earlier
one left (the demo's trained convnet).

Output that no command here can make again (a GPU machine's, a server stopped with Ctrl-C, a
download) is marked with where and when it was printed instead, and shown as such:

    <!-- transcript: AMD EPYC, 2 cores, 2026-11-23 -->
    ```
    $ ptx serve convnet
    ...
    ```

What a command prints is shown as a reader's machine would print it: this machine's home folder as `~`
and the site-packages of the Python that runs ptx as `site-packages` (`shown()`), so no block carries
the paths of the machine that made it (tests/test_docs.py checks the pages for them).

`unmarked()` finds a fence with no language (or `console`), which is how docs/ write what a program
prints, that has neither marker: tests/test_docs.py fails on one. Text that is not output (a file's
content, a tree) names its language (```text, ```protobuf).

    python3 scripts/readme_outputs.py                  # refresh every block (runs the demo: minutes)
    python3 scripts/readme_outputs.py --only 'ptx models'   # refresh the blocks whose commands match
    python3 scripts/readme_outputs.py --check          # compare the check= blocks, exit 1 on a difference
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import difflib
import os
import platform
import re
import shlex
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- output: (?P<spec>.*?) -->$")
TRANSCRIPT = re.compile(r"^<!-- transcript: (?P<where>.*?) -->$")
FENCE = re.compile(r"^(?P<indent>\s*)```")
OUTPUT_FENCE = re.compile(r"^\s*```(?:console)?\s*$")  # how docs/ fence what a program prints
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
DECIMAL = re.compile(r"\d+\.\d+(?:e[+-]\d+)?")
COLUMNS = "100"  # click wraps --help to the terminal width: one fixed width, here and in the test
COMMAND_TIMEOUT_S = 3600


@dataclass
class Block:
    """One marked output block: where its body lies in the README's lines, and how to make it."""

    commands: list[str]
    start: int  # index of the first body line (after the opening fence)
    end: int  # index of the closing fence
    check: str | None = None
    indent: str = ""  # a block inside a list item is indented; its body lines are stored without it
    prompt: bool = False
    elide: re.Pattern | None = None
    ran: str | None = None  # "DATE, MACHINE" the output comes from (blocks without check=)
    marker: int = 0  # index of the marker line
    body: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return " ;; ".join(self.commands)


def parse(text: str) -> list[Block]:
    """Every marked block of a README, with its current body."""
    lines = text.split("\n")
    blocks = []
    for i, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not fence:
            raise SystemExit(f"README line {i + 1}: an output marker must be followed by a ``` fence")
        end = next((j for j in range(i + 2, len(lines)) if FENCE.match(lines[j])), None)
        if end is None:
            raise SystemExit(f"README line {i + 2}: the output block is never closed")
        indent = fence.group("indent")
        spec = match.group("spec")
        commands_part, _, options_part = spec.partition(" # ")
        block = Block([c.strip() for c in commands_part.split(" ;; ") if c.strip()], i + 2, end, indent=indent,
                      marker=i, body=[ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 2:end]])
        for option in shlex.split(options_part):
            key, _, value = option.partition("=")
            if key == "check" and value in ("exact", "numbers"):
                block.check = value
            elif key == "prompt":
                block.prompt = True
            elif key == "elide" and value:
                block.elide = re.compile(value)
            elif key == "ran" and DATE.search(value):
                block.ran = value
            else:
                raise SystemExit(f"README line {i + 1}: unknown output option {option!r}")
        blocks.append(block)
    return blocks


@contextlib.contextmanager
def ptx_on_path(python: str = sys.executable):
    """A temporary folder holding a `ptx` that runs this Python's ptx: README's commands say `ptx`."""
    with tempfile.TemporaryDirectory(prefix="ptx-readme-bin-") as folder:
        shim = Path(folder) / "ptx"
        shim.write_text(f'#!/bin/sh\nexec "{python}" -m ptx "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
        yield folder


def shown(text: str) -> str:
    """``text`` with the paths of this machine as a reader reads them anywhere: every site-packages (or
    dist-packages) folder Python imports from as `site-packages`, the home folder as `~`."""
    folders = {sysconfig.get_paths()["purelib"], *(p for p in sys.path if Path(p).name in ("site-packages",
                                                                                       "dist-packages"))}
    for folder in sorted(folders, key=len, reverse=True):  # a venv's own before the interpreter's it extends
        text = text.replace(folder.rstrip("/") + "/", "site-packages/")
    home = str(Path.home()).rstrip("/")
    return re.sub(re.escape(home) + r"(?=/|\b)", "~", text) if home else text


def run_block(block: Block, workspace: Path, bin_dir: str, run_ptx=None) -> list[str]:
    """The block's commands run in ``workspace``, as the block shows them. ``run_ptx``: where given, a plain `ptx
    ARGS` command (at most its stderr sent to /dev/null) runs through it instead of a shell: ``run_ptx(args,
    cwd=, env=, merged=)`` -> CompletedProcess, as tests/ptx_command.py's ptx runs one in the test's own process,
    without a new interpreter's start and torch's import for each."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": COLUMNS,
           "TERM": "dumb", "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "")}
    lines = []
    for command in block.commands:
        hidden = command.startswith("@")
        command = command.lstrip("@").strip()
        plain = plain_ptx(command) if run_ptx is not None else None
        if plain is not None:
            args, quiet = plain
            result = run_ptx(args, cwd=workspace, env=env, merged=not quiet)
        else:
            result = subprocess.run(["bash", "-c", command], cwd=workspace, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT_S)
        if hidden:
            if result.returncode:
                raise SystemExit(f"setup command failed ({result.returncode}): {command}\n{result.stdout}")
            continue
        if block.prompt:
            lines.append(f"$ {command}")
        lines += shown(result.stdout).rstrip("\n").split("\n") if result.stdout.strip() else []
    return elide(lines, block.elide) if block.elide else lines


EXPANDED = set("$`\\")  # what bash expands even inside double quotes
GLOBS = set("*?[~{")  # what it expands outside quotes
OPERATORS = set("();<>|&")


def plain_ptx(command: str) -> tuple[list[str], bool] | None:
    """(the arguments, whether stderr is dropped) of a command that is `ptx ARGS` alone (quoted arguments as bash
    reads them), with at most a trailing `2>/dev/null`; None for anything only a shell can run as written (pipes,
    redirections, background, variables, globs)."""
    quiet = command.endswith(" 2>/dev/null")
    body = command.removesuffix(" 2>/dev/null")
    quote = None
    for char in body:
        if char in EXPANDED or (quote is None and char in GLOBS):
            return None
        if char in "'\"":
            quote = None if quote == char else quote or char
    try:
        lexer = shlex.shlex(body, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # an unclosed quote
        return None
    if not words or words[0] != "ptx" or any(word and set(word) <= OPERATORS for word in words):
        return None
    if {"--help", "-h"} & set(words):  # click wraps help to the width its own process sees at its start
        return None
    return words[1:], quiet


def elide(lines: list[str], pattern: re.Pattern) -> list[str]:
    """Runs of consecutive lines matching ``pattern`` keep their first and last, `...` between."""
    out, run = [], []

    def flush():
        out.extend(run if len(run) <= 2 else [run[0], "...", run[-1]])
        run.clear()

    for line in lines:
        if pattern.search(line):
            run.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return out


def comparable(lines: list[str], check: str) -> list[str]:
    return [DECIMAL.sub("#", line) for line in lines] if check == "numbers" else lines


def check_blocks(readme: Path, workspace: Path, python: str = sys.executable, run_ptx=None) -> list[str]:
    """The differences between README's check= blocks and what their commands print now (``run_ptx``: run_block's)."""
    problems = []
    checked = [b for b in parse(readme.read_text()) if b.check is not None]
    with ptx_on_path(python) as bin_dir:
        outputs = [run_block(block, workspace, bin_dir, run_ptx) for block in checked]
    for block, now in zip(checked, outputs):
        want, got = comparable(block.body, block.check), comparable(now, block.check)
        if want != got:
            diff = "\n".join(difflib.unified_diff(block.body, now, "README", "now", lineterm=""))
            problems.append(f"README block `{block.label}` ({block.check}) differs from what it prints now; "
                            f"refresh it with: python3 scripts/readme_outputs.py --only '{block.commands[0]}'\n{diff}")
    return problems


def refresh(readme: Path, workspace: Path, only: str | None = None) -> int:
    """Rewrite the blocks (those whose commands contain ``only``) with what their commands print."""
    text = readme.read_text()
    lines = text.split("\n")
    changed = 0
    # From the last block up, so that earlier blocks' line numbers stay valid while rewriting;
    # the commands themselves run in README order first.
    blocks = [b for b in parse(text) if only is None or only in b.label]
    outputs = []
    with ptx_on_path() as bin_dir:
        for block in blocks:
            print(f"running: {block.label}", file=sys.stderr, flush=True)
            outputs.append(run_block(block, workspace, bin_dir))
    for block, now in reversed(list(zip(blocks, outputs))):
        if now != block.body:
            lines[block.start:block.end] = [block.indent + ln if ln else ln for ln in now]
            changed += 1
        if block.check is None:  # made here and now: the page says so
            lines[block.marker] = stamped(lines[block.marker], f"{datetime.date.today():%Y-%m-%d}, {machine()}")
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, readme)
    return changed


def machine() -> str:
    """This machine in a few words, for a block's ran= stamp: the CPU's model and the cores."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def stamped(marker_line: str, ran: str) -> str:
    """``marker_line`` with its ran= option set to ``ran``."""
    indent = marker_line[:len(marker_line) - len(marker_line.lstrip())]
    spec = MARKER.match(marker_line.strip()).group("spec")
    commands, _, options = spec.partition(" # ")

    def quoted(option: str) -> str:
        key, _, value = option.partition("=")
        return f'{key}="{value}"' if re.search(r"\s", value) else option

    kept = [quoted(o) for o in [*(o for o in shlex.split(options) if not o.startswith("ran=")), f"ran={ran}"]]
    return f"{indent}<!-- output: {commands} # {' '.join(kept)} -->"


def unmarked(text: str) -> list[int]:
    """Line numbers (1-based) of output fences that no output or transcript marker vouches for (or
    whose transcript marker gives no date)."""
    lines, found, inside = text.split("\n"), [], False
    for i, line in enumerate(lines):
        if not FENCE.match(line):
            continue
        if inside:  # a closing fence
            inside = False
            continue
        inside = True
        if not OUTPUT_FENCE.match(line):
            continue
        before = lines[i - 1].strip() if i else ""
        transcript = TRANSCRIPT.match(before)
        if not (MARKER.match(before) or (transcript and DATE.search(transcript.group("where")))):
            found.append(i + 1)
    return found


def captions(markdown: str) -> str:
    """A line under each marked block saying where its output comes from (an MkDocs hook: the site
    shows it, where the marker itself is an HTML comment no reader sees)."""
    lines = markdown.split("\n")
    out, pending, opened = [], None, False
    for line in lines:
        out.append(line)
        match_output, match_transcript = MARKER.match(line.strip()), TRANSCRIPT.match(line.strip())
        if match_output or match_transcript:
            indent = line[:len(line) - len(line.lstrip())]
            if match_transcript:
                pending = (indent, f"Printed on {match_transcript.group('where')}.")
            else:
                block = parse(line.strip() + "\n```\n```")[0]
                pending = (indent, f"Printed on {block.ran}." if block.ran else
                           "What it prints: checked by the tests." if block.check else None)
            opened = False
            continue
        if pending and FENCE.match(line):
            if not opened:
                opened = True
            else:  # the block's closing fence
                if pending[1]:
                    out += ["", f'{pending[0]}<p class="ptx-printed" markdown>{pending[1]}</p>']
                pending = None
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs' hook signature
    return captions(markdown)


def pages() -> list[Path]:
    """The files whose output blocks are kept real: README.md and the documentation site's pages."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, help="one file (default: README.md and docs/*.md)")
    parser.add_argument("--workspace", type=Path, default=REPO,
                        help="where the commands run (default: the repository, with the demo's runs/)")
    parser.add_argument("--only", help="refresh only the blocks whose commands contain this text")
    parser.add_argument("--check", action="store_true", help="compare the check= blocks instead of rewriting")
    args = parser.parse_args()
    files = [args.readme] if args.readme else pages()
    if args.check:
        problems = [p for page in files for p in check_blocks(page, args.workspace)]
        print("\n\n".join(problems) or "the checked output blocks match what the commands print")
        sys.exit(1 if problems else 0)
    for page in files:
        if parse(page.read_text()) and (args.only is None or any(args.only in b.label for b in parse(page.read_text()))):
            changed = refresh(page, args.workspace, args.only)
            print(f"{changed} block(s) changed in {page}", file=sys.stderr)


if __name__ == "__main__":
    main()
