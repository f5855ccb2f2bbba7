#!/usr/bin/env bash
# Install dagnn with its training and figures extras into .venv and run the main job, `dagnn demo`, on the
# embedded real MIRFlickr subset. Extra arguments go to `dagnn demo` (e.g. --out DIR, --quick).
# The first run downloads and installs torch (a build with CUDA libraries: 5.9 GB in .venv, see README.md);
# each step says what it does, and pip shows its own progress.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
step() { printf '\n== [%s] %s\n' "$1" "$2"; }

if [ -x .venv/bin/python ]; then
    step "setup 1/3" "using the existing .venv"
else
    step "setup 1/3" "creating .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
fi
step "setup 2/3" "upgrading pip in .venv"
.venv/bin/python -m pip install --upgrade pip 2>&1 | tail -n 1
step "setup 3/3" "installing dagnn with its [train,plots] extras: torch, torchvision, onnx, scipy, matplotlib,
   scikit-learn … The first time: 3.2 GB of packages to download (torch's Linux build brings CUDA libraries),
   5.9 GB in .venv, minutes depending on the download; later runs reuse them"
.venv/bin/python -m pip install ".[train,plots]"
step "demo" ".venv/bin/dagnn demo $*"
exec .venv/bin/dagnn demo "$@"
