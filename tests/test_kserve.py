"""`ptx export NAME --format kserve --out DIR`: a manifest KServe's own InferenceService schema accepts
(the CRD's OpenAPI schema, kept in tests/data by scripts/kserve_schema.py) and a Dockerfile that
runs `ptx serve` on the export it ships. Neither Docker nor Kubernetes runs here."""
from __future__ import annotations

import copy
import gzip
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from ptx.errors import PtxError
from ptx.export.kserve import MANIFEST, export_kserve, serve_args
from ptx.infer import load
from ptx_command import ptx

SCHEMA = Path(__file__).parent / "data" / "kserve-inferenceservice-v1beta1.schema.json.gz"


@pytest.fixture(scope="module")
def spec_validator():
    """A validator of an InferenceService's spec by KServe's schema (built once: checking the
    600 KB schema itself on every call would take seconds)."""
    doc = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    assert doc["source"]["repository"] == "https://github.com/kserve/kserve" and doc["source"]["commit"]
    spec = doc["schema"]["properties"]["spec"]
    return jsonschema.validators.validator_for(spec)(spec)


@pytest.fixture(scope="module")
def deploy(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("kserve") / "deploy"
    result = ptx("export", "convnet", "--format", "kserve", "--out", str(out),
                 "--checkpoint", str(runs.trained("convnet") / "checkpoint.pt"), timeout=600)
    assert result.returncode == 0, result.stderr
    # the summary line, then (issue 59) the `ptx verify URL` line to run once it is deployed
    assert result.stdout.splitlines()[-2].startswith(f"kserve      {out}  Dockerfile")
    assert result.stdout.splitlines()[-1].startswith("verify it once served: ptx verify http://HOST:PORT/v2/models/convnet ")
    return out


def test_the_manifest_is_two_inference_services_kserve_accepts(deploy, spec_validator):
    services = list(yaml.safe_load_all((deploy / MANIFEST).read_text()))
    assert [s["metadata"]["name"] for s in services] == ["convnet", "convnet-grpc"]
    for service in services:
        assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
        spec_validator.validate(service["spec"])
    rest = services[0]["spec"]["predictor"]["containers"][0]
    assert rest["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert rest["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert services[1]["spec"]["predictor"]["containers"][0]["ports"][0]["name"] == "h2c"
    assert rest["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "convnet-token", "key": "token"}


def test_the_schema_check_has_teeth(deploy, spec_validator):
    """A manifest KServe would refuse is refused here too."""
    service = next(yaml.safe_load_all((deploy / MANIFEST).read_text()))
    for broken in ({"minReplicas": "one"}, {"containers": [{"name": 7}]}, {"canaryTrafficPercent": "all"}):
        spec = copy.deepcopy(service["spec"])
        spec["predictor"].update(broken)
        with pytest.raises(jsonschema.ValidationError):
            spec_validator.validate(spec)


def test_the_dockerfile_serves_the_validated_export_without_torch(deploy, runs):
    lines = (deploy / "Dockerfile").read_text().splitlines()
    steps = [ln for ln in lines if ln and not ln.startswith("#")]
    assert steps[0].startswith("FROM python:3")
    installs = " ".join(ln for ln in steps if ln.startswith("RUN pip install"))
    assert "onnxruntime" in installs and "uvicorn" in installs and "torch" not in installs
    wheel = next(ln.split()[1] for ln in steps if ln.startswith("COPY wheels/"))
    assert (deploy / wheel).is_file()
    assert json.loads(steps[-1][len("ENTRYPOINT "):]) == ["ptx", *serve_args("convnet")]
    served = load(deploy / "models" / "convnet" / "model.onnx")
    original = load("convnet", root=runs.ready("convnet"))
    assert served.info.get("checkpoint_sha256") == original.info.get("checkpoint_sha256")
    assert "--host" in shlex.join(serve_args("convnet")) and "--insecure" not in serve_args("convnet")


def test_another_models_folder_is_not_replaced_without_force(deploy, runs):
    with pytest.raises(PtxError, match="holds the kserve export of convnet"):
        export_kserve("lstm", deploy, checkpoint=runs.trained("lstm") / "checkpoint.pt",
                      log=lambda _: None)
    assert (deploy / "models" / "convnet").is_dir()
