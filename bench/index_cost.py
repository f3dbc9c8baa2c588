"""What rewriting the report index costs: ``python bench/index_cost.py``.

After each report, the file subscriber prunes the folder and rewrites
``index.html`` (on the events thread, after the response was sent). This fills
a folder with N reports (50 endpoints, made by the real ``render_report``),
then measures, through the real ``FileAlerts``:

* first alert: a new process's subscriber, which reads the head of every
  report once (the index keeps what it read by file name afterwards);
* each later alert: prune (list and ``lstat`` the folder), read the new
  report's head, render the page, write it atomically (with ``fsync``);
* of which pruning: what each alert paid before there was an index.

Each figure is the median of the rounds. The OS page cache is warm (the
reports were just written); a cold disk adds the reads of the first rewrite.

    python bench/index_cost.py                # N = 1,000 and 10,000
    python bench/index_cost.py --max          # and 100,000 (FILE_MAX_FILES' maximum)
    python bench/index_cost.py --quick        # a smoke run
    python bench/index_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from flask_perfalert import SlowRequestEvent, UsualLatency
from flask_perfalert.alerts.file import FileAlerts, report_name
from flask_perfalert.report import render_report
from flask_perfalert.settings import PerfAlertSettings
from flask_perfalert.stats import Stats

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def event(number: int) -> SlowRequestEvent:
    return SlowRequestEvent(
        kind="request",
        endpoint=f"shop.endpoint_{number % 50}",
        url=f"https://shop.example/orders/{number}?page=2",
        method="GET",
        params={"page": "2"},
        headers={"User-Agent": "bench"},
        status_code=200,
        duration=1.5 + number % 7 / 10,
        threshold=1.0,
        timestamp=START + timedelta(seconds=number * 30),
        duplicate=False,
        profile=None,
        profile_note="no profile",
        host="bench",
        pid=1,
        id=f"{number:032x}",
        usual=UsualLatency(0.08, 0.21, 100),
        suppressed=number % 4,
    )


def fill(folder: Path, count: int) -> None:
    """``count`` reports, written directly (faster than one atomic write each)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for number in range(count):
        made = event(number)
        (folder / report_name(made)).write_text(render_report(made))


def alert(alerts: FileAlerts, folder: Path, number: int) -> float:
    """Seconds the subscriber spends after writing one more report: prune and index."""
    made = event(number)
    (folder / report_name(made)).write_text(render_report(made))
    start = time.perf_counter()
    alerts.prune()
    return time.perf_counter() - start


def measure(count: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="perfalert-index-cost-") as tmp:
        folder = Path(tmp) / "reports"
        fill(folder, count - 2 * rounds)  # each round adds two: ``count`` at the end
        settings = PerfAlertSettings(file_dir=folder, file_max_files=count, alert_window_days=3650)
        first, later, pruning = [], [], []
        for r in range(rounds):
            alerts = FileAlerts(settings, Stats())  # a new process: nothing read yet
            first.append(alert(alerts, folder, count - 2 * rounds + 2 * r))
            later.append(alert(alerts, folder, count - 2 * rounds + 2 * r + 1))
            start = time.perf_counter()
            alerts._prune()  # what every alert paid before there was an index
            pruning.append(time.perf_counter() - start)
        size = (folder / "index.html").stat().st_size
        reports = len(os.listdir(folder)) - 1
    return {
        "reports": reports,
        "first_alert_seconds": statistics.median(first),
        "later_alert_seconds": statistics.median(later),
        "pruning_alone_seconds": statistics.median(pruning),
        "index_bytes": size,
    }


#: Under the table: what its columns measure.
NOTE = (
    "first alert: a new process reads every report's head once; each later alert reads "
    "only the new report's. Pruning (listing the folder) was paid before the index existed."
)


def table(result: dict[str, Any]) -> str:
    rows = [
        f"{row['reports']:>9,}{row['first_alert_seconds'] * 1000:>11.1f} ms"
        f"{row['later_alert_seconds'] * 1000:>16.1f} ms"
        f"{row['pruning_alone_seconds'] * 1000:>16.1f} ms{row['index_bytes'] / 1e6:>10.2f} MB"
        for row in result["rows"]
    ]
    title = (
        f"Report index: what one alert costs the file subscriber after writing its report "
        f"(median of {result['rounds']} rounds; Python {result['python']}, {result['machine']})"
    )
    heads = (
        f"{'reports':>9}{'first alert':>14}{'each later alert':>19}{'of which pruning':>19}"
        f"{'index.html':>13}"
    )
    return "\n".join([title, "", heads, *rows, "", NOTE])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max", action="store_true", help="also 100,000 reports")
    parser.add_argument("--quick", action="store_true", help="200 reports, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        counts, rounds = [200], 2
    else:
        counts, rounds = [1000, 10_000] + ([100_000] if args.max else []), args.rounds
    result = {
        "rounds": rounds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": [measure(count, rounds) for count in counts],
    }
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
