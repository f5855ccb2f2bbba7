"""Every row of docs/reliability.md's store and hostile-input tables (S01…, H01…, F01…, B01…) names tests
that exist."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_store_row_names_existing_tests():
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([SHFB]\d\d) \|.*$", text, re.M)
    assert len(rows) >= 18 + 18 + 10 + 6
    for line in re.findall(r"^\| [SHFB]\d\d \|.*$", text, re.M):
        tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", line)
        assert tests, f"row without a test: {line[:60]}"
        for path, name in tests:
            source = (REPO / path).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} does not exist"
