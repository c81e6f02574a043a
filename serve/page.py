"""The page at `/`: plain HTML and JavaScript in one file served by ptx (no build step, nothing
fetched from the internet). It calls the same v2 endpoints as any client."""
from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def page_html() -> str:
    return resources.files("ptx.serve").joinpath("static/index.html").read_text(encoding="utf-8")
