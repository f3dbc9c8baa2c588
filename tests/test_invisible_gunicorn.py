"""Invisible to the app under real gunicorn workers (sync, gthread, gevent), under load.

``apps/invisible_app.py`` runs with ``PerfAlert(app)`` (threshold 0.2 s, so
its 0.3 s header-reading requests are slow and sampled) in two workers, and
eight clients send it 200 requests at once:

* ``/copy-headers`` reads the request's headers in a loop: not one request
  may fail (anything written into the environ meanwhile breaks it);
* ``/watchdog`` guards its work with the app's own alarm (``SIGALRM`` and
  ``ITIMER_REAL`` on sync and gthread workers, ``gevent.Timeout`` on gevent
  workers, see the app's docstring): not one request may fail, and every
  alarm fires, never early, 95 % of them at most ``P95_LATE_LIMIT`` late and
  none more than ``LATE_LIMIT``. Without the extension, on two cores, 95 %
  fired within 11 ms of their time; a single one of 200 was up to 220 ms late
  (the worker waited for a core), which is why no tighter bound is put on
  the latest.

After the load, slow requests of the same workers must still carry a call
tree whose hottest frames name the view's function. Events are read from the
JSON lines the app's own ``perf_slow_request`` subscriber writes.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from servers import Gunicorn, wait_for

pytestmark = pytest.mark.server

APP = "apps.invisible_app:app"
REQUESTS = 200
CLIENTS = 8
THRESHOLD = 0.2
#: The app's alarm (``ALARM_SECONDS`` in the app), and how late it may fire: 95 % of
#: the alarms, and the latest.
ALARM = 0.1
P95_LATE_LIMIT = 0.05
LATE_LIMIT = 1.0
#: Per worker class: gunicorn options and the app's kind of watchdog.
WORKERS: dict[str, dict[str, Any]] = {
    "sync": {"threads": 1, "watchdog": "view"},
    "gthread": {"threads": 4, "watchdog": "startup"},
    "gevent": {"threads": 1, "watchdog": "gevent"},
}
#: Share of the requests under load that must have a call tree naming the view.
SAMPLED_UNDER_LOAD = 0.97
#: Lines of a gunicorn log that mean a request or a worker failed.
LOG_ERRORS = ("Traceback", "Exception on", "WORKER TIMEOUT", "terminated due to signal")


@contextmanager
def serving(tmp_path: Path, worker_class: str) -> Iterator[tuple[Gunicorn, Path]]:
    events = tmp_path / "events.jsonl"
    setup = WORKERS[worker_class]
    env = {
        "PERFALERT_THRESHOLD_SECONDS": str(THRESHOLD),
        "PERFALERT_FILE_DIR": str(tmp_path / "reports"),
        "INVISIBLE_APP_EVENTS": str(events),
        "INVISIBLE_APP_WATCHDOG": setup["watchdog"],
    }
    with Gunicorn(
        APP,
        tmp_path,
        env,
        workers=2,
        worker_class=worker_class,
        threads=setup["threads"],
        name=worker_class,
    ) as server:
        yield server, events


def _get(server: Gunicorn, path: str) -> tuple[int, bytes]:
    try:
        return server.get(path, timeout=30)
    except OSError as exc:  # a worker that died or hung up counts as an error too
        return 0, repr(exc).encode()


def load(server: Gunicorn, path: str, requests: int = REQUESTS, clients: int = CLIENTS) -> Any:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: _get(server, path), range(requests)))


def assert_no_errors(server: Gunicorn, path: str, results: list[tuple[int, bytes]]) -> None:
    failed = Counter(f"{status} {body[:120]!r}" for status, body in results if status != 200)
    log = server.log.read_text(errors="replace").splitlines()
    logged = [line for line in log if any(error in line for error in LOG_ERRORS)]
    assert not failed and not logged, (
        f"{sum(failed.values())} of {len(results)} requests to {path} failed under "
        f"{server.name} workers: {dict(failed)}\nlog ({len(logged)} error lines): "
        + "\n".join(logged[:10])
    )


def read_events(events: Path, path: str) -> list[dict[str, Any]]:
    if not events.exists():
        return []
    found = [json.loads(line) for line in events.read_text().splitlines()]
    return [event for event in found if event["path"] == path]


def wait_for_events(events: Path, path: str, count: int) -> list[dict[str, Any]]:
    """The events for ``path`` once there are ``count`` (a subscriber runs after the response)."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: len(read_events(events, path)) >= count, timeout=30)
    found = read_events(events, path)
    assert len(found) >= count, f"{len(found)} events for {path} after 30 s, expected {count}"
    return found


def without_call_tree(events: list[dict[str, Any]], view: str, where: str) -> list[str]:
    """Why each event does not carry a call tree with ``view`` in it, if it does not."""
    return [
        f"{event['status']} {event['note']!r} hot={event['hot']}"
        for event in events
        if not event["profile"] or view not in event[where]
    ]


def assert_later_slow_requests_have_call_trees(server: Gunicorn, events: Path) -> None:
    results = load(server, "/slow", requests=8, clients=4)
    assert_no_errors(server, "/slow", results)
    slow = wait_for_events(events, "/slow", len(results))
    missing = without_call_tree(slow, "slow_view", "hot")
    assert not missing, (
        f"{len(missing)} of {len(slow)} later slow requests under {server.name} workers have "
        "no call tree with the view as a hot frame:\n" + "\n".join(missing)
    )


@pytest.mark.parametrize("worker_class", list(WORKERS))
def test_reading_headers_under_load_never_fails(tmp_path: Path, worker_class: str) -> None:
    with serving(tmp_path, worker_class) as (server, events):
        results = load(server, "/copy-headers")
        assert_no_errors(server, "/copy-headers", results)
        # 0.3 s each: every one is slow and sampled. Eight of them at once on two
        # cores keep the interpreter lock busy: the sampler thread waits its turn
        # among four busy threads per worker, and now and then a request ends
        # before its first sample; its alert says so ("too few samples").
        slow = wait_for_events(events, "/copy-headers", len(results))
        missing = without_call_tree(slow, "copy_headers", "functions")
        assert len(missing) <= len(slow) * (1 - SAMPLED_UNDER_LOAD), (
            f"{len(missing)} of {len(slow)} /copy-headers events have no call tree naming "
            "the view: " + "; ".join(sorted(set(missing))[:5])
        )
        assert all("too few samples" in reason for reason in missing), missing
        assert_later_slow_requests_have_call_trees(server, events)


@pytest.mark.parametrize("worker_class", list(WORKERS))
def test_the_apps_own_alarm_fires_on_time_and_profiling_goes_on(
    tmp_path: Path, worker_class: str
) -> None:
    with serving(tmp_path, worker_class) as (server, events):
        results = load(server, "/watchdog")
        assert_no_errors(server, "/watchdog", results)
        fired = [json.loads(body)["fired_after"] for _, body in results]
        assert None not in fired, f"the alarm never fired in {fired.count(None)} of {len(fired)}"
        late = sorted(after - ALARM for after in fired)
        p95 = statistics.quantiles(late, n=20)[-1]
        print(
            f"{worker_class}: alarm of {ALARM}s late by median "
            f"{statistics.median(late) * 1000:.1f} ms, 95 % within {p95 * 1000:.1f} ms, "
            f"at most {late[-1] * 1000:.1f} ms"
        )
        # The kernel (or gevent's hub) never fires a timer early: an early alarm is
        # someone else's timer. 1 ms allows for the two clocks being read apart.
        assert late[0] >= -0.001, f"an alarm fired {-late[0] * 1000:.1f} ms early"
        assert p95 <= P95_LATE_LIMIT, f"5 % of the alarms fired over {p95 * 1000:.1f} ms late"
        assert late[-1] <= LATE_LIMIT, f"an alarm fired {late[-1] * 1000:.1f} ms late"
        assert_later_slow_requests_have_call_trees(server, events)
