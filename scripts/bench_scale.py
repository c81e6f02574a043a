#!/usr/bin/env python3
"""Models as large as users bring (docs/benchmarks/large-models.md): ptx's export, verify and predict of causal LMs built from
published configs (scripts/scale_lms.py: Qwen2-0.5B's, 494M parameters, 1.98 GB in f32; a 1.17B Qwen2,
4.7 GB, past ONNX's 2 GiB protobuf limit; random weights, nothing downloaded), against the bare route
a user would otherwise take, as whole processes side by side: wall time and peak resident memory
(the largest process of each command's tree, from wait4).

The bare route: `torch.onnx.export(dynamo=True)` with a dynamic batch and sequence, saved with
external data, then one ONNX Runtime session checked against eager at batch 2
(`python scripts/bench_scale.py --bare FACTORY OUT.onnx`).

For each model:
- export: the bare route, then `ptx export --module scripts/scale_lms.py:FACTORY --input input_ids=...
  --input attention_mask=...` (q05: the default formats; q1b: `--format onnx`);
- `ptx verify DIR/model.onnx` with its default rows;
- `ptx predict DIR/model.onnx ids.npz --output logits.npz`, its logits held to a bare ORT session's;
- q05: `ptx export DIR/model.onnx --format onnx-int8`, then `ptx verify DIR/model.int8.onnx`;
- q1b: `ptx serve DIR/model.onnx` on a free loopback port, answering one OIP request.
Every command's output is searched for protobuf's "exceeded maximum protobuf size".

Usage: python scripts/bench_scale.py [--models q05,q1b] [--out DIR] [--json FILE]
Goals, on a 2-core 24 GB machine: q05 export peak <= 1.5x the bare route's, wall <=
2x, verify peak <= 3.5x the weights; q1b export peak <= 1.3x, wall <= 1.5x, verify peak <= 3.5x.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
FACTORIES = {"q05": "qwen2_05b", "q1b": "qwen2_1b", "tiny": "qwen2_tiny"}
INPUTS = ["--input", "input_ids=batchxseq:int64", "--input", "attention_mask=batchxseq:int64"]
PROTOBUF_LIMIT = "exceeded maximum protobuf size"
TARGETS = {"q05": {"export_peak": 1.5, "export_wall": 2.0}, "q1b": {"export_peak": 1.3, "export_wall": 1.5},
           "tiny": {}}
VERIFY_PEAK_WEIGHTS = 3.5


def build(factory: str):
    sys.path.insert(0, str(HERE))
    import scale_lms

    return getattr(scale_lms, factory)()


def bare(factory: str, out: Path) -> None:
    """The bare route, as one process: torch.onnx.export(dynamo=True, external data), then ONNX Runtime
    against eager at batch 2."""
    import numpy as np
    import onnxruntime
    import torch

    model = build(factory)
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(model, (ids, mask), None, dynamo=True, input_names=["input_ids", "attention_mask"],
                                    output_names=["logits"], dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
        program.save(str(out), external_data=True)
        del program
        want = model(input_ids=ids, attention_mask=mask).logits.numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    print(f"bare: {out.name} holds at batch 2 (max |diff| {abs(got - want).max():.2e})")


def bare_logits(path: Path, inputs: Path, out: Path) -> None:
    """A bare ONNX Runtime session's logits on ``inputs`` (an npz of input_ids and attention_mask)."""
    import numpy as np
    import onnxruntime

    feeds = dict(np.load(inputs))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.savez(out, logits=session.run(["logits"], feeds)[0])


def timed(argv: list[str], log: Path, env: dict | None = None) -> dict:
    """``argv`` as a whole process: its exit status, wall seconds, and peak resident memory (the largest
    process of its tree, as wait4 reports it), its output kept in ``log``."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    return {"argv": " ".join(map(str, argv)), "rc": os.waitstatus_to_exitcode(status), "wall_s": round(wall, 1),
            "peak_gb": round(usage.ru_maxrss * 1024 / 1e9, 2), "protobuf_limit_said": PROTOBUF_LIMIT in text,
            "tail": text.strip().splitlines()[-3:]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_once(path: Path, feeds: Path, log: Path, timeout: float = 900) -> dict:
    """`ptx serve FILE` on a free loopback port, one OIP infer request once it is ready, then stopped by
    its own process id whatever the outcome."""
    import numpy as np

    port = free_port()
    start = time.perf_counter()
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "ptx", "serve", str(path), "--host", "127.0.0.1", "--http-port",
                                   str(port), "--grpc-port", "0", "--name", "lm", "--drain-seconds", "0"], stdout=out, stderr=subprocess.STDOUT)
    answer = None
    try:
        base = f"http://127.0.0.1:{port}"
        while time.perf_counter() - start < timeout and server.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(2)
        arrays = dict(np.load(feeds))
        body = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "INT64", "data": a.reshape(-1).tolist()}
                           for n, a in arrays.items()], "outputs": [{"name": "logits"}]}
        request = urllib.request.Request(f"{base}/v2/models/lm/infer", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as r:
            answer = json.loads(r.read())
    except Exception as exc:  # noqa: BLE001 - the benchmark reports what failed
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    outputs = answer.get("outputs", []) if isinstance(answer, dict) else []
    return {"answered": bool(outputs), "shape": outputs[0]["shape"] if outputs else None,
            "error": answer.get("error") if isinstance(answer, dict) else None,
            "wall_s": round(time.perf_counter() - start, 1)}


def weights_gb(factory_key: str) -> float:
    sys.path.insert(0, str(HERE))
    import scale_lms

    config = {"q05": scale_lms.QWEN2_05B, "q1b": scale_lms.QWEN2_1B, "tiny": scale_lms.QWEN2_TINY}[factory_key]
    return scale_lms.parameters(config) * 4 / 1e9


def bench(key: str, out: Path) -> dict:
    import numpy as np

    factory, folder = FACTORIES[key], out / key
    py = sys.executable
    found: dict = {"model": key, "factory": factory, "weights_gb": round(weights_gb(key), 3)}
    if folder.exists():
        shutil.rmtree(folder)
    say = lambda what: print(f"[{time.strftime('%H:%M:%S')}] {key}: {what}", flush=True)  # noqa: E731
    say("bare route")
    found["bare"] = timed([py, __file__, "--bare", factory, str(out / f"{key}-bare.onnx")], out / f"{key}-bare.log")
    formats = [] if key == "q05" else ["--format", "onnx"]
    say("ptx export")
    found["export"] = timed([py, "-m", "ptx", "export", "--module", f"{HERE / 'scale_lms.py'}:{factory}", *INPUTS,
                             *formats, "--out", str(folder)], out / f"{key}-export.log")
    model = folder / "model.onnx"
    say("ptx verify")
    found["verify"] = timed([py, "-m", "ptx", "verify", str(model)], out / f"{key}-verify.log")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (2, 12), dtype=np.int64)
    feeds = out / f"{key}-ids.npz"
    np.savez(feeds, input_ids=ids, attention_mask=np.ones_like(ids))
    say("ptx predict")
    found["predict"] = timed([py, "-m", "ptx", "predict", str(model), str(feeds), "--output", str(out / f"{key}-ptx.npz")],
                             out / f"{key}-predict.log")
    found["bare_predict"] = timed([py, __file__, "--bare-logits", str(out / f"{key}-bare.onnx"), str(feeds),
                                   str(out / f"{key}-bare-logits.npz")], out / f"{key}-bare-predict.log")
    if found["predict"]["rc"] == 0 and found["bare_predict"]["rc"] == 0:
        got, want = np.load(out / f"{key}-ptx.npz")["logits"], np.load(out / f"{key}-bare-logits.npz")["logits"]
        found["predict"]["max_abs_vs_bare"] = float(np.abs(got - want).max())
    if key == "q05":
        say("ptx export --format onnx-int8")
        found["int8_export"] = timed([py, "-m", "ptx", "export", str(model), "--format", "onnx-int8"],
                                     out / f"{key}-int8.log")
        say("ptx verify model.int8.onnx")
        found["int8_verify"] = timed([py, "-m", "ptx", "verify", str(folder / "model.int8.onnx")],
                                     out / f"{key}-int8-verify.log")
    if key == "q1b":
        say("ptx serve, one request")
        found["serve"] = serve_once(model, feeds, out / f"{key}-serve.log")
    bare_run, export = found["bare"], found["export"]
    if bare_run["rc"] == 0 and export["rc"] == 0:
        found["export_peak_ratio"] = round(export["peak_gb"] / bare_run["peak_gb"], 2)
        found["export_wall_ratio"] = round(export["wall_s"] / bare_run["wall_s"], 2)
    found["verify_peak_weights"] = round(found["verify"]["peak_gb"] / found["weights_gb"], 2)
    return found


def table(results: list[dict]) -> str:
    rows = ["| model | step | exit | wall s | peak GB | note |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in results:
        for step in ("bare", "export", "verify", "predict", "bare_predict", "int8_export", "int8_verify"):
            if step in r:
                s = r[step]
                note = "protobuf limit said" if s["protobuf_limit_said"] else ""
                if "max_abs_vs_bare" in s:
                    note += f"max abs vs bare ORT {s['max_abs_vs_bare']:.1e}"
                rows.append(f"| {r['model']} ({r['weights_gb']} GB) | {step} | {s['rc']} | {s['wall_s']} | {s['peak_gb']} | {note} |")
        if "serve" in r:
            s = r["serve"]
            rows.append(f"| {r['model']} | serve, one OIP request | {'answered' if s['answered'] else s['error']} | "
                        f"{s['wall_s']} | | logits {s['shape']} |")
        goals = TARGETS[r["model"]]
        if "export_peak_ratio" in r:
            rows.append(f"| {r['model']} | export / bare | | {r['export_wall_ratio']}x (goal {goals.get('export_wall')}x) | "
                        f"{r['export_peak_ratio']}x (goal {goals.get('export_peak')}x) | |")
        rows.append(f"| {r['model']} | verify peak / weights | | | {r['verify_peak_weights']}x (goal "
                    f"{VERIFY_PEAK_WEIGHTS}x) | |")
    return "\n".join(rows)


def main() -> None:
    if sys.argv[1:2] == ["--bare"]:
        return bare(sys.argv[2], Path(sys.argv[3]))
    if sys.argv[1:2] == ["--bare-logits"]:
        return bare_logits(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="q05,q1b", help="q05, q1b, tiny (comma-separated)")
    parser.add_argument("--out", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="ptx-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    from ptx.machine import describe_cpu

    print(f"machine: {describe_cpu()}, {os.cpu_count()} cores; files in {out}", flush=True)
    results = [bench(key.strip(), out) for key in args.models.split(",") if key.strip()]
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
