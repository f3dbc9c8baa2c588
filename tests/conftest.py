from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request
from flask_perfalert.events_thread import EVENTS
from flask_perfalert.profiling.sampler import SAMPLER


class ClosingClient(FlaskClient):
    """A test client whose responses are read and closed before they are returned.

    A WSGI server closes every response after sending it, which is when
    Flask-PerfAlert finishes its measurement; Werkzeug's test client only
    does so when asked (``buffered=True``).
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


class FakeClock:
    """Wall-clock time for the de-duplication window, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _fresh_sampler_interval() -> None:
    """Each test starts with the sampler at its configured rate.

    The sampler backs off (samples less often) when it used more than
    PERFALERT_MAX_OVERHEAD of a second; a test that samples deep stacks can
    trigger that, and the slower rate would otherwise leak into later tests.
    """
    SAMPLER.configure(0.005, 0.05)  # the defaults; PerfAlert(app) sets its own
    SAMPLER.backed_off = False


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PERFALERT_"):
            monkeypatch.delenv(key)
    # Every app of a test keeps its alert window, reports and spool in the test's own
    # folder, never in an instance folder of this repository (where they would outlive
    # the test). The tests of these defaults unset it.
    monkeypatch.setenv("PERFALERT_DATA_DIR", str(tmp_path / "perfalert-data"))


class _InternalErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_swallowed_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """An error that Flask-PerfAlert caught and logged fails the test, unless expected.

    Mark a test ``@pytest.mark.allow_internal_errors`` when it provokes one on purpose.
    """
    handler = _InternalErrors()
    logger = logging.getLogger("flask_perfalert")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    EVENTS.wait_idle(10)
    if request.node.get_closest_marker("allow_internal_errors") is None and handler.records:
        messages = "\n".join(
            f"{r.getMessage()}\n{logging.Formatter().formatException(r.exc_info)}"
            if r.exc_info
            else r.getMessage()
            for r in handler.records
        )
        pytest.fail(f"Flask-PerfAlert logged internal errors:\n{messages}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.fixture
def app(request: pytest.FixtureRequest, report_dir: Path) -> Flask:
    app = Flask(request.module.__name__, instance_path=str(report_dir.parent / "instance"))
    app.config.update(TESTING=True, PERFALERT_FILE_DIR=str(report_dir))
    app.test_client_class = ClosingClient
    return app


@pytest.fixture
def events(app: Flask) -> Iterator[list[SlowRequestEvent]]:
    """Every event sent for ``app``, in order."""
    received: list[SlowRequestEvent] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append(event)

    perf_slow_request.connect(receiver, sender=app)
    try:
        yield received
    finally:
        perf_slow_request.disconnect(receiver, sender=app)


@pytest.fixture
def wait_delivery() -> Any:
    """Wait until the events thread has handled every slow request handed to it."""

    def wait(timeout: float = 10.0) -> None:
        assert EVENTS.wait_idle(timeout), "the events thread did not finish in time"

    return wait


def make_perf(app: Flask, **options: Any) -> PerfAlert:
    return PerfAlert(app, **options)


def close_monitoring(app: Flask) -> None:
    """Release what the app's monitoring opened: store connections, Mattermost's replays."""
    perf = app.extensions.get("perfalert")
    if perf is not None:
        perf._monitor(app).close()


def claim_race(stores: list[Any], key: str, window: float) -> list[bool]:
    """Every store claims ``key`` at once, each from its own thread: what each was told."""
    barrier = threading.Barrier(len(stores), timeout=10)
    results: list[bool] = []

    def race(store: Any) -> None:
        barrier.wait()
        results.append(store.claim(key, window))

    threads = [threading.Thread(target=race, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results
