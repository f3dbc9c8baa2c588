"""The app's teardown functions and context signals run exactly as often with us as without.

The same app is built twice, once with ``PerfAlert(app)`` and every request
slow, and both serve the same requests through Flask's test client, with the
responses closed (``buffered=True``, as a WSGI server does) and not closed (a
plain ``client.get()``). What the app can see of its contexts (its
``teardown_appcontext`` and ``teardown_request`` functions, Flask's context
and request signals) must be the same list, call for call.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, signals, stream_with_context

from flask_perfalert import PerfAlert

WATCHED_SIGNALS = [
    "appcontext_pushed",
    "appcontext_popped",
    "appcontext_tearing_down",
    "request_started",
    "request_finished",
    "request_tearing_down",
    "got_request_exception",
]


class TeardownFailed(Exception):
    pass


def make_app(report_dir: Path, perfalert: bool, failing_teardown: bool = False) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, PROPAGATE_EXCEPTIONS=False)
    app.extensions["seen"] = seen = []

    @app.teardown_appcontext
    def appcontext_teardown(exc: BaseException | None) -> None:
        seen.append(f"teardown_appcontext({type(exc).__name__ if exc else None})")
        if failing_teardown:
            raise TeardownFailed("the app's own teardown failed")

    @app.teardown_request
    def request_teardown(exc: BaseException | None) -> None:
        seen.append(f"teardown_request({type(exc).__name__ if exc else None})")

    @app.get("/page")
    def page() -> str:
        return "page"

    @app.get("/error")
    def error() -> str:
        raise ValueError("the view failed")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            yield "a"
            yield "b"

        return Response(stream_with_context(chunks()))

    if perfalert:
        PerfAlert(app, threshold_seconds=1e-6, file_dir=str(report_dir))
    return app


def record_signals(app: Flask) -> list[Any]:
    """Connect a recorder of every watched signal sent by ``app``; keep the result alive."""
    seen: list[str] = app.extensions["seen"]
    receivers = []
    for name in WATCHED_SIGNALS:

        def receiver(sender: Flask, _name: str = name, **extra: Any) -> None:
            seen.append(_name)

        getattr(signals, name).connect(receiver, sender=app)
        receivers.append(receiver)
    return receivers


def what_the_app_saw(app: Flask, buffered: bool) -> list[str]:
    receivers = record_signals(app)
    client = app.test_client()
    seen: list[str] = app.extensions["seen"]
    responses = []
    for path in ["/page", "/error", "/stream", "/page"]:
        seen.append(f"-- GET {path}")
        response = client.get(path, buffered=buffered)
        response.get_data()  # a test reads the body, closed or not
        seen.append(f"-- status {response.status_code}")
        responses.append(response)
    assert receivers  # held until here: blinker keeps receivers weakly
    saw = list(seen)
    # Closed only now, after what the app saw is taken: a response left open
    # must not keep anything of this test alive into the next one.
    for response in responses:
        response.close()
    return saw


@pytest.mark.parametrize("buffered", [True, False], ids=["closed", "not-closed"])
def test_teardowns_and_context_signals_run_as_often(tmp_path: Path, buffered: bool) -> None:
    without = what_the_app_saw(make_app(tmp_path / "a", perfalert=False), buffered)
    with_ = what_the_app_saw(make_app(tmp_path / "b", perfalert=True), buffered)
    assert sum(line.startswith("teardown_appcontext") for line in without) >= 4
    diff = difflib.unified_diff(without, with_, "without PerfAlert", "with PerfAlert", lineterm="")
    assert with_ == without, "what the app saw differs:\n" + "\n".join(diff)


@pytest.mark.parametrize("buffered", [True, False], ids=["closed", "not-closed"])
def test_a_failing_teardown_fails_once_for_the_app_only(tmp_path: Path, buffered: bool) -> None:
    outcomes = []
    for perfalert in (False, True):
        app = make_app(tmp_path / str(perfalert), perfalert=perfalert, failing_teardown=True)
        client = app.test_client()
        with pytest.raises(TeardownFailed):
            client.get("/page", buffered=buffered).get_data()
        outcomes.append(app.extensions["seen"])
    without, with_ = outcomes
    assert with_ == without == ["teardown_request(None)", "teardown_appcontext(None)"]
