"""The built-in file subscriber: one HTML report per new slow event, after the response.

Report names, permissions, retention and disk errors are in test_report_files.py.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from flask import Flask, Response, request, stream_with_context

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request

THRESHOLD = 0.1
SLOW = 0.12


def reports(folder: Path) -> list[Path]:
    return sorted(folder.glob("perfalert-*.html")) if folder.exists() else []


def routes(app: Flask) -> Flask:
    @app.route("/orders", methods=["GET", "POST"])
    def orders() -> tuple[str, int]:
        customer = request.form.get("customer", "nobody")
        time.sleep(SLOW)
        return f"order for {customer}", 201

    @app.route("/other")
    def other() -> str:
        time.sleep(SLOW)
        return "other"

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    @app.route("/stream")
    def stream() -> Response:
        def generate() -> Iterator[str]:
            yield "one,"
            time.sleep(SLOW)
            yield "two"

        return Response(stream_with_context(generate()))

    return app


class Header(HTMLParser):
    """The report header's tables (``th`` -> ``td`` text) and its text, and what follows it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, str]] = {}
        self.text: list[str] = []
        self.order: list[str] = []  # ids of the header and of the call tree's box, in order
        self._table: str | None = None
        self._cell: str | None = None
        self._key = ""
        self._in_header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident in ("perfalert-header", "app"):
            self.order.append(ident)
        if ident == "perfalert-header":
            self._in_header = True
        if tag == "table" and ident:
            self._table = ident
            self.tables[ident] = {}
        if tag in ("th", "td"):
            self._cell = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._in_header = False
        if tag == "table":
            self._table = None
        if tag in ("th", "td"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_header:
            self.text.append(data)
        if self._table is None or self._cell is None:
            return
        if self._cell == "th":
            self._key = data
        else:
            self.tables[self._table][self._key] = data


def parse(page: str) -> Header:
    header = Header()
    header.feed(page)
    return header


# -- when ---------------------------------------------------------------------------------------
def test_the_report_is_written_only_after_the_response_is_closed(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    app.testing = False  # as under a real server: the events thread, after the response
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/orders", buffered=False)
    assert response.get_data() == b"order for nobody"  # the client has every byte...
    wait_delivery()
    assert reports(report_dir) == []  # ...but the server has not closed the response yet
    response.close()
    wait_delivery()
    assert len(reports(report_dir)) == 1


def test_a_response_nobody_closes_is_reported_when_it_is_discarded(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    app.testing = False
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/orders", buffered=False)  # never closed
    assert response.get_data() == b"order for nobody"
    wait_delivery()
    assert reports(report_dir) == []
    del response
    gc.collect()
    wait_delivery()
    assert reports(report_dir) == []  # the collector runs nothing of ours where it is
    app.test_client().get("/fast")  # the next request hands it on, before its own work
    wait_delivery()
    assert len(reports(report_dir)) == 1


def test_when_testing_the_report_is_there_when_the_client_returns(
    app: Flask, report_dir: Path, events: list[SlowRequestEvent]
) -> None:
    assert app.testing
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/orders", buffered=False)  # not closed
    assert len(events) == 1 and len(reports(report_dir)) == 1
    assert events[0].report_path == reports(report_dir)[0]
    response.close()
    assert len(events) == 1  # closing it later sends nothing again


def test_a_streamed_response_is_reported_after_its_last_chunk_and_close(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/stream", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"one,"
    wait_delivery()
    assert reports(report_dir) == []  # the view returned long ago; the body is not done
    assert list(chunks) == [b"two"]
    response.close()
    wait_delivery()
    (report,) = reports(report_dir)
    assert "stream" in report.name


def test_the_report_is_rendered_and_written_by_the_thread_that_sends_the_signal(
    app: Flask, report_dir: Path, monkeypatch: pytest.MonkeyPatch, wait_delivery: Any
) -> None:
    # The signal is sent after the response (see the tests above), never from a
    # request: the subscriber does its disk work right there, so a report is on
    # disk as soon as the signal has been handled, and no job is queued.
    from flask_perfalert import report as report_module

    app.testing = False  # as under a real server
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    render = report_module.render_report
    rendered_on: list[int] = []
    signalled_on: list[int] = []

    def recording(event: SlowRequestEvent) -> str:
        rendered_on.append(threading.get_ident())
        return render(event)

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        signalled_on.append(threading.get_ident())

    monkeypatch.setattr(report_module, "render_report", recording)
    perf_slow_request.connect(receiver, sender=app)
    try:
        app.test_client().get("/orders")
        wait_delivery()
    finally:
        perf_slow_request.disconnect(receiver, sender=app)
    assert rendered_on == signalled_on and len(rendered_on) == 1
    assert rendered_on != [threading.get_ident()]  # the events thread, not the request's
    assert len(reports(report_dir)) == 1


# -- how many -----------------------------------------------------------------------------------
def test_one_report_per_new_slow_event(
    app: Flask, report_dir: Path, clock: FakeClock, wait_delivery: Any
) -> None:
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD, clock=clock, alert_window_days=1)
    client = app.test_client()
    for _ in range(3):
        client.get("/orders")  # one key: one report
    client.post("/orders")  # another method: another key
    client.get("/other")
    client.get("/fast")  # not slow: nothing
    wait_delivery()
    names = [p.name for p in reports(report_dir)]
    assert len(names) == 3
    assert sum("-orders-" in n for n in names) == 2 and sum("-other-" in n for n in names) == 1
    clock.advance(86400 + 1)
    client.get("/orders")
    wait_delivery()
    assert len(reports(report_dir)) == 4


def test_the_folder_is_created_when_missing(app: Flask, tmp_path: Path, wait_delivery: Any) -> None:
    folder = tmp_path / "not" / "yet" / "there"
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD, file_dir=folder)
    app.test_client().get("/orders")
    wait_delivery()
    assert len(reports(folder)) == 1


def test_file_enabled_false_writes_nothing(
    app: Flask,
    report_dir: Path,
    events: list[SlowRequestEvent],
    wait_delivery: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes(app)
    app.config["PERFALERT_FILE_ENABLED"] = False
    with caplog.at_level(logging.INFO, "flask_perfalert"):
        PerfAlert(app, threshold_seconds=THRESHOLD)
        app.test_client().get("/orders")
        wait_delivery()
    assert len(events) == 1  # the signal is still sent
    assert not report_dir.exists()
    assert "no report file (PERFALERT_FILE_ENABLED is off)" in caplog.text


# -- what ------------------------------------------------------------------------------------------
def test_the_header_shows_the_request_above_the_call_tree(
    app: Flask,
    report_dir: Path,
    events: list[SlowRequestEvent],
    wait_delivery: Any,
) -> None:
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().post("/orders?page=2", data={"customer": "Ada"})
    assert response.status_code == 201
    wait_delivery()
    (event,) = events
    (report,) = reports(report_dir)
    header = parse(report.read_text(encoding="utf-8"))
    assert header.order == ["perfalert-header", "app"]  # a call tree, below the header
    rows = header.tables["perfalert-request"]
    assert rows["Endpoint"] == "orders"
    assert rows["Method"] == "POST"
    assert rows["URL"] == "http://localhost/orders?page=2"
    assert rows["Status"] == "201"
    assert rows["Time"] == event.timestamp.isoformat(timespec="milliseconds")
    assert header.tables["perfalert-params"] == {"page": "2", "customer": "Ada"}
    text = " ".join(header.text)
    assert f"POST /orders took {event.duration:.3f} s" in " ".join(text.split())
    assert f"Threshold {THRESHOLD:.3f} s" in text


def test_the_report_of_an_error(app: Flask, report_dir: Path, wait_delivery: Any) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.route("/fails")
    def fails() -> str:
        time.sleep(SLOW)
        raise LookupError("gone")

    PerfAlert(app, threshold_seconds=THRESHOLD)
    with pytest.raises(LookupError):
        app.test_client().get("/fails")
    wait_delivery()
    (report,) = reports(report_dir)
    assert parse(report.read_text(encoding="utf-8")).tables["perfalert-request"]["Status"] == "500"


def test_the_report_of_a_watched_function(
    app: Flask, report_dir: Path, events: list[SlowRequestEvent], wait_delivery: Any
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)

    @perf.watch
    def rebuild_index() -> None:
        time.sleep(SLOW)

    rebuild_index()
    wait_delivery()
    (report,) = reports(report_dir)
    header = parse(report.read_text(encoding="utf-8"))
    rows = header.tables["perfalert-request"]
    assert rows["Function"] == events[0].endpoint
    assert "Method" not in rows and "URL" not in rows and "Status" not in rows
    assert f"{rebuild_index.__qualname__}() took" in " ".join(header.text)


def test_one_warning_line_per_alert_with_the_path_and_the_summary(
    app: Flask,
    report_dir: Path,
    events: list[SlowRequestEvent],
    wait_delivery: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    with caplog.at_level(logging.INFO, "flask_perfalert"):
        app.test_client().get("/orders")
        app.test_client().get("/orders")  # a duplicate: no second line
        wait_delivery()
    (record,) = [
        r
        for r in caplog.records
        if r.name.startswith("flask_perfalert") and r.levelno >= logging.INFO
    ]
    assert record.levelno == logging.WARNING  # shown by a default Flask app
    assert record.name == "flask_perfalert.alerts"  # which can be turned down on its own
    (report,) = reports(report_dir)
    event = events[0]
    message = record.getMessage()
    assert message.endswith(str(report))
    assert event.summary() in message
    assert event.summary().startswith("GET orders (201) took ")
