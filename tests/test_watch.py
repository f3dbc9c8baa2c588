"""``@perf.watch``: slow calls of a function, inside or outside a request."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ClosingClient, FakeClock
from flask import Flask, Response, stream_with_context
from pyinstrument.session import Session

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request

THRESHOLD = 0.1
SLOW = 0.12


class Refused(Exception):
    pass


def crunch(n: int, *, factor: float = 2.0) -> float:
    """Multiply slowly."""
    time.sleep(SLOW)
    return n * factor


def quick(n: int) -> int:
    return n + 1


def fail_slowly(error: Exception) -> None:
    time.sleep(SLOW)
    raise error


async def fetch(n: int) -> int:
    """Wait, then answer."""
    await asyncio.sleep(SLOW)
    return n * 3


def functions(events: list[SlowRequestEvent]) -> list[SlowRequestEvent]:
    return [e for e in events if e.kind == "function"]


# -- the decorator ---------------------------------------------------------------------------------
def test_bare_decorator_outside_any_context(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    watched = perf.watch(crunch)
    assert watched(2) == 4.0
    assert perf.watch(quick)(1) == 2
    (event,) = events
    assert event.kind == "function"
    assert event.endpoint == f"{__name__}.crunch"
    assert (event.url, event.method, event.status_code, event.params) == (None, None, None, {})
    assert event.threshold == THRESHOLD and event.duration >= SLOW
    assert event.key == f"function {__name__}.crunch"
    assert event.timestamp.tzinfo is not None
    assert perf.stats(app)["functions"] == 2


def test_decorator_with_a_threshold(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert(app)  # global threshold: 1 s

    @perf.watch(threshold=0.05)
    def load() -> str:
        time.sleep(0.07)
        return "loaded"

    @perf.watch(threshold=5)
    def relaxed() -> str:
        time.sleep(0.07)
        return "relaxed"

    assert load() == "loaded" and relaxed() == "relaxed"
    assert [(e.endpoint, e.threshold) for e in events] == [
        (f"{__name__}.test_decorator_with_a_threshold.<locals>.load", 0.05)
    ]


def test_the_threshold_can_come_from_endpoint_thresholds(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, endpoint_thresholds={f"{__name__}.crunch": 0.05})
    perf.watch(crunch)(1)
    perf.watch(threshold=0.5)(crunch)(1)  # the decorator's own threshold comes first
    assert [e.threshold for e in events] == [0.05]


@pytest.mark.parametrize("threshold", [0, -1, float("nan")])
def test_a_bad_threshold_is_refused_at_decoration(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        PerfAlert().watch(threshold=threshold)


def test_name_docstring_and_signature_are_kept() -> None:
    perf = PerfAlert()
    for original in (crunch, fetch):
        watched = perf.watch(original)
        assert watched.__name__ == original.__name__
        assert watched.__qualname__ == original.__qualname__
        assert watched.__module__ == original.__module__
        assert watched.__doc__ == original.__doc__
        assert watched.__wrapped__ is original  # type: ignore[attr-defined]
        assert inspect.signature(watched) == inspect.signature(original)
        assert inspect.iscoroutinefunction(watched) == inspect.iscoroutinefunction(original)
    with_threshold = perf.watch(threshold=0.5)(crunch)
    assert inspect.signature(with_threshold) == inspect.signature(crunch)
    assert with_threshold.__doc__ == "Multiply slowly."


def test_it_stacks_with_other_decorators(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)

    def logged(func: Any) -> Any:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return inner

    watched = logged(perf.watch(logged(crunch)))
    assert watched(3, factor=1.5) == 4.5
    assert inspect.signature(watched) == inspect.signature(crunch)
    assert [e.endpoint for e in events] == [f"{__name__}.crunch"]


def test_return_values_and_exceptions_pass_through_unchanged(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    result = object()
    assert perf.watch(lambda: result)() is result
    error = Refused("no")
    with pytest.raises(Refused) as raised:
        perf.watch(fail_slowly)(error)
    assert raised.value is error
    assert raised.traceback[-1].name == "fail_slowly"  # the traceback is the original one
    # A slow call that raised is reported too.
    assert [e.endpoint for e in events] == [f"{__name__}.fail_slowly"]


def test_a_generator_function_is_timed_until_it_returns_the_generator(app: Flask) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)

    @perf.watch
    def numbers() -> Any:
        yield from range(3)

    assert list(numbers()) == [0, 1, 2]


def test_repeated_slow_calls_are_duplicates_inside_the_window(
    app: Flask, events: list[SlowRequestEvent], clock: FakeClock
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD, clock=clock)
    watched = perf.watch(crunch)
    watched(1)
    watched(1)
    clock.advance(10 * 86400 + 1)
    watched(1)
    assert [e.duplicate for e in events] == [False, True, False]


def test_disabled_calls_the_function_and_does_nothing_else(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD, enabled=False)
    assert perf.watch(crunch)(1) == 2.0
    assert events == []
    assert perf.stats(app)["functions"] == 0


# -- which app -----------------------------------------------------------------------------------
def test_decorated_before_init_app(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert()
    watched = perf.watch(crunch)
    assert watched(1) == 2.0  # not set up for any app yet: just a call
    app.config["PERFALERT_THRESHOLD_SECONDS"] = THRESHOLD
    perf.init_app(app)
    assert watched(1) == 2.0
    assert [e.endpoint for e in events] == [f"{__name__}.crunch"]


def test_with_two_apps_the_app_context_decides(report_dir: Any, wait_delivery: Any) -> None:
    perf = PerfAlert(threshold_seconds=THRESHOLD)
    watched = perf.watch(crunch)
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config["PERFALERT_FILE_DIR"] = str(report_dir)
        perf.init_app(app)
        apps.append(app)
    received: list[str] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append(sender.name)

    with perf_slow_request.connected_to(receiver):
        watched(1)  # no app context, two apps: not monitored (which app would it be?)
        with apps[1].app_context():
            watched(1)
        wait_delivery()
    assert received == ["two"]


# -- inside a request ---------------------------------------------------------------------------
def test_inside_a_request_its_own_event_is_sent_after_the_response(
    app: Flask, events: list[SlowRequestEvent], wait_delivery: Any
) -> None:
    app.testing = False  # as under a real server, which closes the response after sending it
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    watched = perf.watch(crunch)
    in_view: dict[str, int] = {}

    @app.route("/compute")
    def compute() -> str:
        result = watched(21)
        in_view["events"] = len(events)
        return str(result)

    response = app.test_client().get("/compute", buffered=False)
    assert response.get_data() == b"42.0"
    wait_delivery()
    assert in_view == {"events": 0} and events == []  # not while the view runs
    response.close()
    wait_delivery()
    assert [(e.kind, e.endpoint, e.status_code) for e in events] == [
        ("request", "compute", 200),  # the request's own event first
        ("function", f"{__name__}.crunch", None),
    ]
    assert events[1].url is None and events[1].method is None
    assert events[1].duration <= events[0].duration


@pytest.mark.parametrize("streamed", [False, True])
def test_a_slow_function_inside_a_fast_request_is_reported(
    app: Flask, events: list[SlowRequestEvent], streamed: bool
) -> None:
    # The request is well under its own threshold; the function is over its own.
    perf = PerfAlert(app, threshold_seconds=1.0)

    @perf.watch(threshold=0.05)
    def lookup() -> str:
        time.sleep(0.07)
        return "found"

    @app.route("/lookup")
    def view() -> Any:
        if streamed:  # called while the body is sent, in the request's context

            def generate() -> Iterator[str]:
                yield lookup()

            return Response(stream_with_context(generate()))
        return lookup()

    assert app.test_client().get("/lookup").data == b"found"
    assert [(e.kind, e.endpoint) for e in events] == [
        ("function", f"{__name__}.{lookup.__qualname__}")
    ]


def test_a_watched_view(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)

    @app.route("/report/<int:year>")
    @perf.watch
    def yearly_report(year: int) -> str:
        time.sleep(SLOW)
        return f"report {year}"

    assert app.test_client().get("/report/2024").data == b"report 2024"
    assert [(e.kind, e.endpoint) for e in events] == [
        ("request", "yearly_report"),  # the endpoint is named after the function
        ("function", f"{__name__}.{yearly_report.__qualname__}"),
    ]


def test_a_watched_function_in_a_request_context_without_a_request_is_not_lost(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    # A request context that no server request runs in (a test, a shell, a CLI
    # job): nothing would send events held back for the end of the request.
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    watched = perf.watch(crunch)
    with app.test_request_context("/not/served"):
        watched(1)
    assert [(e.kind, e.endpoint) for e in events] == [("function", f"{__name__}.crunch")]


def test_a_slow_watched_call_in_a_fast_request_is_sent_after_it(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    # The request stays far below its own threshold: the watched call's event
    # must not depend on the request being slow.
    perf = PerfAlert(app, threshold_seconds=10)

    @perf.watch(threshold=0.01)
    def nap() -> None:
        time.sleep(0.02)

    @app.route("/")
    def index() -> str:
        nap()
        return "ok"

    client = app.test_client()
    for _ in range(2):
        assert client.get("/").data == b"ok"
    assert [e.kind for e in events] == ["function", "function"]


def test_callables_without_a_qualified_name_can_be_watched(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    watched = perf.watch(functools.partial(crunch, factor=3.0))
    assert watched(2) == 6.0
    (event,) = events
    assert event.endpoint == f"{__name__}.crunch"


def test_a_watched_function_in_an_excluded_request_is_still_watched(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD, exclude=["/health"])
    watched = perf.watch(crunch)

    @app.route("/health")
    def health() -> str:
        watched(1)
        return "ok"

    assert app.test_client().get("/health").data == b"ok"
    assert [(e.kind, e.endpoint) for e in events] == [("function", f"{__name__}.crunch")]


@pytest.mark.parametrize("profiler", ["pyinstrument", "sampling"])
def test_nested_watched_functions_in_a_profiled_request(
    app: Flask, events: list[SlowRequestEvent], profiler: str
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD, profiler=profiler, sample_after=0)
    inner = perf.watch(crunch)

    @perf.watch
    def outer() -> float:
        return inner(1) + inner(2)

    @app.route("/nested")
    def nested() -> str:
        return str(outer())

    assert app.test_client().get("/nested").data == b"6.0"
    assert [(e.kind, e.endpoint, e.duplicate) for e in events] == [
        ("request", "nested", False),
        ("function", f"{__name__}.crunch", False),
        ("function", f"{__name__}.crunch", True),
        ("function", f"{__name__}.{outer.__qualname__}", False),
    ]
    for event in events:
        assert isinstance(event.profile, Session), event.profile_note
    assert events[0].duration >= events[3].duration >= 2 * SLOW


def test_nested_watched_functions_outside_a_request_with_pyinstrument(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD, profiler="pyinstrument")
    inner = perf.watch(crunch)
    outer = perf.watch(threshold=0.2)(lambda: inner(1) + inner(1))
    assert outer() == 4.0
    assert [e.endpoint for e in events] == [f"{__name__}.crunch"] * 2 + [
        f"{__name__}.{outer.__qualname__}"
    ]
    assert all(isinstance(e.profile, Session) for e in events)


# -- coroutines ------------------------------------------------------------------------------------
def test_an_async_function_is_watched(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    watched = perf.watch(fetch)
    assert inspect.iscoroutinefunction(watched)
    assert asyncio.run(watched(2)) == 6
    (event,) = events
    assert (event.kind, event.endpoint) == ("function", f"{__name__}.fetch")
    assert event.duration >= SLOW  # wall time, waiting included


def test_an_async_function_that_raises(app: Flask, events: list[SlowRequestEvent]) -> None:
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)

    @perf.watch
    async def refuse() -> None:
        await asyncio.sleep(SLOW)
        raise Refused("async no")

    with pytest.raises(Refused, match="async no"):
        asyncio.run(refuse())
    assert [e.kind for e in events] == ["function"]


def test_an_async_function_in_an_async_view(report_dir: Any, wait_delivery: Any) -> None:
    app = Flask(__name__)
    app.config.update(PERFALERT_FILE_DIR=str(report_dir))
    app.test_client_class = ClosingClient
    perf = PerfAlert(app, threshold_seconds=THRESHOLD)
    watched = perf.watch(fetch)

    @app.route("/async")
    async def view() -> str:
        return str(await watched(5))

    received: list[SlowRequestEvent] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        received.append(event)

    with perf_slow_request.connected_to(receiver, sender=app):
        assert app.test_client().get("/async").data == b"15"
        wait_delivery()
    assert [(e.kind, e.endpoint) for e in received] == [
        ("request", "view"),
        ("function", f"{__name__}.fetch"),
    ]
