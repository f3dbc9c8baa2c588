"""A response nobody closes is timed to the end of the app's work, never to its discard.

A WSGI server always closes the response; a test often does not (Flask's own
suite keeps streamed responses unread until the end). The time such a response
lay unread is not the request's.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask, stream_with_context

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert.events_thread import EVENTS
from flask_perfalert.profiling.timer import run_later


def discard(response: object) -> None:
    del response
    gc.collect()
    run_later()  # what the next request (or the exit) would do
    assert EVENTS.wait_idle(10)


@pytest.mark.parametrize("testing", [True, False], ids=["testing", "not-testing"])
@pytest.mark.parametrize("kind", ["generator", "plain-wsgi-generator", "plain-wsgi-list"])
def test_an_unclosed_fast_response_is_not_slow(
    app: Flask,
    events: list[SlowRequestEvent],
    caplog: pytest.LogCaptureFixture,
    testing: bool,
    kind: str,
) -> None:
    app.testing = testing

    @app.route("/stream")
    def stream() -> object:
        def chunks() -> Iterator[str]:
            yield "a"
            yield "b"

        return app.response_class(stream_with_context(chunks()))

    if kind.startswith("plain-wsgi"):  # a WSGI app of another framework, wrapped by Flask's

        def plain(environ: dict[str, object], start_response: Any) -> Iterable[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            if kind == "plain-wsgi-list":
                return [b"ab"]
            return (chunk for chunk in (b"a", b"b"))

        app.wsgi_app = plain  # type: ignore[method-assign,assignment]
    perf = PerfAlert(app, threshold_seconds=0.1)

    client = app.test_client()
    response = client.get("/stream", buffered=False)
    assert response.status_code == 200
    time.sleep(0.25)  # unread, unclosed, past the threshold
    discard(response)
    del response
    discard(None)
    assert events == []
    assert perf.stats(app)["slow"] == 0
    assert "Slow request" not in caplog.text


def test_a_streamed_response_slow_while_produced_still_alerts(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    app.testing = False
    PerfAlert(app, threshold_seconds=0.1)

    @app.route("/stream")
    def stream() -> object:
        def chunks() -> Iterator[str]:
            for _ in range(3):
                time.sleep(0.06)
                yield "x"

        return app.response_class(chunks())

    with app.test_client() as client:
        response = client.get("/stream")  # buffered: read, then closed
        assert response.data == b"xxx"
        response.close()
    assert EVENTS.wait_idle(10)
    [event] = events
    assert event.endpoint == "stream" and event.duration >= 0.18
