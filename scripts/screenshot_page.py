#!/usr/bin/env python3
"""Screenshot the drawing page of `ptx serve` with a digit drawn and answered, for the README.

Starts `ptx serve MODEL` on free loopback ports (runs from --root, the demo's by default), draws the
digit with pointer strokes in headless Chromium, waits for the answer and saves the page; the server
and the browser are stopped by their own processes whatever happens.

    python3 scripts/screenshot_page.py [--root runs] [--model convnet] [--digit 7] [--out docs/serve-page.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import browser  # noqa: E402  (tests/browser.py: headless Chromium and the page's controls)
import serving  # noqa: E402  (tests/serving.py: ptx serve on free ports, stopped by its pid)

DIGITS = {"1": browser.ONE, "7": browser.SEVEN, "0": browser.ZERO}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs"), help="runs folder holding MODEL (default: runs)")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--digit", choices=sorted(DIGITS), default="7")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "serve-page.png")
    args = parser.parse_args()
    why = browser.missing()
    if why:
        sys.exit(f"error: {why}")
    if not (args.root / args.model / "model.onnx").is_file():
        sys.exit(f"error: no {args.root / args.model / 'model.onnx'}: run ./scripts/demo.sh (or ptx train and "
                 f"ptx export {args.model}) first, or give --root")
    with serving.running(args.root, args.model) as server, browser.chromium(760, 720) as driver:
        browser.open_page(driver, server.url + "/", args.model)
        label = browser.draw(driver, DIGITS[args.digit])
        top = ", ".join(f"{name} {p:.3f}" for name, p in browser.bars(driver))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    print(f"drew a {args.digit}: the page answered {label} (top three: {top}); saved {args.out}")


if __name__ == "__main__":
    main()
