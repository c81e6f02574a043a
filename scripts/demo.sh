#!/usr/bin/env bash
# The main job on the embedded default data: train convnet, export it, verify every backend agrees,
# and predict a picture of a digit. Run scripts/setup.sh first (README's first command does both).
#
#   ./scripts/demo.sh           the recipe for real pictures: 60 augmented epochs, about a minute on 2 quiet cores
#   ./scripts/demo.sh --quick   20 of them, for a busy machine (a third of the training time)
set -euo pipefail
cd "$(dirname "$0")/.."
PTX=(python3 -m ptx)

EPOCHS=()
case "${1:-}" in
  "") ;;
  --quick) EPOCHS=(--epochs 20) ;;
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "error: unknown option $1 (./scripts/demo.sh [--quick])" >&2; exit 2 ;;
esac
# Said before anything runs; training then says how long its epochs take on this machine, after the first.
if [ ${#EPOCHS[@]} -eq 0 ]; then
  echo "ptx demo: train, export, verify and predict convnet; about a minute on 2 quiet cores, mostly"
  echo "its 60 training epochs (timed after the first); on a busy machine, ./scripts/demo.sh --quick"
else
  echo "ptx demo --quick: train, export, verify and predict convnet with 20 training epochs (the full demo: 60)"
fi

echo "== 1/4 train: ptx train convnet --dataset mnist-sample --augment${EPOCHS[*]:+ ${EPOCHS[*]}} (the 5,000 real digits set-up installs)"
# The embedded sample, not a download: the demo runs the same, offline or not, in a few minutes
# (ptx data fetch mnist, then ptx train convnet --augment --overwrite, trains on all 60,000).
# --augment: the recipe for real pictures (docs/training.md). --overwrite: a second demo trains
# afresh and keeps the earlier run in runs/convnet/previous/.
"${PTX[@]}" train convnet --dataset mnist-sample --augment "${EPOCHS[@]}" --overwrite
echo "== 2/4 export: ptx export convnet (model.onnx and model.torchscript.pt; --format names the others)"
"${PTX[@]}" export convnet
echo "== 3/4 verify: ptx verify convnet"
"${PTX[@]}" verify convnet
echo "== 4/4 predict: a test digit drawn dark on white paper, 200x200 and off-centre -> runs/digit.png"
python3 scripts/demo_digit.py runs/digit.png
"${PTX[@]}" predict runs/digit.png --topk 3
