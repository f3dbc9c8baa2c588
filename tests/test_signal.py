"""The ``perf_slow_request`` signal: who sends it, what the event holds, and receivers."""

from __future__ import annotations

import gc
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import blinker
import pytest
from conftest import FakeClock
from flask import Flask, current_app, has_app_context, has_request_context, request
from pyinstrument.session import Session

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request
from flask_perfalert import report as report_module

THRESHOLD = 0.1
SLOW = 0.12
DAY = 86400.0


def slow_routes(app: Flask) -> Flask:
    @app.route("/slow", methods=["GET", "POST"])
    def slow() -> str:
        time.sleep(SLOW)
        return "slow done"

    @app.route("/form", methods=["POST"])
    def form() -> str:
        name = request.form["name"]
        time.sleep(SLOW)
        return f"hello {name}"

    @app.route("/json", methods=["POST"])
    def json_view() -> dict[str, Any]:
        data = request.get_json()
        time.sleep(SLOW)
        return {"got": sorted(data)}

    return app


def perf_for(app: Flask, **options: Any) -> PerfAlert:
    options.setdefault("threshold_seconds", THRESHOLD)
    return PerfAlert(slow_routes(app), **options)


# -- the signal and its sender ---------------------------------------------------------------
def test_the_signal_lives_in_the_packages_own_namespace() -> None:
    assert isinstance(perf_slow_request, blinker.NamedSignal)
    assert perf_slow_request.name == "perf-slow-request"
    assert blinker.signal("perf-slow-request") is not perf_slow_request


def test_the_sender_is_the_app_object_and_event_the_only_keyword(app: Flask) -> None:
    perf_for(app)
    calls: list[tuple[Any, dict[str, Any]]] = []

    def receiver(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))

    with perf_slow_request.connected_to(receiver, sender=app):
        app.test_client().get("/slow")
    ((args, kwargs),) = calls
    (sender,) = args
    assert sender is app and type(sender) is Flask  # not the current_app proxy
    assert list(kwargs) == ["event"]
    assert isinstance(kwargs["event"], SlowRequestEvent)


def test_a_receiver_connected_to_one_app_hears_only_that_app(
    report_dir: Any, wait_delivery: Any
) -> None:
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(PERFALERT_FILE_DIR=str(report_dir))
        apps.append(slow_routes(app))
    perf = PerfAlert(threshold_seconds=THRESHOLD)
    for app in apps:
        perf.init_app(app)
    heard: list[tuple[str, str]] = []

    def one(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        heard.append(("one", sender.name))

    def every(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        heard.append(("every", sender.name))

    with (
        perf_slow_request.connected_to(one, sender=apps[0]),
        perf_slow_request.connected_to(every),
    ):
        for app in apps:
            app.test_client().get("/slow", buffered=True)
        wait_delivery()  # not testing apps: sent from the events thread
    assert sorted(heard) == [("every", "one"), ("every", "two"), ("one", "one")]


# -- the event ------------------------------------------------------------------------------------
def test_the_event_of_a_slow_request(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf_for(app)
    before = datetime.now(timezone.utc)
    response = app.test_client().post("/form?page=2&tag=a&tag=b", data={"name": "Ada"})
    after = datetime.now(timezone.utc)
    assert response.data == b"hello Ada"
    (event,) = events
    assert event.kind == "request"
    assert event.endpoint == "form"
    assert event.url == "http://localhost/form?page=2&tag=a&tag=b"
    assert event.method == "POST"
    assert event.params == {"page": "2", "tag": ["a", "b"], "name": "Ada"}
    assert event.status_code == 200
    assert isinstance(event.duration, float) and isinstance(event.threshold, float)
    assert event.threshold == THRESHOLD
    assert SLOW <= event.duration <= (after - before).total_seconds()
    assert event.duplicate is False
    assert event.key == "POST form"
    assert isinstance(event.profile, Session)
    assert isinstance(event.html, str) and "hello" not in event.html
    assert "Ada" in event.html


def test_the_timestamp_is_the_timezone_aware_start_time(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf_for(app)
    before = datetime.now(timezone.utc)
    app.test_client().get("/slow")
    after = datetime.now(timezone.utc)
    (event,) = events
    assert event.timestamp.tzinfo is not None
    assert event.timestamp.utcoffset() == timedelta(0)
    # The start, not the end: the request's duration after it is still before "after".
    slack = timedelta(milliseconds=50)  # clock resolution between perf_counter and time()
    assert before - slack <= event.timestamp
    assert event.timestamp + timedelta(seconds=event.duration) <= after + slack


def test_json_body_keys_and_values_are_params(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf_for(app)
    body = {"query": "shoes", "page": 3, "filters": {"size": [42, 43]}, "exact": True}
    response = app.test_client().post("/json?debug=1", json=body)
    assert response.get_json() == {"got": ["exact", "filters", "page", "query"]}
    (event,) = events
    assert event.params == {"debug": "1", **body}


def test_every_receiver_gets_the_same_event_with_the_same_duplicate_flag(
    app: Flask, clock: FakeClock
) -> None:
    perf_for(app, clock=clock)
    seen: list[tuple[str, SlowRequestEvent, bool]] = []

    def first(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        seen.append(("first", event, event.duplicate))

    def second(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        seen.append(("second", event, event.duplicate))

    with (
        perf_slow_request.connected_to(first, sender=app),
        perf_slow_request.connected_to(second, sender=app),
    ):
        client = app.test_client()
        client.get("/slow")
        client.get("/slow")
    assert len(seen) == 4
    by_event: dict[int, set[bool]] = {}
    for _, event, duplicate in seen:
        by_event.setdefault(id(event), set()).add(duplicate)
    assert list(by_event.values()) == [{False}, {True}]


# -- de-duplication --------------------------------------------------------------------------------
def test_duplicates_inside_the_window_and_a_new_alert_after_it(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    perf_for(app, clock=clock, alert_window_days=2)
    client = app.test_client()
    client.get("/slow")
    client.get("/slow")
    clock.advance(2 * DAY - 60)  # still inside the window
    client.get("/slow")
    clock.advance(120)  # past the window of the first alert
    client.get("/slow")
    client.get("/slow")
    assert [e.duplicate for e in events] == [False, True, True, False, True]
    assert len(events) == 5  # a duplicate is still sent: receivers decide


def test_the_key_is_method_and_endpoint(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    perf_for(app, clock=clock)

    @app.route("/other")
    def other() -> str:
        time.sleep(SLOW)
        return "other"

    client = app.test_client()
    client.get("/slow")
    client.post("/slow")
    client.get("/slow?different=query")  # same key: query strings do not count
    client.get("/other")
    client.post("/slow")
    assert [(e.key, e.duplicate) for e in events] == [
        ("GET slow", False),
        ("POST slow", False),
        ("GET slow", True),
        ("GET other", False),
        ("POST slow", True),
    ]


def test_the_window_is_per_app(report_dir: Any, clock: FakeClock, wait_delivery: Any) -> None:
    # No "getting worse" alert however slow a loaded machine makes the second request.
    perf = PerfAlert(threshold_seconds=THRESHOLD, clock=clock, escalation_factor=100)
    received: list[tuple[str, bool]] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append((sender.name, event.duplicate))

    apps = []
    for name in ("shop", "admin"):
        app = Flask(name)
        app.config.update(PERFALERT_FILE_DIR=str(report_dir), PERFALERT_STORAGE_PREFIX=name)
        perf.init_app(slow_routes(app))
        apps.append(app)
    with perf_slow_request.connected_to(receiver):
        for app in apps * 2:
            app.test_client().get("/slow", buffered=True)
            wait_delivery()
    assert received == [("shop", False), ("admin", False), ("shop", True), ("admin", True)]


# -- the HTML report -------------------------------------------------------------------------------
def test_html_is_rendered_on_first_use_and_kept(
    app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[SlowRequestEvent] = []
    real = report_module.render_report

    def counting(event: SlowRequestEvent) -> str:
        renders.append(event)
        return real(event)

    monkeypatch.setattr(report_module, "render_report", counting)
    perf_for(app, file_enabled=False)
    app.test_client().get("/slow")
    (event,) = events
    assert renders == []  # nobody asked for it
    html = event.html
    assert renders == [event]
    assert html is not None and "slow" in html
    assert event.html is html
    assert renders == [event]


# -- receivers -------------------------------------------------------------------------------------
@pytest.mark.allow_internal_errors
def test_a_raising_receiver_is_logged_and_changes_nothing(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    perf_for(app)
    baseline = app.test_client().get("/slow")  # before the failing receiver is connected
    heard: list[str] = []

    def before(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        heard.append("before")

    def failing(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        raise RuntimeError("receiver bug")

    def after(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        heard.append("after")

    with (
        perf_slow_request.connected_to(before, sender=app),
        perf_slow_request.connected_to(failing, sender=app),
        perf_slow_request.connected_to(after, sender=app),
    ):
        response = app.test_client().post("/slow")
    assert (response.status_code, response.data) == (baseline.status_code, baseline.data)
    assert response.headers == baseline.headers
    assert sorted(heard) == ["after", "before"]
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "flask_perfalert"
    assert "POST slow" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "receiver bug"


@pytest.mark.allow_internal_errors
def test_a_raising_receiver_does_not_stop_the_file_report(
    app: Flask, report_dir: Any, wait_delivery: Any
) -> None:
    perf_for(app)

    def failing(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        raise ValueError("oops")

    with perf_slow_request.connected_to(failing, sender=app):
        app.test_client().get("/slow")
    wait_delivery()
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1


@pytest.mark.parametrize("testing", [True, False])
def test_a_receiver_runs_outside_any_context_with_the_app_as_sender(
    app: Flask, wait_delivery: Any, testing: bool
) -> None:
    # Pushing a context for receivers would run the app's teardown functions and
    # context signals once more per slow request.
    app.testing = testing
    app.config["SHOP_NAME"] = "ACME"
    perf_for(app)
    seen: dict[str, Any] = {}

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        seen["app context"] = has_app_context()
        seen["request context"] = has_request_context()
        seen["config"] = sender.config["SHOP_NAME"]
        with sender.app_context():  # what a receiver that needs current_app does
            seen["current_app"] = current_app._get_current_object()  # type: ignore[attr-defined]

    with perf_slow_request.connected_to(receiver, sender=app):
        app.test_client().get("/slow")
        wait_delivery()
    assert seen == {
        "app context": False,
        "request context": False,
        "config": "ACME",
        "current_app": app,
    }


MODULE_RECEIVED: list[SlowRequestEvent] = []


def module_level_receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
    MODULE_RECEIVED.append(event)


def test_a_weakly_connected_lambda_is_collected_a_module_function_is_not(app: Flask) -> None:
    """Why the docs say ``weak=False`` for receivers defined inside a function."""
    perf_for(app)
    from_lambda: list[SlowRequestEvent] = []
    from_strong: list[SlowRequestEvent] = []
    MODULE_RECEIVED.clear()
    perf_slow_request.connect(lambda sender, event, **extra: from_lambda.append(event), sender=app)
    strong = perf_slow_request.connect(
        lambda sender, event, **extra: from_strong.append(event), sender=app, weak=False
    )
    perf_slow_request.connect_via(app)(module_level_receiver)
    try:
        gc.collect()
        app.test_client().get("/slow")
    finally:
        perf_slow_request.disconnect(module_level_receiver)
        perf_slow_request.disconnect(strong)
    assert from_lambda == []  # collected as soon as connect() returned
    assert len(from_strong) == 1
    assert len(MODULE_RECEIVED) == 1 and MODULE_RECEIVED[0] is from_strong[0]


def test_a_slow_request_without_receivers_costs_no_report(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[Any] = []
    monkeypatch.setattr(report_module, "render_report", lambda event: renders.append(event) or "")
    perf = perf_for(app, file_enabled=False)
    assert app.test_client().get("/slow").data == b"slow done"
    assert renders == []
    assert perf.stats(app)["slow"] == 1
