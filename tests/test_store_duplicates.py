"""A shared store that fails or recovers never yields two alerts for one endpoint in a window.

While the store does not answer, an alert waits ("is held") for it instead of
being decided by each process on its own, so when it answers again it decides
once for every worker. The tests make the store fail for real (a write lock
held on the SQLite file, a Redis that never answers) and count alerts as a
user would: the events the signal delivers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ClosingClient, FakeClock, claim_race, close_monitoring
from flask import Flask
from servers import wait_for

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request
from flask_perfalert.storage import FallbackStore, open_store
from flask_perfalert.storage.fallback import HOLD_MAX, RETRY_MAX
from flask_perfalert.storage.sqlite import SQLiteStore

WINDOW = 600.0


class Locked:
    """Another process holding the SQLite file's write lock until released."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def worker_app(name: str, uri: str, clock: FakeClock, tmp_path: Path) -> tuple[Flask, list[bool]]:
    """One gunicorn worker of the same app, as far as the store is concerned: its alerts."""
    app = Flask(name)
    app.config.update(TESTING=True, PERFALERT_FILE_DIR=str(tmp_path / name))
    app.test_client_class = ClosingClient

    @app.route("/slow")
    def slow() -> str:
        time.sleep(0.03)
        return "done"

    PerfAlert(app, clock=clock, storage_uri=uri, storage_prefix="shop:", threshold_seconds=0.01)
    duplicates: list[bool] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        duplicates.append(event.duplicate)

    perf_slow_request.connect(receiver, sender=app, weak=False)
    return app, duplicates


@pytest.fixture
def two_workers(
    tmp_path: Path, clock: FakeClock
) -> Iterator[tuple[Path, list[tuple[Flask, list[bool]]]]]:
    path = tmp_path / "perfalert.db"
    workers = [worker_app(f"w{n}", f"sqlite://{path}", clock, tmp_path) for n in (1, 2)]
    yield path, workers
    for app, _ in workers:
        close_monitoring(app)


def alerts(workers: list[tuple[Flask, list[bool]]]) -> int:
    return sum(not duplicate for _, seen in workers for duplicate in seen)


def test_two_workers_alert_once_for_an_endpoint_seen_while_the_store_was_locked(
    two_workers: tuple[Path, list[tuple[Flask, list[bool]]]], clock: FakeClock
) -> None:
    path, workers = two_workers
    lock = Locked(path)
    for app, _ in workers:
        for _ in range(3):
            assert app.test_client().get("/slow").status_code == 200
    lock.release()
    clock.advance(RETRY_MAX)
    wait_for(lambda: all(len(seen) == 3 for _, seen in workers), timeout=15, what="decisions")
    assert alerts(workers) == 1, [seen for _, seen in workers]


def test_an_alert_held_longer_than_the_limit_is_decided_here_and_not_lost(
    two_workers: tuple[Path, list[tuple[Flask, list[bool]]]],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, workers = two_workers
    lock = Locked(path)
    try:
        app, seen = workers[0]
        app.test_client().get("/slow")
        assert seen == [], "held while the store is away"
        clock.advance(HOLD_MAX)
        wait_for(lambda: seen == [False], timeout=15, what="the held alert")
        assert "decided in this process" in caplog.text
    finally:
        lock.release()


def test_threads_of_one_process_never_win_one_key_twice_as_the_store_recovers(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "perfalert.db"
    store = open_store(f"sqlite://{path}", "p:", clock)
    assert isinstance(store, FallbackStore)
    lock = Locked(path)
    assert store.claim("GET other", WINDOW)  # fails: decided in memory, the store is away
    clock.advance(RETRY_MAX)  # the next claim probes the store, which is still locked a moment
    threading.Timer(0.02, lock.release).start()
    results = claim_race([store] * 4, "GET slow", WINDOW)
    assert results.count(True) == 1, results


# -- a store that fails costs the caller nothing after it failed once -----------------------------
class RecordingSQLiteStore(SQLiteStore):
    """The SQLite store, noting the threads that called it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: list[int] = []

    def claim(self, key: str, window_seconds: float, later: Any = None) -> bool:
        self.threads.append(threading.get_ident())
        return super().claim(key, window_seconds)


def test_a_store_that_failed_is_tried_again_off_the_callers_thread(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "perfalert.db"
    inner = RecordingSQLiteStore(path, "p:", clock)
    store = FallbackStore(inner, "p:", clock)
    lock = Locked(path)
    decided: list[bool] = []
    caller = threading.get_ident()
    assert store.claim("GET a", WINDOW, decided.append) is None  # held
    assert inner.threads == [caller]  # the one call that found the store away
    for number in range(5):
        clock.advance(RETRY_MAX)
        assert store.claim(f"GET {number}", WINDOW, decided.append) is None
    assert inner.threads.count(caller) == 1, "never again on the caller's thread"
    lock.release()
    clock.advance(RETRY_MAX)
    wait_for(lambda: len(decided) == 6, timeout=15, what="the held claims")
    assert decided == [True] * 6
    store.close()


def test_a_known_endpoint_does_not_alert_again_while_the_store_keeps_failing(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "perfalert.db"
    store = open_store(f"sqlite://{path}", "p:", clock)
    lock = Locked(path)
    try:
        assert store.claim("GET a", WINDOW)  # the store is away: decided here, once
        for _ in range(3):
            clock.advance(RETRY_MAX)  # each claim now tries the store again, and fails
            assert not store.claim("GET a", WINDOW)
    finally:
        lock.release()
