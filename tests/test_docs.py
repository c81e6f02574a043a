"""The documentation site, as a reader gets it: `mkdocs build --strict` passes (a broken link or anchor,
a command or docstring the reference cannot find fails it), and the built pages are checked as
rendered: no stray fence, no click internals, the help's example lines as code, no help text that
names a README section or a page that is gone, every output block made by its command or marked with
where and when it was printed, and (in Chromium, at 1280 px) nothing cut off."""
from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from repo_scripts import script

REPO = Path(__file__).resolve().parent.parent
PLUGINS = ("mkdocs", "material", "mkdocstrings")
readme_outputs = script("readme_outputs")

needs_docs = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in PLUGINS),
                                reason="the docs extra is not installed: pip install -e '.[docs]' (scripts/setup.sh does)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
                            cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                            "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-4000:]
    return folder


def pages(site: Path) -> dict[str, str]:
    """Every page of the built site: its path in the site -> its HTML."""
    return {str(p.relative_to(site).parent): p.read_text() for p in site.rglob("index.html")
            if "assets" not in p.parts and "search" not in p.parts}


def outside_code(page: str) -> str:
    """The page's text with its code blocks and code spans left out."""
    return re.sub(r"<pre\b.*?</pre>|<code\b.*?</code>", " ", page, flags=re.S)


@needs_docs
def test_mkdocs_build_strict_passes(site):
    for page in ("cli/train", "cli/export", "cli/predict", "cli/verify", "cli/bench", "cli/serve", "cli/runs",
                 "library", "predict", "training", "tutorial", "agreement", "precisions", "pictures"):
        assert (site / page / "index.html").is_file(), page
    assert "--device" in (site / "cli" / "predict" / "index.html").read_text()  # generated from click
    # A GPU check's run is a page (its README); the files the check wrote are data beside it, not pages.
    runs = sorted(p.name for p in (REPO / "docs" / "gpu-runs").iterdir() if p.is_dir())
    assert runs and all((site / "gpu-runs" / run / "index.html").is_file() for run in runs)
    assert not [p for p in (site / "gpu-runs").rglob("*") if p.is_file() and p.name != "index.html"]


def page_problems(page: str) -> list[str]:
    """What is wrong on a built page as a reader sees it: a fence shown as text, click's internals,
    a repository path as a link's text."""
    problems = ["a fence that did not open a code block"] if "```" in outside_code(page) else []
    problems += ["click's Sentinel.UNSET shown as a default"] if "Sentinel" in page else []
    named = re.findall(r"<a [^>]*>(docs/[^<]*\.md[^<]*)</a>", page)
    problems += [f"links read as repository paths: {named} (name the page)"] if named else []
    # A list with no blank line before it is run into the paragraph above: "Notes: - one - two".
    run_in = [re.sub(r"<[^>]+>", "", para)[:60] for para in re.findall(r"<p\b[^>]*>(.*?)</p>", outside_code(page), re.S)
              if re.search(r"\n\s*(?:[-*+]|\d+\.) \S", para)]
    return problems + ([f"a list run into its paragraph (a blank line before it is missing): {run_in}"] if run_in else [])


def code_blocks(page: str) -> list[str]:
    return [html.unescape(b) for b in re.findall(r"<pre\b.*?</pre>", page, re.S)]


@needs_docs
def test_no_page_holds_a_stray_fence_or_clicks_internals_or_a_path_as_link_text(site):
    problems = {path: found for path, page in pages(site).items() if (found := page_problems(page))}
    assert not problems, problems


@needs_docs
def test_the_command_reference_shows_example_lines_and_epilogs_as_code(site):
    blocks = code_blocks
    top = blocks((site / "cli" / "index.html").read_text())
    assert any("ptx train convnet" in b and "ptx serve convnet" in b for b in top), "ptx's example lines"
    # `ptx train --dataset` says "a dataset name below": the list below is there, one dataset a line.
    train = blocks((site / "cli" / "train" / "index.html").read_text())
    assert any(re.search(r"^\s*mnist-sample\s+5,000 real MNIST", b, re.M) for b in train), "train's dataset list"
    assert any("ptx data fetch mnist" in b for b in blocks((site / "cli" / "data" / "index.html").read_text()))


def help_texts(command: click.Command, path: str = "ptx"):
    """(where, text) for every help text, epilog and option help of ptx's commands."""
    yield path, command.help or ""
    yield f"{path} (epilog)", command.epilog or ""
    for param in command.params:
        yield f"{path} {'/'.join(getattr(param, 'opts', [param.name]))}", getattr(param, "help", None) or ""
    if isinstance(command, click.Group):  # ptx's commands load when asked for: ask for each
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from help_texts(command.get_command(ctx, name), f"{path} {name}")


def anchors(markdown: Path) -> set[str]:
    """The heading anchors of a page, as the site's toc makes them."""
    from markdown.extensions.toc import slugify

    return {slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#+ (.+)$", markdown.read_text(), re.M)}


def reference_problems(where: str, text: str, readme: str) -> list[str]:
    """The README sections and docs/ pages (and their anchors) that ``text`` names but that do not exist."""
    sections = set(re.findall(r"^#+ (.+)$", readme, re.M))
    problems = [f"{where}: README has no section {section!r}"
                for section in re.findall(r"README(?:'s)? (?:section )?\(?\"([^\"]+)\"", text) if section not in sections]
    if re.search(r"\bREADME\b(?!\.md|(?:'s)? (?:section )?\(?\")", text):
        problems.append(f"{where}: names README without a section README has: {text!r}")
    for page, anchor in re.findall(r"docs/([\w/-]+)\.md(?:#([\w-]+))?", text):
        if not (REPO / "docs" / f"{page}.md").is_file():
            problems.append(f"{where}: docs/{page}.md does not exist")
        elif anchor and anchor not in anchors(REPO / "docs" / f"{page}.md"):
            problems.append(f"{where}: docs/{page}.md has no section #{anchor}")
    return problems


def test_help_texts_send_readers_only_to_sections_and_pages_that_exist():
    from ptx.cli import cli

    readme = (REPO / "README.md").read_text()
    problems = [p for where, text in help_texts(cli) for p in reference_problems(where, text, readme)]
    assert not problems, "\n".join(problems)


def test_docstrings_and_comments_send_readers_to_no_readme_section_it_lacks():
    """A docstring said "documented in README" of what README no longer has (it is a front page now):
    the code names the page instead."""
    pattern = re.compile(r"\b(?:in|see|per) README\b(?!\.md|\w| order)|\(README:")
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for top in ("ptx", "export", "infer", "models", "trainers", "serve", "scripts")
             for path in sorted((REPO / top).rglob("*.py"))
             for number, line in enumerate(path.read_text().split("\n"), 1) if pattern.search(line)]
    assert not found, "name the docs/ page instead of README:\n" + "\n".join(found)


def test_each_check_of_the_built_site_fails_on_what_it_is_for(tmp_path):
    """The checks above pass on the site; here each one is shown failing on the faults issue 38 found,
    rendered by the site's own Markdown extensions."""
    import markdown

    render = lambda text: markdown.markdown(text, extensions=["admonition", "attr_list", "md_in_html", "tables",  # noqa: E731
                                                               "toc", "pymdownx.superfences"])
    # setup.md's `ptx --help` without its opening fence: run-together paragraphs and a stray fence.
    assert page_problems(render("Usage: ptx [OPTIONS]\n\n  Train it.\n\nOptions:\n  --debug  Show.\n```\n")) == \
        ["a fence that did not open a code block"]
    assert page_problems(render("| option | default |\n|---|---|\n| `--lr` | Sentinel.UNSET |\n")) == \
        ["click's Sentinel.UNSET shown as a default"]
    assert page_problems(render("See [docs/models.md](models.md).\n"))[0].startswith("links read as repository paths")
    assert not page_problems(render("```\nptx --help\n```\n\nSee [the models](models.md); `a ``` b`.\n"))
    assert page_problems(render("Notes:\n- one\n- two\n"))[0].startswith("a list run into its paragraph")
    assert not page_problems(render("Notes:\n\n- one\n- two\n"))
    # Example lines joined into a paragraph are in no code block.
    joined = render("Examples:\n\nptx train convnet   train\nptx serve convnet   serve\n")
    assert not any("ptx train convnet" in b for b in code_blocks(joined))
    # A help text naming a README section README lacks, or README with no section, or a page that is gone.
    readme = "# ptx\n\n## Serve\n"
    assert reference_problems("x", 'See README\'s "Serve".', readme) == []
    assert reference_problems("x", 'See README\'s "Deploying".', readme) == ["x: README has no section 'Deploying'"]
    assert reference_problems("x", "as README says", readme)[0].startswith("x: names README without a section")
    assert reference_problems("x", "see docs/no-such-page.md", readme) == ["x: docs/no-such-page.md does not exist"]
    # A checked output block that drifted from what its command prints.
    page = tmp_path / "page.md"
    page.write_text("<!-- output: echo hello # check=exact -->\n```\nhello, as it printed once\n```\n")
    assert "differs from what it prints now" in readme_outputs.check_blocks(page, tmp_path)[0]
    page.write_text("<!-- output: echo hello # check=exact -->\n```\nhello\n```\n")
    assert readme_outputs.check_blocks(page, tmp_path) == []


def test_every_output_in_docs_is_made_by_its_command_or_says_where_it_was_printed():
    """An unmarked output block is a copy that drifts: each is an output block (checked by
    tests/test_readme.py, or refreshed by scripts/readme_outputs.py with the day and machine) or a
    transcript marked with where and when it was printed."""
    for page in readme_outputs.pages():
        text = page.read_text()
        assert not readme_outputs.unmarked(text), \
            f"{page.relative_to(REPO)}: output blocks at lines {readme_outputs.unmarked(text)} have no marker"
        for block in readme_outputs.parse(text):
            assert block.check or block.ran, \
                (f"{page.relative_to(REPO)}: `{block.label}` is neither checked nor stamped: refresh it with "
                 f"python3 scripts/readme_outputs.py --only '{block.commands[0]}'")


def test_unmarked_finds_output_fences_without_a_marker():
    text = "\n".join(["```bash", "ptx train convnet", "```", "", "```", "$ ptx runs", "```",
                      "<!-- transcript: AMD EPYC, 2 cores, 2026-11-23 -->", "```", "x", "```",
                      "<!-- transcript: somewhere -->", "```", "y", "```", "```text", "a tree", "```"])
    assert readme_outputs.unmarked(text) == [5, 13]  # no marker; a marker without a date


def test_the_copies_that_drifted_are_the_sources():
    """setup.md's extras are the ones scripts/setup.sh installs; the home page names every backend."""
    from ptx.infer.runtime.backends import list_backends

    extras = re.search(r'pip_install -e "(\.\[[^]]+\])"', (REPO / "scripts" / "setup.sh").read_text()).group(1)
    assert f'pip install -e "{extras}"' in (REPO / "docs" / "setup.md").read_text(), \
        f"docs/setup.md should name the extras scripts/setup.sh installs: {extras}"
    home = (REPO / "docs" / "index.md").read_text()
    missing = [b for b in list_backends() if f"`{b}`" not in home]
    assert not missing, f"docs/index.md does not name the backends {missing}"
    assert "<!-- output: ./scripts/demo.sh" in home, "the home page shows what the demo prints"


def test_the_models_page_says_what_its_tutorial_column_means():
    """`000 §2` is the seeds' numbering: the page explains every number its table uses, as `ptx models` does."""
    from ptx.tutorials import TUTORIALS

    page = (REPO / "docs" / "models.md").read_text()
    used = set(re.findall(r"^\| [\w-]+ \| (\d{3})\b", page, re.M))
    assert used and used <= set(TUTORIALS)
    for key in used:
        assert f"- `{key}`: {TUTORIALS[key]}" in page, f"docs/models.md does not say what {key} is"


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().split("\n")
    assert len(lines) <= 250
    head = "\n".join(lines[:40])
    assert "./scripts/setup.sh && ./scripts/demo.sh" in head and "./scripts/setup.sh && python3 -m pytest -q" in head
    assert "(docs/tutorial.md)" in head, "README links to the site's tutorial near the top"


def test_the_screenshots_in_docs_are_there():
    for name in ("index", "tutorial", "verify"):
        shot = REPO / "docs" / "screenshots" / f"{name}.png"
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot


@needs_docs
def test_nothing_is_cut_off_at_1280_px(site):
    """Every page in headless Chromium at 1280 px: no code block, paragraph or the page itself wider
    than its box (tables scroll on purpose and are left out)."""
    import browser  # tests/browser.py: Debian's headless Chromium through selenium

    why = browser.missing()
    if why:
        pytest.skip(why)
    shots = script("screenshot_site")
    problems = {}
    with shots.serving(site) as url, browser.chromium(shots.WIDTH, 900) as driver:
        shots.without_extras(driver)
        for path in sorted(pages(site)):
            found = shots.cut_off(driver, url + ("" if path == "." else path + "/"))
            if found:
                problems[path] = found
        # And the check finds what it is for: a code block that a reader would have to scroll.
        wide = ('data:text/html,<div class="md-content"><pre style="white-space:pre;overflow-x:auto;width:300px">'
                + "x" * 400 + "</pre></div>")
        assert shots.cut_off(driver, wide) == ["pre: " + "x" * 80]
    assert not problems, problems


def test_the_reference_keeps_example_lines_and_shows_defaults_as_help_does():
    reference = script("cli_reference")
    assert reference.blocks("Say it.\n\n\b\nptx a   one\nptx b   two\n\n\b\nmore") == \
        ["Say it.", "```text\nptx a   one\nptx b   two\n\nmore\n```"]
    assert reference.escape("<root>/MNIST/raw, 'photos/*.jpg', `a|b*`") == \
        "&lt;root>/MNIST/raw, 'photos/\\*.jpg', `a|b*`"  # code spans stay as typed

    @click.command()
    @click.option("--seed", default=42, show_default=True, help="Seed.")
    @click.option("--lr", type=float, help="Rate.")
    @click.option("--quiet", is_flag=True, help="Hush.")
    def command(seed, lr, quiet):
        """Do it."""

    rows = reference.command_markdown(command, "ptx x").split("\n")
    assert "| `--seed` | `INTEGER` | Seed. | `42` |" in rows
    assert "| `--lr` | `FLOAT` | Rate. | - |" in rows  # no default: a dash, never click's Sentinel
    assert "| `--quiet` |  | Hush. | - |" in rows


# -- the docs speak of ptx and its users -------------------------------------------------------------
# The rule, precisely. A page is README.md or any docs/**/*.md but the files a GPU check wrote as they
# came (docs/gpu-runs/*/ except their README.md, which is a page). HTML comments (the output markers,
# whose commands run in the workspace) are not what a reader sees and are left out. Then:
# - no folder of one machine anywhere, prose, code or output: a home folder (/root/, /home/NAME/,
#   /Users/), an interpreter's own (.pyenv/), a scratch workspace (/work/); scripts/readme_outputs.py
#   shows a home as ~ and site-packages as such;
# - /tmp/ only in a ```bash block, a command a user types; never in prose, a code span or output;
# - no ptx issue number in a heading or an anchor (`issue 53`, #issue-53-acceptance, #generate-75), and
#   none in prose either ("issue 53"); a project elsewhere is named with its own (pytorch#148886);
# - no word of how the work was organised, in prose: who ran what, in which session, on which lent
#   machine, with which internal status field.
MACHINE_PATH = re.compile(r"/root/|/home/[\w.-]+/|/Users/|/work/|\.pyenv/")
SCRATCH = re.compile(r"/tmp/")
ISSUE = re.compile(r"\bissues? #?\d+", re.I)
NUMBER_ANCHOR = re.compile(r"#(?:[\w-]*issue-\d+[\w-]*|[a-z]+(?:-[a-z]+)*-\d{2,3})\b")
ORGANISED = re.compile(r"\bthis session\b|\bsessions? of (?:issue|\d)|\bother sessions\b|\bsessions' |(?<![.\w])helpers?\b"
                       r"|\bengineers?\b|\blease\b|\blent\b|\bdevice tool\b|can_start_another|not_drawn|\bworktree"
                       r"|\bwho ran\b|\b(?:this|that|other|earlier|later|next) sessions?\b", re.I)
COMMIT = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12}\b")  # a commit named in prose
FENCE = re.compile(r"^( *)(```+)([\w-]*)[^\n]*\n.*?^\1\2[ \t]*$", re.S | re.M)


def docs_pages() -> list[Path]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [p for p in pages if not ("gpu-runs" in p.parts and p.name != "README.md")]


def hygiene_problems(name: str, text: str) -> list[str]:
    """What on a page speaks of one machine or of how the work was organised (the rule above)."""
    # Where and when a transcript was printed is shown under it on the site: that part of its marker is read.
    shown = " ".join(re.findall(r"<!-- transcript: (.*?) -->", text))
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    problems = [f"{name}: a path of one machine: {m.group(0)!r}" for m in MACHINE_PATH.finditer(text)]
    prose = FENCE.sub("", text)
    outside_shell = FENCE.sub(lambda m: m.group(0) if m.group(3) not in ("bash", "sh", "shell") else "", text)
    if SCRATCH.search(outside_shell):
        line = next(ln for ln in outside_shell.split("\n") if SCRATCH.search(ln))
        problems.append(f"{name}: a scratch folder outside a command a user types: {line.strip()!r}")
    for heading in re.findall(r"^#+ (.+)$", prose, re.M):
        if ISSUE.search(heading) or re.search(r"\{ *#[^}]*\d", heading):
            problems.append(f"{name}: a heading named after an issue or a number: {heading!r}")
    for anchor in re.findall(r"\]\([^)\s]*(#[\w-]+)\)", text):
        if NUMBER_ANCHOR.fullmatch(anchor):
            problems.append(f"{name}: a link to an anchor named after an issue or a number: {anchor}")
    words = re.sub(r"`[^`\n]*`", " ", prose) + "\n" + shown
    problems += [f"{name}: {m.group(0)!r} (an issue number)" for m in ISSUE.finditer(words)]
    problems += [f"{name}: {m.group(0)!r} (how the work was organised)" for m in ORGANISED.finditer(words)]
    problems += [f"{name}: {m.group(0)!r} (a commit: the history is git's)" for m in COMMIT.finditer(words)]
    return problems


def test_the_docs_speak_of_ptx_and_its_users_only():
    problems = [p for page in docs_pages() for p in hygiene_problems(str(page.relative_to(REPO)), page.read_text())]
    assert not problems, "\n".join(problems)


def test_the_hygiene_rule_catches_what_it_is_for_and_passes_what_users_type():
    planted = {
        "`setup: installing into /root/.pyenv/versions/3.11.7`": "a path of one machine",
        "```\ndata: (/home/dev/.cache/ptx)\n```\n": "a path of one machine",
        "The run below: `ptx bench /tmp/bxt/model.onnx`.": "a scratch folder",
        "<!-- transcript: x, 2026-11-23 -->\n```\n$ ptx verify --root /tmp/offer\n```\n": "a scratch folder",
        "## Photos (issue 31), run of 2026-11-23\n": "a heading named after",
        "## Reduced precision { #issue-53-acceptance }\n": "a heading named after",
        "measured: [benchmarks](docs/benchmarks.md#issue-53-acceptance).": "a link to an anchor",
        "[the run](benchmarks.md#generate-75)": "a link to an anchor",
        "fixes issue 30 point 7:": "an issue number",
        "No session since 2026-11-23 had a GPU lent.": "how the work was organised",
        "shared with other engineers' test suites": "how the work was organised",
        "what this session measured": "how the work was organised",
        "ptx at main of 2026-11-23 (f011fba) plus the fixes": "a commit",
        "<!-- transcript: AMD EPYC, 2 cores, load 7.6 (other sessions' tests running) -->\n```\nx\n```\n":
            "how the work was organised",
    }
    for text, why in planted.items():
        found = hygiene_problems("x.md", text)
        assert found and why in found[0], (text, found)
    legit = ("```bash\nptx export --module scripts/export_shapes.py:resnet50 --out /tmp/r50\n```\n"
             "<!-- output: @ptx serve convnet > /tmp/ptx-serve.log 2>&1 & -->\n"
             "Datasets are cached in `~/.cache/ptx/datasets`; an ONNX Runtime session per file (pytorch#148886,"
             " TensorRT #3161). [sizes](own-model.md#6-serve-it), [bound](precision.md#int8-and-bf16-within-max-drop-05),"
             " [check](gpu.md#the-latest-check-nvidia-h100-2026-11-26). `with predictor.host.lease(shape) as batch:`\n"
             "## pt2: torch.export and AOTInductor\n"
             "A centring model, written with onnx.helper as `centred.onnx`.\n")
    assert hygiene_problems("x.md", legit) == []
