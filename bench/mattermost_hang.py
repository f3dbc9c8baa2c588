"""Does a hanging Mattermost slow down the slow requests that alert to it?

Runs ``tests/apps/mattermost_app.py`` under gunicorn (``--preload``, sync
workers: no thread until the first alert) with Mattermost alerts to the
stand-in of ``tests/mattermost_standin.py``, and a de-duplication window so
short that every slow request makes a new alert (an upload and a post, or a
spool entry). Rounds alternate between a healthy Mattermost and one that
accepts connections and never answers; the client measures each slow
request's response time. Prints the median per mode and their ratio
(hanging / healthy): 1.0 means the response does not wait for Mattermost.

    python bench/mattermost_hang.py [--rounds 10] [--requests 20] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mattermost_standin import MattermostStandIn, free_port  # noqa: E402


def start_gunicorn(
    standin: MattermostStandIn, folder: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = dict(
        os.environ,
        PERFALERT_MATTERMOST_ENABLED="true",
        PERFALERT_MATTERMOST_URL=standin.url,
        PERFALERT_MATTERMOST_TOKEN=standin.token,
        PERFALERT_MATTERMOST_CHANNEL_ID=standin.channel_id,
        PERFALERT_MATTERMOST_TIMEOUT=str(args.timeout),
        PERFALERT_FILE_DIR=str(folder / "reports"),
        PERFALERT_THRESHOLD_SECONDS="0.05",
        # ~9 ms: every slow request is a new alert, not a duplicate.
        PERFALERT_ALERT_WINDOW_DAYS="1e-7",
        SLOW_SECONDS=str(args.slow),
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        f"--workers={args.workers}",
        "--worker-class=sync",
        f"--bind=127.0.0.1:{port}",
        "--graceful-timeout=10",
        "--log-level=warning",
        f"--chdir={ROOT / 'tests' / 'apps'}",
        "mattermost_app:app",
    ]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def measure(port: int, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        response = requests.get(f"http://127.0.0.1:{port}/slow", timeout=30)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
        time.sleep(0.02)  # let the window (9 ms) pass: the next one alerts again
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per mode")
    parser.add_argument("--requests", type=int, default=20, help="slow requests per round")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--slow", type=float, default=0.1, help="seconds /slow computes")
    parser.add_argument("--timeout", type=float, default=2.0, help="PERFALERT_MATTERMOST_TIMEOUT")
    args = parser.parse_args()

    with MattermostStandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        proc, port = start_gunicorn(standin, Path(tmp), args)
        try:
            measure(port, 5)  # warm-up: imports, first report, delivery thread
            results: dict[str, list[float]] = {"healthy": [], "hanging": []}
            rounds: dict[str, list[float]] = {"healthy": [], "hanging": []}
            for i in range(2 * args.rounds):
                mode = "healthy" if i % 2 == 0 else "hanging"
                if mode == "hanging":
                    standin.fault("hang", path=None, method=None, times=None, seconds=600)
                else:
                    standin.clear_faults()
                times = measure(port, args.requests)
                results[mode].extend(times)
                rounds[mode].append(statistics.median(times))
            standin.clear_faults()
            hung = sum(1 for r in standin.requests if r.status == 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        spool = Path(tmp) / "reports" / "spool"
        left = len(list(spool.glob("*.json"))) if spool.exists() else 0

    healthy = statistics.median(results["healthy"])
    hanging = statistics.median(results["hanging"])
    print(f"gunicorn --preload, {args.workers} sync worker(s); /slow computes {args.slow:.3f} s;")
    print(
        f"{args.rounds} interleaved rounds x {args.requests} slow requests per mode, "
        "each a new alert"
    )
    print(f"Mattermost timeout {args.timeout:g} s; calls left hanging by the stand-in: {hung}")
    for mode in ("healthy", "hanging"):
        per_round = ", ".join(f"{m * 1000:.1f}" for m in rounds[mode])
        print(
            f"  {mode:8} median {statistics.median(results[mode]) * 1000:7.2f} ms  "
            f"(round medians: {per_round})"
        )
    print(f"  posts made: {len(standin.posts)}; alerts left in the spool at exit: {left}")
    print(f"ratio hanging / healthy (medians): {hanging / healthy:.3f}")


if __name__ == "__main__":
    main()
