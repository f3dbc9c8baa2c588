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
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flask import Flask

from ._measurement import Measurement
from ._profiling import ProfilingPolicy
from ._redaction import Redactor
from ._request_info import request_headers, request_params, request_url
from ._stats import Stats
from .alerts.file import FileAlerts
from .events import SlowRequestEvent
from .signals import perf_slow_request
from .storage import AlertStore, MemoryStore, open_store

if TYPE_CHECKING:
    from .alerts.mattermost import MattermostAlerts
    from .settings import LoadedSettings

logger = logging.getLogger("flask_perfalert")

#: WSGI environ keys this extension uses (one private namespace).
ENVIRON_DEFERRED = "perfalert.deferred"
ENVIRON_THREADS = "perfalert.threads"
ENVIRON_SESSIONS = "perfalert.sessions"
ENVIRON_ENTRY = "perfalert.entry"
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
        self._path_excluded: Callable[[str], Any] | None = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)).match if globs else None
        )
        self.host = socket.gethostname()
        self.store = self._open_store()
        self.file_alerts = FileAlerts(self) if settings.file_enabled else None
        self.subscribers: list[Callable[..., None]] = []
        if self.file_alerts is not None:
            self.subscribers.append(self.file_alerts.on_slow_request)
        self.mattermost_alerts: MattermostAlerts | None = None
        if settings.mattermost_enabled:
            from .alerts.mattermost import MattermostAlerts  # imports the driver: only if used

            self.mattermost_alerts = MattermostAlerts.from_settings(self)
            if self.mattermost_alerts is not None:
                self.subscribers.append(self.mattermost_alerts.on_slow_request)

    def _open_store(self) -> AlertStore:
        settings = self.settings
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

    def connect(self, app: Flask) -> None:
        for receiver in self.subscribers:
            perf_slow_request.connect(receiver, sender=app)

    def disconnect(self, app: Flask) -> None:
        for receiver in self.subscribers:
            perf_slow_request.disconnect(receiver, sender=app)

    # -- thresholds and exclusion -------------------------------------------------
    def path_excluded(self, path: str) -> bool:
        return self._path_excluded is not None and self._path_excluded(path) is not None

    def threshold_for(self, endpoint: str | None) -> float:
        if endpoint is None:
            return self.threshold
        return self.endpoint_thresholds.get(endpoint, self.threshold)

    # -- the sampler's call-back -----------------------------------------------------
    def arm(self, entry: tuple[Any, ...]) -> Measurement:
        """Make the measurement of an entry that reached the earliest arm point.

        Called by the sampler (possibly inside its signal handler): no locks, no I/O.
        """
        start, thread_id, _, payload = entry
        after = self.settings.sample_after
        if isinstance(payload, WatchCall):
            return Measurement(start, thread_id, start + after * payload.threshold, payload.code)
        request = payload.get(ENVIRON_REQUEST)
        rule = getattr(request, "url_rule", None)
        endpoint = rule.endpoint if rule is not None else None
        m = Measurement(
            start,
            thread_id,
            start + after * self.threshold_for(endpoint),
            skip=endpoint in self.excluded_endpoints,
        )
        m.linked_threads = payload.setdefault(ENVIRON_THREADS, [])
        return m

    # -- the end of a request ------------------------------------------------------------
    def finish_request(
        self,
        entry: tuple[Any, ...],
        token: Any,
        status: str | None,
        end: float,
    ) -> None:
        """The response is sent: count it, and if it was slow, make and send its event."""
        collected = self.policy.end(token)
        start, _, _, environ = entry
        duration = end - start
        stats = self.stats
        stats.requests += 1
        stats.monitored_seconds += duration
        if duration < self.min_threshold:
            environ.pop(ENVIRON_REQUEST, None)
            return
        request = environ.pop(ENVIRON_REQUEST, None)
        rule = getattr(request, "url_rule", None)
        endpoint = rule.endpoint if rule is not None else None
        if endpoint in self.excluded_endpoints:
            return
        threshold = self.threshold_for(endpoint)
        if duration >= threshold:
            app = self.app
            if app is None or request is None:
                return
            status_code = int(status.split(" ", 1)[0]) if status else 500
            method = request.method
            result = self.policy.result(
                collected, start, end, f"{method} {request.path}", environ.get(ENVIRON_SESSIONS)
            )
            event = SlowRequestEvent(
                kind="request",
                endpoint=endpoint,
                url=request_url(request, self.redactor),
                method=method,
                params=request_params(request, self.redactor),
                headers=request_headers(request, self.redactor),
                status_code=status_code,
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
        for deferred in environ.get(ENVIRON_DEFERRED, ()):
            app = self.app
            if app is not None:
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
        if environ is not None:
            # Inside a monitored request: sent when the response is done, not now.
            environ.setdefault(ENVIRON_DEFERRED, []).append(event)
        else:
            self.emit(app, event)

    # -- event -> de-duplication -> signal ---------------------------------------------------
    def emit(self, app: Flask, event: SlowRequestEvent) -> None:
        stats = self.stats
        stats.add("slow")
        event.duplicate = not self._claim(event.key)
        stats.add("suppressed" if event.duplicate else "alerted")
        with app.app_context():
            for receiver in perf_slow_request.receivers_for(app):
                try:
                    receiver(app, event=event)
                except Exception:
                    logger.exception(
                        "A receiver of perf_slow_request failed for %s", event.summary()
                    )

    def _claim(self, key: str) -> bool:
        try:
            return self.store.claim(key, self.window_seconds)
        except Exception:
            logger.exception("The alert store failed; alerting anyway")
            return True


def _started_at(start: float) -> datetime:
    wall = time.time() - (time.perf_counter() - start)
    return datetime.fromtimestamp(wall, tz=timezone.utc)
