"""``python bench/index_cost.py --quick`` runs and prints every figure of its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_index_cost_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "index_cost.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "first alert" in proc.stdout and "each later alert" in proc.stdout
    [row] = json.loads(out.read_text())["rows"]
    assert row["reports"] == 200
    assert row["index_bytes"] > 0
    assert all(row[name] > 0 for name in ("first_alert_seconds", "later_alert_seconds"))
