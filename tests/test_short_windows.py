"""A de-duplication window of seconds ends, in every store: a new alert after it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import close_monitoring
from flask import Flask
from profiles import spin
from servers import RedisServer, redis_server, wait_for

from flask_perfalert import PerfAlert

__all__ = ["redis_server"]  # the fixture, imported for pytest

TWO_SECONDS = 2 / 86400


def alerted_twice(app: Flask, storage_uri: str | None, caplog: pytest.LogCaptureFixture) -> None:
    if storage_uri is not None:
        app.config["PERFALERT_STORAGE_URI"] = storage_uri
    app.config["PERFALERT_ALERT_WINDOW_DAYS"] = TWO_SECONDS
    perf = PerfAlert(app, threshold_seconds=0.05, file_enabled=False, profiler="none")

    @app.route("/slow")
    def slow() -> str:
        return str(spin(0.06))

    client = app.test_client()
    try:
        client.get("/slow")
        client.get("/slow")  # inside the window: counted, not alerted
        wait_for(lambda: perf.stats(app)["slow"] == 2)
        assert (perf.stats(app)["alerted"], perf.stats(app)["suppressed"]) == (1, 1)
        time.sleep(2.3)
        client.get("/slow")  # the window is over: a new alert
        wait_for(lambda: perf.stats(app)["slow"] == 3)
        assert perf.stats(app)["alerted"] == 2
    finally:
        close_monitoring(app)
    # The setting was taken as it is, with no warning about it.
    assert not [r for r in caplog.records if "ALERT_WINDOW_DAYS" in r.getMessage()]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_window_of_two_seconds_ends(
    app: Flask, caplog: pytest.LogCaptureFixture, tmp_path: Any, store: str
) -> None:
    uri = "memory://" if store == "memory" else f"sqlite://{tmp_path}/perfalert.db"
    alerted_twice(app, uri, caplog)


@pytest.mark.server
def test_a_window_of_two_seconds_ends_in_redis(
    app: Flask, caplog: pytest.LogCaptureFixture, redis_server: RedisServer
) -> None:
    alerted_twice(app, redis_server.url, caplog)
