"""What kind of time it was: grouping checked against the truth each view measures."""

from __future__ import annotations

import http.server
import logging
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string
from profiles import spin

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert.time_by_kind import (
    APP,
    DATABASE,
    HTTP,
    TEMPLATES,
    WAITING,
    TimeShare,
    time_by_kind,
)

#: The grouping must be within this many points of the truth.
TOLERANCE = 0.10


class SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.25)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"done")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    """A slow HTTP service on 127.0.0.1, as a view's upstream."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def share_of(shares: list[TimeShare], kind: str) -> float:
    return sum(s.share for s in shares if s.kind == kind)


@pytest.fixture
def kinds_app(app: Flask, upstream: str) -> Flask:
    PerfAlert(app, threshold_seconds=0.1, sample_after=0, sample_interval=0.002)
    app.config["TRUTH"] = {}
    truth: dict[str, float] = app.config["TRUTH"]

    @app.get("/orders")
    def orders() -> str:  # a SQLite-backed view
        db = sqlite3.connect(":memory:")
        began = time.perf_counter()
        db.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2500000)"
            " SELECT sum(x) FROM n"
        ).fetchall()
        queried = time.perf_counter()
        db.close()
        spin(0.12)
        truth["orders"] = (queried - began) / (time.perf_counter() - began)
        return "ok"

    @app.get("/prices")
    def prices() -> str:  # a view calling another service
        began = time.perf_counter()
        urllib.request.urlopen(upstream, timeout=10).read()
        called = time.perf_counter()
        spin(0.1)
        truth["prices"] = (called - began) / (time.perf_counter() - began)
        return "ok"

    @app.get("/catalog")
    def catalog() -> str:  # a template view
        began = time.perf_counter()
        html = render_template_string(
            "<table>{% for i in rows %}<tr><td>{{ i }}</td><td>{{ i * 7 % 13 }}</td>"
            "</tr>{% endfor %}</table>",
            rows=range(60_000),
        )
        rendered = time.perf_counter()
        spin(0.1)
        truth["catalog"] = (rendered - began) / (time.perf_counter() - began)
        return str(len(html))

    @app.get("/nap")
    def nap() -> str:
        time.sleep(0.2)
        spin(0.05)
        return "ok"

    return app


@pytest.mark.parametrize(
    ("path", "kind", "source"),
    [("/orders", DATABASE, "sqlite3"), ("/prices", HTTP, "urllib"), ("/catalog", TEMPLATES, "")],
)
def test_the_grouping_matches_what_the_view_measured(
    kinds_app: Flask, events: list[SlowRequestEvent], path: str, kind: str, source: str
) -> None:
    assert kinds_app.test_client().get(path).status_code == 200
    (event,) = events
    truth = kinds_app.config["TRUTH"][path.strip("/")]
    shares = event.time_by_kind
    assert shares == time_by_kind(event.profile)  # read off the profile, nothing else
    assert abs(share_of(shares, kind) - truth) <= TOLERANCE, (truth, shares)
    assert abs(share_of(shares, APP) - (1 - truth)) <= TOLERANCE, (truth, shares)
    main = next(s for s in shares if s.kind == kind)
    assert source in main.label()
    assert main.hot_frames and sum(s.share for s in shares) == pytest.approx(1.0)


def test_sleep_counts_as_waiting(kinds_app: Flask, events: list[SlowRequestEvent]) -> None:
    kinds_app.test_client().get("/nap")
    (event,) = events
    assert share_of(event.time_by_kind, WAITING) == pytest.approx(0.8, abs=TOLERANCE)


def test_the_line_the_report_and_the_log_say_it(
    kinds_app: Flask,
    events: list[SlowRequestEvent],
    report_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "flask_perfalert.alerts"):
        kinds_app.test_client().get("/orders")
    (event,) = events
    line = event.time_summary()
    assert line.startswith(("8", "7", "9")) and "% database (sqlite3)" in line
    assert "% app code (profiles)" in line  # where spin() is
    assert line in caplog.text
    page = (event.report_path or Path("missing")).read_text(encoding="utf-8")
    assert 'id="perfalert-kinds"' in page and "database (sqlite3)" in page


def test_no_profile_no_kinds(app: Flask, events: list[SlowRequestEvent]) -> None:
    PerfAlert(app, threshold_seconds=0.05, profiler="none")
    app.add_url_rule("/", "index", lambda: str(time.sleep(0.06)))
    app.test_client().get("/")
    (event,) = events
    assert event.time_by_kind == [] and event.time_summary() == ""
