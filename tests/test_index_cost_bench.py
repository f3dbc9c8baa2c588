"""``python bench/index_cost.py --quick`` runs and prints every figure of its table."""

from __future__ import annotations

from pathlib import Path

from benches import run_quick


def test_the_index_cost_benchmark_runs(tmp_path: Path) -> None:
    printed, result = run_quick("index_cost.py", tmp_path)
    assert "first alert" in printed and "each later alert" in printed
    [row] = result["rows"]
    assert row["reports"] == 200
    assert row["index_bytes"] > 0
    assert all(row[name] > 0 for name in ("first_alert_seconds", "later_alert_seconds"))
