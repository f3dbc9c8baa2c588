"""The shop's own tests, with Flask-PerfAlert on: ``cd examples/factory && python -m pytest tests``.

Each test makes its app with the factory and ``TESTING``: the extension then
keeps that app's alert window, spool and reports in a folder of its own, so
every test (and every run of the suite) starts with none alerted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from shop import create_app

from flask_perfalert import SlowRequestEvent, perf_slow_request


@pytest.fixture
def app() -> Flask:
    return create_app({"TESTING": True})


@pytest.fixture
def alerts(app: Flask) -> Iterator[list[SlowRequestEvent]]:
    """The slow-request events of ``app`` during the test."""
    events: list[SlowRequestEvent] = []

    def remember(sender: Flask, event: SlowRequestEvent, **extra: object) -> None:
        events.append(event)

    with perf_slow_request.connected_to(remember, sender=app):
        yield events


def test_the_listing_is_fast(app: Flask, alerts: list[SlowRequestEvent]) -> None:
    assert app.test_client().get("/catalog/").status_code == 200
    assert alerts == []


def test_search_is_slow_and_says_where(app: Flask, alerts: list[SlowRequestEvent]) -> None:
    app.test_client().get("/catalog/search?q=lamp")
    # Under TESTING the event is sent before get() returns: no waiting.
    by_kind = {event.kind: event for event in alerts}
    request = by_kind["request"]
    assert request.endpoint == "catalog.search" and request.duration > 0.2
    assert by_kind["function"].endpoint == "shop.catalog.rank_products"  # watched
    assert request.report_path is not None and request.report_path.exists()


def test_a_new_test_alerts_again(app: Flask, alerts: list[SlowRequestEvent]) -> None:
    # The same search as the test before: a new app, so not a duplicate.
    app.test_client().get("/catalog/search?q=chair")
    assert [event.endpoint for event in alerts if event.kind == "request"] == ["catalog.search"]
