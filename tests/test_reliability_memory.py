"""Memory stays bounded on the worst inputs: each case of bench/hostile_memory.py runs in a fresh process
whose peak RSS (interpreter and libraries included) must stay under 1 GB. Before the image front door, the
100000x1 PNG alone needed about 21 GB and a 713 KB RGBA PNG 3.7 GB."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import hostile_memory  # noqa: E402

LIMIT_MB = 1024


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.parametrize("case", list(hostile_memory.CASES))
def test_peak_memory_stays_under_1_gb(case, inputs):
    result = hostile_memory.measure(case, inputs)
    assert result["peak_mb"] < LIMIT_MB, result
    refused = case in ("strip_100000x1", "over_budget_72mpx", "bomb_900mpx", "zipbomb_bundle")
    assert (result["outcome"] != "accepted") == refused, result


def test_the_100000x1_strip_is_refused_before_any_decoding(inputs):
    """Refused from the header: the process never grows beyond what importing the libraries costs
    (upscaling the strip would need ~21 GB)."""
    baseline = hostile_memory.measure("over_budget_72mpx", inputs)["peak_mb"]
    result = hostile_memory.measure("strip_100000x1", inputs)
    assert "more elongated than 20:1" in result["outcome"]
    assert result["peak_mb"] < baseline + 20, (result, baseline)
