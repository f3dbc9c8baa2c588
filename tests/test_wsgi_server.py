"""Through real WSGI servers on 127.0.0.1: Werkzeug's threaded server and gunicorn."""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, jsonify, request, stream_with_context
from servers import Gunicorn, wait_for
from werkzeug.serving import make_server

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request

THRESHOLD = 0.1
SLOW = 0.12
TIMEOUT = 15.0


def build_app(name: str, report_dir: Path) -> Flask:
    app = Flask(name)
    app.config["PERFALERT_FILE_DIR"] = str(report_dir)

    @app.route("/slow")
    def slow() -> str:
        time.sleep(SLOW)
        return "slow ünïcode body\n" * 10

    @app.route("/fast")
    def fast() -> str:
        return "fast"

    @app.route("/json", methods=["POST"])
    def json_view() -> Response:
        data = request.get_json()
        time.sleep(SLOW)
        return jsonify(sorted(data.items()))

    @app.route("/stream")
    def stream() -> Response:
        def generate() -> Iterator[bytes]:
            for i in range(3):
                time.sleep(SLOW / 3)
                yield f"chunk {i} of {request.path}\n".encode()

        return Response(stream_with_context(generate()), mimetype="text/plain")

    @app.route("/error")
    def error() -> str:
        time.sleep(SLOW)
        raise RuntimeError("view failed")

    return app


@contextmanager
def serve(app: Flask) -> Iterator[int]:
    """``app`` on Werkzeug's threaded server on a free port of 127.0.0.1; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def fetch(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() != "date"]
        return response.status, kept, data
    finally:
        conn.close()


@pytest.fixture
def quiet_werkzeug() -> Iterator[None]:
    """The server's access log and Flask's error log would only add noise to the output."""
    loggers = [logging.getLogger(name) for name in ("werkzeug", "test_wsgi_server", "bare")]
    for logger in loggers:
        logger.disabled = True
    yield
    for logger in loggers:
        logger.disabled = False


REQUESTS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/slow", None, {}),
    ("GET", "/fast", None, {}),
    ("HEAD", "/slow", None, {}),
    ("POST", "/json?x=1", b'{"b": 2, "a": [1, "x"]}', {"Content-Type": "application/json"}),
    ("GET", "/stream", None, {}),
    ("GET", "/missing", None, {}),
    ("GET", "/error", None, {}),
]


def test_responses_are_byte_identical_and_each_slow_one_alerts_once(
    tmp_path: Path, report_dir: Path, wait_delivery: Any, quiet_werkzeug: None
) -> None:
    bare = build_app("bare", tmp_path / "unused")
    monitored = build_app(__name__, report_dir)
    PerfAlert(monitored, threshold_seconds=THRESHOLD)
    received: list[tuple[Any, SlowRequestEvent]] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append((sender, event))

    with perf_slow_request.connected_to(receiver, sender=monitored):
        with serve(bare) as bare_port, serve(monitored) as port:
            for method, path, body, headers in REQUESTS:
                expected = fetch(bare_port, method, path, body, headers)
                got = fetch(port, method, path, body, headers)
                assert got == expected, (method, path)
        wait_delivery()

    assert all(sender is monitored for sender, _ in received)
    assert sorted((e.method, e.endpoint, e.status_code) for _, e in received) == sorted(
        [
            ("GET", "slow", 200),
            ("HEAD", "slow", 200),
            ("POST", "json_view", 200),
            ("GET", "stream", 200),
            ("GET", "error", 500),
        ]
    )
    json_event = next(e for _, e in received if e.endpoint == "json_view")
    assert json_event.params == {"x": "1", "b": 2, "a": [1, "x"]}
    assert json_event.url == f"http://127.0.0.1:{port}/json?x=1"
    stream_event = next(e for _, e in received if e.endpoint == "stream")
    assert stream_event.duration >= SLOW
    assert len(list(report_dir.glob("perfalert-*.html"))) == len(received)


def test_a_slow_request_gives_one_event_and_one_report_with_a_profile(
    report_dir: Path, wait_delivery: Any, quiet_werkzeug: None
) -> None:
    app = build_app(__name__, report_dir)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    received: list[SlowRequestEvent] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append(event)

    with perf_slow_request.connected_to(receiver, sender=app), serve(app) as port:
        status, _, body = fetch(port, "GET", "/slow")
        assert status == 200
        wait_for(lambda: received, TIMEOUT, what="the event")
        fetch(port, "GET", "/slow")  # a duplicate: an event, no report
        wait_for(lambda: len(received) == 2, TIMEOUT, what="the second event")
        wait_delivery()
    assert [e.duplicate for e in received] == [False, True]
    assert received[0].profile is not None, received[0].profile_note
    (report,) = report_dir.glob("perfalert-*.html")
    page = report.read_text(encoding="utf-8")
    assert "GET /slow took" in page and f"127.0.0.1:{port}" in page


def test_a_slow_receiver_never_delays_the_response(report_dir: Path, quiet_werkzeug: None) -> None:
    app = build_app(__name__, report_dir)
    PerfAlert(app, threshold_seconds=THRESHOLD, file_enabled=False)
    release = threading.Event()
    finished: list[bool] = []

    def slow_receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        # Blocks until the test has the whole response: if receivers ran before the
        # response was sent, the client would wait for it and this would time out.
        finished.append(release.wait(TIMEOUT))

    with perf_slow_request.connected_to(slow_receiver, sender=app), serve(app) as port:
        for path in ("/slow", "/stream"):
            status, _, body = fetch(port, "GET", path)
            assert status == 200 and body
            release.set()
            wait_for(lambda: finished, TIMEOUT, what="the receiver")
            assert finished == [True]
            finished.clear()
            release.clear()


@pytest.mark.allow_internal_errors
def test_a_raising_receiver_never_changes_the_response(
    tmp_path: Path, report_dir: Path, quiet_werkzeug: None
) -> None:
    bare = build_app("bare", tmp_path / "unused")
    app = build_app(__name__, report_dir)
    PerfAlert(app, threshold_seconds=THRESHOLD, file_enabled=False)
    calls: list[str] = []

    def failing(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        calls.append(event.key)
        raise RuntimeError("receiver failed")

    with perf_slow_request.connected_to(failing, sender=app):
        with serve(bare) as bare_port, serve(app) as port:
            for path in ("/slow", "/stream"):
                assert fetch(port, "GET", path) == fetch(bare_port, "GET", path)
            wait_for(lambda: len(calls) == 2, TIMEOUT, what="the receiver calls")
    assert sorted(calls) == ["GET slow", "GET stream"]


@pytest.mark.server
def test_gunicorn_sync_worker_one_report_per_key(tmp_path: Path, report_dir: Path) -> None:
    """A sync worker serves on its main thread: the sampler ticks on SIGALRM there."""
    events_file = tmp_path / "events.txt"
    env = {
        "PERFALERT_THRESHOLD_SECONDS": str(THRESHOLD),
        "PERFALERT_FILE_DIR": str(report_dir),
        "STORAGE_APP_EVENTS": str(events_file),
        "STORAGE_APP_SLEEP": str(SLOW),
    }
    with Gunicorn("apps.storage_app:app", tmp_path / "gunicorn", env) as server:
        for path in ("/slow/a", "/slow/a", "/slow/b", "/"):
            status, _ = server.get(path)
            assert status == 200
        wait_for(
            lambda: events_file.exists() and len(events_file.read_text().splitlines()) == 3,
            TIMEOUT,
            what="three events",
        )
        wait_for(
            lambda: len(list(report_dir.glob("perfalert-*.html"))) == 2,
            TIMEOUT,
            what="two reports",
        )
    lines = [line.split()[1:] for line in events_file.read_text().splitlines()]
    assert lines == [["slow_a", "False"], ["slow_a", "True"], ["slow_b", "False"]]
    pages = [p.read_text(encoding="utf-8") for p in report_dir.glob("perfalert-*.html")]
    assert all("Sampled every" in page for page in pages), "a report without a profile"
