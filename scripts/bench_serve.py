#!/usr/bin/env python3
"""Benchmark `ptx serve` on loopback against the floor, in one run, and write its part of
docs/benchmarks/serving.md between its markers (machine and date included; ratios taken within this run).

- Clients: NVIDIA's tritonclient, HTTP (binary tensor data) and gRPC, one thread per concurrent
  client, each with its own connection; one 1x1x28x28 FP32 picture per request.
- The floor: a bare Starlette + uvicorn route speaking the v2 REST protocol and answering a
  constant (what ptx serve answers convnet, prepared once), run the same way with the same clients;
  and gRPC's own floor, grpc.aio with the protocol's generated servicer answering the same constant.
- ptx serve convnet and resnet on ort-cpu: requests/s and p50/p99 at concurrency 1, 8, 32, 64,
  REST and gRPC; resnet again with --max-batch-size 1 (no batching); the batch sizes formed (from
  /metrics); resident memory after 1,000 and after 20,000 requests.
- At concurrency 32, the floor and convnet again with tritonclient's asyncio clients (coroutines in
  one event loop: the threaded client spends much of the 2 cores itself), and convnet with ONNX
  Runtime's thread spinning on (PTX_ORT_SPINNING=1) against ptx serve's default (off): two servers
  up at once, measured in alternating rounds, medians compared.

Every load is bounded in requests and seconds and targets 127.0.0.1 only; every server started is
stopped by its own process id.

    python3 scripts/bench_serve.py [--seconds 3] [--runs DIR] [--out docs/benchmarks/serving.md]

With --own, only a user's own model instead: `ptx serve FILE.onnx` of a zoo model
(tests/own_models.py) against a bare uvicorn + ONNX Runtime route at concurrency 32, in its own
part of the same page:

    python3 scripts/bench_serve.py --own [--seconds 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # serving.py, own_models.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # noqa: E402  (tests/serving.py: start a server on free ports, stop it by its pid)

CONCURRENCY = (1, 8, 32, 64)
MARKERS = ("<!-- scripts/bench_serve.py: serving -->", "<!-- end serving -->")
MAX_REQUESTS = 30_000  # per measurement, whatever the seconds
FLOOR, GRPC_FLOOR, SERVE = "bare Starlette constant", "bare grpc.aio constant", "ptx serve"
UNBATCHED = "ptx serve --max-batch-size 1"


def prepare(root: Path) -> None:
    """convnet and resnet trained one epoch on mnist-sample and exported (speed does not depend on
    how well they learned)."""
    from ptx.export.api import export_model
    from ptx.models import get
    from ptx.trainers.data import load_dataset
    from ptx.trainers.loop import TrainConfig, train

    for name in ("convnet", "resnet"):
        if (root / name / "model.onnx").is_file():
            continue
        spec = get(name)
        data = load_dataset("mnist-sample", labels=spec.labels, picture=spec.contract("mnist-sample").picture)
        config = TrainConfig(epochs=1, batch_size=spec.recipe.batch_size, lr=spec.recipe.lr, device="cpu")
        train(spec, data, config, root / name, log=lambda _: None)
        export_model(name, ["onnx"], checkpoint=root / name / "checkpoint.pt", log=lambda _: None)


def picture() -> dict[str, np.ndarray]:
    """convnet's and resnet's request: one 1x1x28x28 FP32 picture."""
    return {"input": np.random.default_rng(0).normal(size=(1, 1, 28, 28)).astype(np.float32)}


def request_tensors(module, inputs: dict[str, np.ndarray]) -> list:
    """tritonclient InferInputs (``module``: its http, grpc or aio client module) for ``inputs``."""
    datatypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    tensors = []
    for name, value in inputs.items():
        tensor = module.InferInput(name, list(value.shape), datatypes[value.dtype])
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def load(protocol: str, address: str, model: str, concurrency: int, seconds: float, inputs=None) -> dict:
    """``concurrency`` client threads sending ``inputs`` (default: one picture) per request for
    ``seconds`` (at most MAX_REQUESTS in all). Returns requests/s, p50 and p99 in ms, and errors."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module = httpclient if protocol == "rest" else grpcclient
    inputs = inputs or picture()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0]
    stop = threading.Event()
    budget = [MAX_REQUESTS]
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)

    def client(i: int) -> None:
        c = module.InferenceServerClient(address) if protocol == "grpc" else \
            httpclient.InferenceServerClient(address, connection_timeout=30, network_timeout=30)
        tensors = request_tensors(module, inputs)
        c.infer(model, tensors)  # connect and warm up outside the timing
        ready.wait()
        mine = latencies[i]
        while not stop.is_set():
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            started = time.perf_counter()
            try:
                c.infer(model, tensors)
                mine.append(time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - counted; a benchmark goes on
                errors[0] += 1
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait(120)
    started = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.perf_counter() - started
    return summarise([v for lat in latencies for v in lat], errors[0], elapsed)


def load_aio(protocol: str, address: str, model: str, concurrency: int, seconds: float, inputs=None) -> dict:
    """The same load from ``concurrency`` coroutines of tritonclient's asyncio client in one event
    loop: far less client CPU per request than a thread each, so more of the 2 cores go to the
    server."""
    import asyncio

    async def run() -> dict:
        if protocol == "rest":
            import tritonclient.http.aio as module
            client = module.InferenceServerClient(address, conn_limit=concurrency)
        else:
            import tritonclient.grpc.aio as module
            client = module.InferenceServerClient(address)
        tensors = request_tensors(module, inputs or picture())
        await client.infer(model, tensors)  # connect and warm up outside the timing
        latencies, errors, budget = [], [0], [MAX_REQUESTS]
        deadline = time.perf_counter() + seconds

        async def worker():
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                started = time.perf_counter()
                try:
                    await client.infer(model, tensors)
                    latencies.append(time.perf_counter() - started)
                except Exception:  # noqa: BLE001 - counted; a benchmark goes on
                    errors[0] += 1

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), seconds + 60)
        elapsed = time.perf_counter() - started
        await client.close()
        return summarise(latencies, errors[0], elapsed)

    return asyncio.run(run())


def summarise(latencies: list[float], errors: int, elapsed: float) -> dict:
    done = np.array(latencies) * 1000
    return {"rps": len(done) / elapsed, "p50": float(np.percentile(done, 50)) if len(done) else float("nan"),
            "p99": float(np.percentile(done, 99)) if len(done) else float("nan"), "errors": errors,
            "requests": len(done)}


def batch_stats(server, model: str) -> tuple[float, float]:
    """(sum of rows, number of batches) the server's batcher ran for ``model``, from /metrics."""
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    total = re.search(rf'ptx_batch_size_sum{{model="{model}"}} (\S+)', text)
    count = re.search(rf'ptx_batch_size_count{{model="{model}"}} (\S+)', text)
    return float(total.group(1)) if total else 0.0, float(count.group(1)) if count else 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the floor: a constant answer, same protocol, same framework ------------------------------------

FLOOR_APP = '''
import sys
import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

logits = np.zeros((1, 10), np.float32).tobytes()
header = orjson.dumps({"model_name": "convnet", "model_version": "1", "outputs": [
    {"name": "logits", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": len(logits)}}]})
body = header + logits

async def infer(request):
    await request.body()
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})

async def ready(request):
    return Response(b"{}", media_type="application/json")

app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
'''


# The gRPC floor: grpcio's asyncio server with the protocol's generated servicer (as ptx serve's),
# answering the same constant. It shows what gRPC itself costs here, whatever ptx does.
GRPC_FLOOR_APP = '''
import asyncio
import sys
import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

logits = np.zeros((1, 10), np.float32).tobytes()

class Constant(service_pb2_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        answer = service_pb2.ModelInferResponse(model_name="convnet", model_version="1")
        answer.outputs.add(name="logits", datatype="FP32", shape=[1, 10])
        answer.raw_output_contents.append(logits)
        return answer

async def main():
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Constant(), server)
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
'''


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_grpc_request(address: str) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)
    tensor = grpcclient.InferInput("input", [1, 1, 28, 28], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
    try:
        client.infer("convnet", [tensor], client_timeout=2)
    finally:
        client.close()


def start_floor(protocol: str = "rest", app: str | None = None, args: tuple = ()) -> tuple[subprocess.Popen, str]:
    """A floor server (``app``: another REST app's code, taking the port then ``args``) on a free
    loopback port, once it answers."""
    port = free_port()
    code = app or (FLOOR_APP if protocol == "rest" else GRPC_FLOOR_APP)
    process = subprocess.Popen([sys.executable, "-c", code, str(port), *map(str, args)])
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if protocol == "rest":
                urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=1)
            else:
                one_grpc_request(address)
            return process, address
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {protocol} floor server did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# -- the run ----------------------------------------------------------------------------------------

def machine() -> str:
    from ptx.infer.model.records import machine as identity

    m = identity()
    return f"{m['cpu']}, {m['cores']} cores (shared by clients and server), {m['system']}, " + \
        ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "torch")


def table(rows: list[tuple]) -> list[str]:
    out = ["| server | model | protocol | concurrency | client | requests/s | p50 ms | p99 ms | errors |",
           "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    out += [f"| {s} | {m} | {p} | {c} | {k} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |"
            for s, m, p, c, k, r in rows]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--runs", type=Path, help="a runs folder to reuse (convnet, resnet trained there if missing)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "serving.md")
    parser.add_argument("--memory-requests", type=int, default=20_000)
    parser.add_argument("--own", action="store_true",
                        help="only the section on serving a user's own model (a zoo model's ONNX file)")
    parser.add_argument("--rounds", type=int, default=3, help="with --own: alternating rounds per server and client")
    args = parser.parse_args()
    if args.own:
        from bench import write_section  # scripts/bench.py

        section = own_model_section(args.seconds, args.rounds)
        write_section(args.out, *OWN_MARKERS, section)
        print(section)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or Path(tmp)
        print("training and exporting convnet and resnet ...", file=sys.stderr)
        prepare(root)
        rows, results = [], {}

        def measure(server_name, address, model, protocol, c, client="threads"):
            print(f"  {server_name} {model} {protocol} c={c} ({client} client)", file=sys.stderr, flush=True)
            r = (load_aio if client == "asyncio" else load)(protocol, address, model, c, args.seconds)
            rows.append((server_name, model, protocol, c, client, r))
            results[(server_name, model, protocol, c, client)] = r
            return r

        floor, floor_address = start_floor()
        try:
            for c in CONCURRENCY:
                measure(FLOOR, floor_address, "convnet", "rest", c)
            measure(FLOOR, floor_address, "convnet", "rest", 32, "asyncio")
        finally:
            stop(floor)
        floor, floor_address = start_floor("grpc")
        try:
            for client in ("threads", "asyncio"):
                measure(GRPC_FLOOR, floor_address, "convnet", "grpc", 32, client)
        finally:
            stop(floor)
        server = serving.start(root, "convnet", "resnet", args=("--backend", "ort-cpu"))
        try:
            for model in ("convnet", "resnet"):
                for protocol in ("rest", "grpc"):
                    for c in CONCURRENCY:
                        before = batch_stats(server, model)
                        measure(SERVE, server.grpc if protocol == "grpc" else server.http, model, protocol, c)
                        after = batch_stats(server, model)
                        if after[1] > before[1]:
                            results[("batch", model, protocol, c)] = (after[0] - before[0]) / (after[1] - before[1])
            for protocol in ("rest", "grpc"):
                measure(SERVE, server.grpc if protocol == "grpc" else server.http, "convnet", protocol, 32, "asyncio")
            print("  memory", file=sys.stderr, flush=True)
            memory = memory_growth(server, args.memory_requests)
        finally:
            server.stop()
        print("  spinning on/off, alternating", file=sys.stderr, flush=True)
        results["spinning"] = spinning_ratio(root, args.seconds)
        unbatched = serving.start(root, "resnet", args=("--backend", "ort-cpu", "--max-batch-size", "1"))
        try:
            for c in (1, 64):
                measure(UNBATCHED, unbatched.http, "resnet", "rest", c)
        finally:
            unbatched.stop()
    section = render(rows, results, memory, args)
    from bench import write_section  # scripts/bench.py

    write_section(args.out, *MARKERS, section)
    print(section)


# -- a user's own model: ptx serve FILE against a bare uvicorn + ONNX Runtime route ---------

OWN_MARKERS = ("<!-- scripts/bench_serve.py: own model -->", "<!-- end own model -->")
OWN_MODEL = "two_io"  # tests/own_models.py: a float picture and int64 ids in, class scores and an embedding out

# What a user would write to serve an ONNX file without ptx: one InferenceSession (ONNX Runtime's
# defaults), a Starlette route on uvicorn that reads the v2 request with its binary tensor data, runs
# the session on it and answers every output in binary. No checks, no batching: the floor ptx serve
# must come near.
BARE_ORT_APP = '''
import sys
import numpy as np
import onnxruntime
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

session = onnxruntime.InferenceSession(sys.argv[2])
names = [o.name for o in session.get_outputs()]
TYPES = {"FP32": np.float32, "INT64": np.int64}
V2 = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}

async def infer(request):
    body = await request.body()
    size = int(request.headers["inference-header-content-length"])
    header, offset, feeds = orjson.loads(body[:size]), size, {}
    for tensor in header["inputs"]:
        dtype, length = np.dtype(TYPES[tensor["datatype"]]), tensor["parameters"]["binary_data_size"]
        feeds[tensor["name"]] = np.frombuffer(body, dtype, length // dtype.itemsize, offset).reshape(tensor["shape"])
        offset += length
    outputs = session.run(names, feeds)
    raw = [o.tobytes() for o in outputs]
    answer = orjson.dumps({"model_name": sys.argv[3], "model_version": "1", "outputs": [
        {"name": n, "datatype": V2[o.dtype], "shape": list(o.shape), "parameters": {"binary_data_size": len(r)}}
        for n, o, r in zip(names, outputs, raw)]})
    return Response(answer + b"".join(raw), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(answer))})

async def ready(request):
    return Response(b"{}", media_type="application/json")

app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
'''


def same_answers(inputs: dict[str, np.ndarray], *addresses: str) -> None:
    """Every server answers ``inputs`` alike, to the bit (a floor that answered otherwise would not be
    a floor)."""
    import tritonclient.http as httpclient

    answers = []
    for address in addresses:
        client = httpclient.InferenceServerClient(address)
        result = client.infer(OWN_MODEL, request_tensors(httpclient, inputs))
        answers.append({o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]})
        client.close()
    first = answers[0]
    for other in answers[1:]:
        if sorted(other) != sorted(first) or not all(np.array_equal(other[n], first[n]) for n in first):
            raise RuntimeError(f"the servers answer {OWN_MODEL} differently: not a fair comparison")


def own_model_section(seconds: float, rounds: int) -> str:
    """ptx serve of a zoo model's ONNX file (tests/own_models.py) against BARE_ORT_APP on the same
    file, REST at concurrency 32, threaded and asyncio tritonclients: both servers up, measured in
    alternating rounds, medians compared (as spinning_ratio)."""
    import own_models as zoo  # tests/own_models.py (torch: exporting the model)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.export_onnx(zoo.catalog()[OWN_MODEL], Path(tmp) / f"{OWN_MODEL}.onnx")
        rng = np.random.default_rng(0)
        inputs = {"picture": rng.random((1, 1, 16, 16), dtype=np.float32),
                  "ids": rng.integers(0, 50, (1, 6), dtype=np.int64)}
        bare, bare_address = start_floor(app=BARE_ORT_APP, args=(path, OWN_MODEL))
        served = serving.start(tmp, path, args=("--backend", "ort-cpu"))
        rates: dict[tuple[str, str], list[float]] = {}
        rows = []
        try:
            same_answers(inputs, bare_address, served.http)
            for _ in range(rounds):
                for client in ("threads", "asyncio"):
                    for server_name, address in (("bare uvicorn + ORT", bare_address), (SERVE, served.http)):
                        print(f"  {server_name} {OWN_MODEL} rest c=32 ({client} client)", file=sys.stderr, flush=True)
                        r = (load_aio if client == "asyncio" else load)("rest", address, OWN_MODEL, 32, seconds, inputs)
                        rates.setdefault((server_name, client), []).append(r["rps"])
                        rows.append((server_name, OWN_MODEL, "rest", 32, client, r))
            batched = batch_stats(served, OWN_MODEL)
        finally:
            served.stop()
            stop(bare)
    load_after = os.getloadavg()[0]
    ratio = {c: float(np.median(rates[(SERVE, c)]) / np.median(rates[("bare uvicorn + ORT", c)]))
             for c in ("threads", "asyncio")}
    today = datetime.date.today().isoformat()
    lines = [f"Measured by `python3 scripts/bench_serve.py --own --seconds {seconds:g} --rounds {rounds}` on {today}: "
             f"{machine()}. `ptx serve {OWN_MODEL}.onnx --backend ort-cpu` (tests/own_models.py's model with "
             "two inputs, a 1x16x16 picture and 6 int64 token ids, and two outputs) against a bare uvicorn + "
             "Starlette route that runs one `onnxruntime.InferenceSession` (ORT's defaults) on each v2 request "
             "and answers both outputs, no checks and no batching (`BARE_ORT_APP` in the script). Clients: "
             "tritonclient over REST with binary tensor data, 32 at once; both servers up, measured in "
             f"{rounds} alternating rounds of {seconds:g} s, medians compared.", "",
             "| goal | measured | target | met |", "| --- | ---: | ---: | --- |"]
    for client, label in (("threads", "threaded client"), ("asyncio", "tritonclient's asyncio client")):
        lines.append(f"| ptx serve {OWN_MODEL}.onnx / the bare uvicorn + ORT route, requests/s at concurrency 32 "
                     f"({label}) | {ratio[client]:.2f}x | >= 0.9x | {'yes' if ratio[client] >= 0.9 else 'NO'} |")
    lines += ["", f"Rows per batch ptx serve's batcher formed over the run: {batched[0] / max(batched[1], 1):.1f} "
              f"({batched[0]:,.0f} requests in {batched[1]:,.0f} batches; the bare route runs each request alone).",
              f"Load average (1 min) {load_before:.1f} before the run and {load_after:.1f} after: other jobs shared the "
              "cores, so single rounds vary; the alternating rounds' medians are the figures to read.", ""]
    lines += table(rows)
    return "\n".join(lines)


def spinning_ratio(root: Path, seconds: float, rounds: int = 3) -> float:
    """Requests/s of convnet over REST at concurrency 32 with ORT's intra-op threads spinning
    (PTX_ORT_SPINNING=1) / with them sleeping (ptx serve's default): both servers up, measured in
    alternating rounds (an idle server takes no CPU), medians compared."""
    servers = {}
    try:
        for spinning in ("0", "1"):
            servers[spinning] = serving.start(root, "convnet", args=("--backend", "ort-cpu"),
                                              env={"PTX_ORT_SPINNING": spinning})
        rates = {"0": [], "1": []}
        for _ in range(rounds):
            for spinning, server in servers.items():
                rates[spinning].append(load("rest", server.http, "convnet", 32, seconds)["rps"])
        return float(np.median(rates["1"]) / np.median(rates["0"]))
    finally:
        for server in servers.values():
            server.stop()


def memory_growth(server, total: int) -> tuple[float, float, int]:
    """RSS after the first 1,000 requests and after ``total`` (gRPC and REST mixed, 8 clients)."""
    sent = 0

    def send(n, protocol):
        nonlocal sent
        per = max(1, n // 8)
        load_bounded(protocol, server, per)
        sent += per * 8

    send(1000, "rest")
    first = rss_mib(server.process.pid)
    while sent < total:
        send(min(4000, total - sent), "grpc" if (sent // 4000) % 2 else "rest")
    return first, rss_mib(server.process.pid), sent


def load_bounded(protocol: str, server, per_client: int) -> None:
    """8 clients, exactly ``per_client`` requests each."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    module = httpclient if protocol == "rest" else grpcclient
    x = np.zeros((1, 1, 28, 28), np.float32)

    def client():
        c = module.InferenceServerClient(server.grpc if protocol == "grpc" else server.http)
        tensor = module.InferInput("input", [1, 1, 28, 28], "FP32")
        tensor.set_data_from_numpy(x)
        for _ in range(per_client):
            c.infer("convnet", [tensor])
        c.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)


def render(rows, results, memory, args) -> str:
    def rps(server, model, protocol, c, client="threads"):
        return results[(server, model, protocol, c, client)]["rps"]

    floor32, rest32, grpc32 = rps(FLOOR, "convnet", "rest", 32), rps(SERVE, "convnet", "rest", 32), \
        rps(SERVE, "convnet", "grpc", 32)
    floor_aio, rest_aio, grpc_aio = (rps(FLOOR, "convnet", "rest", 32, "asyncio"),
                                     rps(SERVE, "convnet", "rest", 32, "asyncio"),
                                     rps(SERVE, "convnet", "grpc", 32, "asyncio"))
    grpc_floor, grpc_floor_aio = rps(GRPC_FLOOR, "convnet", "grpc", 32), rps(GRPC_FLOOR, "convnet", "grpc", 32, "asyncio")
    batched64, unbatched64 = rps(SERVE, "resnet", "rest", 64), rps(UNBATCHED, "resnet", "rest", 64)
    avg_batch = results.get(("batch", "resnet", "rest", 64), float("nan"))
    p50_batched = results[(SERVE, "resnet", "rest", 1, "threads")]["p50"]
    p50_unbatched = results[(UNBATCHED, "resnet", "rest", 1, "threads")]["p50"]
    first, last, sent = memory
    goals = [
        ("convnet REST requests/s at concurrency 32 / the bare constant endpoint's (threaded client)",
         f"{rest32 / floor32:.2f}x", ">= 0.8x", rest32 / floor32 >= 0.8),
        ("the same with tritonclient's asyncio client", f"{rest_aio / floor_aio:.2f}x", ">= 0.8x",
         rest_aio / floor_aio >= 0.8),
        ("convnet gRPC / REST requests/s at concurrency 32 (threaded client)", f"{grpc32 / rest32:.2f}x", ">= 1.5x",
         grpc32 / rest32 >= 1.5),
        ("the same with tritonclient's asyncio clients", f"{grpc_aio / rest_aio:.2f}x", ">= 1.5x",
         grpc_aio / rest_aio >= 1.5),
        ("resnet REST at concurrency 64: rows per batch formed", f"{avg_batch:.1f}", ">= 8", avg_batch >= 8),
        ("resnet REST at concurrency 64: batching / --max-batch-size 1 requests/s", f"{batched64 / unbatched64:.2f}x",
         ">= 1.1x", batched64 / unbatched64 >= 1.1),
        ("resnet REST at concurrency 1: p50 with batching - p50 without", f"{p50_batched - p50_unbatched:+.2f} ms",
         "<= +2 ms (--max-delay-ms)", p50_batched - p50_unbatched <= 2.0),
        (f"resident memory after {sent:,} requests / after the first 1,000", f"{last / first:.2f}x "
         f"({first:.0f} -> {last:.0f} MiB)", "<= 1.2x", last / first <= 1.2),
    ]
    batches = ", ".join(f"c={c}: {results[('batch', 'resnet', 'rest', c)]:.1f}"
                        for c in CONCURRENCY if ("batch", "resnet", "rest", c) in results)
    lines = [f"Measured by `python3 scripts/bench_serve.py --seconds {args.seconds:g}` on "
             f"{datetime.date.today().isoformat()}: {machine()}. Clients and servers share the cores, so absolute "
             "figures are low; the ratios are taken within this one run.", "",
             "| goal | measured | target | met |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {what} | {value} | {target} | {'yes' if met else 'NO'} |" for what, value, target, met in goals]
    lines += ["", f"Rows per batch the batcher formed for resnet over REST: {batches}.",
              f"gRPC's own floor at concurrency 32 (grpc.aio with the generated servicer answering a constant) "
              f"/ the REST floor: {grpc_floor / floor32:.2f}x with threaded clients, {grpc_floor_aio / floor_aio:.2f}x "
              "with asyncio clients.",
              f"ONNX Runtime's intra-op threads spinning between runs (`PTX_ORT_SPINNING=1`, ORT's own default) "
              f"against ptx serve's default (off), convnet REST at concurrency 32, alternating rounds: "
              f"{results['spinning']:.2f}x the requests/s.", ""]
    lines += table(rows)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
