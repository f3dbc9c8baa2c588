"""One app's monitoring, and the way from finished work to the signal.

finished request or watched call (from ``profiling``) -> event (redacted
request data, profile) -> de-duplication claim -> one log line ->
``perf_slow_request`` -> subscribers (file, Mattermost, yours).

All of it runs off the request path: on the events thread, once the response
has been sent. When the app is testing (``app.testing``), it runs at once on
the calling thread instead, so a test sees the event when ``client.get()``
returns. No app or request context is pushed: receivers get the app as
``sender``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import weakref
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from flask import Flask

from . import stats as counting
from ._redaction import Redactor
from ._request_info import RequestInfo, describe_request, request_from_environ
from ._routes import resolve_thresholds, warn_unmatched_settings
from .alerts.file import FileAlerts
from .events import Escalation, SlowRequestEvent
from .events_thread import EVENTS, Job, Once
from .latency import MAX_PENDING, SAMPLE_MASK, LatencyBook, UsualLatency
from .profiling.policy import ProfileResult, ProfilingPolicy, wall_time
from .profiling.state import InFlight, TimerState
from .profiling.timer import hold_back, later, when_closed
from .signals import perf_slow_request
from .stats import FIRST_FLUSH_DELAY, RETRY_MAX, RETRY_MIN, Stats, share_counters
from .storage import MemoryStore, Store, open_store
from .storage.fallback import decide_held_at_exit
from .time_by_kind import time_by_kind

if TYPE_CHECKING:
    from .alerts.mattermost import MattermostAlerts
    from .settings import LoadedSettings

logger = logging.getLogger("flask_perfalert")
#: One WARNING line per alert (not per duplicate): a child of the extension's logger,
#: so it can be turned down on its own.
alert_logger = logging.getLogger("flask_perfalert.alerts")


class AppMonitor:
    """The monitoring state of one app (kept by the extension, keyed by the app)."""

    def __init__(
        self,
        app: Flask,
        loaded: LoadedSettings,
        clock: Callable[[], float],
        watched: Collection[str] = (),
    ) -> None:
        settings = loaded.settings
        self.settings = settings
        self.sources = loaded.sources
        #: How the app's default folders were chosen (for ``flask perfalert config``).
        self.folders = loaded.folders
        self.clock = clock
        self._app = weakref.ref(app)
        self.policy = ProfilingPolicy(settings)
        self.redactor = Redactor(settings.redact_keys)
        self.stats = Stats()
        self.window_seconds = settings.alert_window_days * 86400
        self.threshold = settings.threshold_seconds
        #: The names of the functions watched so far (the extension adds to it).
        self.watched = watched
        # URL-rule keys resolved with the routes known now; again once the app serves.
        self.endpoint_thresholds = resolve_thresholds(
            app, settings.endpoint_thresholds, watched
        ).by_name
        self.routes_checked = False
        self.excluded_endpoints = frozenset(
            item for item in settings.exclude if not item.startswith("/")
        )
        self._timer: weakref.ref[TimerState] | None = None
        self.host = socket.gethostname()
        self.store = self._open_store()
        #: Names this app's counters in a shared store (the same in every worker).
        self.app_key = app.name
        self.counters = share_counters(self.stats, self.store, self.app_key)
        #: Seconds before counts the store did not take are sent again.
        self._flush_retry = RETRY_MIN
        #: The endpoints' usual latencies, from one request in latency.SAMPLE_EVERY.
        self.latencies = LatencyBook(self.store, self.app_key)
        self.escalation_factor = settings.escalation_factor
        if settings.enabled:
            # Counts and samples are sent off the request path, every FLUSH_INTERVAL.
            self.stats.on_flush = self._flush_soon
            self.stats.flush_due = min(
                self.stats.flush_due, time.perf_counter() + FIRST_FLUSH_DELAY
            )
        self.file_alerts = FileAlerts(settings, self.stats) if settings.file_enabled else None
        self.subscribers: list[Callable[..., None]] = []
        if self.file_alerts is not None:
            self.subscribers.append(self.file_alerts.on_slow_request)
        self.mattermost_alerts: MattermostAlerts | None = None
        if settings.mattermost_enabled:
            from .alerts.mattermost import MattermostAlerts  # imports the driver: only if used

            self.mattermost_alerts = MattermostAlerts.from_settings(
                settings, self.stats, self.app_key
            )
            if self.mattermost_alerts is not None:
                self.subscribers.append(self.mattermost_alerts.on_slow_request)

    def _open_store(self) -> Store:
        settings = self.settings
        if not settings.enabled:  # nothing to de-duplicate: no connection either
            return MemoryStore(prefix=settings.storage_prefix, clock=self.clock)
        try:
            return open_store(settings.storage_uri, settings.storage_prefix, clock=self.clock)
        except Exception as exc:
            logger.warning(
                "PERFALERT_STORAGE_URI could not be used (%s); keeping the alert window "
                "in this process's memory.",
                exc,
            )
            return MemoryStore(prefix=settings.storage_prefix, clock=self.clock)

    @property
    def app(self) -> Flask | None:
        return self._app()

    def attach(self, timer: TimerState) -> None:
        """Measure with ``timer``, the state of the app's installed request timer."""
        timer.use(self.settings, self.policy, self.stats, self.finish, self.first_request)
        timer.set_endpoint_thresholds(self.endpoint_thresholds)
        # Weakly: the timer holds the app's wsgi_app, and the extension keeps
        # monitors by weak reference to their app.
        self._timer = weakref.ref(timer)

    @property
    def timer(self) -> TimerState | None:
        """What the request timer and the sampler read; None when monitoring is off."""
        return None if self._timer is None else self._timer()

    def connect(self, app: Flask) -> None:
        perf_slow_request.connect(self._built_in, sender=app)

    def disconnect(self, app: Flask) -> None:
        perf_slow_request.disconnect(self._built_in, sender=app)

    def _built_in(self, sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        """The built-in subscribers, in their order: the report file is written before
        the Mattermost post is queued, so the post can name it (blinker keeps its
        receivers in no order)."""
        for receiver in self.subscribers:
            try:
                receiver(sender, event=event, **extra)
            except Exception:
                logger.exception("A receiver of perf_slow_request failed for %s", event.summary())

    def close(self) -> None:
        """Release what this monitor opened (the store's connections, Mattermost's replays)."""
        EVENTS.forget(self)
        if self.mattermost_alerts is not None:
            self.mattermost_alerts.close()
        try:
            self.store.close()
        except Exception:
            logger.warning("Closing the alert store failed", exc_info=True)

    def routes_known(self, app: Flask) -> None:
        """Resolve URL-rule thresholds with every route, and warn about keys matching none.

        Run once the app serves (its routes are complete), off the request path.
        """
        self.routes_checked = True
        resolved = resolve_thresholds(app, self.settings.endpoint_thresholds, self.watched)
        self.endpoint_thresholds = resolved.by_name
        timer = self.timer
        if timer is not None:
            timer.set_endpoint_thresholds(self.endpoint_thresholds)
        warn_unmatched_settings(app, self.settings, self.watched)

    def first_request(self) -> None:
        """This process serves its first request: check the routes, off the request path."""
        if self.routes_checked:
            return
        self.routes_checked = True
        app = self.app
        names_endpoints = self.settings.endpoint_thresholds or any(
            not item.startswith("/") for item in self.settings.exclude
        )
        if app is None or not names_endpoints:  # nothing to check: no work, no thread
            return
        if app.testing:
            self.routes_known(app)
        else:
            check = partial(self.routes_known, app)
            EVENTS.submit(Job("the check of the settings against the routes", check, False))

    def threshold_for(self, endpoint: str | None) -> float:
        if endpoint is None:
            return self.threshold
        return self.endpoint_thresholds.get(endpoint, self.threshold)

    # -- from the request thread ----------------------------------------------------------
    def finish(self, record: InFlight, end: float, body: Any | None = None) -> None:
        """Notable work ended at ``end``: hand it on once its response has been sent.

        Called by the request timer on the request thread, and for watched calls.
        ``body`` is the response's ``ClosingIterator`` when it is not sent yet.
        """
        measurement = record.measurement
        if measurement is not None and record.call is None:
            measurement.read_cpu()  # the request's CPU time runs to its end
        app = self.app
        if app is not None and app.testing:
            # Tests: no server sends the response (Werkzeug's test client closes it
            # only when asked); the event is there when client.get() returns.
            self.handle(record, end)
            return
        # The threads that make and deliver the alert start now, on the request's thread:
        # it may be handed on as the process exits, and from Python 3.12 on no thread
        # can start then.
        EVENTS.start()
        if self.mattermost_alerts is not None:
            self.mattermost_alerts.prepare()
        if body is None:
            EVENTS.submit(Job(_what(record), partial(self.handle, record, end)))
            return
        job = Job(_what(record), partial(self.handle, record, end))
        hand_on = Once(partial(EVENTS.submit, job))
        # The server closes the response after sending it; or nobody does, and it is
        # handed on at the next safe point after it was discarded.
        body._callbacks.append(when_closed(body, hand_on, partial(later, hand_on)))

    def finish_call(self, record: InFlight, end: float) -> None:
        """A watched call ended at ``end``."""
        stats = self.stats
        stats.functions += 1
        stats.monitored_seconds += end - record.start
        assert record.call is not None
        if not stats.functions & SAMPLE_MASK and len(stats.latencies) < MAX_PENDING:
            stats.latencies.append(("function", record.call.name, end - record.start))
        if end >= stats.flush_due:
            stats.flush()
        if end - record.start < record.call.threshold:
            return
        if record.measurement is not None:
            record.measurement.read_cpu()  # now, on its thread: it may be held back
        # Inside a timed request: handed on with it, once its response is sent.
        if not hold_back(record, end):
            self.finish(record, end)

    # -- on the events thread -----------------------------------------------------------------
    def handle(self, record: InFlight, end: float) -> None:
        """Turn finished work into its event(s) and send them. Never raises."""
        began = time.perf_counter()
        try:
            if record.call is not None:
                self._handle_call(record, end)
            else:
                self._handle_request(record, end)
        except Exception:
            logger.exception("Flask-PerfAlert failed after %s", _what(record))
        self.stats.after_response_seconds += time.perf_counter() - began

    def _handle_request(self, record: InFlight, end: float) -> None:
        app = self.app
        extras = record.extras
        if app is None:
            return
        request = extras.request if extras is not None else None
        if request is None:
            assert record.environ is not None
            request = request_from_environ(app, record.environ)
        if not self.routes_checked:  # an app whose first request came after the sampler's
            self.routes_known(app)
        rule = getattr(request, "url_rule", None)
        endpoint = rule.endpoint if rule is not None else None
        duration = end - record.start
        threshold = self.threshold_for(endpoint)
        if endpoint not in self.excluded_endpoints and duration >= threshold:
            info = describe_request(request, self.redactor)
            event = self.make_event(
                "request",
                endpoint=endpoint,
                started=record.start,
                duration=duration,
                threshold=threshold,
                result=self._profile(record, end, info.title),
                request=(request.method, info),
                status_code=record.status_code,
            )
            self.emit(app, event)
        for call, call_end in extras.deferred if extras is not None else ():
            call.timer.finish(call, call_end, None)

    def _handle_call(self, record: InFlight, end: float) -> None:
        app = self.app
        call = record.call
        if app is None or call is None:
            return
        result = self._profile(record, end, f"{call.name}()")
        event = self.make_event(
            "function",
            endpoint=call.name,
            started=record.start,
            duration=end - record.start,
            threshold=call.threshold,
            result=result,
        )
        self.emit(app, event)

    def _profile(self, record: InFlight, end: float, description: str) -> ProfileResult:
        extras = record.extras
        sessions = []
        if extras is not None:
            if extras.session is not None:
                sessions.append(extras.session)
            sessions.extend(extras.sessions)
        return self.policy.result(record.start, end, description, record.measurement, sessions)

    def make_event(
        self,
        kind: Literal["request", "function"],
        *,
        endpoint: str | None,
        started: float,
        duration: float,
        threshold: float,
        result: ProfileResult,
        request: tuple[str, RequestInfo] | None = None,
        status_code: int | None = None,
    ) -> SlowRequestEvent:
        """The one place an event is made (the CLI's test alert too).

        ``request``: the method, and what :func:`describe_request` made of it.
        """
        method, info = request if request is not None else (None, None)
        return SlowRequestEvent(
            kind=kind,
            endpoint=endpoint,
            url=None if info is None else info.url,
            method=method,
            params={} if info is None else info.params,
            headers={} if info is None else info.headers,
            status_code=status_code,
            duration=duration,
            threshold=threshold,
            timestamp=datetime.fromtimestamp(wall_time(started), tz=timezone.utc),
            duplicate=False,
            profile=result.session,
            profile_note=result.note,
            time_by_kind=time_by_kind(result.session),
            host=self.host,
            pid=os.getpid(),
        )

    # -- event -> de-duplication -> log -> signal -----------------------------------------------
    def emit(self, app: Flask, event: SlowRequestEvent) -> None:
        self.stats.add("slow")
        # A shared store that does not answer holds the claim and decides later,
        # from a thread of its own: the signal is then sent from the events thread.
        won = self._claim(event.key, partial(self._decided_later, app, event))
        if won is not None:
            self._signal(app, event, won)

    def _decided_later(self, app: Flask, event: SlowRequestEvent, won: bool) -> None:
        signal = partial(self._signal, app, event, won)
        EVENTS.submit(Job(f"the alert of {event.summary()}", signal))

    def _signal(self, app: Flask, event: SlowRequestEvent, won: bool) -> None:
        # The first of the window alerts; a later one alerts again when it got markedly
        # worse; the others are counted, and the next alert says how many there were.
        factor = self.escalation_factor
        started = event.timestamp.timestamp()
        settled = self.store.settle(
            event.key, event.duration, won, factor, self.window_seconds, started
        )
        event.duplicate = not settled.alert
        if settled.alert:
            event.suppressed = settled.suppressed_before
            if settled.escalated_from is not None:
                event.escalation = Escalation(settled.escalated_from, factor)
                self.stats.add("escalated")
            event.usual = self._usual(app, event)
        self.stats.add("suppressed" if event.duplicate else "alerted")
        for receiver in perf_slow_request.receivers_for(app):
            try:
                receiver(app, event=event)
            except Exception:
                logger.exception("A receiver of perf_slow_request failed for %s", event.summary())
        if not event.duplicate:
            alert_logger.warning("%s; %s", event.headline(), self._report_note(event))

    def _usual(self, app: Flask, event: SlowRequestEvent) -> UsualLatency | None:
        self._count_latencies(app)  # this process's latest samples count too
        key = event.endpoint if event.kind == "request" else f"function {event.endpoint}"
        return self.latencies.usual(key) if key is not None else None

    # -- counts and samples, every FLUSH_INTERVAL -------------------------------------------------
    def _flush_soon(self) -> None:
        app = self.app
        if app is not None and app.testing:
            self.flush_now(wait=True)  # the test sees the counts in the store at once
        else:
            EVENTS.schedule(self, 0.0)  # several calls before it runs make one flush

    def flush_now(self, wait: bool = False) -> None:
        """Count the sampled latencies and send the counters (on the events thread).

        ``wait``: for a flush the events thread is running (else this one is skipped).
        """
        app = self.app
        if app is not None:
            self._count_latencies(app)
        counters = self.counters
        if counters is None:
            return
        # The counts of the last requests do not wait for this worker's next one.
        if counters.flush(wait=wait):
            self._flush_retry = RETRY_MIN
            if counters.sent:  # one more batch later; an idle worker then stops waking
                EVENTS.schedule(self, counting.FLUSH_INTERVAL)
            return
        # Not taken (the store is busy or away, or another thread was sending): again.
        EVENTS.schedule(self, self._flush_retry)
        self._flush_retry = min(self._flush_retry * 2, RETRY_MAX)

    def _count_latencies(self, app: Flask) -> None:
        pending = self.stats.latencies
        taken = pending[:]
        del pending[: len(taken)]  # requests may append meanwhile: keep theirs
        try:
            self.latencies.count(app, taken)
        except Exception:
            logger.exception("Flask-PerfAlert could not count the sampled latencies")

    def _report_note(self, event: SlowRequestEvent) -> str:
        if event.report_path is not None:
            return f"report: {event.report_path}"
        if self.file_alerts is None:
            return "no report file (PERFALERT_FILE_ENABLED is off)"
        return "no report file (it could not be written; see the warning above)"

    def _claim(self, key: str, later: Callable[[bool], None]) -> bool | None:
        try:
            return self.store.claim(key, self.window_seconds, later)
        except Exception:
            logger.exception("The alert store failed; alerting anyway")
            return True


# Alerts held while the shared store was away are decided at exit before the events
# thread waits for its last jobs, so their signal and subscribers still run.
EVENTS.before_shutdown(decide_held_at_exit)


def _what(record: InFlight) -> str:
    if record.call is not None:
        return f"a call of {record.call.name}"
    environ = record.environ or {}
    return f"the request {environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '')!r}"
