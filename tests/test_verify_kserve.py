"""`ptx verify URL` against a server ptx did not write: KServe's own Python model server (the `kserve`
package, tests/kserve_onnx_server.py) serving a ptx ONNX file through its v2 REST route, held to the
file itself (issue 59). The server listens on a free loopback port the kernel picks, every wait is
bounded, and it is stopped by its own process id whatever the outcome."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ptx_command import ptx

# Looked for, not imported: kserve's protos and tritonclient's (imported by other tests in this process)
# register the same gRPC names, which protobuf refuses. The server runs in its own process.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("KServe's model server is not installed (scripts/setup.sh installs it with the test extra)",
                allow_module_level=True)

SERVER = Path(__file__).parent / "kserve_onnx_server.py"
STARTUP_TIMEOUT_S = 90
LISTENING = re.compile(r"Uvicorn running on http://(127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def kserve_url(runs):
    onnx_file = runs.trained("convnet") / "model.onnx"
    process = subprocess.Popen([sys.executable, str(SERVER), str(onnx_file), "--model_name", "convnet",
                                "--http_port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        address, lines, deadline = None, [], time.monotonic() + STARTUP_TIMEOUT_S
        os.set_blocking(process.stdout.fileno(), False)
        while address is None and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            if not line:
                time.sleep(0.1)
                continue
            lines.append(line)
            if found := LISTENING.search(line):
                address = found.group(1)
        if address is None:
            pytest.fail("KServe's model server did not start within "
                        f"{STARTUP_TIMEOUT_S} s:\n{''.join(lines[-20:])}")
        yield f"http://{address}/v2/models/convnet", onnx_file
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _verify(*args: str) -> subprocess.CompletedProcess:
    return ptx("verify", *args, timeout=300)


def test_kserves_own_server_answers_as_the_file_it_serves(kserve_url):
    url, onnx_file = kserve_url
    result = _verify(url, "--against", str(onnx_file), "--timeout", "30", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)["rows"]
    served = [row for row in rows if url in row["label"]]
    assert served and all(row["status"] == "PASS" for row in served), rows


def test_an_unknown_model_on_kserves_server_is_one_line(kserve_url):
    url, onnx_file = kserve_url
    result = _verify(url.replace("/convnet", "/no-such-model"), "--against", str(onnx_file), "--timeout", "30")
    assert result.returncode == 2, result.stdout + result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no-such-model" in error[0], result.stderr
