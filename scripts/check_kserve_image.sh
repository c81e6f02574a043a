#!/usr/bin/env bash
# What `docker build` of a `ptx export NAME --format kserve` folder would do, without Docker (no
# engine runs on these machines): the Dockerfile's pip steps in a fresh venv with no torch, then its
# ENTRYPOINT's `ptx serve` on loopback, asked for health and model metadata, then stopped.
#   scripts/check_kserve_image.sh deploy [MODEL]
set -euo pipefail
DIR=${1:?usage: scripts/check_kserve_image.sh DEPLOY_DIR [MODEL]}
MODEL=${2:-$(cat "$DIR/.ptx-kserve")}
VENV=$(mktemp -d)/venv
python3 -m venv "$VENV"
reqs=$(sed -n 's/^RUN pip install --no-cache-dir \("[^#]*\)$/\1/p' "$DIR/Dockerfile" | head -1)
eval "\"$VENV/bin/pip\" install -q --disable-pip-version-check $reqs"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$DIR"/wheels/ptx-*.whl
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then echo "torch is in the image's environment" >&2; exit 1; fi
log=$(mktemp)
PTX_SERVE_TOKEN=check "$VENV/bin/ptx" serve "$MODEL" --root "$DIR/models" --backend ort-cpu --host 127.0.0.1 \
  --http-port 0 --grpc-port 0 >"$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$(dirname "$VENV")" "$log"' EXIT
for _ in $(seq 100); do grep -q '^serving' "$log" && break; sleep 0.2; done
url=$(grep -oE 'http://127.0.0.1:[0-9]+/v2' "$log" | head -1)
curl -fsS --max-time 10 "$url/health/ready" && echo
curl -fsS --max-time 10 -H "Authorization: Bearer check" "$url/models/$MODEL" && echo
echo "the image's recipe serves $MODEL without torch"
