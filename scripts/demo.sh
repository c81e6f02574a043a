#!/usr/bin/env bash
# The main job on the embedded default data: train convnet, export it, verify every backend agrees,
# and predict a picture of a digit. Run scripts/setup.sh first (README's first command does both).
set -euo pipefail
cd "$(dirname "$0")/.."
PTX=(python3 -m ptx)

echo "== 1/4 train: ptx train convnet --dataset mnist-sample --augment (the 5,000 real digits setup installs; for real pictures)"
# The embedded sample, not a download: the demo runs the same, offline or not, in a few minutes
# (ptx data fetch mnist, then ptx train convnet --augment --overwrite, trains on all 60,000).
# --overwrite: a second demo trains afresh and keeps the earlier run in runs/convnet/previous/.
"${PTX[@]}" train convnet --dataset mnist-sample --augment --overwrite
echo "== 2/4 export: ptx export convnet --format all"
"${PTX[@]}" export convnet --format all
echo "== 3/4 verify: ptx verify convnet"
"${PTX[@]}" verify convnet
echo "== 4/4 predict: a test digit drawn dark on white paper, 200x200 and off-centre -> runs/digit.png"
python3 scripts/demo_digit.py runs/digit.png
"${PTX[@]}" predict runs/digit.png --topk 3
