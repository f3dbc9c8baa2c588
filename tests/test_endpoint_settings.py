"""Settings that name endpoints: URL rules accepted, and keys that match nothing reported."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from flask import Blueprint, Flask

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert._routes import resolve_thresholds, unmatched_settings


def crunch(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def routes(app: Flask) -> None:
    """``/sleepy`` and ``/user/<int:id>`` take 0.08 s; ``/quick`` 0.08 s too."""

    @app.get("/sleepy")
    def sleepy() -> str:
        crunch(0.08)
        return "zzz"

    @app.get("/user/<int:id>")
    def user(id: int) -> str:
        crunch(0.08)
        return str(id)

    @app.get("/quick")
    def quick() -> str:
        crunch(0.08)
        return "quick"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_perfalert" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("key", ["/sleepy", "sleepy"])
def test_a_threshold_by_url_rule_or_endpoint_name_applies(
    app: Flask, events: list[SlowRequestEvent], caplog: pytest.LogCaptureFixture, key: str
) -> None:
    routes(app)
    app.config["PERFALERT_ENDPOINT_THRESHOLDS"] = f'{{"{key}": 5}}'
    PerfAlert(app, threshold_seconds=0.05, profiler="none")
    client = app.test_client()
    client.get("/sleepy")
    client.get("/quick")
    assert [e.endpoint for e in events] == ["quick"]
    assert [e.threshold for e in events] == [0.05]
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("key", ["/user/<int:id>", "/user/<id>"])
def test_a_rule_with_variables_applies_to_every_url_it_matches(
    app: Flask, events: list[SlowRequestEvent], key: str
) -> None:
    routes(app)
    PerfAlert(app, threshold_seconds=0.05, profiler="none", endpoint_thresholds={key: 5})
    for path in ("/user/1", "/user/2", "/sleepy"):
        app.test_client().get(path)
    assert [e.endpoint for e in events] == ["sleepy"]


def test_a_rule_registered_after_init_app_applies(
    app: Flask, events: list[SlowRequestEvent], caplog: pytest.LogCaptureFixture
) -> None:
    # An app factory: the extension first, the blueprint's routes afterwards.
    perf = PerfAlert(profiler="none", threshold_seconds=0.05)
    app.config["PERFALERT_ENDPOINT_THRESHOLDS"] = {"/shop/slow": 5}
    perf.init_app(app)
    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.get("/slow")
    def slow() -> str:
        crunch(0.08)
        return "slow"

    app.register_blueprint(shop)
    assert warnings_of(caplog) == []  # not known at init_app: no false alarm
    app.test_client().get("/shop/slow")
    assert events == []
    assert warnings_of(caplog) == []


def test_a_key_that_matches_nothing_is_reported_once_the_app_serves(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    routes(app)
    app.config["PERFALERT_ENDPOINT_THRESHOLDS"] = {
        "/sleepy": 5,
        "/sleep": 5,
        "sleppy": 5,
        "reports.export": 5,
    }
    PerfAlert(app, threshold_seconds=0.05, profiler="none")
    assert warnings_of(caplog) == []  # the routes may not be complete at init_app
    client = app.test_client()
    client.get("/quick")
    client.get("/quick")
    assert warnings_of(caplog) == [
        "PERFALERT_ENDPOINT_THRESHOLDS['/sleep'] matches no endpoint, URL rule or watched "
        "function of app 'test_endpoint_settings', so it never applies; did you mean '/sleepy'?",
        "PERFALERT_ENDPOINT_THRESHOLDS['sleppy'] matches no endpoint, URL rule or watched "
        "function of app 'test_endpoint_settings', so it never applies; did you mean 'sleepy'?",
        "PERFALERT_ENDPOINT_THRESHOLDS['reports.export'] matches no endpoint, URL rule or "
        "watched function of app 'test_endpoint_settings', so it never applies.",
    ]


def test_each_app_is_checked_at_its_own_first_request(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    # Two apps in one process (a dispatcher, or a test suite): the first one to serve
    # must not check the other, whose routes may not be complete yet.
    later = Flask("later")
    later.testing = True  # the check is then made at once, not on the events thread
    PerfAlert(later, endpoint_thresholds={"export": 5}, profiler="none")
    routes(app)
    PerfAlert(app, threshold_seconds=0.05, profiler="none")
    app.test_client().get("/quick")
    assert warnings_of(caplog) == []

    @later.route("/export")
    def export() -> str:
        return "done"

    later.test_client().get("/export")
    assert warnings_of(caplog) == []  # its route came before its first request
    # An app made after the process's first request is checked too.
    third = Flask("third")
    third.testing = True
    PerfAlert(third, endpoint_thresholds={"exprt": 5}, profiler="none")
    third.add_url_rule("/export", "export", lambda: "done")
    third.test_client().get("/export")
    assert warnings_of(caplog) == [
        "PERFALERT_ENDPOINT_THRESHOLDS['exprt'] matches no endpoint, URL rule or watched "
        "function of app 'third', so it never applies; did you mean 'export'?"
    ]


def test_a_watched_function_is_a_valid_key(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    routes(app)
    perf = PerfAlert(profiler="none", threshold_seconds=0.05)

    @perf.watch
    def nightly() -> None:
        pass

    name = f"{nightly.__module__}.{nightly.__qualname__}"
    app.config["PERFALERT_ENDPOINT_THRESHOLDS"] = {name: 9}
    perf.init_app(app)
    app.test_client().get("/quick")
    assert warnings_of(caplog) == []


def test_an_excluded_endpoint_that_does_not_exist_is_reported(app: Flask) -> None:
    routes(app)
    app.config["PERFALERT_EXCLUDE"] = ["static", "/health*", "quik", "sleepy"]
    perf = PerfAlert(app)
    assert unmatched_settings(app, perf.settings(app)) == [
        "PERFALERT_EXCLUDE entry 'quik' matches no endpoint of app 'test_endpoint_settings' "
        "(a URL path pattern starts with /); did you mean 'quick'?"
    ]


def test_config_and_check_report_keys_that_match_nothing(app: Flask) -> None:
    routes(app)
    app.config["PERFALERT_ENDPOINT_THRESHOLDS"] = {"/sleep": 5, "/sleepy": 5}
    PerfAlert(app)
    runner = app.test_cli_runner()
    for command in ("config", "check"):
        output = runner.invoke(args=["perfalert", command]).output
        assert "Problems:\n  - PERFALERT_ENDPOINT_THRESHOLDS['/sleep'] matches no" in output
        assert "'/sleepy'] matches" not in output


def test_an_endpoint_name_beats_a_rule_for_the_same_endpoint(app: Flask) -> None:
    routes(app)
    resolved = resolve_thresholds(app, {"sleepy": 2.0, "/sleepy": 5.0, "/user/<id>": 3.0})
    assert resolved.by_name == {"sleepy": 2.0, "user": 3.0}
    assert resolved.unmatched == []


def test_one_rule_of_several_methods_applies_to_each_endpoint(app: Flask) -> None:
    app.add_url_rule("/items", "list_items", lambda: "", methods=["GET"])
    app.add_url_rule("/items", "create_item", lambda: "", methods=["POST"])
    assert resolve_thresholds(app, {"/items": 4.0}).by_name == {
        "create_item": 4.0,
        "list_items": 4.0,
    }


def test_unmatched_keys_are_listed_for_the_caller(app: Flask) -> None:
    routes(app)
    perf: Any = PerfAlert(app, endpoint_thresholds={"/nowhere": 1.0, "quick": 1.0})
    [message] = unmatched_settings(app, perf.settings(app))
    assert message.startswith("PERFALERT_ENDPOINT_THRESHOLDS['/nowhere'] matches no endpoint")
