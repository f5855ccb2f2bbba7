"""The layering in pyproject.toml holds, and import-linter really catches a break of it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"dagnn_runtime": "runtime", "dagnn_export": "dagnn_export", "dagnn_cli": "cli"}

pytest.importorskip("importlinter", reason="needs import-linter (the [dev] extra)")


def lint(root: Path, config: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code, "--no-cache", str(config)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The three packages under their import names, plus the contracts, in a scratch folder."""
    root = tmp_path_factory.mktemp("layers")
    for name, folder in PACKAGES.items():
        shutil.copytree(REPO / folder, root / name, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_contracts_hold(tree):
    result = lint(tree, tree / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = (tree / "pyproject.toml").read_text().count("\n[[tool.importlinter.contracts]]\n")
    assert contracts >= 4 and f"{contracts} kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("dagnn_runtime/_violation.py", "import torch\n", "dagnn_runtime._violation -> torch"),
    ("dagnn_runtime/_violation.py", "import rich.table\n", "dagnn_runtime._violation -> rich"),
    ("dagnn_export/_violation.py", "from dagnn_cli import app\n", "dagnn_export._violation -> dagnn_cli.app"),
    ("dagnn_runtime/_violation.py", "import dagnn_export.config\n", "dagnn_runtime._violation -> dagnn_export"),
    ("dagnn_runtime/indexes/_violation.py", "from pymilvus import MilvusClient\n",
     "dagnn_runtime.indexes._violation -> pymilvus"),
    ("dagnn_cli/_violation.py", "import ray\n", "dagnn_cli._violation -> ray"),
    ("dagnn_runtime/embed/_violation.py", "import pyarrow.parquet\n", "dagnn_runtime.embed._violation -> pyarrow"),
    ("dagnn_export/_violation.py", "from prometheus_client import Counter\n",
     "dagnn_export._violation -> prometheus_client"),
])
def test_a_deliberate_violation_fails(tree, module, line, broken):
    path = tree / module
    path.write_text(line)
    try:
        result = lint(tree, tree / "pyproject.toml")
    finally:
        path.unlink()
    assert result.returncode != 0
    assert broken in result.stdout, result.stdout
