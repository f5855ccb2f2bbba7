"""bench/version_ab.py: another source tree's runtime is imported beside this one's, and a row is only
printed when both versions give the same embeddings (a speed A/B, not a change of answers)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import dagnn_runtime as dr
from bundle_factory import bundle_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import version_ab  # noqa: E402
from benchlib import Table  # noqa: E402


def test_a_source_tree_is_imported_as_its_own_runtime(bundle_dir):
    baseline = version_ab.import_runtime(ROOT, name="baseline_runtime_test")
    assert baseline is not dr and baseline.load is not dr.load
    assert baseline.Model is not dr.Model and baseline.__file__.startswith(str(ROOT / "runtime"))
    texts = ["sky, clouds", "sea"]
    np.testing.assert_array_equal(baseline.load(bundle_dir).encode_texts(texts), dr.load(bundle_dir).encode_texts(texts))


def test_a_row_only_when_both_versions_answer_alike(bundle_dir):
    model = dr.load(bundle_dir)
    table = Table()
    version_ab.compare(table, "one text", lambda: model.encode_texts(["sky"]), lambda: model.encode_texts(["sky"]),
                       rounds=3, inner=2, warmup=1)
    assert table.rows[0]["measure"] == "one text" and "baseline / this = " in table.rows[0]["value"]
    with pytest.raises(SystemExit, match="embeddings differ"):
        version_ab.compare(table, "changed", lambda: model.encode_texts(["sky"]),
                           lambda: model.encode_texts(["sea"]), rounds=3, inner=2, warmup=1)
    assert len(table.rows) == 1


def test_a_folder_without_the_runtime_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no runtime/__init__.py"):
        version_ab.import_runtime(tmp_path)
