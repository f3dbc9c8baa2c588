"""The request timer: a thin WSGI wrapper around ``app.wsgi_app``.

It times what the app does for a request: from the moment it is called, with
routing and error handling, until it returns its response, or, for a streamed
response, until the server closes it after the last byte. What a slow request
leads to (the event, the signal, the alerts) is handed to the app's monitor
once the response has been sent; a fast request needs no call-back at all.

Every request pays for this code, so it is written for the fewest Python
calls: no ``before_request``/``after_request`` hooks, no object around the
body when Werkzeug's ``ClosingIterator`` can carry the call-back. The one
extra call is our ``start_response``, which notes the status for the event
(a file sent with ``send_file`` has no other place to read it from). The
numbers are in docs/performance.rst.

Nothing is written into the environ: the request's record is ours
(:class:`~.state.InFlight`).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..latency import MAX_PENDING, SAMPLE_MASK
from .sampler import SAMPLER, Sampler
from .state import ACTIVE, STATES, InFlight, TimerState, WatchCall, request_on

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..stats import Stats


logger = logging.getLogger("flask_perfalert")

#: Work that finalizers leave for the next safe point. A finalizer runs whenever
#: the garbage collector gets to it, inside any code, maybe holding any lock: it
#: only appends here (atomic, lock-free); the next request runs the work before
#: it calls the app, and so does the process at exit.
LATER: list[Callable[[], Any]] = []


def later(work: Callable[[], Any]) -> None:
    """Run ``work`` at the next safe point (see :data:`LATER`); safe in a finalizer."""
    LATER.append(work)


def run_later() -> None:
    """Run the work finalizers left (see :data:`LATER`)."""
    while LATER:
        try:
            work = LATER.pop(0)
        except IndexError:  # another thread took the last one
            return
        try:
            work()
        except Exception:
            logger.exception("Flask-PerfAlert failed to hand on a discarded response")


atexit.register(run_later)


def install_timer(
    wsgi_app: WSGIApplication, state: TimerState, sampler: Sampler = SAMPLER
) -> WSGIApplication:
    """A ``wsgi_app`` that times every request with ``state``.

    A plain function, not an object with ``__call__``, which costs an extra
    slot look-up per request.
    """
    # Closure cells: cheaper to reach than globals.
    _state = state
    _InFlight = InFlight
    _perf_counter = perf_counter
    _get_ident = threading.get_ident
    _active = sampler.active
    _sampler = sampler
    _later = LATER
    _sample_mask = SAMPLE_MASK

    def perfalert_wsgi_app(
        environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if _later:
            run_later()
        if not _sampler.running:  # before the clock starts: not the request's time
            start_sampler(_sampler)
        record = _InFlight(_perf_counter(), _get_ident(), _state, environ)
        if _state.special and _begin_special(record):
            return _state.wrapped(environ, start_response)
        record.server_start_response = start_response
        key = id(record)
        _active[key] = record
        try:
            body = _state.wrapped(environ, record.start_response)
        except BaseException:
            # The server answers 500 (Flask propagates errors when testing).
            if record.status is None:
                record.status = "500 INTERNAL SERVER ERROR"
            ended(record)
            raise
        try:
            # Werkzeug's Response.get_app_iter() returns ClosingIterator(..., response.close).
            try:
                callbacks = body._callbacks  # type: ignore[attr-defined]
                streamed = type(callbacks[-1].__self__.response) is not list
            except (AttributeError, IndexError, TypeError):
                return _other_body(body, record)
            if streamed:
                # The work happens while the server iterates: time it to close(). A
                # body nobody closes (a test's) is timed to the app's return: the
                # time it then lay unread is not the request's.
                returned = _perf_counter()
                callbacks.append(
                    when_closed(body, partial(ended, record), partial(_discarded, record, returned))
                )
                return body
            # Not streamed: the view has done all its work; what is left is copying
            # bytes to the socket. A fast request ends here, with no call-back at all.
            end = _perf_counter()
            try:
                del _active[key]
            except KeyError:  # pragma: no cover - the dict was cleared (fork)
                pass
            duration = end - record.start
            stats = _state.stats
            count = stats.requests + 1
            stats.requests = count
            stats.monitored_seconds += duration
            if not count & _sample_mask:  # one in latency.SAMPLE_EVERY: the usual latency
                _sample(stats, environ, duration)
            if end >= stats.flush_due:
                callbacks.append(stats.flush)
            extras = record.extras
            if duration >= _state.notable and (
                duration >= _state.min_threshold or (extras is not None and extras.deferred)
            ):
                if extras is not None and extras.profiler is not None:
                    stop_profiler(record)
                record.finished = True
                # The event, its signal and its alerts wait until the response is sent.
                _state.finish(record, end, body)
            return body
        finally:
            # A traceback the app keeps (a routing error, on the request object the
            # record keeps) holds this frame: it must not hold the body too, or the
            # body's finalizer could never run.
            del body

    perfalert_wsgi_app.perfalert_state = _state  # type: ignore[attr-defined]
    return perfalert_wsgi_app


def start_sampler(sampler: Sampler) -> None:
    """Start this process's sampler; under green threads, requests note their greenlet."""
    threads = sampler.start()
    if threads.green is not None:
        for state in list(STATES):
            state.green = True
            state._refresh()


def _begin_special(record: InFlight) -> bool:
    """What a request needs under exclusion, pyinstrument or greenlets; True: not timed."""
    state = record.timer
    first_request = state.first_request
    if first_request is not None:  # this app's first request in this process
        state.first_request = None
        state._refresh()
        first_request()
        # The check of the settings (made here when testing) is not the request's time.
        record.start = perf_counter()
    excluded = state.path_glob
    assert record.environ is not None
    if excluded is not None and excluded(record.environ.get("PATH_INFO", "")) is not None:
        return True
    if state.green:
        note_greenlet(record)
    if state.pyinstrument:
        record.more().profiler = state.policy.start_pyinstrument()
    return False


def note_greenlet(record: InFlight) -> None:
    """Under gevent or eventlet: the greenlet doing the work, which the sampler reads."""
    threads = SAMPLER.os
    if threads is not None and threads.current_greenlet is not None:
        extras = record.more()
        extras.greenlet = threads.current_greenlet()
        extras.os_thread = threads.get_ident()
        record.thread = threading.get_ident()  # the patched one: the greenlet's


def ended(record: InFlight, end: float | None = None) -> None:
    """A request's work is over: it raised, or its response was closed or discarded."""
    if end is None:
        end = perf_counter()
    if ACTIVE.pop(id(record), None) is None:  # ended already (atomic: once only)
        return
    record.finished = True
    state = record.timer
    duration = end - record.start
    stats = state.stats
    stats.requests += 1
    stats.monitored_seconds += duration
    if not stats.requests & SAMPLE_MASK and record.environ is not None:
        _sample(stats, record.environ, duration)
    if end >= stats.flush_due:
        stats.flush()
    extras = record.extras
    if extras is not None and extras.profiler is not None:
        stop_profiler(record)
    if duration >= state.min_threshold or (extras is not None and extras.deferred):
        state.finish(record, end, None)


#: The bodies watched for being discarded unclosed: a weak reference each, whose
#: call-back runs the body's ``discarded`` work. Plain weak references, not
#: ``weakref.finalize`` objects, which cost a streamed response several thousand
#: instructions more to make.
_WATCHED: dict[int, weakref.ref[Any]] = {}


def when_closed(
    body: object, closed: Callable[[], Any], discarded: Callable[[], Any]
) -> Callable[[], None]:
    """A close call-back that runs ``closed``; ``discarded`` runs if ``body`` is collected unclosed.

    Closing drops the weak reference, and its call-back with it: left in place,
    the call-back (which leads to the request, and from there often back to the
    body) would keep the body, and all it holds, alive for ever.
    """

    def gone(ref: weakref.ref[Any]) -> None:
        if _WATCHED.pop(id(ref), None) is not None:
            discarded()

    ref = weakref.ref(body, gone)
    key = id(ref)
    _WATCHED[key] = ref

    def on_close() -> None:
        if _WATCHED.pop(key, None) is not None:
            closed()

    return on_close


def _discard_watched_at_exit() -> None:
    """At exit, the bodies still unclosed are handed on as discarded (then run_later)."""
    for key, ref in list(_WATCHED.items()):
        callback = ref.__callback__
        if callback is not None and _WATCHED.get(key) is ref:
            callback(ref)


# Registered after run_later, so run before it: the unclosed bodies, then their work.
atexit.register(_discard_watched_at_exit)


def _sample(stats: Stats, environ: WSGIEnvironment, seconds: float) -> None:
    """Keep a sampled request for the usual latency (its endpoint is found later)."""
    if len(stats.latencies) < MAX_PENDING:
        method = environ.get("REQUEST_METHOD", "")
        stats.latencies.append((method, environ.get("PATH_INFO", ""), seconds))


def _discarded(record: InFlight, returned: float) -> None:
    """A finalizer: a lazily produced response was discarded without being closed.

    Its work is timed to ``returned``, when the app gave it to the server: what
    was produced after that is not known without timing each chunk, and the time
    it lay unread is not work. Servers always close what they send; this is the
    case of a test that keeps a response without closing it.
    """
    later(partial(ended, record, returned))


def stop_profiler(record: InFlight) -> None:
    """Stop the pyinstrument profiler of ``record`` and keep its session.

    A profiler can only be stopped on its own thread: elsewhere (a response
    discarded on another thread) the work has no profile.
    """
    extras = record.more()
    profiler, extras.profiler = extras.profiler, None
    if record.thread == threading.get_ident():
        extras.session = record.timer.policy.stop(profiler)


def _other_body(body: Iterable[bytes], record: InFlight) -> Iterable[bytes]:
    assert record.environ is not None
    file_wrapper = record.environ.get("wsgi.file_wrapper")
    if isinstance(body, list | tuple) or (
        isinstance(file_wrapper, type) and isinstance(body, file_wrapper)
    ):
        # The work is done (a list of bytes), or the rest is the server's sendfile
        # path, which is kept: timing ends now.
        ended(record)
        return body
    returned = perf_counter()
    timed = _TimedBody(body, record)
    timed.closed = when_closed(timed, partial(ended, record), partial(_discarded, record, returned))
    return timed


class _TimedBody:
    """A body that is not a ``ClosingIterator``, passed through; closing it ends the timing."""

    __slots__ = ("_body", "closed", "__weakref__")

    def __init__(self, body: Iterable[bytes], record: InFlight) -> None:
        self._body = body
        #: Ends the timing (set by :func:`_other_body`, see :func:`when_closed`).
        self.closed: Callable[[], None] = partial(ended, record)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self.closed()


def hold_back(call: InFlight, end: float) -> bool:
    """Keep a slow watched ``call`` until the request it ran in has been sent.

    False when no timed request runs on its thread (a request context of a
    test or a shell, which no server sends, or an excluded request): the
    caller hands it on now.
    """
    request = request_on(call.thread)
    if request is None or request.finished:
        return False
    request.more().deferred.append((call, end))
    # The request lasts at least as long as the call: from now on requests that
    # long take the timer's notable branch, which hands held-back calls on.
    assert call.call is not None
    state = request.timer
    state.notable = min(state.notable, call.call.threshold)
    return True


def timer_state(wsgi_app: object) -> TimerState | None:
    """The state of a ``wsgi_app`` made by :func:`install_timer`, else None."""
    return getattr(wsgi_app, "perfalert_state", None)


def watch_record(timer: TimerState, call: WatchCall) -> InFlight:
    """The record of a watched call starting now on this thread."""
    record = InFlight(perf_counter(), threading.get_ident(), timer, None, call)
    if timer.green:
        note_greenlet(record)
    return record
