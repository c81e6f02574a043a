"""A language model at the size people run it, from its transformers folder to a judged 4-bit file, and in use:
ptx's export against onnxruntime-genai's model builder and Optimum on the same folder, in the same run, each
watched by scripts/watch_memory.py (its peak by phase; stopped past --stop-at and said "stopped at N GB", never
left to drive the machine into thrash; a memory cgroup too where --cgroup is given and the machine allows one);
then ptx's file verified, benchmarked against the machine's read bandwidth, and served to one OpenAI chat request.

The folder is made by scripts/make_lm_folder.py from a published config (random weights, nothing downloaded):

    python scripts/make_lm_folder.py qwen2.5-7b /data/qwen2.5-7b
    python scripts/bench_large_lm.py /data/qwen2.5-7b --out /data/bench --stop-at 14G --peers --use

The peers pin other transformers releases than ptx's, so each lives in a virtual environment of its own, made
once (both read a folder as transformers loads it):

    python3 -m venv --system-site-packages /tmp/genai-venv && /tmp/genai-venv/bin/pip install onnxruntime-genai
    python3 -m venv --system-site-packages /tmp/optimum-venv && /tmp/optimum-venv/bin/pip install optimum-onnx

and are named with --genai-python /tmp/genai-venv/bin/python --optimum-cli /tmp/optimum-venv/bin/optimum-cli.
Writes OUT/results.json and prints a Markdown table (docs/benchmarks/large-models.md records the runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import watch_memory  # noqa: E402


def run(label: str, command: list[str], stop_at: int | None, cgroup: int | None, log) -> dict:
    log(f"== {label}: {' '.join(command)}")
    result = watch_memory.watch(command, stop_at, cgroup, echo=lambda line: log(line[:400]))
    result["label"] = label
    said = f"stopped at {result['stopped'] / 1e9:.2f} GB" if result["stopped"] else f"exit {result['returncode']}"
    log(f"== {label}: {said}, {result['seconds']:.0f} s, peak {result['peak_bytes'] / 1e9:.2f} GB while "
        f"{result['peak_phase'][:120]!r}")
    return result


def files_bytes(folder: Path, pattern: str = "*.onnx*") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def served_chat(path: Path, log, timeout_s: float = 1800) -> dict:
    """`ptx serve FILE` on a free loopback port, one OpenAI chat request with the openai client, the server
    stopped by its own process id: the seconds to ready, the answer, its tokens."""
    from openai import OpenAI

    port = free_port()
    start = time.time()
    server = subprocess.Popen([sys.executable, "-m", "ptx", "serve", str(path), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    watched = {"peak": 0}
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=timeout_s, max_retries=0)
        while time.time() - start < timeout_s:
            watched["peak"] = max(watched["peak"], watch_memory.tree_rss(server.pid))
            if server.poll() is not None:
                return {"error": f"the server ended ({server.returncode}): {server.stdout.read()[-2000:]}"}
            try:
                models = client.models.list()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(1)
        ready = time.time() - start
        asked = time.time()
        answer = client.chat.completions.create(model=models.data[0].id, max_tokens=16, temperature=0,
                                                messages=[{"role": "user", "content": "Say hello."}])
        watched["peak"] = max(watched["peak"], watch_memory.tree_rss(server.pid))
        log(f"== serve: ready in {ready:.0f} s, answered in {time.time() - asked:.1f} s: "
            f"{answer.choices[0].message.content!r} ({answer.usage.completion_tokens} tokens)")
        return {"ready_s": round(ready, 1), "answer_s": round(time.time() - asked, 1),
                "completion_tokens": answer.usage.completion_tokens, "finish_reason": answer.choices[0].finish_reason,
                "peak_bytes": watched["peak"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def bench_row(stdout: str) -> dict:
    """The int4 row of `ptx bench FILE --generate N --json`."""
    doc = json.loads(stdout[stdout.index("{"):])
    rows = doc.get("rows") or doc.get("generation", {}).get("rows") or []
    return {"rows": rows, "walls": doc.get("walls")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--format", default="onnx-int4", help="ptx's formats (onnx-int4; onnx-int8w,openvino-int4 ...)")
    parser.add_argument("--stop-at", default="14G", help="stop a tool whose processes hold more than this")
    parser.add_argument("--cgroup", default=None, help="also run each tool in a memory cgroup of this size")
    parser.add_argument("--peers", action="store_true", help="onnxruntime-genai's builder and Optimum too")
    parser.add_argument("--genai-python", default="/tmp/genai-venv/bin/python")
    parser.add_argument("--optimum-cli", default="/tmp/optimum-venv/bin/optimum-cli")
    parser.add_argument("--use", action="store_true", help="then verify, bench --generate 32 and serve ptx's file")
    parser.add_argument("--skip-export", action="store_true", help="use OUT/ptx as an earlier run left it")
    args = parser.parse_args(argv)
    stop_at = watch_memory.parse_size(args.stop_at)
    cgroup = watch_memory.parse_size(args.cgroup) if args.cgroup else None
    args.out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    results = {"folder": str(args.folder), "machine": f"{cpu_name()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "stop_at": stop_at, "runs": {}}
    ptx_out = args.out / "ptx"
    if not args.skip_export:
        subprocess.run(["rm", "-rf", str(ptx_out)], check=True)
        results["runs"]["ptx"] = run("ptx export", [sys.executable, "-m", "ptx", "export", str(args.folder), "--format",
                                                   args.format, "--out", str(ptx_out)], stop_at, cgroup, log)
        results["runs"]["ptx"]["file_bytes"] = files_bytes(ptx_out)
    if args.peers:
        genai = args.out / "genai"
        subprocess.run(["rm", "-rf", str(genai)], check=True)
        results["runs"]["genai"] = run("onnxruntime-genai builder int4", [
            args.genai_python, "-m", "onnxruntime_genai.models.builder", "-m", str(args.folder), "-o", str(genai),
            "-p", "int4", "-e", "cpu", "-c", str(args.out / "genai-cache")], stop_at, cgroup, log)
        results["runs"]["genai"]["file_bytes"] = files_bytes(genai)
        optimum = args.out / "optimum"
        subprocess.run(["rm", "-rf", str(optimum)], check=True)
        results["runs"]["optimum"] = run("Optimum (f32 ONNX)", [
            args.optimum_cli, "export", "onnx", "--model", str(args.folder), "--task", "text-generation-with-past",
            str(optimum)], stop_at, cgroup, log)
        results["runs"]["optimum"]["file_bytes"] = files_bytes(optimum)
        subprocess.run(["rm", "-rf", str(optimum), str(args.out / "genai-cache")], check=False)
    int4 = ptx_out / "model.int4.onnx"
    if args.use and int4.is_file():
        results["runs"]["verify"] = run("ptx verify", [sys.executable, "-m", "ptx", "verify", str(int4)], stop_at,
                                        cgroup, log)
        bench = run("ptx bench", [sys.executable, "-m", "ptx", "bench", str(int4), "--generate", "32", "--json"],
                    stop_at, cgroup, log)
        try:
            bench["json"] = bench_row("\n".join(re.sub(r"^\s*[\d.]+  ", "", p[1]) for p in bench["phases"][1:]))
        except (ValueError, KeyError) as exc:
            bench["json"] = {"error": str(exc)}
        results["runs"]["bench"] = bench
        results["serve"] = served_chat(int4, log)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def table(results: dict) -> str:
    rows = ["| run | exit | wall s | peak GB | peak while | files GB |", "| --- | --- | ---: | ---: | --- | ---: |"]
    for key, run_ in results["runs"].items():
        said = f"stopped at {run_['stopped'] / 1e9:.1f} GB" if run_.get("stopped") else str(run_["returncode"])
        rows.append(f"| {run_['label']} | {said} | {run_['seconds']:.0f} | {run_['peak_bytes'] / 1e9:.2f} | "
                    f"{run_['peak_phase'][:60]} | {run_.get('file_bytes', 0) / 1e9:.2f} |")
    return "\n".join(rows)


def cpu_name() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
