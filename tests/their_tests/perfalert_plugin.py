"""A pytest plugin that puts Flask-PerfAlert into someone else's test suite.

Loaded into that suite's own pytest run with ``-p perfalert_plugin`` (this
folder on ``PYTHONPATH``); their files are not changed. With
``--perfalert=on``, every app their app fixtures return (by default the
fixtures named ``app`` and ``async_app``) gets ``PerfAlert(app, ...)`` with a
threshold so low that every request is slow, and reports in
``--perfalert-report-dir``. With ``--perfalert=off`` nothing is added, so the
two runs differ by the extension alone.

Both runs count, per test, every Flask signal sent (``appcontext_pushed``,
``appcontext_tearing_down`` ...; the last is sent once per run of the app's
``teardown_appcontext`` functions) and, with the extension, every
``perf_slow_request`` event and every error Flask-PerfAlert logged. Each
test's outcome and counts go to the JSON file ``--perfalert-results``.

``--perfalert-responses=closed`` makes Flask's test client read and close
every response (``buffered=True``), as a WSGI server does; ``open`` leaves
the client as it is (a plain ``client.get()`` never closes its response).

By hand, in an unpacked Flask sdist (``python tests/flask_sdist.py`` prints
where the tarball is)::

    PYTHONPATH=/path/to/tests/their_tests python -m pytest -p perfalert_plugin \\
        --perfalert=on --perfalert-responses=closed tests
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import Counter
from collections.abc import Generator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import flask
import flask.signals
import pytest
from flask.testing import FlaskClient

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request

#: Every signal Flask sends, by name.
FLASK_SIGNALS = {
    name: value
    for name, value in vars(flask.signals).items()
    if hasattr(value, "connect") and hasattr(value, "send") and not name.startswith("_")
}
OUTSIDE_TESTS = "(between tests)"


class _Recorder:
    """What happened during each test, keyed by node id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current = OUTSIDE_TESTS
        self.signals: dict[str, Counter[str]] = {}
        self.outcomes: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.internal_errors: dict[str, list[str]] = {}
        self.events = 0
        self.events_with_profile = 0
        self.events_by_test: Counter[str] = Counter()
        self.apps_by_fixture: Counter[str] = Counter()

    def count_signal(self, name: str) -> None:
        with self.lock:
            self.signals.setdefault(self.current, Counter())[name] += 1

    def count_event(self, event: SlowRequestEvent) -> None:
        with self.lock:
            self.events += 1
            self.events_with_profile += event.profile is not None
            self.events_by_test[self.current] += 1

    def internal_error(self, text: str) -> None:
        with self.lock:
            self.internal_errors.setdefault(self.current, []).append(text)

    def as_json(self, config: pytest.Config) -> dict[str, Any]:
        return {
            "flask_version": version("flask"),
            "perfalert": config.getoption("perfalert") == "on",
            "responses": config.getoption("perfalert_responses"),
            "outcomes": self.outcomes,
            "failures": self.failures,
            "signals": {test: dict(counts) for test, counts in self.signals.items()},
            "internal_errors": self.internal_errors,
            "events": self.events,
            "events_with_profile": self.events_with_profile,
            "events_by_test": dict(self.events_by_test),
            "apps_by_fixture": dict(self.apps_by_fixture),
        }


RECORDER = _Recorder()


# Receivers are module-level functions: blinker holds them weakly.
def _signal_receivers() -> dict[str, Any]:
    receivers = {}
    for name in FLASK_SIGNALS:

        def receiver(sender: Any, _name: str = name, **extra: Any) -> None:
            RECORDER.count_signal(_name)

        receivers[name] = receiver
    return receivers


_RECEIVERS = _signal_receivers()


def _on_slow_request(sender: Any, event: SlowRequestEvent, **extra: Any) -> None:
    RECORDER.count_event(event)


class _InternalErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        RECORDER.internal_error(text)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfalert", "Flask-PerfAlert in this suite")
    group.addoption("--perfalert", choices=("on", "off"), default="off")
    group.addoption("--perfalert-responses", choices=("closed", "open"), default="open")
    group.addoption("--perfalert-fixtures", default="app,async_app")
    group.addoption("--perfalert-threshold", type=float, default=1e-6)
    group.addoption("--perfalert-report-dir", default=None)
    group.addoption("--perfalert-results", default=None)


def _patch_pytest_for_older_suites() -> None:
    # Older Flask test suites import ``_pytest.monkeypatch.notset``, which newer
    # pytest renamed to ``_pytest.compat.NOTSET`` (the same sentinel); without it
    # every one of their tests errors in both runs and proves nothing.
    import _pytest.monkeypatch

    if not hasattr(_pytest.monkeypatch, "notset"):
        from _pytest.compat import NOTSET

        _pytest.monkeypatch.notset = NOTSET  # type: ignore[attr-defined]


def _close_every_response() -> None:
    original = FlaskClient.open

    @functools.wraps(original)
    def open_buffered(self: FlaskClient, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return original(self, *args, **kwargs)

    FlaskClient.open = open_buffered  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    _patch_pytest_for_older_suites()
    if config.getoption("perfalert_responses") == "closed":
        _close_every_response()
    for name, receiver in _RECEIVERS.items():
        FLASK_SIGNALS[name].connect(receiver)
    perf_slow_request.connect(_on_slow_request)
    logging.getLogger("flask_perfalert").addHandler(_InternalErrors())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, Any, Any]:
    with RECORDER.lock:
        RECORDER.current = item.nodeid
    try:
        return (yield)
    finally:
        with RECORDER.lock:
            RECORDER.current = OUTSIDE_TESTS


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = RECORDER.outcomes.get(report.nodeid)
    if report.failed:
        RECORDER.outcomes[report.nodeid] = "failed"
        RECORDER.failures.setdefault(report.nodeid, f"{report.when}: {report.longreprtext}")
    elif outcome is None or (report.when == "call" and outcome != "failed"):
        RECORDER.outcomes[report.nodeid] = report.outcome


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        RECORDER.outcomes[report.nodeid] = "failed"
        RECORDER.failures[report.nodeid] = f"collection: {report.longreprtext}"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    value = yield
    config = request.config
    names = config.getoption("perfalert_fixtures").split(",")
    if (
        config.getoption("perfalert") == "on"
        and fixturedef.argname in names
        and isinstance(value, flask.Flask)
        # A fixture that extends another one returns the same app: set up once.
        and "perfalert" not in value.extensions
    ):
        options: dict[str, Any] = {"threshold_seconds": config.getoption("perfalert_threshold")}
        report_dir = config.getoption("perfalert_report_dir")
        if report_dir:
            options["file_dir"] = report_dir
            # The alert window of this run alone (on defaults it outlives the process).
            options["data_dir"] = f"{report_dir}-data"
        PerfAlert(value, **options)
        RECORDER.apps_by_fixture[fixturedef.argname] += 1
    return value


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = session.config.getoption("perfalert_results")
    if results:
        Path(results).write_text(json.dumps(RECORDER.as_json(session.config), indent=1))
