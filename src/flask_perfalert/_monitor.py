"""Everything one app's monitoring holds, and the way from measurement to signal.

request or watched call -> measurement (timing, profile) -> slow? -> event
-> de-duplication -> ``perf_slow_request`` -> subscribers (file, Mattermost,
yours) -> delivery worker.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import socket
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Flask, Request

from ._counters import share_counters
from ._measurement import Measurement
from ._middleware import ENVIRON_DEFERRED, ENVIRON_PROFILER, hold_back
from ._profiling import ProfilingPolicy
from ._redaction import Redactor
from ._request_info import describe_request
from ._sampler import LINKED_THREADS, keep_sampling_signal_off_this_thread
from ._stats import Stats
from .alerts.file import FileAlerts
from .events import SlowRequestEvent
from .signals import perf_slow_request
from .storage import MemoryStore, Store, open_store

if TYPE_CHECKING:
    from .alerts.mattermost import MattermostAlerts
    from .settings import LoadedSettings

logger = logging.getLogger("flask_perfalert")

#: WSGI environ keys this extension uses (one private namespace).
ENVIRON_SESSIONS = "perfalert.sessions"
#: Flask clears environ["werkzeug.request"] when the request context ends; the
#: request is kept here until the measurement is finished (see extension.py).
ENVIRON_REQUEST = "perfalert.request"


class WatchCall:
    """What ``@perf.watch`` knows about one call, carried in a sampler entry."""

    __slots__ = ("name", "threshold", "code")

    def __init__(self, name: str, threshold: float, code: Any) -> None:
        self.name = name
        self.threshold = threshold
        self.code = code


class AppMonitor:
    """The monitoring state of one app (kept by the extension, keyed by the app)."""

    def __init__(self, app: Flask, loaded: LoadedSettings, clock: Callable[[], float]) -> None:
        settings = loaded.settings
        self.settings = settings
        self.sources = loaded.sources
        self.clock = clock
        self._app = weakref.ref(app)
        self.policy = ProfilingPolicy(settings)
        self.redactor = Redactor(settings.redact_keys)
        self.stats = Stats()
        self.window_seconds = settings.alert_window_days * 86400
        self.threshold = settings.threshold_seconds
        self.endpoint_thresholds = dict(settings.endpoint_thresholds)
        self.min_threshold = min([self.threshold, *self.endpoint_thresholds.values()])
        #: Seconds into any work before it may need sampling (the earliest arm point).
        self.min_arm_delay = self.min_threshold * settings.sample_after
        self.excluded_endpoints = frozenset(
            item for item in settings.exclude if not item.startswith("/")
        )
        globs = [item for item in settings.exclude if item.startswith("/")]
        #: Matches an excluded URL path, or None when no path is excluded.
        self.path_glob: Callable[[str], Any] | None = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)).match if globs else None
        )
        self.pyinstrument = self.policy.mode == "pyinstrument"
        self.host = socket.gethostname()
        self.store = self._open_store()
        #: Names this app's counters in a shared store (the same in every worker).
        self.app_key = app.name
        self.counters = share_counters(self.stats, self.store, self.app_key)
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
            return open_store(
                settings.storage_uri,
                settings.storage_prefix,
                clock=self.clock,
                thread_setup=keep_sampling_signal_off_this_thread,
            )
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

    def connect(self, app: Flask) -> None:
        for receiver in self.subscribers:
            perf_slow_request.connect(receiver, sender=app)

    def close(self) -> None:
        """Release what this monitor opened (the store's connections, Mattermost's replays)."""
        if self.mattermost_alerts is not None:
            self.mattermost_alerts.close()
        try:
            self.store.close()
        except Exception:
            logger.warning("Closing the alert store failed", exc_info=True)

    def disconnect(self, app: Flask) -> None:
        for receiver in self.subscribers:
            perf_slow_request.disconnect(receiver, sender=app)

    # -- thresholds and exclusion -------------------------------------------------
    def threshold_for(self, endpoint: str | None) -> float:
        if endpoint is None:
            return self.threshold
        return self.endpoint_thresholds.get(endpoint, self.threshold)

    # -- the sampler's call-back -----------------------------------------------------
    def arm(self, entry: Sequence[Any]) -> Measurement:
        """Make the measurement of an entry that reached the earliest arm point.

        Called by the sampler, possibly inside its signal handler: no locks, no I/O.
        A request that is still running here keeps its request object for the
        event (Flask forgets it when the request context ends).
        """
        start, thread_id, _, payload = entry[:4]
        after = self.settings.sample_after
        sample = self.policy.samples
        if isinstance(payload, WatchCall):
            arm_at = start + after * payload.threshold
            return Measurement(start, thread_id, arm_at, payload.code, skip=not sample)
        m = Measurement(start, thread_id, start + after * self.threshold, skip=not sample)
        m.linked_threads = payload.setdefault(LINKED_THREADS, [])
        m.environ = payload
        self.capture(m)
        return m

    def capture(self, m: Measurement) -> None:
        """Keep the running request's Flask request object, once it has been routed.

        Until then ``m.environ`` stays set and the sampler calls this again on
        its next tick. The endpoint fixes the real threshold and arm point.
        """
        environ = m.environ
        if environ is None:
            return
        request = environ.get("werkzeug.request")
        # Before Flask's request exists, a test client's plain Werkzeug request
        # may be there; and the endpoint is known only after routing.
        if not isinstance(request, Request) or (
            request.url_rule is None and request.routing_exception is None
        ):
            return
        environ[ENVIRON_REQUEST] = request
        m.environ = None
        endpoint = request.url_rule.endpoint if request.url_rule is not None else None
        m.arm_at = m.start + self.settings.sample_after * self.threshold_for(endpoint)
        if endpoint in self.excluded_endpoints:
            m.skip = True

    # -- the end of a request ------------------------------------------------------------
    def finish_request(
        self,
        entry: Sequence[Any],
        measurement: Measurement | None,
        status: int | None,
        end: float,
    ) -> None:
        """A response that took at least the lowest threshold was sent."""
        start, _, _, environ = entry[:4]
        collected: Any = measurement
        if self.pyinstrument:
            collected = self.policy.end(environ.pop(ENVIRON_PROFILER, None))
        request = environ.pop(ENVIRON_REQUEST, None)
        app = self.app
        if app is None:
            return
        if request is None:
            request = _request_from_environ(app, environ)
        rule = getattr(request, "url_rule", None)
        endpoint = rule.endpoint if rule is not None else None
        duration = end - start
        threshold = self.threshold_for(endpoint)
        if endpoint not in self.excluded_endpoints and duration >= threshold:
            method = request.method
            info = describe_request(request, self.redactor)
            result = self.policy.result(
                collected,
                start,
                end,
                info.title,
                environ.get(ENVIRON_SESSIONS),
            )
            event = SlowRequestEvent(
                kind="request",
                endpoint=endpoint,
                url=info.url,
                method=method,
                params=info.params,
                headers=info.headers,
                status_code=status,
                duration=duration,
                threshold=threshold,
                timestamp=_started_at(start),
                duplicate=False,
                profile=result.session,
                profile_note=result.note,
                host=self.host,
                pid=os.getpid(),
            )
            self.emit(app, event)
        for deferred in environ.pop(ENVIRON_DEFERRED, ()):
            self.emit(app, deferred)

    # -- watched functions ----------------------------------------------------------------
    def finish_function(
        self,
        entry: tuple[Any, ...],
        token: Any,
        end: float,
        environ: dict[str, Any] | None,
    ) -> None:
        collected = self.policy.end(token)
        start, _, _, call = entry
        duration = end - start
        self.stats.functions += 1
        self.stats.monitored_seconds += duration
        if duration < call.threshold:
            return
        app = self.app
        if app is None:
            return
        result = self.policy.result(collected, start, end, f"{call.name}()")
        event = SlowRequestEvent(
            kind="function",
            endpoint=call.name,
            url=None,
            method=None,
            params={},
            headers={},
            status_code=None,
            duration=duration,
            threshold=call.threshold,
            timestamp=_started_at(start),
            duplicate=False,
            profile=result.session,
            profile_note=result.note,
            host=self.host,
            pid=os.getpid(),
        )
        # Inside a timed request: sent when its response is done, not now.
        if environ is None or not hold_back(environ, event, call.threshold):
            self.emit(app, event)

    # -- event -> de-duplication -> signal ---------------------------------------------------
    def emit(self, app: Flask, event: SlowRequestEvent) -> None:
        self.stats.add("slow")
        # A shared store that does not answer holds the claim and calls back once
        # it has decided (from its own thread); see storage/fallback.py.
        won = self._claim(event.key, partial(self._signal, app, event))
        if won is not None:
            self._signal(app, event, won)

    def _signal(self, app: Flask, event: SlowRequestEvent, won: bool) -> None:
        event.duplicate = not won
        self.stats.add("suppressed" if event.duplicate else "alerted")
        with app.app_context():
            for receiver in perf_slow_request.receivers_for(app):
                try:
                    receiver(app, event=event)
                except Exception:
                    logger.exception(
                        "A receiver of perf_slow_request failed for %s", event.summary()
                    )

    def _claim(self, key: str, later: Callable[[bool], None]) -> bool | None:
        try:
            return self.store.claim(key, self.window_seconds, later)
        except Exception:
            logger.exception("The alert store failed; alerting anyway")
            return True


def _request_from_environ(app: Flask, environ: dict[str, Any]) -> Request:
    """A request rebuilt from the environ, for a slow request never seen while running.

    Shallow: the body is not read again. The endpoint is matched afresh.
    """
    request = app.request_class(environ, populate_request=False, shallow=True)
    try:
        adapter = app.url_map.bind_to_environ(environ, server_name=app.config["SERVER_NAME"])
        rule, args = adapter.match(return_rule=True)
        request.url_rule, request.view_args = rule, dict(args)
    except Exception:
        pass  # unmatched (404, 405): no endpoint
    return request


def _started_at(start: float) -> datetime:
    wall = time.time() - (time.perf_counter() - start)
    return datetime.fromtimestamp(wall, tz=timezone.utc)
