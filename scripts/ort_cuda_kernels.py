#!/usr/bin/env python3
"""Write infer/runtime/ort_cuda_kernels.json: ONNX Runtime's CUDA kernel registry, read from its
docs/OperatorKernels.md (which ORT generates from the registered kernels), for ptx's static
CUDA-readiness check (ptx/infer/runtime/cuda_placement.py).

    python scripts/ort_cuda_kernels.py OperatorKernels.md --version 1.31.1 --commit <sha> \\
        --source "github.com/microsoft/onnxruntime tag v1.31.1"

With the internet, take the file of the release you target, e.g.
    git -C onnxruntime show v1.31.1:docs/OperatorKernels.md > OperatorKernels.md
The JSON names the version and commit it was read from, so the check can say what it holds.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SECTION = '<a name="cudaexecutionprovider"/>'
DOMAIN_ROW = re.compile(r"^\|\*\*Operator Domain:\*\* \*(?P<domain>[^*]+)\*\|")
PARAM = re.compile(r"\*(?P<io>in|out)\* (?P<name>[^:]+):\*\*(?P<type>[^*]+)\*\*")
CONSTRAINT = re.compile(r"\*\*(?P<name>[^*]+)\*\* = (?P<types>.+)")


def parse_versions(text: str) -> tuple[int, int | None]:
    """'13+' -> (13, None); '[6, 12]' -> (6, 12); '14' -> (14, 14)."""
    text = text.strip()
    if text.endswith("+"):
        return int(text[:-1]), None
    if text.startswith("["):
        low, high = (int(v) for v in text.strip("[]").split(","))
        return low, high
    return int(text), int(text)


def parse_signatures(cell: str) -> list[list[list[str]]]:
    """The parameter cell -> one or more signatures, each a list of [in|out, name, type]."""
    return [[[m["io"], m["name"].strip(), m["type"]] for m in PARAM.finditer(variant)]
            for variant in cell.split("<br><br>or<br><br>") if variant.strip()]


def parse_constraints(cell: str) -> dict[str, list[str]]:
    constraints = {}
    for part in cell.split("<br/>"):
        m = CONSTRAINT.search(part.strip())
        if m:
            constraints[m["name"]] = [t.strip() for t in re.split(r",\s*(?=tensor|seq|map|opt)", m["types"].strip())]
    return constraints


def parse(markdown: str) -> dict[str, dict[str, dict]]:
    """domain -> op -> {"signatures": [...], "kernels": [{"since", "until", "types"}]}, CUDA section only."""
    start = markdown.find(SECTION)
    if start < 0:
        raise SystemExit("no CUDAExecutionProvider section in that file: is it ORT's docs/OperatorKernels.md?")
    end = markdown.find('<a name="', start + len(SECTION))
    ops: dict[str, dict[str, dict]] = {}
    domain = op = None
    for line in markdown[start:end if end > 0 else None].splitlines():
        m = DOMAIN_ROW.match(line)
        if m:
            domain = m["domain"]
            continue
        if not line.startswith("|") or line.startswith(("|Op Name", "|---")) or domain is None:
            continue
        cells = line.strip()[1:-1].split("|")  # continuation rows start with empty cells
        if len(cells) < 4:
            continue
        name, params, versions, types = cells[0], cells[1], cells[2], "|".join(cells[3:])
        if name:
            op = name
            ops.setdefault(domain, {})[op] = {"signatures": parse_signatures(params), "kernels": []}
        since, until = parse_versions(versions)
        ops[domain][op]["kernels"].append({"since": since, "until": until, "types": parse_constraints(types)})
    if not ops.get("ai.onnx"):
        raise SystemExit("found no ai.onnx kernels in the CUDA section: the file's layout changed; update this script")
    return ops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("markdown", type=Path, help="ORT's docs/OperatorKernels.md")
    parser.add_argument("--version", required=True, help="the ORT version the file belongs to")
    parser.add_argument("--commit", required=True, help="the ORT commit the file was read at")
    parser.add_argument("--source", required=True, help="where the file came from (repository and ref)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "infer" / "runtime" / "ort_cuda_kernels.json")
    args = parser.parse_args(argv)
    ops = parse(args.markdown.read_text(encoding="utf-8"))
    doc = {"generated_by": "scripts/ort_cuda_kernels.py", "onnxruntime_version": args.version,
           "onnxruntime_commit": args.commit, "source": args.source, "file": "docs/OperatorKernels.md",
           "ops": ops}
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"{args.out}: {sum(len(v) for v in ops.values())} CUDA ops in {len(ops)} domains "
          f"(onnxruntime {args.version}, {args.commit[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
