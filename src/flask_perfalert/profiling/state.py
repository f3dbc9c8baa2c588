"""What the request timer, the sampler and the monitor share.

* :class:`TimerState`: one app's timing settings and counters, read on every
  request;
* :class:`InFlight`: the record of one piece of work being timed, a request or
  a call of a watched function. It is Flask-PerfAlert's own: nothing of it is
  written into the WSGI environ, the request, ``g`` or the session, so the app
  cannot see it. The sampler finds the work it samples in :data:`ACTIVE`;
  ``@perf.watch`` and async views find the request running on their thread
  with :func:`request_on`.
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import CodeType

    from _typeshed.wsgi import WSGIApplication
    from flask import Request

    from ..settings import PerfAlertSettings
    from ..stats import Stats
    from .measurement import Measurement
    from .policy import ProfilingPolicy


#: ``finish(record, end, body)``: the monitor's call-back for notable work; ``body``
#: is the response's ``ClosingIterator`` when it has not been sent yet.
Finish = Callable[["InFlight", float, "Any | None"], None]


class TimerState:
    """What the wrapper and the sampler read for one app, made from its settings.

    ``init_app`` calls :meth:`use` again when it re-reads the settings. Slots,
    because attribute look-ups on the hot path are a measurable share of its cost.
    """

    __slots__ = (
        "wrapped",
        "policy",
        "finish",
        "first_request",
        "stats",
        "threshold",
        "endpoint_thresholds",
        "min_threshold",
        "sample_after",
        "min_arm_delay",
        "samples",
        "excluded_endpoints",
        "path_glob",
        "pyinstrument",
        "green",
        "special",
        "notable",
        "__weakref__",
    )

    def __init__(self, wrapped: WSGIApplication) -> None:
        self.wrapped = wrapped
        self.green = False
        STATES.add(self)

    def use(
        self,
        settings: PerfAlertSettings,
        policy: ProfilingPolicy,
        stats: Stats,
        finish: Finish,
        first_request: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.finish = finish
        #: Called at this app's first request in this process (then cleared): its
        #: routes are complete by then, and not necessarily other apps'.
        self.first_request = first_request
        self.stats = stats
        self.threshold = settings.threshold_seconds
        self.sample_after = settings.sample_after
        self.samples = policy.samples
        self.excluded_endpoints = frozenset(
            item for item in settings.exclude if not item.startswith("/")
        )
        globs = [item for item in settings.exclude if item.startswith("/")]
        #: Matches an excluded URL path, or None when no path is excluded.
        self.path_glob: Callable[[str], Any] | None = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)).match if globs else None
        )
        self.pyinstrument = policy.mode == "pyinstrument"
        self.set_endpoint_thresholds(settings.endpoint_thresholds)

    def set_endpoint_thresholds(self, by_endpoint: dict[str, float]) -> None:
        """The thresholds by endpoint name (URL-rule keys resolved to endpoints)."""
        self.endpoint_thresholds = dict(by_endpoint)
        self.min_threshold = min([self.threshold, *self.endpoint_thresholds.values()])
        #: Seconds into any work before it may need sampling (the earliest arm point).
        self.min_arm_delay = self.min_threshold * self.sample_after
        # With pyinstrument every request has a profiler to stop: treat all as notable.
        if self.pyinstrument:
            self.min_threshold = 0.0
        self._refresh()

    def _refresh(self) -> None:
        #: Requests need :func:`_begin_special` (exclusion, pyinstrument, greenlets, or
        #: the app's first request still to come): ordinary requests check one flag.
        self.special = (
            self.path_glob is not None
            or self.pyinstrument
            or self.green
            or self.first_request is not None
        )
        #: Below this a request was neither slow nor holds back a watched call's event.
        self.notable = self.min_threshold

    def threshold_for(self, endpoint: str | None) -> float:
        if endpoint is None:
            return self.threshold
        return self.endpoint_thresholds.get(endpoint, self.threshold)


#: Every app's timer state in this process (the sampler's start may change them).
STATES: weakref.WeakSet[TimerState] = weakref.WeakSet()


class WatchCall:
    """What ``@perf.watch`` knows about one call."""

    __slots__ = ("name", "threshold", "code")

    def __init__(self, name: str, threshold: float, code: CodeType | None) -> None:
        self.name = name
        self.threshold = threshold
        #: The function's code: frames of its callers are left out of its profile.
        self.code = code


class Extras:
    """What only some requests need, made when first needed."""

    __slots__ = (
        "request",
        "linked_threads",
        "awaiting",
        "deferred",
        "profiler",
        "session",
        "sessions",
        "greenlet",
        "os_thread",
    )

    def __init__(self) -> None:
        #: The Flask request object, kept while the request runs (Flask forgets it
        #: when the request context ends, before the response is sent).
        self.request: Request | None = None
        #: Other threads doing this request's work (the event loop of an async view).
        self.linked_threads: list[int] = []
        #: The coroutines of an async view running there: while one awaits, its
        #: frames are on no thread's stack, and the sampler reads them from it.
        self.awaiting: list[Any] = []
        #: Slow watched calls made during the request, handed on after it: (record, end).
        self.deferred: list[tuple[InFlight, float]] = []
        #: The pyinstrument profiler of the work (pyinstrument mode), then its session,
        #: and the sessions of linked threads.
        self.profiler: Any = None
        self.session: Any = None
        self.sessions: list[Any] = []
        #: The greenlet serving the request (gevent, eventlet), and its OS thread.
        self.greenlet: Any = None
        self.os_thread = 0


class InFlight:
    """One request or watched call, from its start until it is finished."""

    __slots__ = (
        "start",
        "thread",
        "timer",
        "environ",
        "call",
        "status",
        "server_start_response",
        "measurement",
        "extras",
        "finished",
    )

    def __init__(
        self,
        start: float,
        thread: int,
        timer: TimerState,
        environ: dict[str, Any] | None,
        call: WatchCall | None = None,
    ) -> None:
        #: ``perf_counter()`` when the work started.
        self.start = start
        #: The thread doing the work (under gevent, the greenlet: ``threading.get_ident``).
        self.thread = thread
        #: The monitored app's measuring settings and counters.
        self.timer = timer
        #: The request's WSGI environ (read, never written); None for a watched call.
        self.environ = environ
        self.call = call
        #: The status line the app sent (``"200 OK"``), once it has.
        self.status: str | None = None
        self.server_start_response: Any = None
        #: The samples, once the sampler armed the work.
        self.measurement: Measurement | None = None
        self.extras: Extras | None = None
        #: Set once the work's end has been handed on; it is handed on once only.
        self.finished = False

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        """The server's ``start_response``, noting the status on the way."""
        self.status = status
        return self.server_start_response(status, headers, exc_info)

    def more(self) -> Extras:
        extras = self.extras
        if extras is None:
            extras = self.extras = Extras()
        return extras

    @property
    def status_code(self) -> int | None:
        status = self.status
        if not status:
            return None
        try:
            return int(status.split(None, 1)[0])
        except ValueError:
            return None


#: The work being timed now, by ``id()`` of its record. Plain dict operations only
#: (atomic under the GIL): the request threads and the sampler thread share it.
ACTIVE: dict[int, InFlight] = {}


def request_on(thread: int) -> InFlight | None:
    """The innermost request being timed on ``thread`` (or that ``thread`` works for)."""
    found: InFlight | None = None
    for record in list(ACTIVE.values()):
        if record.environ is None:
            continue
        extras = record.extras
        if record.thread == thread or (extras is not None and thread in extras.linked_threads):
            if found is None or record.start >= found.start:
                found = record
    return found


def request_with(environ: dict[str, Any]) -> InFlight | None:
    """The request being timed with this WSGI environ, if any."""
    for record in list(ACTIVE.values()):
        if record.environ is environ:
            return record
    return None
