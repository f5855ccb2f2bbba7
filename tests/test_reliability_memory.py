"""Memory stays bounded on the worst inputs: each case of bench/hostile_memory.py runs in a fresh process
(or against a real ``dagnn serve``) whose peak RSS (interpreter and libraries included) must stay under
1 GB. Before the image front door, the 100000x1 PNG alone needed about 21 GB and a 713 KB RGBA PNG 3.7 GB;
before every frame was checked, a 0.7 MB icon took 763 MB in a process of its own and 2.9 GB in a server
given 16 of them at once, a 1 KB progressive JPEG 1 GB and a 144-byte animated WEBP 1 GB."""
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


@pytest.fixture(scope="module")
def baseline(inputs):
    """Peak RSS of a process that refuses an image from its header: the interpreter and the libraries."""
    return hostile_memory.measure("over_budget_72mpx", inputs)["peak_mb"]


@pytest.mark.parametrize("case", list(hostile_memory.CASES))
def test_peak_memory_stays_under_1_gb(case, inputs):
    """Every case, in a process of its own or as 16 concurrent uploads to a real server (whose decodes
    reserve memory from one budget and give it back when done: before, 16 uploads of the 8000x8000 icon
    decoded at once, and glibc kept ~500 MB per request thread afterwards)."""
    if case.startswith("serve_"):
        pytest.importorskip("uvicorn", reason="needs the [serve] extra")
    result = hostile_memory.measure(case, inputs)
    assert result["peak_mb"] < LIMIT_MB, result
    accepted = result["outcome"].startswith("accepted")
    assert accepted != hostile_memory.CASES[case].refused, result


def test_the_100000x1_strip_is_refused_before_any_decoding(inputs, baseline):
    """Refused from the header: the process never grows beyond what importing the libraries costs
    (upscaling the strip would need ~21 GB)."""
    result = hostile_memory.measure("strip_100000x1", inputs)
    assert "more elongated than 20:1" in result["outcome"]
    assert result["peak_mb"] < baseline + 20, (result, baseline)


@pytest.mark.parametrize("case, says", [
    ("icon_169mpx", "the icon it holds (13000x13000; its directory says 16x16)"),
    ("progressive_jpeg_169mpx", "progressive JPEG 13000x13000 is 169 megapixels"),
    ("multiscan_jpeg_169mpx", "multi-scan JPEG 13000x13000 is 169 megapixels"),
    ("webp_animated_64mpx", "more than the limit of 32 for WEBP"),
    ("tiff_tiles_16384", "TIFF tiles of 16384x16384 for a 64x64 image"),
    ("tiff_20000_tags", "its TIFF directory lists 20009 entries"),
])
def test_a_frame_larger_than_its_container_says_is_refused_before_it_is_decoded(inputs, baseline, case, says):
    """The size of what would really be decoded is read from that frame's own header first: the process
    stays at the size of the interpreter and libraries (before: 763 MB for the icon, about 1 GB for each
    of the JPEGs, the WEBP and the TIFF)."""
    result = hostile_memory.measure(case, inputs)
    assert says in result["outcome"], result
    assert result["peak_mb"] < baseline + 20, (result, baseline)

