"""Alerts a team can act on: how unusual it is, how often it happened, and when it gets worse.

Driven through real requests: the usual latency comes from the app's own fast
requests, the counts and escalations from slow ones, across the workers of a
real gunicorn sharing the default store.
"""

from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock
from flask import Flask, request
from servers import Gunicorn, wait_for

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert.alerts.mattermost.message import format_message
from flask_perfalert.latency import MIN_REQUESTS, SAMPLE_EVERY

THRESHOLD = 0.05


def orders_app(app: Flask, **options: Any) -> PerfAlert:
    options.setdefault("threshold_seconds", THRESHOLD)
    perf = PerfAlert(app, profiler="none", **options)

    @app.get("/orders")
    def orders() -> str:
        time.sleep(float(request.args.get("ms", "1")) / 1000)
        return "ok"

    return perf


def alerts(events: list[SlowRequestEvent]) -> list[SlowRequestEvent]:
    return [e for e in events if not e.duplicate]


# -- how unusual -----------------------------------------------------------------------------
def test_the_alert_says_how_unusual_the_request_is(
    app: Flask, events: list[SlowRequestEvent], caplog: pytest.LogCaptureFixture
) -> None:
    orders_app(app)
    client = app.test_client()
    for _ in range(SAMPLE_EVERY * (MIN_REQUESTS + 5)):
        client.get("/orders?ms=2")
    with caplog.at_level(logging.WARNING, "flask_perfalert.alerts"):
        client.get("/orders?ms=150")
    (event,) = events
    usual = event.usual
    assert usual is not None and usual.requests >= MIN_REQUESTS
    # Sampled 2 ms requests (Flask's own work on top), in 10 %-wide buckets.
    assert 0.0018 <= usual.median <= 0.004 and usual.median <= usual.p95 <= 0.01
    times = round(event.duration / usual.median)
    assert event.unusual().startswith(f"{times} x this endpoint's median of ")
    assert "(p95 " in event.unusual()
    assert event.unusual() in caplog.text  # the alert's log line says it
    page = (event.report_path or Path("missing")).read_text(encoding="utf-8")
    assert html.escape(event.unusual()) in page
    assert f"**Usual:** {event.unusual()}" in format_message(event)


def test_without_enough_samples_nothing_is_said(app: Flask, events: list[SlowRequestEvent]) -> None:
    orders_app(app)
    app.test_client().get("/orders?ms=80")
    (event,) = events
    assert event.usual is None and event.unusual() == ""
    assert "median" not in event.headline() and "**Usual:**" not in format_message(event)


# -- how often, and when it gets worse ------------------------------------------------------------
def test_slow_ones_are_counted_and_only_markedly_worse_ones_alert_again(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    orders_app(app, clock=clock, alert_window_days=1)
    client = app.test_client()
    # 60 ms alerts; 70 ms is counted; 130 ms is over twice the worst: it alerts again;
    # 200 ms is not twice 130 ms: counted; 270 ms is: an escalation; and so on.
    for ms in (60, 70, 70, 130, 200, 270, 60):
        client.get(f"/orders?ms={ms}")
    assert [(e.duplicate, e.escalation is not None) for e in events] == [
        (False, False),
        (True, False),
        (True, False),
        (False, True),
        (True, False),
        (False, True),
        (True, False),
    ]
    first, worse, worst = alerts(events)
    assert first.suppressed == 0 and worse.suppressed == 2 and worst.suppressed == 1
    assert worse.escalation is not None and worse.escalation.factor == 2.0
    assert worse.escalation.previous_worst == pytest.approx(first.duration)
    assert worst.escalation is not None
    assert worst.escalation.previous_worst == pytest.approx(worse.duration)
    assert worse.headline().startswith("Getting worse request: GET orders")
    assert "x the worst alerted so far" in worse.headline()
    assert "2 more since the previous alert" in worse.headline()
    message = format_message(worse)
    assert message.startswith("#### :chart_with_upwards_trend: Getting worse:")
    assert "**Since the previous alert:** 2 more slow requests, not alerted" in message
    # A new window: the first slow one alerts, and says what the old window suppressed.
    clock.advance(86400 + 1)
    client.get("/orders?ms=60")
    last = events[-1]
    assert not last.duplicate and last.escalation is None and last.suppressed == 1


def test_the_factor_is_a_setting(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    orders_app(app, clock=clock, escalation_factor=4)
    client = app.test_client()
    for ms in (60, 200, 260):  # 200 ms is not 4 x 60 ms; 260 ms is
        client.get(f"/orders?ms={ms}")
    assert [e.escalation is not None for e in alerts(events)] == [False, True]


def test_stats_show_each_endpoints_alerts_and_suppressed(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    orders_app(app, clock=clock)
    client = app.test_client()
    for ms in (60, 70, 70, 130):
        client.get(f"/orders?ms={ms}")
    result = app.test_cli_runner().invoke(args=["perfalert", "stats"])
    assert result.exit_code == 0, result.output
    assert "alerted again, getting worse" in result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("GET orders")]
    assert row.split()[2:5] == ["2", "2", "0"]  # alerts, suppressed, since the last alert
    data = json.loads(app.test_cli_runner().invoke(args=["perfalert", "stats", "--json"]).output)
    assert data["keys"]["GET orders"]["suppressed"] == 2
    assert data["escalated"] == 1


# -- across workers --------------------------------------------------------------------------------
@pytest.mark.server
def test_workers_share_counts_escalations_and_the_usual_latency(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    env = {
        "CONTEXT_APP_EVENTS": str(events),
        "PERFALERT_THRESHOLD_SECONDS": "0.1",
        "PERFALERT_PROFILER": "none",
        "PERFALERT_DATA_DIR": str(tmp_path / "data"),  # the default SQLite store in it
    }
    server = Gunicorn("apps.context_app:app", tmp_path, env, workers=2, name="context")
    with server:
        pids = set()
        for _ in range(SAMPLE_EVERY * (MIN_REQUESTS + 10)):
            status, body = server.get("/orders?ms=2")
            assert status == 200
            pids.add(body.strip())
        assert len(pids) == 2, "both workers served"
        for ms in (120, 130, 140, 150, 110, 300):  # one alert, four counted, an escalation
            assert server.get(f"/orders?ms={ms}")[0] == 200

        def logged() -> list[dict[str, Any]]:
            lines = events.read_text().splitlines() if events.exists() else []
            return [json.loads(line) for line in lines]

        found = wait_for(lambda: len(logged()) >= 6 and logged(), what="six events")
    sent = [e for e in found if not e["duplicate"]]
    assert len(sent) == 2, found
    first, worse = sent
    assert worse["escalated_from"] == pytest.approx(first["duration"])
    assert worse["suppressed"] == 4, "counted in both workers"
    median, p95, sampled = worse["usual"]
    assert sampled >= MIN_REQUESTS and 0.0018 <= median <= 0.005
