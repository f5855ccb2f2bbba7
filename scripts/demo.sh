#!/usr/bin/env bash
# Install dagnn with its training extra into .venv and run the main job, `dagnn demo`, on the embedded
# real MIRFlickr subset. Extra arguments go to `dagnn demo` (e.g. --out DIR, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ".[train,plots]"
exec .venv/bin/dagnn demo "$@"
