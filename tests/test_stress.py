"""Stress: every request slow, eight at a time, on views that are hard on a sampler.

Deep stacks, finalizers that release the GIL, ``gc.collect()`` in views,
generators and async views, all allocating heavily (tests/apps/stress_app.py).
Under the test client with 8 threads and under gunicorn gthread (2 x 4) and
gevent (2 workers), 8 requests at a time: no
crash, no wrong answer, a call tree of the view's own code for at least 95 %
of the slow requests, and memory within 20 % of the same run without the
extension.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from servers import Gunicorn, http_get

TESTS = Path(__file__).resolve().parent
APP_FILE = str(TESTS / "apps" / "stress_app.py")
sys.path.insert(0, str(TESTS))
from apps.stress_app import KINDS, expected  # noqa: E402

REQUESTS = 2000


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_call_trees_of_the_view(events: list[dict[str, Any]], requests: int) -> None:
    assert len(events) == requests, f"{len(events)} events for {requests} slow requests"
    with_tree = [e for e in events if e["profile"] and e["hot"]]
    missing = [e["note"] for e in events if not e["profile"]][:5]
    assert len(with_tree) >= 0.95 * requests, (len(with_tree), missing)
    # The view's own code is what the tree shows: its view function, with the
    # hottest frames under it (where it computes, waits, or awaits).
    views = {
        "deep": "stress_deep",
        "finalizers": "finalizers",
        "collect": "collect",
        "stream": "chunks",
        "async_view": "async_view",
    }
    own = [e for e in with_tree if views[e["endpoint"]] in e["functions"]]
    assert len(own) >= 0.95 * requests, [e["functions"][-5:] for e in with_tree if e not in own][:5]


def run_client(tmp_path: Path, on: bool) -> tuple[dict[str, int], list[dict[str, Any]]]:
    events = tmp_path / f"events-{on}.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFALERT_")}
    env.update(
        STRESS_PERFALERT="1" if on else "0",
        STRESS_EVENTS=str(events),
        PERFALERT_DATA_DIR=str(tmp_path / f"data-{on}"),
        # Every request alerts: a window of a second, so duplicates are events too.
    )
    out = subprocess.run(
        [sys.executable, "-m", "apps.stress_app", str(REQUESTS), "8"],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line or "Traceback" in line]
    assert not errors, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1]), events_of(events)


@pytest.mark.server
def test_eight_threads_under_the_test_client(tmp_path: Path) -> None:
    bare, _ = run_client(tmp_path, on=False)
    result, events = run_client(tmp_path, on=True)
    assert bare["wrong"] == 0 and result["wrong"] == 0
    assert_call_trees_of_the_view(events, REQUESTS)
    assert result["peak_rss_kb"] <= 1.2 * bare["peak_rss_kb"], (result, bare)


def load(base_url: str, requests: int, threads: int, kinds: tuple[str, ...] = KINDS) -> int:
    """``requests`` GETs from ``threads`` threads; the number of wrong answers."""
    wrong = 0
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        nonlocal wrong
        for n in counter:
            kind = kinds[n % len(kinds)]
            try:
                status, body = http_get(f"{base_url}/{kind}/{n}", timeout=30)
            except OSError:
                status, body = 0, b""
            if status != 200 or body != expected(kind, n):
                with lock:
                    wrong += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return wrong


def worker_rss_kb(server: Gunicorn) -> int:
    """The summed resident memory of the server's worker processes."""
    assert server.proc is not None
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    total = 0
    for pid in children.split():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


@pytest.mark.server
@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_gunicorn_two_workers_eight_requests_at_a_time(tmp_path: Path, worker_class: str) -> None:
    requests = REQUESTS // 2
    figures = {}
    for on in (False, True):
        events = tmp_path / f"gunicorn-events-{on}.jsonl"
        server = Gunicorn(
            "apps.stress_app:app",
            tmp_path / f"gunicorn-{on}",
            {"STRESS_PERFALERT": "1" if on else "0", "STRESS_EVENTS": str(events)},
            workers=2,
            worker_class=worker_class,
            threads=4,
            name=f"stress-{on}",
        )
        # asgiref runs no async view under gevent (an event loop in every greenlet's
        # thread), with or without the extension.
        kinds = tuple(k for k in KINDS if k != "async" or worker_class != "gevent")
        with server:
            wrong = load(server.base_url, requests, 8, kinds)
            rss = worker_rss_kb(server)
        log = server.log.read_text()
        # No worker crashed, timed out or was restarted, and nothing failed.
        for sign in ("Traceback", "WORKER TIMEOUT", "was sent SIG", "exited with code", "ERROR"):
            assert sign not in log, log[-3000:]
        assert log.count("Booting worker") == 2, log[-3000:]
        figures[on] = (wrong, rss, events_of(events))
    (bare_wrong, bare_rss, _), (wrong, rss, events) = figures[False], figures[True]
    assert bare_wrong == 0 and wrong == 0
    assert_call_trees_of_the_view(events, requests)
    assert rss <= 1.2 * bare_rss, (rss, bare_rss)
