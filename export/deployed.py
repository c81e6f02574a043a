"""The `ptx verify URL` line a Triton or KServe export ends with (issue 59): once the folder is
deployed, the served model is checked against the very file placed in it, through the Open Inference
Protocol (`ptx verify http://HOST:PORT/v2/models/NAME --against FILE`)."""
from __future__ import annotations

import shlex
from pathlib import Path

TRITON_HTTP_PORT = 8000  # tritonserver's default --http-port


def verify_line(url: str, placed: Path, options: str = "", where: str = "") -> str:
    """One line: the command that checks the served model at ``url`` against ``placed``, the file
    the folder serves, with ``options`` (--token) and ``where`` (what HOST is) after it."""
    return (f"verify it once served: ptx verify {url} --against {shlex.quote(str(placed))}{options}"
            + (f"  ({where})" if where else ""))


def triton_verify_line(name: str, repo: Path, placed: Path) -> str:
    return verify_line(f"http://HOST:{TRITON_HTTP_PORT}/v2/models/{name}", placed,
                       where=f"HOST: where `tritonserver --model-repository {shlex.quote(str(repo))}` runs")


def kserve_verify_line(name: str, placed: Path) -> str:
    # `ptx verify URL` needs the port named: an InferenceService's URL gives none (80 for http://)
    return verify_line(f"http://HOST:PORT/v2/models/{name}", placed, " --token TOKEN",
                       where=f"HOST:PORT: the URL `kubectl get inferenceservice {name}` prints, with its port (80 for "
                             f"http://); TOKEN: the secret {name}-token's")
