"""`ptx export NAME|FILE.onnx|--module F.py:FACTORY --format kserve --out DIR`: what it takes to run
`ptx serve` on Kubernetes with KServe: a Dockerfile (ptx with its serve extra, the model's ONNX
file, no torch) and a KServe InferenceService manifest (serving.kserve.io/v1beta1, the v2 protocol,
readiness on /v2/health/ready). One writer for every kind of model (export/sources.py): a tutorial
model's validated export, a user's module exported and validated, a user's ONNX file as it is.

KServe needs no SDK inside the container: a custom container that speaks the v2 protocol is enough.
Knative lets a container expose one port, so the manifest holds two InferenceServices on the same
image: NAME for REST (port 8080) and NAME-grpc for gRPC (port 8081, named h2c), as KServe's own
custom-model sample does. The server listens beyond loopback there, so it needs a token: the
manifest reads PTX_SERVE_TOKEN from a Secret (README.md in DIR says how to make it).

DIR is built under a temporary name and renamed into place when complete; a folder that holds
anything else than an earlier kserve export of the same model is refused unless --force.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ptx import __version__
from ptx.atomic import ensure_writable_dir
from ptx.contract import ARTIFACT_FILES
from ptx.errors import PtxError, first_line

from .sources import Source, tutorial_source, verify_line, write_folder

DOCKERFILE = "Dockerfile"
MANIFEST = "inferenceservice.yaml"
README = "README.md"
MARKER = ".ptx-kserve"  # names the model, so a re-export may replace the folder
MODELS_DIR = "models"
WHEELS_DIR = "wheels"
HTTP_PORT, GRPC_PORT = 8080, 8081
BASE_IMAGE = "python:3.11-slim"
# What `ptx serve` needs on the ONNX Runtime path: ptx's own light dependencies and its serve extra.
# torch is not installed: the served model is the ONNX export.
RUNTIME_REQUIREMENTS = ("numpy>=1.24", "pillow>=10", "click>=8.1", "tqdm>=4.60", "onnxruntime>=1.18",
                        "uvicorn[standard]>=0.30", "starlette>=0.37", "orjson>=3.8", "grpcio>=1.60",
                        "tritonclient[grpc]>=2.40", "prometheus-client>=0.20")


def build_wheel(into: Path) -> str | None:
    """ptx as a wheel in ``into`` (the image installs it), or None when no source tree is here: the
    project folder this ptx runs from (an editable install or a checkout)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or 'name = "ptx"' not in (root / "pyproject.toml").read_text():
        return None
    into.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--disable-pip-version-check", "-q", "-w", str(into), str(root)],
                            capture_output=True, text=True, timeout=600)
    wheels = sorted(into.glob("ptx-*.whl"))
    if result.returncode or not wheels:
        raise PtxError(f"could not build a ptx wheel for the image from {root}: "
                       f"{first_line(Exception(result.stderr or result.stdout or 'no wheel written'))}")
    return wheels[-1].name


def dockerfile(source: Source, wheel: str | None) -> str:
    requirements = " ".join(json.dumps(r) for r in RUNTIME_REQUIREMENTS)
    install_ptx = (f"COPY {WHEELS_DIR}/{wheel} /tmp/{wheel}\nRUN pip install --no-cache-dir --no-deps /tmp/{wheel} "
                   f"&& rm /tmp/{wheel}" if wheel else
                   f"# No ptx source tree was at hand when this was written: ptx {__version__} comes from your index.\n"
                   f"RUN pip install --no-cache-dir --no-deps ptx=={__version__}")
    name = source.name
    args = ", ".join(json.dumps(a) for a in serve_args(name, source.registered))
    return f"""# Written by `ptx export {source.subject} --format kserve`: `ptx serve {name}` in a container, speaking the
# Open Inference Protocol v2 (REST on {HTTP_PORT}, gRPC on {GRPC_PORT}). Build and run:
#   docker build -t ptx-{name} .
#   docker run -p {HTTP_PORT}:{HTTP_PORT} -p {GRPC_PORT}:{GRPC_PORT} -e PTX_SERVE_TOKEN=<token> ptx-{name}
FROM {BASE_IMAGE}
# ONNX Runtime's CPU provider serves the model's ONNX file: no torch in the image.
RUN pip install --no-cache-dir {requirements}
{install_ptx}
COPY {MODELS_DIR}/ /{MODELS_DIR}/
RUN useradd --uid 1000 --no-create-home ptx
USER 1000
EXPOSE {HTTP_PORT} {GRPC_PORT}
# Listening beyond loopback needs a token: set PTX_SERVE_TOKEN (the manifest reads it from a Secret).
ENTRYPOINT ["ptx", {args}]
"""


def serve_args(name: str, registered: bool = True) -> list[str]:
    """`ptx serve`'s arguments in the image: a tutorial model by its name under /models, any other
    by its file there, served under its name."""
    model = [name, "--root", f"/{MODELS_DIR}"] if registered else [
        f"/{MODELS_DIR}/{name}/{ARTIFACT_FILES['onnx']}", "--name", name]
    return ["serve", *model, "--backend", "ort-cpu", "--host", "0.0.0.0", "--http-port", str(HTTP_PORT),
            "--grpc-port", str(GRPC_PORT)]


def manifest(source: Source, image: str) -> str:
    """Two InferenceServices (REST, gRPC) on one image, as YAML (written by hand: every value is
    JSON-quoted, which YAML reads as the same string)."""
    name = source.name
    probes = f"""        readinessProbe:
          httpGet:
            path: /v2/health/ready
            port: {HTTP_PORT}
          periodSeconds: 5
        livenessProbe:
          httpGet:
            path: /v2/health/live
            port: {HTTP_PORT}
          periodSeconds: 10
"""
    rest = _inference_service(name, name, image, f"""          - containerPort: {HTTP_PORT}
            protocol: TCP""", probes)
    grpc = _inference_service(f"{name}-grpc", name, image, f"""          - name: h2c
            containerPort: {GRPC_PORT}
            protocol: TCP""", "")
    return f"""# Written by `ptx export {source.subject} --format kserve`: KServe InferenceServices running `ptx serve {name}`
# (serving.kserve.io/v1beta1, Open Inference Protocol v2). Knative lets a container expose one port:
# {name} serves REST on {HTTP_PORT}, {name}-grpc serves gRPC on {GRPC_PORT} (h2c), from the same image.
# Before `kubectl apply -f {MANIFEST}`: push the image and create the token Secret (README.md).
{rest}---
{grpc}"""


def _inference_service(service: str, model: str, image: str, ports: str, probes: str) -> str:
    """One InferenceService document: the image, its port, the token from the model's Secret."""
    q = json.dumps
    return f"""apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {q(service)}
  labels:
    app.kubernetes.io/name: ptx
    app.kubernetes.io/component: {q(model)}
spec:
  predictor:
    minReplicas: 1
    containers:
      - name: kserve-container
        image: {q(image)}
        ports:
{ports}
        env:
          - name: PTX_SERVE_TOKEN
            valueFrom:
              secretKeyRef:
                name: {q(f"{model}-token")}
                key: token
{probes}        resources:
          requests:
            cpu: "1"
            memory: 1Gi
          limits:
            cpu: "2"
            memory: 2Gi
"""


def readme(source: Source, image: str, wheel: str | None) -> str:
    name = source.name
    return f"""# {name} on KServe (written by `ptx export {source.subject} --format kserve`)

- `{DOCKERFILE}`: `ptx serve {name}` in a container (ptx {__version__}{' from ' + WHEELS_DIR + '/' + wheel if wheel else ''},
  ONNX Runtime, no torch), {source.made} in `{MODELS_DIR}/{name}/{ARTIFACT_FILES["onnx"]}`.
- `{MANIFEST}`: two KServe InferenceServices (v1beta1) on that image: `{name}` (REST, port
  {HTTP_PORT}, readiness on `/v2/health/ready`) and `{name}-grpc` (gRPC, port {GRPC_PORT}).

```bash
docker build -t {image} .
docker push {image}
kubectl create secret generic {name}-token --from-literal=token=$(openssl rand -hex 16)
kubectl apply -f {MANIFEST}
kubectl get inferenceservice {name}      # READY True, and its URL
```

Clients send `Authorization: Bearer <token>` (health needs none) and the v2 protocol:
`POST <url>/v2/models/{name}/infer`. ptx's docs/serving.md shows curl and tritonclient calls.
"""


def export_kserve(model: str | Source, out: str | Path, *, image: str | None = None, force: bool = False,
                  log: Callable[[str], None] = print, **export_options) -> Path:
    """Write ``out``: a Dockerfile, the InferenceService manifest, a README, the model's ONNX file
    under models/NAME/ and a ptx wheel under wheels/. ``model``: a Source (export/sources.py), or a
    tutorial model's name, exported with ``export_options`` (export_model's). Returns ``out``."""
    source = model if isinstance(model, Source) else tutorial_source(model, **export_options)
    name = source.name
    final = Path(out)
    ensure_writable_dir(final.parent if str(final.parent) else ".")
    image = image or f"ptx-{name}:{__version__}"

    def foreign(folder: Path) -> str | None:
        marker = folder / MARKER
        owner = marker.read_text().strip() if marker.is_file() else None
        if owner == name or not any(folder.iterdir()):
            return None
        return f"{folder} holds {f'the kserve export of {owner}' if owner else 'other files'}: pass another --out"

    def fill(staging: Path, log: Callable[[str], None]) -> None:
        model_dir = staging / MODELS_DIR / name
        model_dir.mkdir(parents=True)
        with source.place(model_dir / ARTIFACT_FILES["onnx"], "onnx", log):
            pass  # placed and opened as served (validated where it is exported); the folder needs only the file
        wheel = build_wheel(staging / WHEELS_DIR)
        (staging / DOCKERFILE).write_text(dockerfile(source, wheel))
        (staging / MANIFEST).write_text(manifest(source, image))
        (staging / README).write_text(readme(source, image, wheel))
        (staging / MARKER).write_text(name + "\n")

    _, written = write_folder(final, force, foreign, fill, log)
    log(f"kserve      {final}  {', '.join(f for f in written if f != MARKER)}  (image {image}; see {final / README})")
    # `ptx verify URL` needs the port named: an InferenceService's URL gives none (80 for http://)
    log(verify_line(f"http://HOST:PORT/v2/models/{name}", final / MODELS_DIR / name / ARTIFACT_FILES["onnx"],
                    " --token TOKEN", where=f"HOST:PORT: the URL `kubectl get inferenceservice {name}` prints, with "
                                           f"its port (80 for http://); TOKEN: the secret {name}-token's"))
    return final
