"""What one alert costs in the de-duplication store: ``python bench/store_cost.py``.

An alert (a slow request whose endpoint was not alerted yet) costs the store
one claim of a new key; a slow request inside the window, one claim of a key
that is taken. With a shared store, every worker also sends its counters, at
most once per ``FLUSH_INTERVAL`` (5 s), as one batch: at most one batch per
alert. This measures each of these on the default store (SQLite in the app's
folder) and on ``memory://``, in the same run, in alternating order, through
the same ``open_store`` the extension uses. Each figure is the median over the
rounds of the mean time of one operation in a round.

    python bench/store_cost.py              # 9 rounds of 2,000 operations
    python bench/store_cost.py --quick      # a smoke run
    python bench/store_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask_perfalert.storage import open_store

#: One alert's counts, as the flusher sends them in a batch.
ALERT_COUNTS = {
    "requests": 1.0,
    "slow": 1.0,
    "alerted": 1.0,
    "reports_written": 1.0,
    "monitored_seconds": 1.2,
    "own_seconds": 0.00002,
}
WINDOW = 10 * 86400.0


def per_operation(count: int, operation: Callable[[int], Any]) -> float:
    """Mean seconds of one ``operation(i)`` over ``count`` calls."""
    start = time.perf_counter()
    for i in range(count):
        operation(i)
    return (time.perf_counter() - start) / count


def measure_store(uri: str, round_number: int, count: int) -> dict[str, float | None]:
    store: Any = open_store(uri, "perfalert:")
    try:
        keys = [f"GET endpoint_{round_number}_{i}" for i in range(count)]
        new = per_operation(count, lambda i: store.claim(keys[i], WINDOW))
        taken = per_operation(count, lambda i: store.claim(keys[i], WINDOW))
        batch: float | None = None
        if store.shared:
            sender = uuid.uuid4().hex
            batch = per_operation(
                count, lambda i: store.add_counters("bench", ALERT_COUNTS, (sender, i + 1))
            )
        return {"claim_new": new, "claim_taken": taken, "counter_batch": batch}
    finally:
        store.close()


def run(rounds: int, count: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="perfalert-store-cost-") as folder:
        stores = {"memory://": "memory://", "sqlite (default)": f"sqlite://{folder}/perfalert.db"}
        for name in stores:
            samples[name] = []
        for r in range(rounds):
            order = list(stores) if r % 2 == 0 else list(reversed(stores))
            for name in order:
                samples[name].append(measure_store(stores[name], r, count))
    medians: dict[str, dict[str, float | None]] = {}
    for name, rows in samples.items():
        figures: dict[str, float | None] = {}
        for figure in ("claim_new", "claim_taken", "counter_batch"):
            values = [value for row in rows if (value := row[figure]) is not None]
            figures[figure] = statistics.median(values) if values else None
        figures["alert"] = (figures["claim_new"] or 0.0) + (figures["counter_batch"] or 0.0)
        medians[name] = figures
    memory, sqlite = medians["memory://"], medians["sqlite (default)"]
    ratios = {
        figure: (sqlite[figure] or 0.0) / (memory[figure] or 1.0)
        for figure in ("claim_new", "claim_taken", "alert")
    }
    return {
        "rounds": rounds,
        "operations_per_round": count,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "medians_seconds": medians,
        "ratios_sqlite_to_memory": ratios,
    }


def table(result: dict[str, Any]) -> str:
    def us(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e6:.2f} µs"

    lines = [
        f"Per-alert store cost: median of {result['rounds']} rounds of "
        f"{result['operations_per_round']} operations (Python {result['python']}, "
        f"SQLite {result['sqlite']})",
        "",
        f"{'store':<18}{'claim, new key':>16}{'claim, taken':>16}{'counter batch':>16}"
        f"{'one alert':>14}",
    ]
    for name, figures in result["medians_seconds"].items():
        lines.append(
            f"{name:<18}{us(figures['claim_new']):>16}{us(figures['claim_taken']):>16}"
            f"{us(figures['counter_batch']):>16}{us(figures['alert']):>14}"
        )
    ratios = result["ratios_sqlite_to_memory"]
    lines.append(
        f"{'sqlite / memory':<18}{ratios['claim_new']:>15.1f}x{ratios['claim_taken']:>15.1f}x"
        f"{'':>16}{ratios['alert']:>13.1f}x"
    )
    lines.append("")
    lines.append(
        "one alert = a claim of a new key + one counter batch (a worker sends at most one "
        "batch per 5 s, so at most one per alert)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 200: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    rounds, count = (3, 200) if args.quick else (args.rounds, args.operations)
    result = run(rounds, count)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
