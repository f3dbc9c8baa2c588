"""The request timer: a thin WSGI wrapper around ``app.wsgi_app``.

Measured against Flask ``before_request``/``after_request`` hooks, a WSGI
wrapper costs a fraction (see docs/performance.rst), and it times what the
client waits for: from the moment the app is called until the response body
has been sent and closed, including routing, errors and streaming.

Everything after the body is sent (the slow-request decision, the event, the
signal) runs in ``close()``, which WSGI servers call after the last byte.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from threading import get_ident
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ._monitor import AppMonitor

_perf_counter = time.perf_counter
ENVIRON_ENTRY = "perfalert.entry"


class RequestTimer:
    """Wraps one app's ``wsgi_app``; ``monitor`` is swapped when ``init_app`` runs again."""

    def __init__(self, wsgi_app: WSGIApplication, monitor: AppMonitor) -> None:
        self.wsgi_app = wsgi_app
        self.monitor = monitor

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start = _perf_counter()
        monitor = self.monitor
        if monitor.path_excluded(environ.get("PATH_INFO", "")):
            return self.wsgi_app(environ, start_response)
        entry = (start, get_ident(), monitor, environ)
        environ[ENVIRON_ENTRY] = entry
        token = monitor.policy.begin(entry)
        status: list[str] = []

        def timed_start_response(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            status.append(status_line)
            return start_response(status_line, headers, exc_info)

        monitor.stats.own_seconds += _perf_counter() - start
        try:
            body = self.wsgi_app(environ, timed_start_response)
        except BaseException:
            self._finish(entry, token, "500 INTERNAL SERVER ERROR")
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(file_wrapper, type):
            if isinstance(body, file_wrapper):
                # Keep the server's sendfile path: time ends before the file is sent.
                self._finish(entry, token, status[-1] if status else None)
                return body
        return _TimedBody(body, self, entry, token, status)

    def _finish(self, entry: tuple[Any, ...], token: Any, status: str | None) -> None:
        end = _perf_counter()
        monitor = entry[2]
        try:
            monitor.finish_request(entry, token, status, end)
        except Exception:
            import logging

            logging.getLogger("flask_perfalert").exception("Flask-PerfAlert failed on a request")
        monitor.stats.own_seconds += _perf_counter() - end


class _TimedBody:
    """The response body, passed through; closing it ends the measurement."""

    __slots__ = ("_body", "_timer", "_entry", "_token", "_status", "_closed")

    def __init__(
        self,
        body: Iterable[bytes],
        timer: RequestTimer,
        entry: tuple[Any, ...],
        token: Any,
        status: list[str],
    ) -> None:
        self._body = body
        self._timer = timer
        self._entry = entry
        self._token = token
        self._status = status
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
            status = self._status
            self._timer._finish(self._entry, self._token, status[-1] if status else None)
