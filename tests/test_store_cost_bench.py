"""``python bench/store_cost.py --quick`` runs and prints every figure of the per-alert table."""

from __future__ import annotations

from pathlib import Path

from benches import run_quick


def test_the_store_cost_benchmark_runs(tmp_path: Path) -> None:
    printed, result = run_quick("store_cost.py", tmp_path)
    assert "memory://" in printed and "sqlite (default)" in printed
    sqlite = result["medians_seconds"]["sqlite (default)"]
    assert all(sqlite[name] > 0 for name in ("claim_new", "claim_taken", "counter_batch"))
    assert result["medians_seconds"]["memory://"]["counter_batch"] is None
    assert set(result["ratios_sqlite_to_memory"]) == {"claim_new", "claim_taken", "alert"}
