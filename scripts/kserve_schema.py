#!/usr/bin/env python3
"""Extract KServe's InferenceService schema (v1beta1's OpenAPI v3 schema, from the CRD KServe ships)
into tests/data/, where tests/test_kserve.py validates `ptx export --format kserve` manifests
against it with jsonschema. Run it on a KServe checkout to refresh the schema:

    python3 scripts/kserve_schema.py /path/to/kserve    # a git checkout of github.com/kserve/kserve

The output names the KServe commit and version it was read from.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import yaml

CRD = "config/crd/full/serving.kserve.io_inferenceservices.yaml"
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kserve-inferenceservice-v1beta1.schema.json.gz"


def main(checkout: str) -> None:
    def git(*args):
        return subprocess.run(["git", "-C", checkout, *args], capture_output=True, text=True, check=True).stdout

    commit = git("rev-parse", "HEAD").strip()
    described = git("describe", "--tags", "--always").strip()
    crd = yaml.safe_load(git("show", f"HEAD:{CRD}"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    doc = {"source": {"repository": "https://github.com/kserve/kserve", "commit": commit, "describe": described,
                      "file": CRD, "version": "v1beta1"},
           "schema": version["schema"]["openAPIV3Schema"]}
    OUT.write_bytes(gzip.compress(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode(), 9, mtime=0))
    print(f"wrote {OUT} from kserve {described} ({commit})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
