"""The request timer: a thin WSGI wrapper around ``app.wsgi_app``.

It times what the app does for a request: from the moment it is called, with
routing and error handling, until it returns its response, or, for a streamed
response, until the server closes it after the last byte. The slow-request
decision's consequences (the event, the signal, the alerts) run in a close
call-back, after the client has the whole response; a fast request needs no
call-back at all.

Every request pays for this code, so it is written for the fewest Python
calls (each costs about as much as 0.3% of a trivial Flask request): no
``before_request``/``after_request`` hooks, no wrapped ``start_response``, no
wrapper object around the body when Werkzeug's ``ClosingIterator`` can carry
the call-back. The numbers are in docs/performance.rst.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from functools import partial
from threading import get_ident
from time import perf_counter
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import ClosingIterator

from ._sampler import SAMPLER

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._measurement import Measurement
    from ._monitor import AppMonitor

logger = logging.getLogger("flask_perfalert")

# WSGI environ keys of this extension.
#: Events of slow @perf.watch calls made during a request, sent after its response.
ENVIRON_DEFERRED = "perfalert.deferred"
#: Set on requests whose URL path is excluded (PERFALERT_EXCLUDE globs).
ENVIRON_EXCLUDED = "perfalert.excluded"
#: The pyinstrument profiler of a request (PERFALERT_PROFILER="pyinstrument").
ENVIRON_PROFILER = "perfalert.profiler"


class TimerState:
    """What the installed wrapper reads on every request, copied from the app's monitor.

    ``init_app`` calls :meth:`use` again when it re-reads the settings. Slots,
    because attribute look-ups on the hot path are a measurable share of its cost.
    The sampler treats it like a monitor: ``min_arm_delay`` and ``arm(entry)``.
    """

    __slots__ = (
        "wrapped",
        "monitor",
        "special",
        "path_glob",
        "pyinstrument",
        "min_threshold",
        "min_arm_delay",
        "notable",
        "arm",
        "capture",
        "stats",
    )

    def __init__(self, wrapped: WSGIApplication, monitor: AppMonitor) -> None:
        self.wrapped = wrapped
        self.use(monitor)

    def use(self, monitor: AppMonitor) -> None:
        self.monitor = monitor
        self.path_glob = monitor.path_glob
        self.pyinstrument = monitor.pyinstrument
        #: Requests need :func:`_begin_special` (exclusion globs, or pyinstrument).
        self.special = monitor.path_glob is not None or monitor.pyinstrument
        # With pyinstrument every request has a profiler to stop: treat all as "slow".
        self.min_threshold = 0.0 if monitor.pyinstrument else monitor.min_threshold
        self.min_arm_delay = monitor.min_arm_delay
        #: Below this a request was neither armed by the sampler nor slow.
        self.notable = min(self.min_arm_delay, self.min_threshold)
        self.arm = monitor.arm
        self.capture = monitor.capture
        self.stats = monitor.stats


def install_timer(
    wsgi_app: WSGIApplication, monitor: Any, sampler: Any = SAMPLER
) -> WSGIApplication:
    """A ``wsgi_app`` that times every request of ``monitor``'s app.

    A plain function, not an object with ``__call__``, which costs an extra
    slot look-up per request.
    """
    # Closure cells: cheaper to reach than globals, and unlike default arguments
    # they are not copied into every call's frame.
    _state = TimerState(wsgi_app, monitor)
    _perf_counter = perf_counter
    _get_ident = get_ident
    _active = sampler.active
    _armed = sampler.armed
    _ready_threads = sampler.ready_threads
    _kick = sampler.kick

    def perfalert_wsgi_app(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        start = _perf_counter()
        thread_id = _get_ident()
        entry = (start, thread_id, _state, environ)
        if _state.special and _begin_special(entry):
            return _state.wrapped(environ, start_response)
        key = id(entry)
        # SAMPLER.register(entry), inlined.
        _active[key] = entry
        if thread_id not in _ready_threads:
            _kick(entry)
        try:
            body = _state.wrapped(environ, start_response)
        except BaseException:
            finish(entry, 500)
            raise
        # Werkzeug's Response.get_app_iter() returns ClosingIterator(..., response.close).
        try:
            callbacks = body._callbacks  # type: ignore[attr-defined]
            response = callbacks[-1].__self__
            streamed = type(response.response) is not list
        except (AttributeError, IndexError, TypeError):
            return _wrap_other_body(body, entry, environ)
        if streamed:
            # The work happens while the server iterates: time it to close().
            callbacks.append(partial(finish, entry, getattr(response, "status_code", None)))
            return body
        # Not streamed: the view has done all its work; what is left is copying
        # bytes to the socket. A fast request ends here, with no call-back at all.
        end = _perf_counter()
        try:
            del _active[key]
        except KeyError:  # the sampler was reset meanwhile (at exit)
            pass
        duration = end - start
        stats = _state.stats
        stats.requests += 1
        stats.monitored_seconds += duration
        if end >= stats.flush_due:
            callbacks.append(stats.flush)
        # Below ``notable`` a request was not armed, is not slow and holds back no
        # event of a watched call (see hold_back).
        if duration >= _state.notable:
            measurement = _armed.pop(key, None)
            # Slow, or a slow @perf.watch call inside waits for the response to be sent.
            if duration >= _state.min_threshold or ENVIRON_DEFERRED in environ:
                # Slow: the event, its signal and its alerts wait until the response is sent.
                callbacks.append(
                    partial(
                        after_response,
                        entry,
                        measurement,
                        getattr(response, "status_code", None),
                        end,
                    )
                )
        return body

    perfalert_wsgi_app.perfalert_state = _state  # type: ignore[attr-defined]
    return perfalert_wsgi_app


def _begin_special(entry: tuple[Any, ...]) -> bool:
    """What a request needs under exclusion globs or pyinstrument; True: not timed."""
    state, environ = entry[2], entry[3]
    excluded = state.path_glob
    if excluded is not None and excluded(environ.get("PATH_INFO", "")) is not None:
        environ[ENVIRON_EXCLUDED] = True
        return True
    if state.pyinstrument:
        environ[ENVIRON_PROFILER] = state.monitor.policy.start_pyinstrument(entry)
    return False


def hold_back(environ: WSGIEnvironment, event: Any, threshold: float) -> bool:
    """Keep a watched call's ``event`` until the request timed with ``environ`` is sent.

    False when no timed request has that environ (a request context of a test
    or a shell, which no server sends): the caller emits the event now.
    """
    for entry in list(SAMPLER.active.values()):
        state = entry[2]
        if entry[3] is environ and isinstance(state, TimerState):
            environ.setdefault(ENVIRON_DEFERRED, []).append(event)
            # The request lasts at least as long as the call: from now on requests
            # that long take the timer's notable branch, which sends held-back events.
            state.notable = min(state.notable, threshold)
            return True
    return False


def timer_state(wsgi_app: object) -> TimerState | None:
    """The state of a ``wsgi_app`` made by :func:`install_timer`, else None."""
    return getattr(wsgi_app, "perfalert_state", None)


def _wrap_other_body(
    body: Iterable[bytes], entry: tuple[Any, ...], environ: WSGIEnvironment
) -> Iterable[bytes]:
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
        # Keep the server's sendfile path: timing ends before the file is sent.
        finish(entry)
        return body
    return _TimedBody(body, entry)


def finish(entry: tuple[Any, ...], status: int | None = None) -> None:
    """A streamed (or otherwise wrapped) response is closed: end its measurement."""
    end = perf_counter()
    key = id(entry)
    SAMPLER.active.pop(key, None)
    measurement = SAMPLER.armed.pop(key, None)
    state = entry[2]
    duration = end - entry[0]
    stats = state.stats
    stats.requests += 1
    stats.monitored_seconds += duration
    if end >= stats.flush_due:
        stats.flush()
    if duration >= state.min_threshold or ENVIRON_DEFERRED in entry[3]:
        after_response(entry, measurement, status, end)


def after_response(
    entry: tuple[Any, ...], measurement: Measurement | None, status: int | None, end: float
) -> None:
    """A request that took at least the lowest threshold has been sent."""
    began = perf_counter()
    try:
        entry[2].monitor.finish_request(entry, measurement, status, end)
    except Exception:
        logger.exception("Flask-PerfAlert failed after a request")
    entry[2].stats.after_response_seconds += perf_counter() - began


class _TimedBody:
    """A body that is not a ``ClosingIterator``, passed through; closing it finishes."""

    __slots__ = ("_body", "_entry", "_closed")

    def __init__(self, body: Iterable[bytes], entry: tuple[Any, ...]) -> None:
        self._body = body
        self._entry = entry
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            finish(self._entry)


# -- the extension's own cost --------------------------------------------------------

_request_cost: float | None = None


class _IdleSampler:
    """Stands in for the sampler while the cost is measured: never starts a timer."""

    def __init__(self) -> None:
        self.active: dict[int, Any] = {}
        self.armed: dict[int, Any] = {}
        self.ready_threads = {get_ident()}

    def kick(self, entry: tuple[Any, ...]) -> None:
        pass


class _Response:
    response: list[bytes] = []
    status_code = 200

    def close(self) -> None:
        pass


def request_path_cost(rounds: int = 9, calls: int = 300) -> float:
    """Seconds the request timer adds to one fast request, measured in this process.

    Timing every request would itself cost more than the timer does, so the
    per-request cost is measured once (a few milliseconds, on first use): the
    timer around a do-nothing WSGI app against that app alone, rounds
    interleaved, median of the differences.
    """
    global _request_cost
    if _request_cost is not None:
        return _request_cost
    from types import SimpleNamespace

    from ._stats import Stats

    response = _Response()

    def inner(environ: WSGIEnvironment, start_response: StartResponse) -> ClosingIterator:
        return ClosingIterator([], response.close)

    stub = SimpleNamespace(
        path_glob=None,
        pyinstrument=False,
        min_threshold=1e9,
        min_arm_delay=1e9,
        arm=None,
        capture=None,
        stats=Stats(),
    )
    timed = install_timer(inner, stub, sampler=_IdleSampler())
    environ: dict[str, Any] = {"PATH_INFO": "/"}

    def start_response(*args: Any) -> Any:
        return None

    differences = []
    for _ in range(rounds):
        t0 = perf_counter()
        for _ in range(calls):
            inner(environ, start_response).close()
        t1 = perf_counter()
        for _ in range(calls):
            timed(environ, start_response).close()  # type: ignore[attr-defined]
        t2 = perf_counter()
        differences.append(((t2 - t1) - (t1 - t0)) / calls)
    differences.sort()
    _request_cost = max(differences[len(differences) // 2], 0.0)
    return _request_cost
