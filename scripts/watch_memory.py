"""Run a command and watch its memory: the resident memory of its whole process tree sampled every 0.2 s, the peak
said with what the command had printed last (which of its phases held it), and the command stopped where the tree
passes ``--stop-at`` (reported as "stopped at N GB", never left to drive a swapless machine into thrash). Where
``--cgroup`` is given (Linux, cgroup v1 or v2, as root) the command also runs in a memory cgroup of that limit, so
that the kernel stops it even between two samples.

    python scripts/watch_memory.py --stop-at 12G --json out.json -- ptx export FOLDER --format onnx-int4 --out q7

Prints the command's own output, each line with the seconds since the start, then one summary line; ``--json``
writes {"command", "seconds", "peak_bytes", "peak_phase", "phases": [[seconds, line, peak bytes since], ...],
"stopped", "returncode"}. Used by scripts/bench_large_lm.py for ptx and the other tools alike.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
SAMPLE_S = 0.2


def parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * UNITS[text[-1]]) if text and text[-1] in UNITS else int(text)


def tree_rss(root: int) -> int:
    """The resident bytes of ``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(children.get(pid, []))
    return total


class Cgroup:
    """A memory cgroup of ``limit`` bytes this script moves the command into (v2 where mounted, else v1)."""

    def __init__(self, limit: int):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        own = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
        if v2.is_file() and "memory" in v2.read_text():
            base = Path("/sys/fs/cgroup") / next(line.split(":", 2)[2] for line in own if line.startswith("0::")).lstrip("/")
            self.path, limit_file, swap_file = base / f"watch-{os.getpid()}", "memory.max", "memory.swap.max"
        else:
            mine = next(line.split(":", 2)[2] for line in own if ":memory:" in line).lstrip("/")
            self.path, limit_file, swap_file = (Path("/sys/fs/cgroup/memory") / mine / f"watch-{os.getpid()}",
                                                "memory.limit_in_bytes", None)
        self.path.mkdir()
        (self.path / limit_file).write_text(str(limit))
        if swap_file and (self.path / swap_file).exists():
            (self.path / swap_file).write_text("0")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def watch(command: list[str], stop_at: int | None, cgroup: int | None, echo=print) -> dict:
    """Run ``command``, its output echoed line by line with the seconds since the start; its memory watched."""
    group = Cgroup(cgroup) if cgroup else None
    start = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                             start_new_session=True, preexec_fn=None)
    if group:
        group.add(child.pid)
    phases: list[list] = [[0.0, "(start)", 0]]
    state = {"peak": 0, "peak_phase": "(start)", "stopped": None}

    def sample() -> None:
        while child.poll() is None:
            rss = tree_rss(child.pid)
            if rss > phases[-1][2]:
                phases[-1][2] = rss
            if rss > state["peak"]:
                state["peak"], state["peak_phase"] = rss, phases[-1][1]
            if stop_at and rss > stop_at and state["stopped"] is None:
                state["stopped"] = rss
                os.killpg(child.pid, signal.SIGKILL)
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in child.stdout:
        line = line.rstrip("\n")
        now = time.time() - start
        echo(f"{now:8.1f}  {line}")
        phases.append([round(now, 1), line, 0])
    child.wait()
    sampler.join(timeout=2)
    if group:
        group.remove()
    return {"command": command, "seconds": round(time.time() - start, 1), "peak_bytes": state["peak"],
            "peak_phase": state["peak_phase"], "phases": phases, "stopped": state["stopped"],
            "returncode": child.returncode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-at", help="stop the command once its tree holds more than this (12G)")
    parser.add_argument("--cgroup", help="also run it in a memory cgroup of this limit (Linux, as root)")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    result = watch(command, parse_size(args.stop_at) if args.stop_at else None,
                   parse_size(args.cgroup) if args.cgroup else None)
    said = (f"stopped at {result['stopped'] / 1e9:.2f} GB" if result["stopped"] else f"exit {result['returncode']}")
    print(f"watch_memory: {said} after {result['seconds']:.0f} s; peak {result['peak_bytes'] / 1e9:.2f} GB while "
          f"{result['peak_phase'][:160]!r}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["returncode"] == 0 and not result["stopped"] else 1


if __name__ == "__main__":
    sys.exit(main())
