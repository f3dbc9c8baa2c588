"""The de-duplication store: choosing it, SQLite on one host, and falling back to memory.

Redis is in test_storage_redis.py, gunicorn runs in test_storage_gunicorn.py.
"""

from __future__ import annotations

import logging
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, claim_race, make_perf
from flask import Flask
from servers import free_port, wait_for

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request
from flask_perfalert._logging import WARN_INTERVAL
from flask_perfalert.storage import FallbackStore, MemoryStore, open_store
from flask_perfalert.storage.fallback import RETRY_MAX, RETRY_MIN
from flask_perfalert.storage.sqlite import PURGE_INTERVAL, SQLiteStore

WINDOW = 600.0


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_perfalert" and r.levelno == logging.WARNING
    ]


def failed_tries(caplog: pytest.LogCaptureFixture) -> int:
    """Calls the store failed, as logged (a warning per interval, the others at debug level)."""
    return len([r for r in caplog.records if "is not available" in r.getMessage()])


def rows(path: Path) -> dict[str, float]:
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT key, expires FROM perfalert_claims").fetchall())


def slow_app(app: Flask, clock: FakeClock, **options: Any) -> Flask:
    """``app`` with ``/slow`` (slower than the threshold) and Flask-PerfAlert set up."""

    @app.route("/slow")
    def slow() -> str:
        time.sleep(0.03)
        return "done"

    options.setdefault("threshold_seconds", 0.01)
    make_perf(app, clock=clock, **options)
    return app


# -- choosing the store ----------------------------------------------------------------------
def test_memory_is_the_default_and_per_process(clock: FakeClock) -> None:
    store = open_store("memory://", "perfalert:", clock)
    assert isinstance(store, MemoryStore)
    assert store.claim("GET index", WINDOW)
    assert not store.claim("GET index", WINDOW)
    clock.advance(WINDOW)
    assert store.claim("GET index", WINDOW)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgres://db/alerts", "unsupported PERFALERT_STORAGE_URI scheme 'postgres'"),
        ("/var/lib/perfalert.db", "PERFALERT_STORAGE_URI is not a URI"),
        ("sqlite://", "needs a file"),
        ("sqlite:///:memory:", 'use "memory://"'),
        ("sqlite:///no/such/folder/perfalert.db", "'/no/such/folder'"),
    ],
)
def test_a_bad_uri_is_a_warning_and_the_app_keeps_working(
    app: Flask,
    clock: FakeClock,
    events: list[SlowRequestEvent],
    caplog: pytest.LogCaptureFixture,
    uri: str,
    expected: str,
) -> None:
    slow_app(app, clock, storage_uri=uri)
    [warning] = [w for w in store_warnings(caplog) if "PERFALERT_STORAGE_URI" in w]
    assert expected in warning
    assert "memory" in warning
    client = app.test_client()
    assert client.get("/slow").status_code == 200
    assert client.get("/slow").status_code == 200
    assert [e.duplicate for e in events] == [False, True]


def test_sqlite_uri_forms(tmp_path: Path, clock: FakeClock) -> None:
    absolute = open_store(f"sqlite://{tmp_path}/a.db", "", clock)
    four_slashes = open_store(f"sqlite:///{tmp_path}/a.db", "", clock)
    assert absolute.description == four_slashes.description == f"sqlite://{tmp_path}/a.db"
    assert absolute.claim("k", WINDOW)
    assert not four_slashes.claim("k", WINDOW)


def test_missing_redis_package_names_the_extra(
    app: Flask,
    clock: FakeClock,
    events: list[SlowRequestEvent],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # what a missing package looks like
    slow_app(app, clock, storage_uri="redis://:hunter2@127.0.0.1:6379/0")
    [warning] = [w for w in store_warnings(caplog) if "PERFALERT_STORAGE_URI" in w]
    assert "flask-perfalert[redis]" in warning
    assert "hunter2" not in caplog.text
    assert app.test_client().get("/slow").status_code == 200
    assert [e.duplicate for e in events] == [False]


# -- SQLite ------------------------------------------------------------------------------------
def test_sqlite_one_claim_per_window_and_the_file_is_private(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "perfalert.db"
    store = open_store(f"sqlite://{path}", "perfalert:", clock)
    assert store.claim("GET slow", WINDOW)
    assert not store.claim("GET slow", WINDOW)
    assert store.claim("GET other", WINDOW)
    clock.advance(WINDOW - 1)
    assert not store.claim("GET slow", WINDOW)
    clock.advance(1)
    assert store.claim("GET slow", WINDOW)
    assert set(rows(path)) == {"perfalert:GET slow", "perfalert:GET other"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_sqlite_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    first = open_store(uri, "perfalert:", clock)
    assert first.claim("GET slow", WINDOW)
    first.close()
    clock.advance(60)
    again = open_store(uri, "perfalert:", clock)
    assert not again.claim("GET slow", WINDOW)
    again.close()


def test_several_apps_share_one_file_by_prefix(tmp_path: Path, clock: FakeClock) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    shop = open_store(uri, "shop:", clock)
    blog = open_store(uri, "blog:", clock)
    assert shop.claim("GET index", WINDOW)
    assert blog.claim("GET index", WINDOW)
    assert not shop.claim("GET index", WINDOW)
    assert not blog.claim("GET index", WINDOW)


def test_sqlite_expired_keys_are_deleted(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "perfalert.db"
    store = open_store(f"sqlite://{path}", "p:", clock)
    for number in range(200):
        assert store.claim(f"GET endpoint_{number}", 10)
    assert len(rows(path)) == 200
    clock.advance(PURGE_INTERVAL)
    assert store.claim("GET last", 10)
    assert list(rows(path)) == ["p:GET last"]


@pytest.mark.parametrize("shared_connection", [True, False], ids=["one-store", "100-stores"])
def test_sqlite_100_threads_racing_one_winner(
    tmp_path: Path, clock: FakeClock, shared_connection: bool
) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    first = open_store(uri, "p:", clock)
    stores = [first if shared_connection else open_store(uri, "p:", clock) for _ in range(100)]
    results = claim_race(stores, "GET slow", WINDOW)
    assert len(results) == 100
    assert results.count(True) == 1
    # Every loser was told so by the file, not by a fallback to memory.
    assert all(not store.degraded for store in stores)


def test_sqlite_locked_falls_back_with_one_warning_and_returns(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_perfalert")
    path = tmp_path / "perfalert.db"
    store = open_store(f"sqlite://{path}", "p:", clock)
    assert isinstance(store, FallbackStore)
    assert store.claim("GET before", WINDOW)

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        assert store.claim("GET during", WINDOW)  # decided in memory: alerts
        assert not store.claim("GET during", WINDOW)
        assert not store.claim("GET before", WINDOW)  # seen claimed: still no second alert
        for _ in range(30):
            store.claim("GET during", WINDOW)  # until the next retry: memory only
        for _ in range(3):
            clock.advance(RETRY_MAX)
            store.claim("GET during", WINDOW)  # retries happen, and fail, but stay quiet
        assert failed_tries(caplog) == 4
        assert store.degraded
        assert len([w for w in store_warnings(caplog) if "not available" in w]) == 1
        [warning] = store_warnings(caplog)
        assert f"sqlite://{path}" in warning and "locked" in warning
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    clock.advance(RETRY_MAX)
    assert store.claim("GET after", WINDOW)
    assert not store.degraded
    # Shared again, and the key claimed in memory meanwhile was handed to the file.
    assert {"p:GET before", "p:GET during", "p:GET after"} <= set(rows(path))
    other_worker = open_store(f"sqlite://{path}", "p:", clock)
    assert not other_worker.claim("GET during", WINDOW)


def test_fallback_retries_with_growing_back_off(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_perfalert")
    path = tmp_path / "perfalert.db"
    path.write_bytes(b"this is not an SQLite database, " * 100)  # unusable from the start
    store = open_store(f"sqlite://{path}", "p:", clock)
    assert isinstance(store, FallbackStore)
    assert store.degraded and failed_tries(caplog) == 1  # checked at start-up
    assert store.claim("GET a", WINDOW)
    assert failed_tries(caplog) == 1  # before the first retry: memory only, no attempt
    clock.advance(RETRY_MIN)
    store.claim("GET a", WINDOW)
    assert failed_tries(caplog) == 2
    clock.advance(RETRY_MIN)
    store.claim("GET a", WINDOW)
    assert failed_tries(caplog) == 2  # the back-off doubled
    clock.advance(RETRY_MIN)
    store.claim("GET a", WINDOW)
    assert failed_tries(caplog) == 3

    path.unlink()  # the operator fixes it
    clock.advance(RETRY_MAX)
    assert not store.claim("GET a", WINDOW)
    assert not store.degraded
    assert "p:GET a" in rows(path)


def test_one_warning_per_interval(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "perfalert.db"
    path.write_bytes(b"garbage" * 1000)
    store = open_store(f"sqlite://{path}", "p:", clock)
    for _ in range(int(WARN_INTERVAL / RETRY_MAX) * 2 + 1):
        clock.advance(RETRY_MAX)
        store.claim("GET a", WINDOW)
    assert len(store_warnings(caplog)) == 3  # at 0, WARN_INTERVAL and 2 * WARN_INTERVAL


@pytest.mark.allow_internal_errors  # the failing receiver is logged as an error
def test_a_claim_stays_claimed_when_a_subscriber_fails(
    app: Flask,
    clock: FakeClock,
    events: list[SlowRequestEvent],
    report_dir: Path,
    tmp_path: Path,
    wait_delivery: Any,
) -> None:
    """The lead's decision: the window is claimed before delivery and stays claimed.

    The alert itself is not lost: the file report (and the Mattermost spool) keep it.
    """
    uri = f"sqlite://{tmp_path}/perfalert.db"
    slow_app(app, clock, storage_uri=uri)

    def failing(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        raise RuntimeError("delivery failed")

    perf_slow_request.connect(failing, sender=app)
    try:
        client = app.test_client()
        assert client.get("/slow").status_code == 200
        assert client.get("/slow").status_code == 200
    finally:
        perf_slow_request.disconnect(failing, sender=app)
    assert [e.duplicate for e in events] == [False, True]
    assert not open_store(uri, "perfalert:", clock).claim(events[0].key, WINDOW)
    wait_delivery()
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1


def test_the_app_uses_the_sqlite_store(
    app: Flask, clock: FakeClock, events: list[SlowRequestEvent], tmp_path: Path
) -> None:
    path = tmp_path / "perfalert.db"
    slow_app(app, clock, storage_uri=f"sqlite://{path}", storage_prefix="shop:")
    client = app.test_client()
    client.get("/slow")
    client.get("/slow")
    assert [e.duplicate for e in events] == [False, True]
    assert list(rows(path)) == ["shop:GET slow"]


def test_sqlite_store_reopens_after_close(tmp_path: Path, clock: FakeClock) -> None:
    store = SQLiteStore(tmp_path / "perfalert.db", "p:", clock)
    assert store.claim("k", WINDOW)
    store.close()
    assert not store.claim("k", WINDOW)
    assert len(rows(tmp_path / "perfalert.db")) == 1


def test_a_password_in_the_uri_is_never_shown(
    app: Flask, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_perfalert")
    port = free_port()  # nobody listens: the warning names the address, not the password
    perf = make_perf(app, clock=clock, storage_uri=f"redis://:hunter2@127.0.0.1:{port}/0")
    shown = perf.effective_settings(app)["PERFALERT_STORAGE_URI"]
    assert shown == f"redis://:**********@127.0.0.1:{port}/0"
    result = app.test_cli_runner().invoke(args=["perfalert", "config"])
    assert result.exit_code == 0 and f"127.0.0.1:{port}" in result.output
    assert "hunter2" not in result.output
    assert f"redis://127.0.0.1:{port}/0 is not available" in caplog.text
    assert "hunter2" not in caplog.text


EXIT_AFTER_A_SLOW_REQUEST = """
import sys, time
from flask import Flask
from flask_perfalert import PerfAlert
app = Flask("shop")
app.config.update(PERFALERT_STORAGE_URI=sys.argv[1], PERFALERT_FILE_DIR=sys.argv[2])
PerfAlert(app, threshold_seconds=0.05)
app.add_url_rule("/slow", "slow", lambda: str(time.sleep(0.08)))
app.test_client().get("/slow")  # not testing: handed on as the response goes
"""


def test_with_redis_down_a_process_that_exits_at_once_still_alerts(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            EXIT_AFTER_A_SLOW_REQUEST,
            f"redis://127.0.0.1:{free_port()}/0",  # nobody listens: Redis is down
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Slow request: GET slow (200)" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(list(reports.glob("perfalert-*.html"))) == 1


def test_with_redis_down_a_running_app_alerts_after_holding(
    app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_perfalert.storage import fallback

    monkeypatch.setattr(fallback, "HOLD_MAX", 0.3)
    app.testing = False  # as in production: the claim may wait for the store
    app.config["PERFALERT_STORAGE_URI"] = f"redis://127.0.0.1:{free_port()}/0"
    PerfAlert(app, threshold_seconds=0.05, file_enabled=False)
    app.add_url_rule("/slow", "slow", lambda: str(time.sleep(0.08)))
    app.test_client().get("/slow").close()
    alerted = wait_for(lambda: [e for e in events if not e.duplicate], timeout=15)
    assert alerted[0].endpoint == "slow"


def test_a_file_of_an_earlier_version_keeps_its_key_states(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "perfalert.db"
    with sqlite3.connect(path) as conn:  # the key states of a file made before they kept more
        conn.execute(
            "CREATE TABLE perfalert_keys (key TEXT PRIMARY KEY NOT NULL, worst REAL NOT NULL,"
            " since INTEGER NOT NULL, suppressed INTEGER NOT NULL, alerts INTEGER NOT NULL,"
            " expires REAL NOT NULL)"
        )
        conn.execute("INSERT INTO perfalert_keys VALUES ('p:GET a', 1.0, 2, 3, 1, ?)", (1e12,))
    conn.close()
    store = open_store(f"sqlite://{path}", "p:", clock)
    assert not store.settle("GET a", 1.5, False, 2.0, 600.0, time.time()).alert
    assert store.settle("GET a", 2.5, False, 2.0, 600.0, time.time()).alert  # escalates
    assert store.key_states()["GET a"].alerts == 2
    assert not store.degraded
    store.close()
