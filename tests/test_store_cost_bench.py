"""``python bench/store_cost.py --quick`` runs and prints every figure of the per-alert table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_store_cost_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store_cost.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "memory://" in proc.stdout and "sqlite (default)" in proc.stdout
    result = json.loads(out.read_text())
    sqlite = result["medians_seconds"]["sqlite (default)"]
    assert all(sqlite[name] > 0 for name in ("claim_new", "claim_taken", "counter_batch"))
    assert result["medians_seconds"]["memory://"]["counter_batch"] is None
    assert set(result["ratios_sqlite_to_memory"]) == {"claim_new", "claim_taken", "alert"}
