"""A second Open Inference Protocol server for the tests, over the standard library's http.server: a
two-layer MLP (weights from an npz) answered with one planted drift, so that `ptx verify URL` can be
shown to catch and name it. Run as ``python oip_planted.py WEIGHTS.npz MODE``; it prints
``listening PORT`` once it serves on a free loopback port. Modes: exact, scale (inputs x 0.5 + 0.1),
bf16 (answers rounded to bf16), replica (every other request answered by other weights), batch (each
answer moved by its batch's mean), token (401 without ``Authorization: Bearer s3cret``), drain (503 to
the first three infer requests, as a server that drains or starts). ``--tls CERT KEY`` serves https.
"""
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

WEIGHTS, MODE = np.load(sys.argv[1]), sys.argv[2]
NAME, MAX_BATCH = "mlp", 8
served = {"count": 0}


def forward(x, w=WEIGHTS, shift=0.0):
    return (np.tanh(x @ w["W1"] + w["b1"]) @ (w["W2"] + shift) + w["b2"]).astype(np.float32)


def answer(x):
    served["count"] += 1
    if MODE == "scale":
        return forward((0.5 * x + 0.1).astype(np.float32))
    if MODE == "replica" and served["count"] % 2 == 0:
        return forward(x, shift=0.05)
    y = forward(x)
    if MODE == "bf16":
        return ((y.view(np.uint32) + 0x8000) & 0xFFFF0000).view(np.float32)
    if MODE == "batch":
        return y + 0.05 * x.mean(axis=0).sum()
    return y


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def refuse(self):
        if MODE == "token" and self.headers.get("Authorization") != "Bearer s3cret":
            self.send(401, b'{"error": "missing or wrong bearer token"}')
            return True
        return False

    def do_GET(self):
        if self.refuse():
            return
        if self.path == f"/v2/models/{NAME}":
            doc = {"name": NAME, "versions": ["1"], "platform": "planted",
                   "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]}
        elif self.path == f"/v2/models/{NAME}/config":
            doc = {"name": NAME, "max_batch_size": MAX_BATCH}
        else:
            return self.send(404, json.dumps({"error": f"unknown model in {self.path}"}).encode())
        self.send(200, json.dumps(doc).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.refuse():
            return
        if MODE == "drain" and served.setdefault("refused", 0) < 3:
            served["refused"] += 1
            return self.send(503, b'{"error": "draining"}')
        if self.path != f"/v2/models/{NAME}/infer":
            return self.send(404, b'{"error": "unknown model"}')
        cut = int(self.headers.get("Inference-Header-Content-Length", len(body)))
        doc = json.loads(body[:cut])
        item = doc["inputs"][0]
        if (item.get("parameters") or {}).get("binary_data_size") is not None:
            x = np.frombuffer(body[cut:], np.float32).reshape(item["shape"])
        else:
            x = np.asarray(item["data"], np.float32).reshape(item["shape"])
        if x.shape[0] > MAX_BATCH:
            return self.send(400, b'{"error": "batch over max_batch_size"}')
        y = answer(x)
        raw = y.tobytes()
        header = json.dumps({"model_name": NAME, "outputs": [
            {"name": "y", "datatype": "FP32", "shape": list(y.shape), "parameters": {"binary_data_size": len(raw)}}]})
        self.send(200, header.encode() + raw, [("Inference-Header-Content-Length", str(len(header)))])


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if "--tls" in sys.argv:
    cert, key = sys.argv[sys.argv.index("--tls") + 1:][:2]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
