"""bench/ablation.py's table: the change against the full model is taken seed by seed, so that a data
fraction whose seeds each draw their own pairs (and spread by more than the change) still shows it."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ablation  # noqa: E402


def run(avg: float, seed: int) -> dict:
    return {"i2t": avg, "t2i": avg, "avg": avg, "val": {"avg": avg}, "selected_epoch": 3 + seed,
            "train_seconds": 10.0}


def test_vs_full_is_the_mean_and_spread_of_per_seed_differences():
    full = [run(0.80, 0), run(0.84, 1), run(0.82, 2)]  # seeds 0.02 apart
    less = [run(0.79, 0), run(0.83, 1), run(0.81, 2)]  # 0.01 below on every seed
    rows = ablation.table({"dagnn": full, "dagnn-3": less}).splitlines()
    assert rows[0].split(" | ")[5] == "average vs full model, per seed"
    full_row, less_row = (r.split(" | ") for r in rows[2:])
    assert full_row[3] == "0.8200 ± 0.0163" and full_row[5] == ""
    assert less_row[0] == "| DAGNN-3 (no L_adv)" and less_row[3] == "0.8100 ± 0.0163"
    assert less_row[5] == "-0.0100 ± 0.0000"
    # without the full model's runs there is nothing to compare with
    assert ablation.table({"dagnn-3": less}).splitlines()[2].split(" | ")[5] == ""
