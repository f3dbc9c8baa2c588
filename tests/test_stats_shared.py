"""``flask perfalert stats`` across every worker, with the counters kept in a shared store.

Processes here are real: scripts and the ``flask`` command run with
``tests/apps/stats_app.py`` (``STATS_APP_FLUSH_INTERVAL`` sets how often a
process sends its counts; ``STATS_APP_WARMUP`` makes it serve requests itself
when imported), gunicorn serves it, and Redis is a real ``redis-server``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from flask import Flask
from servers import TESTS_DIR, Gunicorn, RedisServer, http_get, redis_server, wait_for

from flask_perfalert import PerfAlert
from flask_perfalert import stats as _counters
from flask_perfalert.cli import perfalert_cli
from flask_perfalert.storage import FallbackStore, open_store
from flask_perfalert.storage.fallback import RETRY_MAX

__all__ = ["redis_server"]  # the fixture, imported for pytest

APP = "apps.stats_app:app"
APP_KEY = "apps.stats_app"  # the app's name: the same in every process that imports it


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.server)])
def storage_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A shared store: an SQLite file, or a fresh ``redis-server``."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/perfalert.db"
    else:
        server = request.getfixturevalue("redis_server")
        yield server.url


def app_env(storage_uri: str, flush_interval: float, warmup: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERFALERT_", "STATS_APP_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]),
        PERFALERT_STORAGE_URI=storage_uri,
        PERFALERT_FILE_ENABLED="false",
        STATS_APP_FLUSH_INTERVAL=str(flush_interval),
        STATS_APP_WARMUP=str(warmup),
    )
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def serve_in_a_process(storage_uri: str, requests: int, cwd: Path) -> str:
    """A process that imports the app, serves ``requests`` and exits; its stderr."""
    env = app_env(storage_uri, flush_interval=3600, warmup=requests)
    return run([sys.executable, "-c", "import apps.stats_app"], env, cwd).stderr


def cli_stats(storage_uri: str, cwd: Path, *options: str) -> str:
    """``flask --app apps.stats_app:app perfalert stats``, as an operator runs it."""
    env = app_env(storage_uri, flush_interval=3600)
    args = [sys.executable, "-m", "flask", "--app", APP, "perfalert", "stats", *options]
    return run(args, env, cwd).stdout


def cli_json(storage_uri: str, cwd: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli_stats(storage_uri, cwd, "--json"))
    return data


def rows(output: str) -> dict[str, str]:
    """The table of ``stats``: label -> value."""
    table = output.split("\n\n", 1)[1]
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in table.splitlines() if line)


# -- every process's counts add up ------------------------------------------------------------


def test_the_counts_of_two_processes_add_up(storage_uri: str, tmp_path: Path) -> None:
    # Each process counts on its own and sends its counts when it exits.
    assert serve_in_a_process(storage_uri, 3, tmp_path) == ""
    assert serve_in_a_process(storage_uri, 4, tmp_path) == ""

    data = cli_json(storage_uri, tmp_path)
    assert data["requests"] == 7
    assert (data["slow"], data["alerted"], data["delivery_failures"]) == (0, 0, 0)
    assert data["workers_seen"] == 2
    assert data["pid"] is None  # not this command's process
    assert data["monitored_seconds"] > 0
    assert data["scope"].startswith(f"every worker sharing {storage_uri} (")

    output = cli_stats(storage_uri, tmp_path)
    assert f"Scope: every worker sharing {storage_uri} (each sends its counts" in output
    assert "2 processes sent counts in the last 10 minutes." in output
    assert "this process" not in output
    table = rows(output)
    assert table["requests seen"] == "7"
    assert table["Mattermost tries failed"] == "0"
    assert re.fullmatch(r"\d+\.\d\d% of the monitored time .*", table["estimated overhead"])


def test_memory_store_shows_this_process_only(app: Flask) -> None:
    @app.get("/")
    def index() -> str:
        return "ok"

    PerfAlert(app, storage_uri="memory://")
    client = app.test_client()
    for _ in range(3):
        client.get("/")
    runner = app.test_cli_runner()
    result = runner.invoke(perfalert_cli, ["stats"])
    assert f"Scope: this process only (pid {os.getpid()})." in result.output
    assert rows(result.output)["requests seen"] == "3"
    data = json.loads(runner.invoke(perfalert_cli, ["stats", "--json"]).output)
    assert (data["scope"], data["pid"], data["requests"]) == ("this process", os.getpid(), 3)


def test_nothing_sent_yet(tmp_path: Path) -> None:
    output = cli_stats(f"sqlite://{tmp_path}/perfalert.db", tmp_path)
    assert "No worker has sent counts yet." in output
    assert rows(output)["requests seen"] == "0"


def test_a_forked_child_sends_only_its_own_counts(tmp_path: Path) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    script = """if True:
        import os, sys
        from apps.stats_app import app  # served 5 requests, not sent yet
        pid = os.fork()
        if pid == 0:
            with app.test_client() as client:
                client.get("/", buffered=True)
                client.get("/", buffered=True)
            sys.exit(0)  # exit handlers run: the child sends its 2
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))  # the parent sends its 5
    """
    run([sys.executable, "-c", script], app_env(uri, flush_interval=3600, warmup=5), tmp_path)
    data = cli_json(uri, tmp_path)
    assert data["requests"] == 7
    assert data["workers_seen"] == 2


# -- the store is away: counts wait, and are sent once -----------------------------------------


def test_the_same_batch_sent_twice_counts_once(storage_uri: str, clock: FakeClock) -> None:
    # A reply lost in a timeout: the batch was applied, and is sent again.
    store: Any = open_store(storage_uri, "perfalert:", clock)
    assert store.add_counters("shop", {"requests": 3, "monitored_seconds": 0.5}, ("w1", 1))
    assert store.add_counters("shop", {"requests": 3, "monitored_seconds": 0.5}, ("w1", 1))
    assert store.add_counters("shop", {"requests": 2}, ("w2", 1))
    assert store.add_counters("shop", {"requests": 1}, ("w1", 2))
    assert store.add_counters("blog", {"requests": 10}, ("w3", 1))  # another app
    counts = store.counters("shop")
    assert (counts["requests"], counts["monitored_seconds"]) == (6, 0.5)
    assert counts["workers_seen"] == 2
    assert counts["since"] == clock.now
    assert store.counters("blog")["requests"] == 10
    assert store.counters("nobody") == {}
    store.close()


def test_redis_counters_expire_by_themselves(redis_server: RedisServer, clock: FakeClock) -> None:
    store: Any = open_store(redis_server.url, "p:", clock)
    store.add_counters("shop", {"requests": 1}, ("w1", 1))
    client = redis_server.client()
    assert sorted(client.keys("*")) == [
        b"p:counters:shop",
        b"p:counters:shop:seen",
        b"p:counters:shop:senders",
    ]
    for key in client.keys("*"):
        assert 29 * 86400 < client.ttl(key) <= 30 * 86400
    store.close()


@pytest.fixture
def every_request_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_counters, "FLUSH_INTERVAL", 0.0)
    monkeypatch.setattr(_counters, "FIRST_FLUSH_DELAY", 0.0)


@pytest.mark.usefixtures("every_request_flushes")
def test_an_outage_keeps_the_counts_and_sends_them_once(
    app: Flask, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/")
    def index() -> str:
        return "ok"

    path = tmp_path / "perfalert.db"
    perf = PerfAlert(app, clock=clock, storage_uri=f"sqlite://{path}")
    store = perf._monitor(app).store
    assert isinstance(store, FallbackStore)
    client = app.test_client()
    shared = lambda: store.counters(app.name).get("requests")  # noqa: E731

    for _ in range(2):
        client.get("/")
    assert shared() == 2

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file for a long time
    try:
        for _ in range(3):
            client.get("/")  # each response is sent; the counts wait in this process
        clock.advance(RETRY_MAX)
        client.get("/")  # a retry, which fails too
        assert store.degraded
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert shared() == 2
    assert perf.stats(app)["requests"] == 6

    clock.advance(RETRY_MAX)
    client.get("/")  # the store answers again: the waiting counts, then this one
    assert not store.degraded
    assert shared() == 7
    for _ in range(3):
        client.get("/")
    assert shared() == 10  # nothing counted twice
    assert perf.stats(app)["requests"] == 10
    store_warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(store_warnings) == 1
    assert "counts wait in this process" in store_warnings[0].getMessage()


def test_the_last_requests_are_counted_without_another_request(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A burst, then silence: the requests after the burst's first batch reach
    # `flask perfalert stats` one flush interval later, not at the next request.
    monkeypatch.setattr(_counters, "FLUSH_INTERVAL", 0.5)
    monkeypatch.setattr(_counters, "FIRST_FLUSH_DELAY", 0.0)

    @app.get("/")
    def index() -> str:
        return "ok"

    perf = PerfAlert(app, storage_uri=f"sqlite://{tmp_path}/perfalert.db")
    store = perf._monitor(app).store
    client = app.test_client()
    for _ in range(5):
        client.get("/")
    assert store.counters(app.name)["requests"] == 1  # the first batch: the first request

    def counted() -> bool:
        return store.counters(app.name).get("requests") == 5

    wait_for(counted, timeout=10, interval=0.1, what="the burst's last requests counted")


@pytest.mark.usefixtures("every_request_flushes")
def test_counts_the_store_did_not_take_arrive_without_another_request(
    app: Flask, tmp_path: Path
) -> None:
    # The last requests of a burst, while another worker held the file: their counts
    # reach `flask perfalert stats` by themselves, not at this worker's next request.
    @app.get("/")
    def index() -> str:
        return "ok"

    path = tmp_path / "perfalert.db"
    perf = PerfAlert(app, storage_uri=f"sqlite://{path}")
    store = perf._monitor(app).store
    client = app.test_client()
    client.get("/")
    assert store.counters(app.name)["requests"] == 1

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for _ in range(3):
            client.get("/")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.counters(app.name)["requests"] == 1  # not taken while the file was held

    def counted() -> bool:
        return store.counters(app.name).get("requests") == 4

    wait_for(counted, timeout=10, interval=0.1, what="the waiting counts sent again")


@pytest.mark.usefixtures("every_request_flushes")
def test_redis_down_then_back(
    app: Flask, redis_server: RedisServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/")
    def index() -> str:
        return "ok"

    perf = PerfAlert(app, clock=clock, storage_uri=redis_server.url)
    store = perf._monitor(app).store
    client = app.test_client()
    redis_server.kill()
    for _ in range(4):
        assert client.get("/").status_code == 200
    assert store.degraded
    redis_server.start()  # empty, on the same port
    clock.advance(RETRY_MAX)
    client.get("/")
    assert store.counters(app.name)["requests"] == 5
    assert "is not available" in caplog.text


def test_a_delivery_at_exit_is_counted(tmp_path: Path) -> None:
    # Alert deliveries still running at exit finish first, then the counts are sent.
    uri = f"sqlite://{tmp_path}/perfalert.db"
    script = """if True:
        import time
        from apps.stats_app import app, perf
        from flask_perfalert.alerts.mattermost.worker import WORKER

        class Job:
            description = "a slow delivery"
            def run(self):
                time.sleep(0.3)
                perf._monitor(app).stats.add("delivered")
            def abandon(self, reason):
                raise AssertionError(reason)

        WORKER.submit(Job())
    """
    run([sys.executable, "-c", script], app_env(uri, flush_interval=3600, warmup=1), tmp_path)
    data = cli_json(uri, tmp_path)
    assert (data["requests"], data["delivered"]) == (1, 1)


def test_counts_that_cannot_be_sent_at_exit_are_named(tmp_path: Path) -> None:
    path = tmp_path / "perfalert.db"
    script = f"""if True:
        import sqlite3
        from apps.stats_app import app  # served 3 requests, not sent yet
        blocker = sqlite3.connect({str(path)!r}, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # still held when the process exits
    """
    env = app_env(f"sqlite://{path}", flush_interval=3600, warmup=3)
    stderr = run([sys.executable, "-c", script], env, tmp_path).stderr
    assert "last counts could not be sent to sqlite://" in stderr
    assert "requests 3" in stderr
    assert cli_json(f"sqlite://{path}", tmp_path)["requests"] == 0


# -- gunicorn -----------------------------------------------------------------------------------


@pytest.mark.server
def test_gunicorn_two_workers_sqlite(tmp_path: Path) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    env = app_env(uri, flush_interval=0)  # every response is followed by a batch
    with Gunicorn(APP, tmp_path / "host", env, workers=2) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(http_get, [server.base_url + "/"] * 40))
        assert [status for status, _ in answers] == [200] * 40
        # The start-up check (``ready_path``) was one more request.
        served = 41
        workers = {int(body) for _, body in answers}

        def counted() -> dict[str, Any] | None:
            data = cli_json(uri, tmp_path)
            return data if data["requests"] >= served else None

        data = wait_for(counted, timeout=20, interval=0.2, what=f"{served} requests counted")
        assert data["requests"] == served
        assert len(workers) <= data["workers_seen"] <= 2


@pytest.mark.server
def test_gunicorn_preload_does_not_count_the_master_twice(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The master serves 3 requests when it imports the app, then forks 2 workers
    # that inherit those counts. Counts are sent only at exit.
    env = app_env(redis_server.url, flush_interval=3600, warmup=3)
    with Gunicorn(APP, tmp_path / "host", env, workers=2, preload=True) as server:
        for _ in range(10):
            assert server.get("/")[0] == 200
        assert cli_json(redis_server.url, tmp_path)["requests"] == 0  # nothing sent yet
    # Stopped: every worker, then the master, sent its own counts.
    data = cli_json(redis_server.url, tmp_path)
    assert data["requests"] == 3 + 10 + 1  # warm-up, requests, the start-up check
    assert data["workers_seen"] >= 2
