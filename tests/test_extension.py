"""The Flask extension: set-up, per-app state, what is timed and what is not.

Each test drives a real Flask app through its test client (``ClosingClient``:
every response is read and closed, as a WSGI server does).
"""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ClosingClient, FakeClock
from flask import Flask, Response, abort, request, stream_with_context

from flask_perfalert import PerfAlert, PerfAlertSettings, SlowRequestEvent, perf_slow_request
from flask_perfalert.profiling.timer import timer_state

#: The threshold most tests use, and how long a "slow" view takes: just above it.
THRESHOLD = 0.1
SLOW = 0.12


def slow_view() -> str:
    time.sleep(SLOW)
    return "slow done"


def add_routes(app: Flask) -> Flask:
    app.add_url_rule("/slow", "slow", slow_view, methods=["GET", "POST"])
    app.add_url_rule("/fast", "fast", lambda: "fast done")
    return app


def new_app(name: str, report_dir: Path) -> Flask:
    app = Flask(name)
    app.config.update(TESTING=True, PERFALERT_FILE_DIR=str(report_dir))
    app.test_client_class = ClosingClient
    return add_routes(app)


_collectors: list[Any] = []


def collect(app: Flask) -> list[SlowRequestEvent]:
    """Events sent for ``app`` from now on (disconnected after the test)."""
    received: list[SlowRequestEvent] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append(event)

    perf_slow_request.connect(receiver, sender=app, weak=False)
    _collectors.append(receiver)
    return received


@pytest.fixture(autouse=True)
def _disconnect_collectors() -> Iterator[None]:
    yield
    while _collectors:
        perf_slow_request.disconnect(_collectors.pop())


# -- set-up -----------------------------------------------------------------------------------
def test_app_factory_registers_the_extension(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert()
    add_routes(app)
    assert "perfalert" not in app.extensions
    perf.init_app(app)
    assert app.extensions["perfalert"] is perf
    app.test_client().get("/fast")
    assert events == []  # the default threshold is 1 s


def test_constructor_with_app_is_the_same_as_init_app(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    add_routes(app)
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    assert app.extensions["perfalert"] is perf
    assert app.test_client().get("/slow").data == b"slow done"
    assert [(e.endpoint, e.threshold) for e in events] == [("slow", THRESHOLD)]


def test_one_instance_serves_two_apps_with_their_own_settings(report_dir: Path) -> None:
    strict = new_app("strict", report_dir / "strict")
    strict.config["PERFALERT_THRESHOLD_SECONDS"] = THRESHOLD
    relaxed = new_app("relaxed", report_dir / "relaxed")
    relaxed.config["PERFALERT_THRESHOLD_SECONDS"] = 5.0
    perf = PerfAlert()
    perf.init_app(strict)
    perf.init_app(relaxed)
    strict_events, relaxed_events = collect(strict), collect(relaxed)

    assert strict.extensions["perfalert"] is perf and relaxed.extensions["perfalert"] is perf
    assert perf.settings(strict).threshold_seconds == THRESHOLD
    assert perf.settings(relaxed).threshold_seconds == 5.0
    strict.test_client().get("/slow")
    relaxed.test_client().get("/slow")
    assert [e.threshold for e in strict_events] == [THRESHOLD]
    assert relaxed_events == []
    assert perf.stats(strict)["requests"] == 1 and perf.stats(relaxed)["requests"] == 1


def test_the_current_app_is_used_at_request_time(report_dir: Path) -> None:
    first = new_app("first", report_dir)
    second = new_app("second", report_dir)
    first.config["PERFALERT_THRESHOLD_SECONDS"] = 2.0
    second.config["PERFALERT_THRESHOLD_SECONDS"] = 3.0
    perf = PerfAlert()
    perf.init_app(first)
    perf.init_app(second)
    seen: dict[str, float] = {}

    @second.route("/which")
    def which() -> str:
        seen["threshold"] = perf.settings().threshold_seconds
        return "ok"

    second.test_client().get("/which")
    assert seen == {"threshold": 3.0}
    with first.app_context():
        assert perf.settings().threshold_seconds == 2.0
    with pytest.raises(RuntimeError):
        perf.settings()  # no current app


def test_an_app_it_was_not_set_up_for_is_an_error_that_says_what_to_do(app: Flask) -> None:
    perf = PerfAlert()
    with pytest.raises(RuntimeError, match="init_app"):
        perf.settings(app)


def test_the_extension_does_not_keep_the_app_alive(report_dir: Path) -> None:
    perf = PerfAlert(threshold_seconds=THRESHOLD)
    app = new_app("short-lived", report_dir)
    perf.init_app(app)
    app.test_client().get("/slow")
    ref = weakref.ref(app)
    assert all(value is not app for value in vars(perf).values())
    del app
    gc.collect()
    assert ref() is None


def test_options_beat_config_beat_environment_beat_defaults(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERFALERT_THRESHOLD_SECONDS", "0.7")
    monkeypatch.setenv("PERFALERT_ALERT_WINDOW_DAYS", "3")
    monkeypatch.setenv("PERFALERT_EXCLUDE", "/health*")
    app.config["PERFALERT_THRESHOLD_SECONDS"] = 0.6
    app.config["PERFALERT_ALERT_WINDOW_DAYS"] = 2
    perf = PerfAlert(app, threshold_seconds=0.5)
    settings = perf.settings(app)
    assert settings.threshold_seconds == 0.5  # option > app.config > environment
    assert settings.alert_window_days == 2.0  # app.config > environment
    assert settings.exclude == ["/health*"]  # environment > default
    assert settings.endpoint_thresholds == {}  # default
    assert settings.profiler == "sampling"


def test_the_option_is_what_requests_are_measured_against(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    add_routes(app)
    app.config["PERFALERT_THRESHOLD_SECONDS"] = 10.0
    PerfAlert(app, threshold_seconds=THRESHOLD)
    app.test_client().get("/slow")
    assert [e.threshold for e in events] == [THRESHOLD]


def test_init_app_twice_installs_one_timer_and_rereads_the_settings(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    add_routes(app)
    app.config["PERFALERT_THRESHOLD_SECONDS"] = 10.0
    perf = PerfAlert()
    perf.init_app(app)
    app.config["PERFALERT_THRESHOLD_SECONDS"] = THRESHOLD
    perf.init_app(app)

    state = timer_state(app.wsgi_app)
    assert state is not None and timer_state(state.wrapped) is None  # not wrapped twice
    assert perf.settings(app).threshold_seconds == THRESHOLD
    app.test_client().get("/slow")
    wait_delivery()
    assert [e.threshold for e in events] == [THRESHOLD]
    assert perf.stats(app)["requests"] == 1
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1  # one file subscriber, not two


def test_init_app_again_with_monitoring_turned_off_removes_the_timer(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    add_routes(app)
    original = app.wsgi_app
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    assert timer_state(app.wsgi_app) is not None
    app.config["PERFALERT_ENABLED"] = False
    perf.init_app(app)
    assert app.wsgi_app == original
    app.test_client().get("/slow")
    assert events == []


@pytest.mark.parametrize("where", ["option", "config", "environment"])
def test_disabled_leaves_the_app_untouched_and_sends_nothing(
    app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    add_routes(app)
    options: dict[str, Any] = {"threshold_seconds": THRESHOLD}
    if where == "option":
        options["enabled"] = False
    elif where == "config":
        app.config["PERFALERT_ENABLED"] = False
    else:
        monkeypatch.setenv("PERFALERT_ENABLED", "false")
    original = app.wsgi_app
    hooks = (
        dict(app.before_request_funcs),
        dict(app.after_request_funcs),
        dict(app.teardown_request_funcs),
    )
    perf = PerfAlert(app, **options)
    assert app.wsgi_app == original and "wsgi_app" not in vars(app)
    assert "request_context" not in vars(app)
    assert "async_to_sync" not in vars(app)
    assert hooks == (
        dict(app.before_request_funcs),
        dict(app.after_request_funcs),
        dict(app.teardown_request_funcs),
    )
    assert app.test_client().get("/slow").data == b"slow done"
    assert events == []
    assert perf.stats(app)["requests"] == 0
    assert app.extensions["perfalert"] is perf  # still registered: settings can be read


# -- what is timed ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exclude", "excluded", "monitored"),
    [
        (["health"], ["/health", "/healthz", "/internal/health"], "/slow"),
        (["/health*"], ["/health", "/healthz", "/health/db"], "/internal/health"),
        (["/internal/*"], ["/internal/health"], "/health"),
        (["static", "/internal/*", "health"], ["/health", "/internal/health"], "/slow"),
    ],
)
def test_excluded_requests_are_never_monitored(
    app: Flask,
    events: list[SlowRequestEvent],
    exclude: list[str],
    excluded: list[str],
    monitored: str,
) -> None:
    add_routes(app)

    @app.route("/health")
    @app.route("/healthz")
    @app.route("/health/db")
    @app.route("/internal/health")
    def health() -> str:
        time.sleep(SLOW)
        return "healthy"

    perf = PerfAlert(app, threshold_seconds=THRESHOLD, exclude=exclude)
    client = app.test_client()
    for path in excluded:
        assert client.get(path).data == b"healthy"
    assert events == []
    client.get(monitored)  # everything else still is
    assert [e.url for e in events] == [f"http://localhost{monitored}"]
    assert perf.stats(app)["slow"] == 1


def test_a_path_glob_matches_the_path_not_the_endpoint(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    add_routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD, exclude=["/sl"])  # a prefix, not a glob
    app.test_client().get("/slow")
    assert [e.endpoint for e in events] == ["slow"]


def test_static_files_can_be_excluded_by_endpoint(tmp_path: Path, report_dir: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "big.txt").write_text("x" * 1000)
    app = Flask("with_static", static_folder=str(static))
    app.config.update(TESTING=True, PERFALERT_FILE_DIR=str(report_dir))
    app.test_client_class = ClosingClient
    received = collect(app)

    @app.before_request
    def slow_everything() -> None:
        time.sleep(SLOW)

    PerfAlert(app, threshold_seconds=THRESHOLD, exclude=["static"])
    assert app.test_client().get("/static/big.txt").data == b"x" * 1000
    assert received == []


def test_endpoint_thresholds_override_the_global_one(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    @app.route("/relaxed")
    def relaxed() -> str:
        time.sleep(SLOW)
        return "ok"

    @app.route("/strict")
    def strict() -> str:
        time.sleep(0.07)
        return "ok"

    @app.route("/normal")
    def normal() -> str:
        time.sleep(SLOW)
        return "ok"

    PerfAlert(
        app,
        threshold_seconds=THRESHOLD,
        endpoint_thresholds={"relaxed": 5.0, "strict": 0.05},
    )
    client = app.test_client()
    for path in ("/relaxed", "/strict", "/normal"):
        client.get(path)
    assert [(e.endpoint, e.threshold) for e in events] == [
        ("strict", 0.05),
        ("normal", THRESHOLD),
    ]


# -- errors -------------------------------------------------------------------------------------
class Boom(Exception):
    pass


def error_routes(app: Flask) -> Flask:
    @app.route("/raises")
    def raises() -> str:
        time.sleep(SLOW)
        raise Boom("the view failed")

    @app.route("/returns-500")
    def returns_500() -> tuple[str, int]:
        time.sleep(SLOW)
        return "bad", 500

    @app.route("/aborts")
    def aborts() -> str:
        time.sleep(SLOW)
        abort(503)

    return app


def bare_twin(app: Flask) -> Flask:
    """The same app without the extension."""
    twin = Flask(app.import_name)
    twin.config.update(app.config)
    twin.test_client_class = ClosingClient
    return error_routes(twin)


def test_a_raised_exception_propagates_and_is_reported_as_500(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = True
    error_routes(app)
    twin = bare_twin(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    with pytest.raises(Boom, match="the view failed"):
        twin.test_client().get("/raises")
    with pytest.raises(Boom, match="the view failed"):
        app.test_client().get("/raises")
    assert [(e.endpoint, e.status_code) for e in events] == [("raises", 500)]


def test_a_handled_exception_gives_the_same_500_and_is_reported(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    error_routes(app)
    twin = bare_twin(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    logging.getLogger(app.name).disabled = True  # Flask logs the traceback; not our concern
    try:
        expected = twin.test_client().get("/raises")
        got = app.test_client().get("/raises")
    finally:
        logging.getLogger(app.name).disabled = False
    assert (got.status_code, got.data) == (expected.status_code, expected.data)
    assert got.status_code == 500
    assert [(e.endpoint, e.status_code) for e in events] == [("raises", 500)]


def test_a_returned_500_and_an_abort_are_reported_with_their_status(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    error_routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    client = app.test_client()
    assert client.get("/returns-500").status_code == 500
    assert client.get("/aborts").status_code == 503
    assert [(e.endpoint, e.status_code) for e in events] == [
        ("returns_500", 500),
        ("aborts", 503),
    ]


def test_a_slow_404_is_reported_without_an_endpoint(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        time.sleep(SLOW)
        return "missing", 404

    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/no/such/page?x=1")
    assert (response.status_code, response.data) == (404, b"missing")
    (event,) = events
    assert (event.endpoint, event.status_code, event.method) == (None, 404, "GET")
    assert event.url == "http://localhost/no/such/page?x=1"
    assert event.key == "GET None"


def test_head_requests_are_timed_and_keyed_apart_from_get(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    add_routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD, clock=clock)
    client = app.test_client()
    got = client.get("/slow")
    head = client.head("/slow")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"]
    assert [(e.method, e.endpoint, e.duplicate) for e in events] == [
        ("GET", "slow", False),
        ("HEAD", "slow", False),
    ]


# -- streamed responses ----------------------------------------------------------------------------
def streaming_routes(app: Flask) -> Flask:
    @app.route("/stream")
    def stream() -> Response:
        def generate() -> Iterator[str]:
            yield "first,"
            time.sleep(SLOW)
            yield f"second for {request.args.get('who', 'nobody')}"

        return Response(stream_with_context(generate()), mimetype="text/plain")

    return app


def test_a_streamed_response_is_timed_until_its_body_is_consumed(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    streaming_routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/stream?who=me", buffered=False)
    # The view has returned; the slow part has not run yet, nothing is decided.
    assert events == []
    assert response.get_data() == b"first,second for me"
    assert events == []  # consumed but not closed: the server is not done yet
    response.close()
    (event,) = events
    assert (event.endpoint, event.status_code) == ("stream", 200)
    assert event.duration >= SLOW
    assert event.params == {"who": "me"}


def test_a_streamed_response_that_is_fast_sends_nothing(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    @app.route("/quick-stream")
    def quick_stream() -> Response:
        return Response(stream_with_context(iter(["a", "b"])))

    PerfAlert(app, threshold_seconds=THRESHOLD)
    assert app.test_client().get("/quick-stream").data == b"ab"
    assert events == []


def test_a_response_closed_early_by_the_client_is_still_measured(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    streaming_routes(app)
    PerfAlert(app, threshold_seconds=THRESHOLD)
    response = app.test_client().get("/stream", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"first,"
    time.sleep(SLOW)  # the client is slow to read: it still waits for the response
    response.close()  # and goes away before the end
    assert [e.endpoint for e in events] == ["stream"]


# -- reading settings and counters -----------------------------------------------------------------
def test_settings_and_effective_settings_read_back_with_secrets_masked(app: Flask) -> None:
    app.config.update(
        PERFALERT_MATTERMOST_TOKEN="token-value-1234",
        PERFALERT_STORAGE_URI="redis://:hunter2@127.0.0.1:1/0",
    )
    perf = PerfAlert(app, threshold_seconds=0.25)
    settings = perf.settings(app)
    assert isinstance(settings, PerfAlertSettings)
    assert settings.threshold_seconds == 0.25
    assert settings.mattermost_token is not None
    assert settings.mattermost_token.get_secret_value() == "token-value-1234"
    effective = perf.effective_settings(app)
    assert set(effective) == set(PerfAlertSettings.keys())
    assert effective["PERFALERT_THRESHOLD_SECONDS"] == 0.25
    assert effective["PERFALERT_FILE_DIR"] == app.config["PERFALERT_FILE_DIR"]
    text = repr(effective)
    assert "token-value-1234" not in text and "hunter2" not in text
    assert effective["PERFALERT_STORAGE_URI"].startswith("redis://:")
    assert effective["PERFALERT_STORAGE_URI"].endswith("@127.0.0.1:1/0")


def test_stats_count_requests_slow_alerted_and_suppressed(
    app: Flask, clock: FakeClock, wait_delivery: Any
) -> None:
    add_routes(app)
    perf = PerfAlert(app, threshold_seconds=THRESHOLD, clock=clock)
    client = app.test_client()
    for path in ("/fast", "/slow", "/fast", "/slow", "/slow"):
        client.get(path)
    client.post("/slow")  # another key: alerted
    wait_delivery()
    stats = perf.stats(app)
    assert {k: stats[k] for k in ("requests", "slow", "alerted", "suppressed")} == {
        "requests": 6,
        "slow": 4,
        "alerted": 2,
        "suppressed": 2,
    }
    assert stats["scope"] == "this process"


def test_stats_are_kept_per_app(report_dir: Path) -> None:
    perf = PerfAlert(threshold_seconds=THRESHOLD)
    busy, idle = new_app("busy", report_dir), new_app("idle", report_dir)
    perf.init_app(busy)
    perf.init_app(idle)
    busy.test_client().get("/slow")
    assert perf.stats(busy)["slow"] == 1
    assert perf.stats(idle)["requests"] == 0 and perf.stats(idle)["slow"] == 0


def test_a_second_instance_on_one_app_replaces_the_first(
    app: Flask, report_dir: Path, wait_delivery: Any, caplog: pytest.LogCaptureFixture
) -> None:
    PerfAlert(app, threshold_seconds=0.05)
    with caplog.at_level(logging.WARNING, "flask_perfalert"):
        second = PerfAlert(app, threshold_seconds=0.05)
    assert "replaces the first" in caplog.text
    assert app.extensions["perfalert"] is second

    @app.route("/slow")
    def slow() -> str:
        time.sleep(0.07)
        return "ok"

    app.test_client().get("/slow")
    wait_delivery()
    # One report, not one per instance.
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1
