"""The Flask extension class."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, overload

from flask import Flask, current_app, has_app_context, has_request_context
from typing_extensions import Unpack

from ._folders import prepare_folders
from ._options import PerfAlertOptions
from .cli import perfalert_cli
from .monitor import AppMonitor
from .profiling import session as profile_session
from .profiling import stacks
from .profiling.sampler import SAMPLER
from .profiling.state import ACTIVE, InFlight, TimerState, WatchCall, request_on, request_with
from .profiling.timer import install_timer, stop_profiler, timer_state, watch_record
from .settings import PerfAlertSettings, check_options, load_settings

logger = logging.getLogger("flask_perfalert")

F = TypeVar("F", bound=Callable[..., Any])

EXTENSION_KEY = "perfalert"

#: Below this lowest threshold (seconds), requests keep their request object from
#: the start; above it the sampler keeps it once a request passes its arm point.
EARLY_CAPTURE_BELOW = 0.05


class PerfAlert:
    """Alerts with a profile when a request or a watched function is slow.

    :param app: the app to set up now; or call :meth:`init_app` later.
    :param clock: the wall clock the de-duplication window uses (tests pass a
        fake one).
    :param options: settings by field name (``threshold_seconds=0.3``); they
        beat ``app.config``, which beats ``PERFALERT_*`` environment variables,
        which beat the defaults. See :doc:`/configuration` for every key. A
        name that is not a setting raises :exc:`TypeError`.

    One instance can serve several apps, each with its own settings.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        clock: Callable[[], float] = time.time,
        **options: Unpack[PerfAlertOptions],
    ) -> None:
        check_options(options)
        self._options: dict[str, Any] = dict(options)
        #: Names of the functions watched so far (keys of ENDPOINT_THRESHOLDS may name them).
        self._watched: set[str] = set()
        self._clock = clock
        self._monitors: weakref.WeakKeyDictionary[Flask, AppMonitor] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Read the settings of ``app`` and start monitoring it.

        Reads every ``PERFALERT_*`` key of ``app.config`` and the environment,
        once. Calling it again on the same app re-reads the settings.
        """
        loaded = load_settings(app.config, self._options, app=app)
        prepare_folders(loaded.settings, loaded.sources, loaded.folders)
        other = app.extensions.get(EXTENSION_KEY)
        if other is not None and other is not self:
            # Two instances on one app would both alert (two reports, two posts).
            logger.warning(
                "A second PerfAlert was set up on app %r; it replaces the first.", app.name
            )
            other._forget(app)
        with self._lock:
            previous = self._monitors.get(app)
            if previous is not None:
                previous.disconnect(app)
                previous.close()
            monitor = AppMonitor(app, loaded, self._clock, watched=self._watched)
            self._monitors[app] = monitor
        app.extensions[EXTENSION_KEY] = self
        monitor.connect(app)
        self._install_timer(app, monitor)
        if monitor.settings.enabled:
            if monitor.timer is not None:
                SAMPLER.configure(
                    monitor.settings.sample_interval,
                    monitor.settings.max_overhead,
                    monitor.timer.min_arm_delay,
                )
            if monitor.timer is not None and monitor.timer.min_threshold < EARLY_CAPTURE_BELOW:
                _install_request_capture(app)
            _install_async_link(app, self)
        self._register_cli(app)
        _check_pyinstrument_once()
        logger.debug("Flask-PerfAlert set up for %s: %s", app.name, loaded.settings.masked())

    def _forget(self, app: Flask) -> None:
        with self._lock:
            monitor = self._monitors.pop(app, None)
        if monitor is not None:
            monitor.disconnect(app)
            monitor.close()

    def _install_timer(self, app: Flask, monitor: AppMonitor) -> None:
        state = timer_state(app.wsgi_app)
        if not monitor.settings.enabled:
            # No timing at all; a watched function is not monitored either.
            if state is not None:
                app.wsgi_app = state.wrapped  # type: ignore[method-assign,assignment]
            return
        if state is None:
            state = TimerState(app.wsgi_app)
            app.wsgi_app = install_timer(  # type: ignore[method-assign,assignment]
                app.wsgi_app, state
            )
        monitor.attach(state)

    def _register_cli(self, app: Flask) -> None:
        if "perfalert" not in app.cli.commands:
            app.cli.add_command(perfalert_cli)

    # -- reading state ----------------------------------------------------------------
    def _monitor(self, app: Flask | None = None) -> AppMonitor:
        if app is None:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        monitor = self._monitors.get(app)
        if monitor is None:
            raise RuntimeError(
                "Flask-PerfAlert is not set up for this app. Did you forget to call "
                "perf.init_app(app)?"
            )
        return monitor

    def settings(self, app: Flask | None = None) -> PerfAlertSettings:
        """The effective settings of ``app`` (default: the current app)."""
        return self._monitor(app).settings

    def effective_settings(self, app: Flask | None = None) -> dict[str, Any]:
        """The effective settings by ``PERFALERT_*`` key, secrets masked."""
        return self._monitor(app).settings.masked()

    def stats(self, app: Flask | None = None) -> dict[str, Any]:
        """Counters and the extension's own measured cost, for this process."""
        return self._monitor(app).stats.snapshot(SAMPLER)

    # -- @perf.watch ---------------------------------------------------------------------
    @overload
    def watch(self, func: F, /) -> F: ...

    @overload
    def watch(self, *, threshold: float | None = None) -> Callable[[F], F]: ...

    def watch(  # type: ignore[misc]
        self, func: F | None = None, /, *, threshold: float | None = None
    ) -> Any:
        """Monitor a function: an alert with its profile when a call is slow.

        Use bare (``@perf.watch``) or with a threshold in seconds
        (``@perf.watch(threshold=0.2)``). Without one, the function's entry in
        ``PERFALERT_ENDPOINT_THRESHOLDS`` (by module-qualified name), then
        ``PERFALERT_THRESHOLD_SECONDS``, apply. Works on views and on plain
        functions, inside or outside a request, and before ``init_app``.
        """
        if threshold is not None and not threshold > 0:
            raise ValueError(f"watch threshold must be a positive number of seconds: {threshold!r}")
        if func is None:
            return functools.partial(self._decorate, threshold=threshold)
        return self._decorate(func, threshold=threshold)

    def _decorate(self, func: F, threshold: float | None) -> F:
        name, code = _name_and_code(func)
        self._watched.add(name)
        perf = self

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = perf._begin_call(name, threshold, code)
                if call is None:
                    return await func(*args, **kwargs)
                try:
                    return await func(*args, **kwargs)
                finally:
                    perf._end_call(*call)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call = perf._begin_call(name, threshold, code)
            if call is None:
                return func(*args, **kwargs)
            try:
                return func(*args, **kwargs)
            finally:
                perf._end_call(*call)

        return wrapper  # type: ignore[return-value]

    def _monitor_for_call(self) -> AppMonitor | None:
        if has_app_context():
            return self._monitors.get(current_app._get_current_object())  # type: ignore[attr-defined]
        monitors = list(self._monitors.values())
        # Outside any app context (a script, a worker job): the one app this
        # instance serves; with several, there is no way to tell which.
        return monitors[0] if len(monitors) == 1 else None

    def _begin_call(
        self, name: str, threshold: float | None, code: Any
    ) -> tuple[AppMonitor, InFlight] | None:
        try:
            monitor = self._monitor_for_call()
            if monitor is None or monitor.timer is None:
                return None
            limit = threshold or monitor.endpoint_thresholds.get(name, monitor.threshold)
            record = watch_record(monitor.timer, WatchCall(name, limit, code))
            if monitor.timer.pyinstrument:
                record.more().profiler = monitor.policy.start_pyinstrument()
            if not SAMPLER.running:
                SAMPLER.start()
            ACTIVE[id(record)] = record
            return monitor, record
        except Exception:
            logger.exception("Flask-PerfAlert could not watch %s", name)
            return None

    def _end_call(self, monitor: AppMonitor, record: InFlight) -> None:
        end = time.perf_counter()
        try:
            ACTIVE.pop(id(record), None)
            record.finished = True
            if record.extras is not None and record.extras.profiler is not None:
                stop_profiler(record)
            monitor.finish_call(record, end)
        except Exception:
            logger.exception("Flask-PerfAlert failed after a watched call")


def _name_and_code(func: Callable[..., Any]) -> tuple[str, Any]:
    """A watched callable's module-qualified name, and the code its frames run."""
    target: Any = inspect.unwrap(func)
    while isinstance(target, functools.partial):
        target = inspect.unwrap(target.func)
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = (
        getattr(target, "__qualname__", None)
        or getattr(target, "__name__", None)
        or type(target).__qualname__
    )
    return f"{module}.{qualname}", getattr(target, "__code__", None)


def _install_request_capture(app: Flask) -> None:
    """Keep each request's Flask request object from its start.

    With thresholds this low a slow request may end before the sampler first
    looks at it, which is where the request object is normally kept (Flask
    forgets it when the request context ends). Costs one more call per request.
    """
    if getattr(app.request_context, "_perfalert", False):
        return
    original = app.request_context

    def request_context(environ: dict[str, Any]) -> Any:
        ctx = original(environ)
        record = request_with(environ)
        if record is not None:
            record.more().request = ctx.request
        return ctx

    request_context._perfalert = True  # type: ignore[attr-defined]
    app.request_context = request_context  # type: ignore[method-assign]


def _install_async_link(app: Flask, perf: PerfAlert) -> None:
    """Tell the sampler which thread runs an async view's work for its request.

    Flask runs an async view through ``app.async_to_sync``, on another thread
    (asgiref's event loop), while the request's thread waits.
    """
    if getattr(app.async_to_sync, "_perfalert", False):
        return
    original = app.async_to_sync

    def async_to_sync(func: Callable[..., Any]) -> Callable[..., Any]:
        if not has_request_context():
            return original(func)
        record = request_on(threading.get_ident())
        monitor = perf._monitors.get(current_app._get_current_object())  # type: ignore[attr-defined]
        if record is None or monitor is None:
            return original(func)
        policy = monitor.policy

        @functools.wraps(func)
        async def linked(*args: Any, **kwargs: Any) -> Any:
            thread = threading.get_ident()
            extras = record.more()
            extras.linked_threads.append(thread)
            profiler = policy.start_pyinstrument() if policy.mode == "pyinstrument" else None
            coroutine = func(*args, **kwargs)
            extras.awaiting.append(coroutine)
            try:
                return await coroutine
            finally:
                extras.awaiting.remove(coroutine)
                extras.linked_threads.remove(thread)
                session = policy.stop(profiler)
                if session is not None:
                    extras.sessions.append(session)

        return original(linked)

    async_to_sync._perfalert = True  # type: ignore[attr-defined]
    app.async_to_sync = async_to_sync  # type: ignore[method-assign]


_checked = False


def _check_pyinstrument_once() -> None:
    global _checked
    if _checked:
        return
    _checked = True
    if stacks.UNAVAILABLE is not None:
        logger.warning(
            "Flask-PerfAlert: %s. Slow requests still alert, without a call tree "
            '(PERFALERT_PROFILER="pyinstrument" profiles each request instead, at its cost).',
            stacks.UNAVAILABLE,
        )
    try:
        profile_session.check_compatible()
    except Exception as exc:
        logger.warning(
            "This pyinstrument version is not compatible with Flask-PerfAlert (%s); "
            "reports may lack a call tree.",
            exc,
        )
