"""An Open Inference Protocol server for the tests that speaks the protocol's JSON only (issue 69): its
server metadata (``GET /v2``) lists the extensions it is given (none by default, so no binary tensor
data), and it answers 400 to any request that carries binary tensor data (an
Inference-Header-Content-Length header), as a server without that extension does. It serves an ONNX
file's answers, computed by ONNX Runtime, with one planted behaviour (``mode``):

    exact         the file's answers
    scale-input   the file's answers on 0.9 * input (a preprocessing drift)
    scale-output  0.9 * the file's answers
    refuse        400 with REFUSAL to every infer request

``binary=True`` makes it read binary tensor data too (a server with the extension). Every request is
recorded (path, whether it carried binary data), so that a test can say what the client sent. Run in a
thread of the test's own process, on a free loopback port the kernel picks; each request's read is
bounded (Handler.timeout), and ``running`` shuts it down and closes its socket whatever the outcome.
No ptx and no torch here: numpy, onnxruntime and the standard library.
"""
from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort

REFUSAL = "model paused for maintenance: try again after 02:00 UTC"
BINARY_REFUSED = "binary tensor data is not supported by this server: send the tensors as JSON"
HEADER_LENGTH = "Inference-Header-Content-Length"
REQUEST_TIMEOUT_S = 10  # a client that stops sending mid-request is dropped after this
# ONNX Runtime's element types as the protocol names them, and the protocol's as numpy's
DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64", "tensor(int32)": "INT32",
             "tensor(uint8)": "UINT8", "tensor(int8)": "INT8", "tensor(bool)": "BOOL"}
NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8,
         "INT8": np.int8, "BOOL": np.bool_}


@dataclass
class JsonOnlyServer:
    onnx_file: str
    name: str
    mode: str = "exact"
    extensions: tuple[str, ...] = ()
    binary: bool = False  # reads binary tensor data (else: 400 to a request that carries it)
    requests: list[tuple[str, bool]] = field(default_factory=list)  # (path, carried binary data), in order
    url: str = ""

    def __post_init__(self):
        self.session = ort.InferenceSession(str(self.onnx_file), providers=["CPUExecutionProvider"])

    def metadata(self) -> dict:
        def described(values):
            return [{"name": v.name, "datatype": DATATYPES[v.type],
                     "shape": [d if isinstance(d, int) else -1 for d in v.shape]} for v in values]
        return {"name": self.name, "versions": ["1"], "platform": "json-only",
                "inputs": described(self.session.get_inputs()), "outputs": described(self.session.get_outputs())}

    def answer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.mode == "scale-input":
            feeds = {k: (v * 0.9).astype(v.dtype) for k, v in feeds.items()}
        names = [o.name for o in self.session.get_outputs()]
        found = dict(zip(names, self.session.run(names, feeds)))
        if self.mode == "scale-output":
            found = {k: (v * 0.9).astype(v.dtype) for k, v in found.items()}
        return found


def _handler(server: JsonOnlyServer):
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S

        def log_message(self, *args):
            pass

        def send(self, status: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            server.requests.append((self.path, False))
            if self.path.rstrip("/") == "/v2":
                return self.send(200, {"name": "json-only", "version": "1", "extensions": list(server.extensions)})
            if self.path.rstrip("/") == f"/v2/models/{server.name}":
                return self.send(200, server.metadata())
            self.send(404, {"error": f"no such route: {self.path}"})  # no model configuration extension either

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            cut = self.headers.get(HEADER_LENGTH)
            server.requests.append((self.path, cut is not None))
            if self.path != f"/v2/models/{server.name}/infer":
                return self.send(404, {"error": f"no such route: {self.path}"})
            if cut is not None and not server.binary:
                return self.send(400, {"error": BINARY_REFUSED})
            if server.mode == "refuse":
                return self.send(400, {"error": REFUSAL})
            cut = int(cut) if cut is not None else len(body)
            doc, offset, feeds = json.loads(body[:cut]), cut, {}
            for item in doc["inputs"]:
                dtype = NUMPY[item["datatype"]]
                size = (item.get("parameters") or {}).get("binary_data_size")
                if size is not None:
                    array = np.frombuffer(body[offset:offset + size], dtype)
                    offset += size
                else:
                    array = np.asarray(item["data"], dtype)
                feeds[item["name"]] = array.reshape(item["shape"])
            found = server.answer(feeds)
            wanted = [o["name"] for o in doc.get("outputs") or []] or list(found)
            self.send(200, {"model_name": server.name, "outputs": [
                {"name": n, "datatype": DATATYPES[f"tensor({_ort_name(found[n].dtype)})"],
                 "shape": list(found[n].shape), "data": found[n].reshape(-1).tolist()} for n in wanted]})

    return Handler


def _ort_name(dtype) -> str:
    return {"float32": "float", "float64": "double", "bool": "bool"}.get(np.dtype(dtype).name, np.dtype(dtype).name)


@contextlib.contextmanager
def running(onnx_file, name: str, **options):
    """A JsonOnlyServer on a free loopback port (its ``url`` the model's), shut down at the end."""
    server = JsonOnlyServer(str(onnx_file), name, **options)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{http.server_address[1]}/v2/models/{name}"
    try:
        yield server
    finally:
        http.shutdown()
        http.server_close()
        thread.join(REQUEST_TIMEOUT_S)
