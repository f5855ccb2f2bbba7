#!/usr/bin/env bash
# Install dagnn from this checkout into virtual environments and run the test suite.
#  - .venv       : the full install (runtime + [train] + [dev] + [serve] + [milvus] + [ray] + [plots]) runs every test;
#  - .venv-base  : the torch-free base install (+ test tools) proves `import dagnn_runtime` never needs torch
#                  and runs the suite again, where torch-only tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

make_venv() {  # make_venv DIR EXTRAS
    [ -x "$1/bin/python" ] || "$PY" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
    "$1/bin/python" -m pip install -q ".$2"
}

echo "== full install (.[train,dev,serve,milvus,ray,plots])"
make_venv .venv "[train,dev,serve,milvus,ray,plots]"
echo "== torch-free base install (. plus pytest, onnx)"
make_venv .venv-base "[dev]"
.venv-base/bin/python - <<'PY'
import sys
import dagnn_runtime, dagnn_cli.main  # noqa: F401
assert "torch" not in sys.modules, "importing dagnn_runtime/dagnn_cli pulled in torch"
try:
    import torch  # noqa: F401
except ImportError:
    print("base install: dagnn_runtime and dagnn_cli import without torch (torch not installed)")
else:
    sys.exit("base install unexpectedly has torch")
PY

echo "== import layers (import-linter contracts in pyproject.toml)"
.venv/bin/lint-imports --no-cache
echo "== tests, full install"
.venv/bin/python -m pytest -q "$@"
echo "== tests, torch-free base install"
.venv-base/bin/python -m pytest -q -p no:cacheprovider "$@"
