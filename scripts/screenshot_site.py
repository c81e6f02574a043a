#!/usr/bin/env python3
"""Screenshot pages of the documentation site as a reader sees them: built with `mkdocs build`, served
on a loopback port, opened in headless Chromium at 1280 px, the whole page height; and say what on
each page does not fit (a code block or anything else wider than its box, which a reader would have to
scroll sideways to see). Tables scroll on purpose (Material wraps each in a scroll box) and are not
counted.

    python3 scripts/screenshot_site.py                           # the pages below, into docs/screenshots/
    python3 scripts/screenshot_site.py --page cli/train/ --out /tmp/shots

tests/test_docs.py runs `cut_off` on every page of a built site.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import browser  # noqa: E402  (tests/browser.py: Debian's headless Chromium through selenium)

WIDTH = 1280
# The landing page and two guide pages (issue 38's acceptance), kept in docs/screenshots/.
PAGES = {"index": "", "tutorial": "tutorial/", "verify": "verify/"}

# Elements a reader would have to scroll sideways (or could not see at all): wider than their box by
# more than SLACK_PX, in the page's content. A table's scroll box is left out: it scrolls on purpose.
# The slack: an inline code span that ends a line sticks out by its own padding (2-4 px), hiding nothing.
SLACK_PX = 8
CUT_OFF_JS = """
const out = [];
for (const el of document.querySelectorAll('.md-content pre, .md-content code, .md-content p, .md-content li')) {
  if (el.closest('.md-typeset__scrollwrap')) continue;
  if (el.scrollWidth > el.clientWidth + SLACK_PX) {
    out.push(el.tagName.toLowerCase() + ': ' + el.textContent.trim().split('\\n')[0].slice(0, 80));
  }
}
const page = document.documentElement;
if (page.scrollWidth > page.clientWidth + SLACK_PX) out.push('the page itself scrolls sideways');
return out;
""".replace("SLACK_PX", str(SLACK_PX))


def build(site: Path) -> None:
    """`mkdocs build --strict` into ``site``."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                            capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    if result.returncode:
        sys.exit(f"mkdocs build failed:\n{result.stderr[-4000:]}")


@contextlib.contextmanager
def serving(site: Path):
    """The built site on a free loopback port (Material's links are folders: file:// cannot follow them)."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per file fetched would drown what the script says
        pass


# What a page fetches that plays no part in how its text is laid out, or that no machine running the check
# may fetch: the search box's index (1.1 MB of JSON that Material's search worker parses on every page: most
# of a page's time in the check, 85 pages taking 41 s with it on 2 cores and 18 s without) and the web fonts
# from Google (the suite runs offline; blocked, every machine lays pages out in the same fallback font).
NOT_LAYOUT = ["*search/search_index.json*", "*fonts.googleapis.com*", "*fonts.gstatic.com*"]


def without_extras(driver) -> None:
    """``driver`` blocks NOT_LAYOUT for the pages it opens after (Chromium's DevTools protocol)."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": NOT_LAYOUT})


def cut_off(driver, url: str) -> list[str]:
    """What on the page at ``url`` does not fit its box at the window's width."""
    driver.get(url)
    return driver.execute_script(CUT_OFF_JS)


def screenshot(driver, url: str, out: Path) -> list[str]:
    """The whole page at ``url`` saved to ``out``; returns what does not fit."""
    problems = cut_off(driver, url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(int(height), 12000))
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    driver.set_window_size(WIDTH, 900)
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", action="append", help="a page's path in the site (default: the three pages)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    why = browser.missing()
    if why:
        sys.exit(f"error: {why}")
    pages = {p.strip("/").replace("/", "-") or "index": p for p in args.page} if args.page else PAGES
    with tempfile.TemporaryDirectory(prefix="ptx-site-") as folder:
        build(Path(folder))
        with serving(Path(folder)) as url, browser.chromium(WIDTH, 900) as driver:
            for name, page in pages.items():
                problems = screenshot(driver, url + page, args.out / f"{name}.png")
                print(f"{args.out / f'{name}.png'}: " + ("nothing cut off" if not problems else
                                                         "cut off: " + "; ".join(problems)))


if __name__ == "__main__":
    main()
