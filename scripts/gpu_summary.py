"""scripts/gpu_check.sh's tables: `verify VERIFY.json` prints one Markdown table of every model's
verify rows (backend, device, precision, verdict); `summary OUT` joins what the phases left in
OUT (phase times, train table, verify table, bench tables, a user's own models, located
differences, test counts) into one page that can
be read without the logs; `relative OUT WORK ROOT` rewrites the paths of the machine in OUT's text
files relative to the check's folder (WORK: runs/convnet, not /tmp/ptx-gpu/runs/convnet; ROOT, the
checkout the check ran from: tests/test_gpu.py; the home folder as ~), so that what comes back names
no folder of the machine it ran on. Standard library only: it runs wherever the check runs."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def verify_table(path: Path) -> str:
    docs = json.loads(path.read_text())
    docs = docs if isinstance(docs, list) else [docs]
    lines = ["| model | row | precision | max abs | labels agree | accuracy | verdict |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for doc in docs:
        model = doc["model"]
        if doc.get("error"):
            lines.append(f"| {model} | - | - | - | - | - | FAILED: {doc['error']} |")
            continue
        for v in doc["rows"]:
            agree = "-" if v["argmax_agreement"] is None else f"{100 * v['argmax_agreement']:.1f}%"
            acc = "-" if v["accuracy"] is None else f"{v['accuracy']:.4f}"
            top = "-" if v["max_abs"] is None else f"{v['max_abs']:.1e}"
            reasons = "; ".join(v["failures"] + v["unusable"])
            lines.append(f"| {model} | {v['label']} | {v['precision']} | {top} | {agree} | {acc} | "
                         f"{v['status']}{': ' + reasons if reasons else ''} |")
        for label, why in doc.get("skipped", {}).items():
            lines.append(f"| {model} | {label} | - | - | - | - | not run: {why} |")
    refs = {d: r for doc in docs for d, r in doc.get("references", {}).items()}
    failed = sum(1 for doc in docs if not doc.get("ok"))
    lines.append(f"\nreference per device: {'; '.join(f'{d}: {r}' for d, r in refs.items()) or '-'}; "
                 f"{len(docs) - failed} of {len(docs)} models pass")
    return "\n".join(lines)


def test_counts(out: Path) -> list[str]:
    """The pytest summary line of each test phase ('23 passed, 4 skipped in 81.2s')."""
    found = []
    for name in ("pytest-gpu.txt", "pytest-ort-cuda.txt"):
        path = out / name
        if path.is_file():
            ends = [line.strip("= \n") for line in path.read_text().splitlines()
                    if re.search(r"\d+ (passed|failed|skipped|error)", line)]
            found.append(f"- {name}: {ends[-1] if ends else 'no pytest summary line'}")
    return found or ["- no test phase ran"]


def summary(out: Path) -> str:
    def section(title: str, name: str, missing: str = "phase not run") -> list[str]:
        path = out / name
        return [f"## {title}", "", path.read_text().strip() if path.is_file() else f"({missing})", ""]

    phases = out / "phases.md"
    page = ["# GPU check summary", ""]
    page += ["## Phases (seconds)", "", "| phase | seconds |", "| --- | ---: |"]
    page += (phases.read_text().strip().splitlines() if phases.is_file() else []) + [""]
    page += section("Train and export (one process)", "train.md")
    page += section("Epoch timing", "epoch.md")
    page += section("Verify, every model and backend", "verify.md")
    page += section("pt2 for CUDA (AOTInductor)", "pt2.md")
    page += section("Bench", "bench-gpu.md")
    page += section("A user's own models (export --module, verify, bench, serve)", "own.md")
    page += section("Where the CUDA rows part from the CPU (--locate)", "locate.md")
    page += section("A language model with its cache on CUDA (verify, bench --generate)", "lm.md")
    page += section("The language model with a fixed-length cache, its steps as CUDA graphs (ort-cuda-graph)",
                    "lm-static.md")
    page += ["## Tests", "", *test_counts(out), ""]
    return "\n".join(page)


TEXT_FILES = (".md", ".txt", ".json", ".log")  # what the phases write as text; exports stay as they are


def relative_paths(text: str, work: str, root: str, home: str) -> str:
    """``text`` with the machine's folders made relative: under ``work`` (the check's folder) relative to
    it, under ``root`` (the checkout) relative to it, however many ``../`` pytest put before it, and the
    home folder as ``~``. The longest folder first, so that one inside another is made relative to itself."""
    folders = sorted({(work, ""), (root, ""), (home, "~/")}, key=lambda pair: len(pair[0]), reverse=True)
    for folder, shown in folders:
        if not folder.strip("/"):
            continue
        # The folder whole (never inside a longer name), as an absolute path or after pytest's ../../
        path = re.compile(r"(?<![\w./-])(?:/|(?:\.\./)+)" + re.escape(folder.strip("/")) + r"(/|(?![\w.-]))")
        text = path.sub(lambda m: shown if m.group(1) else shown.rstrip("/") or ".", text)
    return text


def make_relative(out: Path, work: str, root: str, home: str) -> list[Path]:
    """Rewrite every text file under ``out`` by ``relative_paths``; the files changed."""
    changed = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in TEXT_FILES):
        text = path.read_text(errors="replace")
        now = relative_paths(text, work, root, home)
        if now != text:
            path.write_text(now)
            changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if argv[:1] == ["relative"] and len(argv) == 4:
        for path in make_relative(Path(argv[1]), argv[2], argv[3], str(Path.home())):
            print(f"paths made relative: {path}")
        return 0
    if len(argv) != 2 or argv[0] not in ("verify", "summary"):
        print(__doc__, file=sys.stderr)
        return 2
    print(verify_table(Path(argv[1])) if argv[0] == "verify" else summary(Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
