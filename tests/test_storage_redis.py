"""The Redis store against a real ``redis-server`` on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, claim_race, make_perf
from flask import Flask
from servers import RedisServer, free_port, redis_server, wait_for

from flask_perfalert import SlowRequestEvent
from flask_perfalert.storage import FallbackStore, open_store
from flask_perfalert.storage.fallback import HOLD_MAX, RETRY_MIN

__all__ = ["redis_server"]  # the fixture, imported for pytest

pytestmark = pytest.mark.server

WINDOW = 600.0


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_perfalert" and r.levelno >= logging.WARNING
    ]


@pytest.fixture
def store(redis_server: RedisServer, clock: FakeClock) -> Iterator[Any]:
    opened = open_store(redis_server.url, "perfalert:", clock)
    yield opened
    opened.close()


def test_one_claim_per_key_and_the_key_expires_on_the_server(
    store: Any, redis_server: RedisServer
) -> None:
    assert store.claim("GET slow", WINDOW)
    assert not store.claim("GET slow", WINDOW)
    assert store.claim("GET other", WINDOW)
    client = redis_server.client()
    ttl = client.pttl("perfalert:GET slow")
    assert 0 < ttl <= WINDOW * 1000
    assert client.get("perfalert:GET slow") == f"{socket.gethostname()}:{os.getpid()}".encode()
    assert store.description == redis_server.url


def test_a_short_window_ends_by_itself(store: Any) -> None:
    assert store.claim("GET slow", 0.05)
    assert not store.claim("GET slow", 60)  # inside the window
    # Redis removes the key when its 50 ms are over; nothing is deleted by us.
    wait_for(lambda: store.claim("GET slow", 60), timeout=5, what="the key to expire")


def test_several_apps_share_one_redis_by_prefix(
    redis_server: RedisServer, clock: FakeClock
) -> None:
    shop = open_store(redis_server.url, "shop:", clock)
    blog = open_store(redis_server.url, "blog:", clock)
    assert shop.claim("GET index", WINDOW)
    assert blog.claim("GET index", WINDOW)
    assert not shop.claim("GET index", WINDOW)
    assert sorted(redis_server.client().keys("*")) == [b"blog:GET index", b"shop:GET index"]


@pytest.mark.parametrize("separate", [False, True], ids=["one-pool", "100-clients"])
def test_100_threads_racing_one_winner(
    redis_server: RedisServer, clock: FakeClock, separate: bool
) -> None:
    first = open_store(redis_server.url, "p:", clock)
    stores = [open_store(redis_server.url, "p:", clock) if separate else first for _ in range(100)]
    results = claim_race(stores, "GET slow", WINDOW)
    assert len(results) == 100
    assert results.count(True) == 1
    assert not any(s.degraded for s in stores)
    for s in {id(s): s for s in stores}.values():
        s.close()


def test_killed_mid_run_falls_back_then_shares_again(
    redis_server: RedisServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_perfalert")
    store = open_store(redis_server.url, "p:", clock)
    other_host = open_store(redis_server.url, "p:", clock)
    assert isinstance(store, FallbackStore)
    assert store.claim("GET a", WINDOW)

    redis_server.kill()
    results = [store.claim("GET b", WINDOW) for _ in range(20)]
    assert results == [True] + [False] * 19  # still alerts, once per key in this process
    assert not store.claim("GET a", WINDOW)  # this process saw it claimed: no second alert
    for _ in range(3):
        clock.advance(RETRY_MIN * 8)
        store.claim("GET c", WINDOW)  # retries fail quietly
    [warning] = warnings_of(caplog)
    assert f"{redis_server.url} is not available" in warning
    assert "ConnectionError" in warning

    redis_server.start()  # same port, empty: it kept nothing
    clock.advance(60)
    assert not store.claim("GET b", WINDOW)  # handed over first, so no second alert here
    assert not store.degraded
    assert store.claim("GET d", WINDOW)  # decided by Redis again:
    assert not other_host.claim("GET d", WINDOW)
    assert not other_host.claim("GET b", WINDOW)  # and the keys claimed meanwhile are shared
    assert not other_host.claim("GET c", WINDOW)
    assert sorted(redis_server.client().keys("*")) == [b"p:GET b", b"p:GET c", b"p:GET d"]
    assert "is back; de-duplication is shared again" in caplog.text
    assert len(warnings_of(caplog)) == 1


def test_unreachable_at_start_the_app_serves_and_alerts(
    app: Flask,
    clock: FakeClock,
    events: list[SlowRequestEvent],
    report_dir: Path,
    caplog: pytest.LogCaptureFixture,
    wait_delivery: Any,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there

    @app.route("/slow")
    def slow() -> str:
        time.sleep(0.03)
        return "done"

    make_perf(app, clock=clock, storage_uri=url, threshold_seconds=0.01)
    client = app.test_client()
    for _ in range(10):
        assert client.get("/slow").status_code == 200
    # The first alert waits for Redis to decide it; the other nine are its duplicates.
    assert [e.duplicate for e in events] == [True] * 9
    [warning] = warnings_of(caplog)
    assert url in warning
    clock.advance(HOLD_MAX)  # Redis never comes: the alert is decided here, not lost
    wait_for(lambda: len(events) == 10, timeout=15, what="the held alert")
    assert sorted(e.duplicate for e in events) == [False] + [True] * 9
    # Sent from the store's thread: the file subscriber may run after the receiver above.
    wait_for(lambda: list(report_dir.glob("perfalert-*.html")), timeout=15, what="the report")
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1


def test_a_server_that_never_answers_costs_one_short_timeout(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The kernel accepts the connection; nobody ever reads or replies.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        store = open_store(f"redis://127.0.0.1:{port}/0", "p:", clock)
        done: list[bool] = []
        worker = threading.Thread(target=lambda: done.append(store.claim("GET a", WINDOW)))
        worker.start()
        worker.join(10)  # a bound for the test, not a measurement
        assert done == [True]
    assert "Timeout" in warnings_of(caplog)[0]


def test_password_in_the_uri_is_used_and_never_shown(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(tmp_path / "redis", extra_args=["--requirepass", "s3cret-pw"]) as server:
        good = open_store(f"redis://:s3cret-pw@127.0.0.1:{server.port}/0", "p:", clock)
        assert good.claim("GET a", WINDOW)
        assert not good.claim("GET a", WINDOW)
        assert not good.degraded
        assert good.description == f"redis://127.0.0.1:{server.port}/0"
        wrong = open_store(f"redis://:wrong-pw@127.0.0.1:{server.port}/0", "p:", clock)
        assert wrong.claim("GET b", WINDOW)  # decided in memory
        assert wrong.degraded
    text = caplog.text
    assert "not available" in text
    assert "s3cret-pw" not in text and "wrong-pw" not in text


def test_rediss_tls(tmp_path: Path, clock: FakeClock) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    tls = [
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    ]  # fmt: skip
    server = RedisServer(tmp_path / "redis", port=port, extra_args=tls)
    server.ping = lambda timeout=0.5: _tls_answers(port, cert)  # type: ignore[method-assign]
    with server:
        store = open_store(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", "p:", clock)
        assert store.claim("GET a", WINDOW)
        assert not store.claim("GET a", WINDOW)
        assert not store.degraded
        assert store.description == f"rediss://127.0.0.1:{port}/0"
        plain = open_store(f"redis://127.0.0.1:{port}/0", "p:", clock)
        assert plain.degraded  # a plain connection to a TLS port: falls back, no hang


def _tls_answers(port: int, cert: Path) -> bool:
    import redis

    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert), socket_timeout=1
        )
        return bool(client.ping())
    except redis.RedisError:
        return False


TWO_HOSTS = """
import sys, time
from flask import Flask
from flask_perfalert import PerfAlert
app = Flask("shop")
app.config.update(PERFALERT_STORAGE_URI=sys.argv[1], PERFALERT_DATA_DIR=sys.argv[2])
PerfAlert(app, threshold_seconds=0.05)
app.add_url_rule("/slow", "slow", lambda: str(time.sleep(0.08)))
client = app.test_client()
client.get("/warm-up")  # a 404: the process is ready
start = float(sys.argv[3])
while time.time() < start:
    pass
client.get("/slow").close()
"""


def test_two_hosts_sharing_redis_alert_once_for_one_endpoint(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    for trial in range(3):
        start = time.time() + 2.0  # both make their slow request at the same moment
        hosts = [tmp_path / f"trial{trial}-host{n}" for n in (1, 2)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", TWO_HOSTS, redis_server.url, str(host), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for host in hosts
        ]
        outputs = [proc.communicate(timeout=60)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        reports = [r for host in hosts for r in host.glob("shop/reports/perfalert-*.html")]
        assert len(reports) == 1, outputs
        assert sum(output.count("Slow request: GET slow") for output in outputs) == 1
        redis_server.client().flushall()  # the next trial starts a new window
