"""Invisible to the app: with the extension on, nothing the app can observe changes.

No write to the WSGI environ while the view runs, no context pushed, the
app's teardown functions and context signals run as often as without us, its
own SIGALRM watchdog keeps working, and no profile function or gc setting is
touched while requests are sampled. Event fields are right for every kind of
response.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import (
    Flask,
    Response,
    abort,
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request,
    send_file,
    stream_with_context,
)
from profiles import spin

from flask_perfalert import PerfAlert, SlowRequestEvent

SLOW = 0.3


# -- the environ, the request ------------------------------------------------------------------
def test_a_view_reading_the_headers_in_a_loop_never_fails(app: Flask) -> None:
    # The sampler used to add keys to the live environ while this loop iterated it:
    # "dictionary changed size during iteration", a 500 for 5 to 8 of 10 requests.
    PerfAlert(app)  # default settings

    @app.get("/copy-headers")
    def copy_headers() -> str:
        t = time.perf_counter()
        while time.perf_counter() - t < SLOW:
            dict(request.headers)
        return "ok"

    client = app.test_client()
    statuses = [client.get("/copy-headers").status_code for _ in range(10)]
    assert statuses == [200] * 10


@pytest.mark.parametrize("threshold", [0.01, 0.1])  # the request object kept early, or late
def test_the_environ_is_never_written(app: Flask, threshold: float) -> None:
    PerfAlert(app, threshold_seconds=threshold, sample_after=0)
    seen: list[frozenset[str]] = []
    environs: list[dict[str, Any]] = []

    @app.get("/watch-environ")
    def watch_environ() -> str:
        environ = request.environ
        environs.append(environ)
        t = time.perf_counter()
        while time.perf_counter() - t < SLOW:
            seen.append(frozenset(environ))
        return "ok"

    assert app.test_client().get("/watch-environ").status_code == 200
    assert len(set(seen)) == 1, "the environ changed while the view ran"
    assert not [key for key in environs[0] if "perfalert" in key.lower()]


# -- contexts, teardown functions, signals ----------------------------------------------------
def context_counts(app: Flask, requests: int) -> dict[str, int]:
    counts = {"teardown_appcontext": 0, "teardown_request": 0, "pushed": 0, "popped": 0}
    counts["tearing_down"] = 0

    @app.teardown_appcontext
    def count_app_teardown(exc: BaseException | None) -> None:
        counts["teardown_appcontext"] += 1

    @app.teardown_request
    def count_request_teardown(exc: BaseException | None) -> None:
        counts["teardown_request"] += 1

    @app.get("/slow")
    def slow() -> str:
        time.sleep(0.05)
        return "slow"

    def on(name: str) -> Any:
        def receiver(sender: Flask, **extra: Any) -> None:
            counts[name] += 1

        return receiver

    receivers = {name: on(name) for name in ("pushed", "popped", "tearing_down")}
    with (
        appcontext_pushed.connected_to(receivers["pushed"], app),
        appcontext_popped.connected_to(receivers["popped"], app),
        appcontext_tearing_down.connected_to(receivers["tearing_down"], app),
    ):
        client = app.test_client()
        for _ in range(requests):  # closed after reading, as a server does
            assert client.get("/slow", buffered=True).status_code == 200
        from flask_perfalert.events_thread import EVENTS

        assert EVENTS.wait_idle(10)
    return counts


@pytest.mark.parametrize("testing", [True, False])
def test_teardown_functions_and_context_signals_run_as_often_as_without_us(
    report_dir: Path, testing: bool
) -> None:
    bare = Flask("bare")
    bare.testing = testing
    monitored = Flask("monitored")
    monitored.testing = testing
    monitored.config["PERFALERT_FILE_DIR"] = str(report_dir)
    PerfAlert(monitored, threshold_seconds=0.01)  # every request slow
    expected = context_counts(bare, 3)
    assert context_counts(monitored, 3) == expected
    assert expected["teardown_appcontext"] == 3


# -- the app's own resources -------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX interval timers")
def test_an_app_s_own_alarm_watchdog_works_and_profiles_go_on(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    assert threading.current_thread() is threading.main_thread()
    PerfAlert(app, threshold_seconds=0.1)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL  # never taken by us
    fired: list[float] = []

    @app.get("/guarded")
    def guarded() -> str:
        # A common timeout pattern: an alarm of its own, then the old handler back.
        start = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, lambda *args: fired.append(time.perf_counter()))
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        try:
            spin(0.15)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return f"{fired[0] - start:.3f}"

    @app.get("/slow")
    def slow() -> str:
        return str(spin(0.15))

    client = app.test_client()
    delay = float(client.get("/guarded").get_data(as_text=True))
    assert 0.05 <= delay < 0.08, "the app's alarm fired on time"
    for _ in range(2):
        client.get("/slow")
    slow_events = [e for e in events if e.endpoint == "slow"]
    assert slow_events and all(e.profile is not None for e in slow_events)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_profile_function_or_gc_setting_changes_while_a_request_is_sampled(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    PerfAlert(app, threshold_seconds=0.1)
    observed: set[Any] = set()

    @app.get("/slow")
    def slow() -> str:
        t = time.perf_counter()
        while time.perf_counter() - t < SLOW:
            observed.add((sys.getprofile(), gc.isenabled(), gc.get_threshold()))
        return "ok"

    app.test_client().get("/slow")
    assert events and events[0].profile is not None  # it was sampled meanwhile
    assert observed == {(None, gc.isenabled(), gc.get_threshold())}


# -- event fields of every kind of response ---------------------------------------------------
@pytest.fixture
def slow_app(app: Flask, tmp_path: Path) -> Iterator[Flask]:
    data = tmp_path / "static" / "data.txt"
    data.parent.mkdir()
    data.write_text("x" * 10_000)
    app.static_folder = str(data.parent)
    PerfAlert(app, threshold_seconds=1e-6, profiler="none")

    @app.get("/file")
    def file() -> Response:
        return send_file(data)

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            yield "one"
            time.sleep(0.01)
            yield "two"

        return Response(stream_with_context(chunks()))

    @app.get("/missing")
    def missing() -> str:
        abort(404)

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("boom")

    @app.route("/head", methods=["GET", "HEAD"])
    def head() -> str:
        return "body"

    yield app


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/file", 200),
        ("GET", "/static/data.txt", 200),
        ("GET", "/stream", 200),
        ("HEAD", "/head", 200),
        ("GET", "/missing", 404),
        ("GET", "/nowhere", 404),
        ("POST", "/file", 405),
    ],
)
def test_the_status_of_every_kind_of_response(
    slow_app: Flask, events: list[SlowRequestEvent], method: str, path: str, status: int
) -> None:
    response = slow_app.test_client().open(path, method=method)
    assert response.status_code == status
    assert [e.status_code for e in events] == [status]


@pytest.mark.allow_internal_errors  # Flask logs the view's error
def test_the_status_of_a_view_that_raises(
    slow_app: Flask, events: list[SlowRequestEvent], caplog: pytest.LogCaptureFixture
) -> None:
    slow_app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: a 500 page
    assert slow_app.test_client().get("/boom").status_code == 500
    slow_app.config["PROPAGATE_EXCEPTIONS"] = True  # testing: the error reaches the client
    with pytest.raises(ValueError, match="boom"):
        slow_app.test_client().get("/boom")
    assert [e.status_code for e in events] == [500, 500]


def test_a_stream_the_client_abandons_is_reported_with_its_status(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    response = slow_app.test_client().get("/stream", buffered=False)
    assert next(iter(response.response)) == b"one"
    response.close()  # the client went away after the first chunk
    assert [(e.endpoint, e.status_code) for e in events] == [("stream", 200)]


# -- finalizers -------------------------------------------------------------------------------
def test_a_response_discarded_unclosed_runs_nothing_where_it_is_collected(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    # A response nobody closes is handed on when it is garbage-collected, which
    # happens inside whatever code allocates next: maybe app code holding a lock
    # that a receiver takes too. Nothing may run there; the next request does it.
    PerfAlert(app, threshold_seconds=0.01, profiler="none")
    lock = threading.Lock()

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            yield "done"

        # Slow before it returns: an unclosed response is timed to the app's return.
        time.sleep(0.02)
        return Response(chunks())

    @app.get("/next")
    def next_request() -> str:
        return "next"

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        with lock:
            pass

    from flask_perfalert import perf_slow_request

    perf_slow_request.connect(receiver, sender=app, weak=False)
    try:
        response = app.test_client().get("/stream", buffered=False)
        assert response.get_data() == b"done"

        def discard_while_holding_the_lock() -> None:
            nonlocal response
            with lock:
                del response
                gc.collect()

        worker = threading.Thread(target=discard_while_holding_the_lock, daemon=True)
        worker.start()
        worker.join(5)
        assert not worker.is_alive(), "a finalizer ran the receivers under the app's lock"
        assert events == []
        app.test_client().get("/next")  # the next request hands it on first
        assert [e.endpoint for e in events] == ["stream"]
    finally:
        perf_slow_request.disconnect(receiver, sender=app)


@pytest.mark.parametrize("path", ["/nowhere", "/stream"])
def test_closed_responses_leave_nothing_behind(app: Flask, wait_delivery: Any, path: str) -> None:
    # A 404 keeps its routing error (and the traceback through the request timer's
    # frame) on the request object the record keeps: nothing of ours may hold the
    # response body beyond its close, or every such request would stay in memory.
    from flask_perfalert.profiling.state import InFlight

    app.testing = False  # as under a real server: handed on when closed
    PerfAlert(app, threshold_seconds=1e-6, profiler="none", file_enabled=False)

    @app.get("/stream")
    def stream() -> Response:
        return Response(iter(["a", "b"]))

    client = app.test_client()
    for _ in range(200):
        client.get(path, buffered=True)
    wait_delivery()
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, InFlight)]
    assert len(alive) < 5, f"{len(alive)} requests kept alive"
